"""Reference-anchored features of (reference, suspect) pairs.

Pixel features (no model needed): the suspect is aligned to the reference — resized to the reference's
size (bicubic) when the sizes differ — and compared in float RGB [0, 1]:

* ``ssim_clean`` — SSIM of suspect vs reference (convention in :mod:`fingerprint_cli.anchored.metrics`); lower = more change;
* ``psnr_clean`` — PSNR in dB; lower = more change.

Token features (DINOv2 encoder): both images are brought to ``resolution × resolution`` and encoded;
per patch p, d_p = 1 − cos(t_suspect,p, t_reference,p) on the final-layer patch tokens (prefix tokens
dropped). ``patch_mean`` / ``patch_median`` / ``patch_p90`` / ``patch_max`` summarise d over patches;
``cls_distance`` = 1 − cos of the CLS tokens. Higher = more change. The per-patch map d (grid gh × gw)
is returned with each result for reports and heatmaps.

Reference tokens are computed once per (reference sha256, encoder weights, resolution) and cached.
"""

from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fingerprint_cli import __version__, atomic, images, plots
from fingerprint_cli.anchored import features, metrics
from fingerprint_cli.batch import Pair
from fingerprint_cli.errors import FpxError, InputError, UsageError
from fingerprint_cli.records import Record

FEATURES: dict[str, tuple[str, str]] = features.table(("tokens", "pixel"))  # (direction, description)
TOKEN_FEATURES = tuple(features.names("tokens"))
TABLE_COLUMNS = ["features.patch_mean", "features.patch_p90", "features.cls_distance", "features.ssim_clean",
                 "features.psnr_clean"]


def align(reference: images.LoadedImage, suspect: images.LoadedImage) -> tuple[np.ndarray, list[str]]:
    """The suspect's pixels on the reference's grid, and the step taken (if any)."""
    if suspect.pixels.shape == reference.pixels.shape:
        return suspect.pixels, []
    out = np.clip(images.resize(suspect.pixels, reference.height, reference.width), 0.0, 1.0)
    return out, [f"suspect resized {suspect.width}x{suspect.height} -> {reference.width}x{reference.height} "
                 "(bicubic) to match the reference"]


#: Decoding steps after which equal decoded arrays still mean equal pixels (:func:`exact_copy`): a grey, bilevel or
#: palette image expanded to RGB, an opaque alpha dropped, an EXIF turn, 16-bit samples kept at 16 bits. Any other
#: step (transparency composited, bits dropped by the decoder, CMYK/LAB/... converted, a float image clipped, the
#: first frame of several) may map different files to one array, so no exact answer is given after it.
LOSSLESS_STEPS = ("palette expanded", "opaque alpha dropped", "L converted to RGB", "1 converted to RGB",
                  "EXIF orientation", "16-bit RGB kept", "16-bit grey scaled")


def _lossy_step(im: images.LoadedImage) -> str | None:
    """The first decoding step of ``im`` after which an exact comparison would not be one (None: all lossless)."""
    if im.source_bit_depth is not None:
        return f"{im.source_bit_depth}-bit samples read at {im.bit_depth} bits"
    return next((s for s in im.steps if not s.startswith(LOSSLESS_STEPS)), None)


def _same_samples(a: images.LoadedImage, b: images.LoadedImage) -> bool:
    """Equal decoded values; across bit depths, compared on the 16-bit grid (an 8-bit v equals a 16-bit 257 v)."""
    if np.array_equal(a.pixels, b.pixels):
        return True
    if a.bit_depth == b.bit_depth == 8:
        return False
    grid = [np.rint(im.pixels.astype(np.float64) * 65535.0) for im in (a, b)]
    return bool(np.array_equal(grid[0], grid[1]))


def exact_copy(ref: images.LoadedImage, sus: images.LoadedImage) -> dict[str, Any]:
    """Whether the suspect's decoded pixels equal the reference's exactly: ``{"identical": bool, "why": str}``.
    Same size (never resized for this), the same RGB values after the loader's scaling, and no decoding step that
    loses information on either side (:data:`LOSSLESS_STEPS`; a 16-bit RGB PNG read at 8 bits is not compared)."""
    for role, im in (("reference", ref), ("suspect", sus)):
        step = _lossy_step(im)
        if step is not None:
            return {"identical": False, "why": f"not compared exactly: the {role} was decoded with a lossy step "
                                               f"({step})"}
    if ref.pixels.shape != sus.pixels.shape:
        return {"identical": False, "why": f"sizes differ ({sus.width}x{sus.height} vs {ref.width}x{ref.height})"}
    if _same_samples(ref, sus):
        return {"identical": True, "why": "decoded pixels identical to the reference's"}
    return {"identical": False, "why": "decoded pixels differ from the reference's"}


