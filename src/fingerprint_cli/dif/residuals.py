"""DIF residuals r = f_D(x) of centre crops, computed once per image and cached.

A residual is the denoiser's noise estimate (see :mod:`fingerprint_cli.dif.denoise`) of the centre
``crop``×``crop`` window of an image, float32 (3, crop, crop). The published DIF code recomputes the denoiser
for every batch of every epoch; fpx computes each image's residual once (:func:`compute`) and reuses it, and
:class:`ResidualCache` keeps it across calls (in memory, optionally on disk) keyed by
(image sha256, denoiser sha256, crop).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fingerprint_cli import artifacts, atomic, images
from fingerprint_cli.batch import cache_unusable
from fingerprint_cli.dif.augment import apply as augment_apply
from fingerprint_cli.dif.condition import MIN_WINDOW, Recompression
from fingerprint_cli.dif.denoise import Denoiser, get_denoiser, to_batch  # noqa: F401  (re-exported)
from fingerprint_cli.errors import InputError

__all__ = ["ResidualCache", "get_denoiser", "centre_crop", "compute", "compute_views", "compute_matched",
           "recompressed_window"]


class ResidualCache:
    """Residuals keyed by (image sha256, denoiser sha256, crop[, augmentation id]).

    In memory always; with ``disk=True`` (or a folder) also as ``.npy`` files (read with
    ``allow_pickle=False``) under ``artifacts.home()/cache/residuals/<denoiser sha256[:16]>/<crop>/``.
    ``hits``/``misses`` count lookups.
    """

    def __init__(self, disk: bool | str | os.PathLike = False):
        self._mem: dict[tuple[str, str, int], np.ndarray] = {}
        if disk is True:
            self.root: Path | None = artifacts.home() / "cache" / "residuals"
        elif disk:
            self.root = Path(disk)
        else:
            self.root = None
        self.hits = 0
        self.misses = 0

    def _file(self, key: tuple) -> Path | None:
        if self.root is None:
            return None
        sha, den, crop = key[:3]
        aug = key[3] if len(key) > 3 else ""
        return self.root / den[:16] / str(crop) / (f"{sha}.{aug}.npy" if aug else f"{sha}.npy")

    @staticmethod
    def _key(image_sha: str, denoiser_sha: str, crop: int, aug: str = "") -> tuple:
        # the plain residual keeps its 3-part key (and file name) of earlier versions
        return (image_sha, denoiser_sha, int(crop)) if not aug or aug == "none" else \
            (image_sha, denoiser_sha, int(crop), str(aug))

    def get(self, image_sha: str, denoiser_sha: str, crop: int, aug: str = "") -> np.ndarray | None:
        """The cached residual of the image (after augmentation ``aug``, an :class:`~.augment.Augmentation`
        id; "" or "none" = the image as it is), or None."""
        key = self._key(image_sha, denoiser_sha, crop, aug)
        r = self._mem.get(key)
        if r is None:
            f = self._file(key)
            if f is not None and _is_file(f):
                try:
                    r = np.load(f, allow_pickle=False)
                    if r.ndim != 3 or r.shape[0] != 3 or max(r.shape[1:]) > crop or r.dtype != np.float32:
                        r = None
                except (OSError, ValueError):
                    r = None
                if r is not None:
                    self._mem[key] = r
        if r is None:
            self.misses += 1
        else:
            self.hits += 1
        return r

    def put(self, image_sha: str, denoiser_sha: str, crop: int, residual: np.ndarray, aug: str = "") -> None:
        key = self._key(image_sha, denoiser_sha, crop, aug)
        residual = np.ascontiguousarray(residual, dtype=np.float32)
        self._mem[key] = residual
        f = self._file(key)
        if f is not None:
            try:
                f.parent.mkdir(parents=True, exist_ok=True)
                with atomic.atomic_path(f, suffix=".npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, residual, allow_pickle=False)
            except OSError as exc:  # the disk cache is optional: one warning, then memory only
                cache_unusable("residual", exc)
                self.root = None

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key) -> bool:
        return tuple(key) in self._mem


def _is_file(f: Path) -> bool:
    try:
        return f.is_file()
    except OSError:
        return False


def centre_crop(pixels: np.ndarray, crop: int, path: str = "", allow_smaller: bool = False) -> np.ndarray:
    """Centre ``crop``×``crop`` window of an (H, W, 3) image.

    An image smaller than the crop is an InputError, unless ``allow_smaller`` (detection): then the window is
    min(crop, H) × min(crop, W) and is correlated with the centre of the fingerprint.
    """
    h, w = pixels.shape[:2]
    if h < crop or w < crop:
        if not allow_smaller:
            raise InputError(f"image is {w}x{h}, smaller than the {crop}x{crop} crop (use a smaller --crop)",
                             path)
        if min(h, w) < MIN_WINDOW:  # detection takes any window down to MIN_WINDOW: no option can help here
            raise InputError(f"image is {w}x{h}: under {MIN_WINDOW} px a side, too small for a fingerprint "
                             "window", path)
    ch, cw = min(crop, h), min(crop, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return pixels[y:y + ch, x:x + cw]


class _Batch:
    """Crops waiting for one denoiser call: :meth:`add` queues a (crop, crop, 3) window with where its residual
    goes; :meth:`flush` denoises the queue in one batch, hands each residual to its ``place`` callback, caches
    it under (image sha256, denoiser, crop, augmentation id) and advances ``progress``."""

    def __init__(self, denoiser: Denoiser, crop: int, cache: "ResidualCache | None",
                 progress: Callable[..., None] | None, batch_size: int):
        self.denoiser, self.crop, self.cache, self.progress = denoiser, crop, cache, progress
        self.batch_size = batch_size
        self.items: list[tuple[Callable[[np.ndarray], None], str, str, np.ndarray]] = []

    def add(self, window: np.ndarray, sha: str, place: Callable[[np.ndarray], None], aug: str = "") -> None:
        self.items.append((place, sha, aug, window))
        if len(self.items) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        x = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for *_, c in self.items]).astype(np.float32))
        r = self.denoiser.residual(x).numpy().astype(np.float32)
        for (place, sha, aug, _), ri in zip(self.items, r):
            place(ri)
            if self.cache is not None:
                self.cache.put(sha, self.denoiser.sha256, self.crop, ri, aug=aug)
        if self.progress:
            self.progress(len(self.items))
        self.items.clear()


def _cached_plain(p: str, denoiser: Denoiser, crop: int, cache: "ResidualCache") -> tuple[str, np.ndarray | None]:
    """(sha256, cached residual or None) of one file, refusing a FIFO or device before hashing it."""
    images.check_file(p, "image file")
    sha = images.sha256_file(p)
    return sha, cache.get(sha, denoiser.sha256, crop)


def _stacked(out: list, crop: int, infos: list[dict]):
    """One (N, 3, crop, crop) array, or the list when some residual is smaller (detection of small images)."""
    if not out:
        return np.zeros((0, 3, crop, crop), np.float32), infos
    if any(o.shape[1:] != (crop, crop) for o in out):
        return list(out), infos
    return np.stack(out).astype(np.float32), infos


def compute(paths: Sequence[str], denoiser: Denoiser, crop: int, *, cache: ResidualCache | None = None,
            progress: Callable[..., None] | None = None, batch_size: int = 8,
            on_error: Callable[[str, Exception], None] | None = None,
            allow_smaller: bool = False) -> tuple[np.ndarray | list[np.ndarray], list[dict]]:
    """Residuals of ``paths``: (N, 3, crop, crop) float32 and [{"path", "sha256"}] in the same order.

    With ``allow_smaller`` an image smaller than ``crop`` gives a smaller residual (see :func:`centre_crop`);
    if any does, the residuals come back as a list of (3, h, w) arrays instead of one stacked array.

    Each image is decoded and denoised once; with ``cache`` an image whose residual is already there
    (same sha256, denoiser, crop) is not decoded at all. A bad image raises InputError naming it, unless
    ``on_error`` is given: then it is reported there and left out of the result.
    """
    out: list[np.ndarray | None] = []
    infos: list[dict] = []
    batch = _Batch(denoiser, crop, cache, progress, batch_size)
    for p in map(str, paths):
        try:
            sha, hit = _cached_plain(p, denoiser, crop, cache) if cache is not None else (None, None)
            if hit is None:
                im = images.load_image(p)
                sha, c = im.sha256, centre_crop(im.pixels, crop, p, allow_smaller)
        except InputError as exc:
            if on_error is None:
                raise
            on_error(p, exc)
            continue
        infos.append({"path": p, "sha256": sha})
        out.append(hit)
        if hit is not None:
            if progress:
                progress(1)
            continue
        if c.shape[:2] != (crop, crop):  # a smaller image (detection only): its own batch
            batch.flush()
        batch.add(c, sha, _setter(out, len(out) - 1))
        if c.shape[:2] != (crop, crop):
            batch.flush()
    batch.flush()
    return _stacked(out, crop, infos)


def _setter(out: list, i: int, k: int | None = None) -> Callable[[np.ndarray], None]:
    """Where a residual goes: ``out[i]`` (or ``out[i][k]``)."""
    def place(r: np.ndarray) -> None:
        if k is None:
            out[i] = r
        else:
            out[i][k] = r
    return place


def _augment_window(pixels: np.ndarray, view, crop: int, path: str) -> np.ndarray:
    """The default view function of :func:`compute_views`: :func:`.augment.apply` (crop, then augment)."""
    return augment_apply(pixels, view, crop, path)


def recompressed_window(pixels: np.ndarray, view, crop: int, path: str, allow_smaller: bool = False) -> np.ndarray:
    """The view function of condition calibration and format matching: the whole image through ``view`` (a
    :class:`~.condition.Recompression`), then the centre crop detection would take (smaller than ``crop`` only
    with ``allow_smaller``)."""
    return centre_crop(view.apply(pixels, path), crop, path, allow_smaller)


def compute_views(paths: Sequence[str], views: Callable[[str], Sequence], denoiser: Denoiser, crop: int, *,
                  cache: ResidualCache | None = None, progress: Callable[..., None] | None = None,
                  batch_size: int = 8, on_error: Callable[[str, Exception], None] | None = None,
                  window: Callable[[np.ndarray, object, int, str], np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, list[dict], list[list]]:
    """Residuals of augmented views of each image: (N, K, 3, crop, crop) float32, [{"path", "sha256"}] and the
    views [[Augmentation, ...], ...] in the same order.

    ``views(sha256)`` gives the K views of an image (:func:`~.augment.draw_views`); every image must get the
    same K. ``window(pixels, view, crop, path)`` makes a view's (crop, crop, 3) window — by default
    :func:`.augment.apply`; :func:`recompressed_window` for whole-image :class:`~.condition.Recompression`
    views. Each view's residual is cached under (image sha256, denoiser sha256, crop, view id); an image whose
    views are all cached is not decoded, otherwise it is decoded once for all its views. A bad image raises
    InputError naming it, unless ``on_error`` is given (reported there, left out).
    """
    window = window or _augment_window
    out: list[list[np.ndarray | None]] = []
    infos: list[dict] = []
    all_views: list[list] = []
    batch = _Batch(denoiser, crop, cache, progress, batch_size)
    k_views: int | None = None
    for p in map(str, paths):
        try:
            sha, vs, got, crops = _views_of(p, views, denoiser, crop, cache, window)
        except InputError as exc:
            if on_error is None:
                raise
            on_error(p, exc)
            continue
        k_views = len(vs) if k_views is None else k_views
        if len(vs) != k_views:
            raise ValueError(f"every image needs the same number of views ({k_views}, got {len(vs)})")
        out.append(got)
        infos.append({"path": p, "sha256": sha})
        all_views.append(vs)
        if progress and len(crops) < len(vs):
            progress(len(vs) - len(crops))
        for k, c in crops.items():
            batch.add(c, sha, _setter(out, len(out) - 1, k), aug=vs[k].id)
    batch.flush()
    if not out:
        return np.zeros((0, k_views or 1, 3, crop, crop), np.float32), infos, all_views
    return np.stack([np.stack(o) for o in out]).astype(np.float32), infos, all_views


def _header_lossless(p: str) -> bool:
    """Whether the file's header says lossless (not JPEG); False when unreadable (the residual step reports it)."""
    try:
        return images.header(p).get("format") != "JPEG"
    except InputError:
        return False


