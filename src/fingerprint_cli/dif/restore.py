"""Scale restoration at detection (issue 15): a resized copy of a generator's image is resampled back to the
scale of the generator's training images before its residual, and tested against real photos that went
through the same resize and the same restoration.

Why: a generator that renders at one size (LDM 256², DALL-E 3 crops 512²) leaves a periodic decoder trace at
that size; a 0.9× or 0.5× copy carries it at another period, and every DIF profile was at chance on such
copies (docs/benchmarks.md, issue 15 rounds 4–5). The suspect's scale relative to the training images
(:func:`.condition.check`: short side / median generated training short side) says how far to resample back.

What keeps the stated false-positive rate: a restored statistic is not comparable with the calibration of
unrestored images (the two resamplings smooth real photos too), so restoration is done only where the
fingerprint holds a **calibration set of its own for that scale band** (``conformal["restored"]``, built by
``fpx dif-calibrate --restore-scales``): the same held-out real photos, each resized so that its short side is
``round(scale · to)`` px (the size a suspect of that band has), saved losslessly or as JPEG at each calibrated
quality, decoded, then restored exactly as a suspect is (:class:`Restore`). A suspect is restored when

* the fingerprint's generated training images have one size (their scale range within
  :data:`.condition.SCALE_SLACK` of 1),
* its scale lies outside 1 ± ``SCALE_SLACK`` (the tolerance) and within ``slack`` of a calibrated band's scale,

and its p-value is then the largest over that band's sets its encoding cannot rule out (:func:`band_sets`, the
same rule as :func:`.condition.calibration_sets`). The record says so (``scale_restored``: from, to, the
target short side, the kernel, the band). Anything else — an old fingerprint without restored sets, a scale
between bands, a fingerprint whose training images had several sizes — keeps the behaviour without
restoration (the scale warning, the abstention outside the calibrated conditions).

Restoration is resampling, not undoing: what the resize's antialiasing removed (a trace's components above the
smaller image's Nyquist frequency) does not come back; docs/benchmarks.md measures what survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fingerprint_cli import images
from fingerprint_cli.dif import condition
from fingerprint_cli.dif.condition import QUALITY_SLACK, SCALE_SLACK, Recompression, _bracketing
from fingerprint_cli.dif.meta import Conformal, FingerprintMeta
from fingerprint_cli.errors import UsageError

#: the kernels a restoration may use (:data:`fingerprint_cli.images.RESAMPLING`)
METHODS = tuple(images.RESAMPLING)
#: the kernel chosen on the development images (docs/benchmarks.md, issue 15 scale restoration)
DEFAULT_METHOD = "lanczos"  # dev rule: mean resized TPR 0.207 against bicubic's 0.148
#: the scale bands `fpx dif-calibrate --restore-scales` calibrates when asked for the default
DEFAULT_SCALES = (0.9, 0.75, 0.5)
#: the final encodings each band is calibrated under: lossless and JPEG at these qualities
DEFAULT_ENCODINGS = ("none", "jpeg95", "jpeg85", "jpeg75")
#: whether `fpx detect` restores by default (where a fingerprint holds restored sets; docs/benchmarks.md rule)
DETECT_DEFAULT = False
#: a set id of a restored calibration set: ``restored<scale>/<encoding>``
PREFIX = "restored"


@dataclass(frozen=True)
class Restore:
    """Resample a whole image (both sides by one factor) so that its short side is ``to`` px, with ``method``
    (:data:`METHODS`), clipped to [0, 1]. ``id`` keys the residual cache."""

    to: int
    method: str = DEFAULT_METHOD

    @property
    def id(self) -> str:
        return f"restore{self.to}-{self.method}"

    def apply(self, pixels: np.ndarray, path: str = "") -> np.ndarray:
        """The restored image, float32 (H', W', 3) with min(H', W') = ``to``."""
        return images.resize_short_side(np.asarray(pixels, dtype=np.float32), self.to, kernel=self.method)


@dataclass(frozen=True)
class BandCopy:
    """A real calibration photo as a suspect of scale band ``scale`` arrives and is restored: resized (bicubic,
    as :class:`.condition.Recompression`) so that its short side is ``round(scale · to)`` px, saved losslessly
    (``quality`` None) or as JPEG at ``quality``, decoded, then restored to ``to`` px (:class:`Restore`)."""

    scale: float
    to: int
    quality: int | None
    method: str = DEFAULT_METHOD

    @property
    def encoding(self) -> str:
        return "none" if self.quality is None else f"jpeg{self.quality}"

    @property
    def id(self) -> str:
        q = "" if self.quality is None else f"+jpeg{self.quality}"
        return f"band{self.scale:g}@{self.to}{q}>{Restore(self.to, self.method).id}"

    def apply(self, pixels: np.ndarray, path: str = "") -> np.ndarray:
        small = images.resize_short_side(np.asarray(pixels, dtype=np.float32), max(1, int(round(self.scale * self.to))))
        data, _ = Recompression(1.0, self.quality).encode(small)
        return Restore(self.to, self.method).apply(images.decode(data, path or "<copy>").pixels)


def parse_scales(scales) -> list[float]:
    """Distinct band scales in (0, 1 − slack) (UsageError otherwise); ``"default"`` → :data:`DEFAULT_SCALES`."""
    if isinstance(scales, str):
        scales = DEFAULT_SCALES if scales.strip() == "default" else [s for s in scales.split(",") if s.strip()]
    out: list[float] = []
    for s in scales:
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise UsageError(f"--restore-scales: {s!r} is not a number (e.g. 0.9,0.75,0.5)") from None
        if not 0.05 <= v < 1 - SCALE_SLACK:
            raise UsageError(f"--restore-scales: {v:g} is not a downscale band (use scales in [0.05, "
                             f"{1 - SCALE_SLACK:g}))")
        if v not in out:
            out.append(v)
    return out


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"unknown restoration kernel {method!r} (use {', '.join(METHODS)})")
    return method


def reference_side(meta: FingerprintMeta) -> int | None:
    """The short side (px) the fingerprint's generated training images share (all within
    :data:`.condition.SCALE_SLACK` of their median), None when they have several sizes or the fingerprint records
    none. (A training profile's rescaled views do not count: the generator's own images have one size.)"""
    tc = meta.conditions or {}
    ref = tc.get("reference_short_side")
    gen = (tc.get("generated") or {}).get("short_side")
    if not ref or not gen or not (gen[0] >= ref * (1 - SCALE_SLACK) and gen[2] <= ref * (1 + SCALE_SLACK)):
        return None
    return int(ref)


def set_id(band: str, encoding: str) -> str:
    return f"{PREFIX}{band}/{encoding}"


def set_rho(cal: Conformal, sid: str) -> list[float]:
    """The statistics of a restored calibration set ``restored<scale>/<encoding>``."""
    band, _, enc = sid[len(PREFIX):].partition("/")
    return list(cal.restored["bands"][band]["sets"][enc]["rho"])


def band_of(cal: Conformal, scale: float) -> str | None:
    """The calibrated band whose scale is within the restoration's slack of ``scale`` (the nearest), or None."""
    r = cal.restored or {}
    slack = float(r.get("slack", SCALE_SLACK))
    near = [(abs(scale / b["scale"] - 1), key) for key, b in (r.get("bands") or {}).items()
            if abs(scale / b["scale"] - 1) <= slack]
    return min(near)[1] if near else None