def pixel_features(ref: np.ndarray, sus: np.ndarray) -> dict[str, float]:
    return {"ssim_clean": metrics.ssim(ref, sus), "psnr_clean": metrics.psnr(ref, sus)}


def token_features(ref_tokens, sus_tokens) -> tuple[dict[str, float], np.ndarray]:
    """Distances between two :class:`~fingerprint_cli.anchored.encoders.Tokens`; returns (features, map gh×gw)."""
    a = ref_tokens.patches.astype(np.float64)
    b = sus_tokens.patches.astype(np.float64)
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    d = np.clip(1.0 - cos, 0.0, 2.0)
    ca = ref_tokens.cls.astype(np.float64)
    cb = sus_tokens.cls.astype(np.float64)
    cls_cos = float(ca @ cb / max(np.linalg.norm(ca) * np.linalg.norm(cb), 1e-12))
    feats = {"patch_mean": float(d.mean()), "patch_median": float(np.median(d)),
             "patch_p90": float(np.percentile(d, 90)), "patch_max": float(d.max()),
             "cls_distance": float(np.clip(1.0 - cls_cos, 0.0, 2.0))}
    return feats, d.reshape(ref_tokens.grid)


@dataclass
class PairResult:
    record: Record
    distance_map: np.ndarray | None = None
    reference: images.LoadedImage | None = None
    suspect_aligned: np.ndarray | None = None

    def heatmap(self) -> tuple[np.ndarray | None, str]:
        """The map to show for this pair: per-patch token distances when an encoder ran, else the per-block
        RMS luma difference (needs the pixels kept: ``Scorer.score(..., keep_pixels=True)``)."""
        if self.distance_map is not None:
            return self.distance_map, "per-patch DINOv2 token distance (1 - cos)"
        if self.reference is not None and self.suspect_aligned is not None:
            from fingerprint_cli.anchored import pixel  # imports scipy.ndimage: loaded when first needed

            return (pixel.difference_map(self.reference.pixels, self.suspect_aligned),
                    "per-block RMS luma difference (no encoder)")
        return None, ""


def heatmap_path(result: PairResult, folder: str) -> str | None:
    """Where :func:`write_heatmap` writes the pair's map: ``FOLDER/<suspect stem>__map.png``."""
    if result.distance_map is None and (result.reference is None or result.suspect_aligned is None):
        return None
    return str(Path(folder) / f"{Path(result.record.inputs['suspect']['path']).stem}__map.png")


def write_heatmap(result: PairResult, folder: str, inputs: Sequence[str] = ()) -> str | None:
    """Write the pair's heatmap as ``FOLDER/<suspect stem>__map.png`` (atomically); returns the path."""
    dmap, label = result.heatmap()
    if dmap is None:
        return None
    sus = Path(result.record.inputs["suspect"]["path"])
    out = Path(folder) / f"{sus.stem}__map.png"
    atomic.refuse_overwrite_of_inputs(out, inputs)
    atomic.write_bytes(out, plots.heatmap(dmap, f"{sus.name}: {label}"))
    return str(out)