def _merge_in_order(paths: Sequence[str], parts: dict[bool, tuple[list, list[dict]]]) -> tuple[list, list[dict]]:
    """Interleave the results of the two groups (lossless True / False) back into the order of ``paths``
    (an image that failed is missing from its group's infos, so each group is walked with a pointer)."""
    at = {True: 0, False: 0}
    out, infos = [], []
    for p, flag in paths:
        res, inf = parts[flag]
        i = at[flag]
        if i < len(inf) and inf[i]["path"] == p:
            out.append(res[i])
            infos.append(inf[i])
            at[flag] = i + 1
    return out, infos


def compute_matched(paths: Sequence[str], denoiser: Denoiser, crop: int, quality: int | None, *,
                    cache: ResidualCache | None = None, progress: Callable[..., None] | None = None,
                    on_error: Callable[[str, Exception], None] | None = None,
                    allow_smaller: bool = False) -> tuple[np.ndarray | list[np.ndarray], list[dict]]:
    """Residuals as :func:`compute`, with **format matching** (the ``format-matched`` training profile, issue 15):
    every image whose header says lossless is first re-encoded, whole, as JPEG at ``quality`` (Pillow, 4:2:0;
    :class:`~.condition.Recompression` ``jpegQ``), then centre-cropped; a JPEG image is used as it is. So a
    fingerprint fitted and calibrated this way never sees a lossless residual, and "lossless or JPEG" cannot
    carry information in fitting, calibration or detection. ``quality`` None: plain :func:`compute`. The
    matched residual is cached under the view id ``jpegQ`` (the same entry as condition calibration's
    ``jpegQ`` copy of that image)."""
    if quality is None:
        return compute(paths, denoiser, crop, cache=cache, progress=progress, on_error=on_error,
                       allow_smaller=allow_smaller)
    flagged = [(str(p), _header_lossless(str(p))) for p in paths]
    view = Recompression(quality=int(quality))
    window = functools.partial(recompressed_window, allow_smaller=allow_smaller)
    lossless = [p for p, f in flagged if f]
    # with smaller images allowed, windows may differ in size: one image per call (detection's case)
    chunks = [[p] for p in lossless] if allow_smaller else ([lossless] if lossless else [])
    res_l: list = []
    inf_l: list[dict] = []
    for chunk in chunks:
        r, inf, _ = compute_views(chunk, lambda _sha: [view], denoiser, crop, cache=cache, progress=progress,
                                  on_error=on_error, window=window)
        res_l += [x[0] for x in r]
        inf_l += inf
    res_j, inf_j = compute([p for p, f in flagged if not f], denoiser, crop, cache=cache, progress=progress,
                           on_error=on_error, allow_smaller=allow_smaller)
    out, infos = _merge_in_order(flagged, {True: (res_l, inf_l), False: (list(res_j), inf_j)})
    return _stacked(out, crop, infos)


def _views_of(p: str, views, denoiser: Denoiser, crop: int, cache: ResidualCache | None, window):
    """One image's sha256, its views, their cached residuals (None where missing) and the windows still to
    denoise {view index: window} (the image is decoded only when one is missing)."""
    if not Path(p).is_file():
        raise InputError("no such file", p)
    sha = images.sha256_file(p)
    vs = list(views(sha))
    got = [cache.get(sha, denoiser.sha256, crop, aug=a.id) if cache is not None else None for a in vs]
    todo = [k for k, g in enumerate(got) if g is None]
    crops: dict[int, np.ndarray] = {}
    if todo:
        pixels = images.load_image(p).pixels
        crops = {k: window(pixels, vs[k], crop, p) for k in todo}
    return sha, vs, got, crops