def plan(cond: dict[str, Any], meta: FingerprintMeta) -> dict[str, Any] | None:
    """The restoration of a suspect in condition ``cond`` by a fingerprint with ``meta``, or None (not restored):
    {"from": its scale, "to": 1.0, "to_short_side", "method", "band"}."""
    cal = meta.conformal if isinstance(meta.conformal, Conformal) else None
    ref = reference_side(meta) if cal is not None and cal.restored else None
    side = cond.get("short_side")
    if not (ref and side):
        return None
    scale = round(side / ref, 4)
    if abs(scale - 1) <= SCALE_SLACK:
        return None
    band = band_of(cal, scale)
    if band is None:
        return None
    return {"from": scale, "to": 1.0, "to_short_side": ref, "method": cal.restored["method"], "band": band}


def band_sets(cond: dict[str, Any], cal: Conformal, band: str) -> tuple[list[str], list[str]]:
    """The restored sets of ``band`` a suspect in condition ``cond`` may belong to, and warnings: a lossless
    suspect → the band's lossless set; a JPEG one → the sets within :data:`.condition.QUALITY_SLACK` of its
    quality estimate, else the nearest calibrated qualities on each side (with a warning); unknown encoding →
    every set of the band."""
    quals = _band_qualities(cal.restored["bands"][band]["sets"])
    q = cond.get("jpeg_quality")
    if cond.get("lossless"):
        picked, warnings = _lossless_band_sets(quals, band)
    elif q is None:
        picked, warnings = list(quals), []
    else:
        picked = [enc for enc, qr in quals.items() if qr is not None and abs(q - qr[0]) <= QUALITY_SLACK]
        picked, warnings = (picked, []) if picked else _bracketing(q, quals)
    return [set_id(band, e) for e in picked], warnings


def _band_qualities(sets: dict[str, Any]) -> dict[str, tuple[int, int] | None]:
    """Each set's final JPEG quality as a (q, q) range, None for the lossless one."""
    return {enc: None if enc == "none" else (Recompression.parse(enc).quality,) * 2 for enc in sets}


def _lossless_band_sets(quals: dict[str, tuple[int, int] | None], band: str) -> tuple[list[str], list[str]]:
    """A lossless suspect's sets in a band: the lossless one, or every set with a warning when it has none."""
    picked = [enc for enc, qr in quals.items() if qr is None]
    if picked:
        return picked, []
    return list(quals), [f"lossless, but the restored scale band {band} was calibrated on JPEG copies only: the "
                         f"stated false-positive rate is not guaranteed here"]


def check(cond: dict[str, Any], meta: Any, crop: int) -> dict[str, Any]:
    """:func:`.condition.check` with scale restoration: where :func:`plan` restores the suspect, the scale
    warning is replaced by ``scale_restored`` (what was done), the calibration sets (and their warnings) by the
    band's (:func:`band_sets`), and a short side under the crop no longer warns (the restored image is at the
    training size); otherwise exactly :func:`.condition.check` (``scale_restored`` None)."""
    m = meta if isinstance(meta, FingerprintMeta) else FingerprintMeta.from_obj(meta)
    ch = condition.check(cond, m, crop)
    done = plan(cond, m)
    ch["scale_restored"] = done
    if done is None:
        return ch
    side = cond.get("short_side")
    replaced = (condition._scale(side, m.conditions or {})[1] + condition.calibration_sets(cond, m.conformal)[1]
                + (condition.crop_warning(side, crop) if done["to_short_side"] >= crop else []))
    kept = [w for w in ch["warnings"] if w not in replaced]
    sets, band_warnings = band_sets(cond, m.conformal, done["band"])
    ch["warnings"] = kept + band_warnings
    ch["calibration_sets"] = sets
    ch["within"] = not ch["warnings"]
    return ch