def base_provenance(encoder=None, seed: int | None = None) -> dict[str, Any]:
    import torch

    prov: dict[str, Any] = {"fpx_version": __version__, "python": platform.python_version(),
                            "torch": torch.__version__, "numpy": np.__version__,
                            "utc_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import timm

        prov["timm"] = timm.__version__
    except ImportError:  # pragma: no cover
        pass
    if encoder is not None:
        prov.update(encoder.provenance())
    else:
        prov.update({"encoder": None, "device": "cpu"})
    if seed is not None:
        prov["seed"] = seed
    return prov


def _inputs(pair: Pair, ref: images.LoadedImage | None = None, sus: images.LoadedImage | None = None) -> dict:
    return {"reference": {"path": pair.reference, "sha256": ref.sha256 if ref else None},
            "suspect": {"path": pair.suspect, "sha256": sus.sha256 if sus else None}}


class Scorer:
    """Scores pairs; keeps decoded references and their tokens so each is computed once."""

    def __init__(self, encoder=None, use_disk_cache: bool = True, jobs: int = 1,
                 extra_features: Sequence[Callable] = ()):
        self.encoder = encoder
        self.use_disk_cache = use_disk_cache
        self.jobs = max(1, int(jobs))
        self.extra_features = list(extra_features)
        self._refs: dict[str, images.LoadedImage] = {}
        self.provenance = base_provenance(encoder)

    def _reference(self, path: str) -> images.LoadedImage:
        if path not in self._refs:
            if len(self._refs) > 64:
                self._refs.clear()
            self._refs[path] = images.load_image(path)
        return self._refs[path]

    def _ref_tokens(self, ref: images.LoadedImage):
        enc = self.encoder
        tok = enc.cached(ref.sha256, self.use_disk_cache)
        if tok is None:
            tok = enc.encode([ref.pixels])[0]
        enc.store(ref.sha256, tok, self.use_disk_cache)  # writes the disk entry only when it is missing
        return tok

    def score(self, pairs: Sequence[Pair], batch_size: int = 8,
              on_result: Callable[[PairResult], None] | None = None, keep_pixels: bool = False) -> list[PairResult]:
        """Score ``pairs`` in batches. A pair that fails becomes an error record; the rest go on."""
        results: list[PairResult] = []
        for start in range(0, len(pairs), batch_size):
            for r in self._score_chunk(pairs[start:start + batch_size], batch_size, keep_pixels):
                results.append(r)
                if on_result:
                    on_result(r)
        return results

    def _score_chunk(self, chunk: Sequence[Pair], batch_size: int, keep_pixels: bool) -> list[PairResult]:
        """One batch: decode, then pixel features in a worker thread while the encoder runs, then the records."""
        slots: list[PairResult | None] = [None] * len(chunk)
        loaded = self._load_chunk(chunk, slots)
        # pixel features (alignment, SSIM, PSNR) run in a worker thread while the encoder works:
        # torch and scipy both release the GIL, so the two overlap
        pool = ThreadPoolExecutor(max_workers=1)
        pixel_future = pool.submit(self._align_all, [(r, s) for _, _, r, s in loaded])
        sus_tokens = self._encode_chunk(loaded, batch_size)
        aligned = pixel_future.result()
        pool.shutdown()
        for i, (k, pair, ref, sus) in enumerate(loaded):
            slots[k] = self._pair_result(pair, ref, sus, aligned[i], sus_tokens[i] if sus_tokens else None,
                                         keep_pixels)
        return slots

    def _load_chunk(self, chunk: Sequence[Pair], slots: list) -> list:
        """[(slot, pair, reference, suspect)] of the pairs whose images decode; the others' slots get error
        records."""
        loaded: list[tuple[int, Pair, images.LoadedImage, images.LoadedImage]] = []
        for k, pair in enumerate(chunk):
            ref = None
            try:
                ref = self._reference(pair.reference)
                loaded.append((k, pair, ref, images.load_image(pair.suspect)))
            except FpxError as exc:
                slots[k] = PairResult(Record.failure("score", _inputs(pair, ref), exc, self.provenance))
        return loaded

    def _encode_chunk(self, loaded: list, batch_size: int) -> list:
        """The suspects' tokens; references not cached yet go through the encoder in the same batches."""
        if self.encoder is None or not loaded:
            return []
        new_refs = {}
        for _, _, r, _ in loaded:
            if r.sha256 not in new_refs and self.encoder.cached(r.sha256, self.use_disk_cache) is None:
                new_refs[r.sha256] = r
        toks = self.encoder.encode([r.pixels for r in new_refs.values()]
                                   + [s.pixels for _, _, _, s in loaded], batch_size=batch_size)
        for r, t in zip(new_refs.values(), toks):
            self.encoder.store(r.sha256, t, self.use_disk_cache)
        return toks[len(new_refs):]

    def _pair_result(self, pair: Pair, ref: images.LoadedImage, sus: images.LoadedImage, aligned, sus_tok,
                     keep_pixels: bool) -> PairResult:
        """The pair's record from its aligned pixel features, its tokens and the extra feature hooks; a failure
        is the pair's error record."""
        try:
            sus_px, steps, feats = aligned
            if isinstance(feats, Exception):
                raise feats
            dmap = None
            if self.encoder is not None:
                tfeats, dmap = token_features(self._ref_tokens(ref), sus_tok)
                feats = {**tfeats, **feats}
            details: dict[str, Any] = {"steps": {"reference": ref.steps, "suspect": sus.steps + steps},
                                       "sizes": {"reference": [ref.width, ref.height],
                                                 "suspect": [sus.width, sus.height]},
                                       "exact_copy": exact_copy(ref, sus)}
            dirs = {k2: FEATURES[k2][0] for k2 in feats}
            for fn in self.extra_features:
                more, more_dirs, more_details = fn(pair, ref, sus_px)
                feats.update(more)
                dirs.update(more_dirs)
                details.update(more_details)
            rec = Record(command="score", inputs=_inputs(pair, ref, sus), features=feats,
                         directions=dirs, provenance=self.provenance, details=details)
            return PairResult(rec, dmap, ref if keep_pixels else None, sus_px if keep_pixels else None)
        except FpxError as exc:
            return PairResult(Record.failure("score", _inputs(pair, ref, sus), exc, self.provenance))
        except Exception as exc:  # noqa: BLE001 - one pair's failure never aborts the batch
            return PairResult(Record.failure("score", _inputs(pair, ref, sus), FpxError(
                f"unexpected failure: {type(exc).__name__}: {exc}", pair.suspect), self.provenance))

    def _align_all(self, loaded):
        """Align each suspect and compute its pixel features (threads when --jobs > 1)."""
        if self.jobs > 1 and len(loaded) > 1:
            from joblib import Parallel, delayed

            return Parallel(n_jobs=self.jobs, prefer="threads")(delayed(_pixel_job)(r, s) for r, s in loaded)
        return [_pixel_job(r, s) for r, s in loaded]


MIN_SIDE = 11  # the SSIM window: smaller images carry no comparable evidence


def _pixel_job(ref: images.LoadedImage, sus: images.LoadedImage):
    for role, im in (("reference", ref), ("suspect", sus)):
        if min(im.height, im.width) < MIN_SIDE:  # a 1x1 suspect resized to the reference would still "score"
            return None, [], InputError(f"{role} is {im.width}x{im.height}: too small to compare (needs at least "
                                        f"{MIN_SIDE}x{MIN_SIDE})", im.path)
    px, steps = align(ref, sus)
    try:
        return px, steps, pixel_features(ref.pixels, px)
    except ValueError as exc:  # e.g. an image too small for SSIM: the suspect is aligned to the reference, so
        # a small reference is the reference's fault
        small_ref = min(ref.height, ref.width) <= min(sus.height, sus.width)
        return px, steps, InputError(f"{'reference' if small_ref else 'suspect'}: {exc}",
                                     ref.path if small_ref else sus.path)
    except Exception as exc:  # noqa: BLE001 - becomes this pair's error record; the batch goes on
        return px, steps, FpxError(f"unexpected failure: {type(exc).__name__}: {exc}", sus.path)


class MapWriter:
    """``--maps FOLDER``: writes each ok pair's heatmap (:func:`write_heatmap`) and notes its path in the record's
    ``details.map``. A second suspect with the same file stem, or a map that cannot be written, turns that pair's
    record into an error record (the batch goes on)."""

    def __init__(self, folder: str | Path, inputs: Sequence[str] = ()):
        self.folder = str(folder)
        self.inputs = inputs
        self.owner: dict[str, str] = {}

    def __call__(self, result: PairResult) -> None:
        if not result.record.ok:
            return
        rec = result.record
        try:
            self._claim(result)
            rec.details["map"] = write_heatmap(result, self.folder, self.inputs)
        except FpxError as exc:
            result.record = Record.failure("score", rec.inputs, exc, rec.provenance)
        except OSError as exc:
            result.record = Record.failure("score", rec.inputs, UsageError(
                f"--maps: cannot write the heatmap ({exc.strerror or exc})", self.folder), rec.provenance)

    def _claim(self, result: PairResult) -> None:
        target = heatmap_path(result, self.folder)
        if target is None:
            return
        key = str(Path(target).resolve())
        suspect = result.record.inputs["suspect"]["path"]
        if key in self.owner:
            raise UsageError(f"--maps: {target} was already written for {self.owner[key]} (two "
                             "suspects with one file stem); this pair's record is an error", suspect)
        self.owner[key] = suspect
