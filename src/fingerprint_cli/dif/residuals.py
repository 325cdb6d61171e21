"""DIF residuals r = f_D(x) of centre crops, computed once per image and cached.

A residual is the denoiser's noise estimate (see :mod:`fingerprint_cli.dif.denoise`) of the centre
``crop``×``crop`` window of an image, float32 (3, crop, crop). The published DIF code recomputes the denoiser
for every batch of every epoch; fpx computes each image's residual once (:func:`compute`) and reuses it, and
:class:`ResidualCache` keeps it across calls (in memory, optionally on disk) keyed by
(image sha256, denoiser sha256, crop).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fingerprint_cli import images
from fingerprint_cli.dif.denoise import Denoiser, get_denoiser, to_batch  # noqa: F401  (re-exported)
from fingerprint_cli.errors import InputError

__all__ = ["ResidualCache", "get_denoiser", "centre_crop", "compute", "compute_views", "residual_of_pixels"]


class ResidualCache:
    """Residuals keyed by (image sha256, denoiser sha256, crop[, augmentation id]).

    In memory always; with ``disk=True`` (or a folder) also as ``.npy`` files (read with
    ``allow_pickle=False``) under ``artifacts.home()/cache/residuals/<denoiser sha256[:16]>/<crop>/``.
    ``hits``/``misses`` count lookups.
    """

    def __init__(self, disk: bool | str | os.PathLike = False):
        self._mem: dict[tuple[str, str, int], np.ndarray] = {}
        if disk is True:
            from fingerprint_cli import artifacts

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
            from fingerprint_cli import atomic

            try:
                f.parent.mkdir(parents=True, exist_ok=True)
                with atomic.atomic_path(f, suffix=".npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, residual, allow_pickle=False)
            except OSError as exc:  # the disk cache is optional: one warning, then memory only
                from fingerprint_cli.batch import cache_unusable

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
        if not allow_smaller or min(h, w) < 16:
            raise InputError(f"image is {w}x{h}, smaller than the {crop}x{crop} crop (use a smaller --crop)",
                             path)
    ch, cw = min(crop, h), min(crop, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return pixels[y:y + ch, x:x + cw]


def residual_of_pixels(pixels: np.ndarray, denoiser: Denoiser, crop: int, path: str = "") -> np.ndarray:
    """Residual (3, crop, crop) float32 of an image already in memory (no cache)."""
    x = to_batch(centre_crop(pixels, crop, path))
    return denoiser.residual(x)[0].numpy().astype(np.float32)


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
    pending: list[tuple[int, str, np.ndarray]] = []

    def flush():
        if not pending:
            return
        x = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for _, _, c in pending]).astype(np.float32))
        r = denoiser.residual(x).numpy().astype(np.float32)
        for (i, sha, _), ri in zip(pending, r):
            out[i] = ri
            if cache is not None:
                cache.put(sha, denoiser.sha256, crop, ri)
        if progress:
            progress(len(pending))
        pending.clear()

    for p in paths:
        p = str(p)
        try:
            if cache is not None:
                images.check_file(p, "image file")  # a FIFO or device is refused, not read
                sha = images.sha256_file(p)
                hit = cache.get(sha, denoiser.sha256, crop)
                if hit is not None:
                    out.append(hit)
                    infos.append({"path": p, "sha256": sha})
                    if progress:
                        progress(1)
                    continue
            im = images.load_image(p)
            c = centre_crop(im.pixels, crop, p, allow_smaller)
        except InputError as exc:
            if on_error is None:
                raise
            on_error(p, exc)
            continue
        out.append(None)
        infos.append({"path": p, "sha256": im.sha256})
        if c.shape[:2] != (crop, crop):  # a smaller image (detection only): its own batch
            flush()
            pending.append((len(out) - 1, im.sha256, c))
            flush()
            continue
        pending.append((len(out) - 1, im.sha256, c))
        if len(pending) >= batch_size:
            flush()
    flush()
    if not out:
        return np.zeros((0, 3, crop, crop), np.float32), infos
    if any(o.shape[1:] != (crop, crop) for o in out):
        return list(out), infos
    return np.stack(out).astype(np.float32), infos


def compute_views(paths: Sequence[str], views: Callable[[str], Sequence], denoiser: Denoiser, crop: int, *,
                  cache: ResidualCache | None = None, progress: Callable[..., None] | None = None,
                  batch_size: int = 8, on_error: Callable[[str, Exception], None] | None = None,
                  ) -> tuple[np.ndarray, list[dict], list[list]]:
    """Residuals of augmented views of each image: (N, K, 3, crop, crop) float32, [{"path", "sha256"}] and the
    views [[Augmentation, ...], ...] in the same order.

    ``views(sha256)`` gives the K augmentations of an image (:func:`~.augment.draw_views`); every image must
    get the same K. Each view's residual is cached under (image sha256, denoiser sha256, crop, augmentation
    id); an image whose views are all cached is not decoded, otherwise it is decoded once for all its views.
    A bad image raises InputError naming it, unless ``on_error`` is given (reported there, left out).
    """
    from fingerprint_cli.dif.augment import apply

    out: list[list[np.ndarray | None]] = []
    infos: list[dict] = []
    all_views: list[list] = []
    pending: list[tuple[int, int, str, str, np.ndarray]] = []
    k_views: int | None = None

    def flush():
        if not pending:
            return
        x = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for *_, c in pending]).astype(np.float32))
        r = denoiser.residual(x).numpy().astype(np.float32)
        for (i, k, sha, aid, _), ri in zip(pending, r):
            out[i][k] = ri
            if cache is not None:
                cache.put(sha, denoiser.sha256, crop, ri, aug=aid)
        if progress:
            progress(len(pending))
        pending.clear()

    for p in paths:
        p = str(p)
        try:
            if not Path(p).is_file():
                raise InputError("no such file", p)
            sha = images.sha256_file(p)
            vs = list(views(sha))
            if k_views is None:
                k_views = len(vs)
            elif len(vs) != k_views:
                raise ValueError(f"every image needs the same number of views ({k_views}, got {len(vs)})")
            got = [cache.get(sha, denoiser.sha256, crop, aug=a.id) if cache is not None else None for a in vs]
            todo = [k for k, g in enumerate(got) if g is None]
            crops = []
            if todo:
                im = images.load_image(p)
                crops = [apply(im.pixels, vs[k], crop, p) for k in todo]
        except InputError as exc:
            if on_error is None:
                raise
            on_error(p, exc)
            continue
        i = len(out)
        out.append(list(got))
        infos.append({"path": p, "sha256": sha})
        all_views.append(vs)
        if progress and len(todo) < len(vs):
            progress(len(vs) - len(todo))
        for k, c in zip(todo, crops):
            pending.append((i, k, sha, vs[k].id, c))
            if len(pending) >= batch_size:
                flush()
    flush()
    if not out:
        return np.zeros((0, k_views or 1, 3, crop, crop), np.float32), infos, all_views
    return np.stack([np.stack(o) for o in out]).astype(np.float32), infos, all_views
