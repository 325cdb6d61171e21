"""The condition of an image as detection sees it: JPEG quality and scale, against what a fingerprint knows.

A fingerprint's correlations only mean what its calibration says for images like those it was trained and
calibrated on. fpx therefore records, per suspect, its **JPEG quality estimate** and its **scale relative to
the fingerprint's training images**, and compares them with the conditions stored in the fingerprint
(``meta["conditions"]`` from fitting, ``meta["conformal"]["conditions"]`` from calibration). Nothing is
adjusted: a suspect outside those conditions gets warnings (stderr and the record), never a silently changed
decision.

JPEG quality: the file's quantisation tables (Pillow's ``quantization``, read from the header by
:func:`fingerprint_cli.images.header`) are compared with the IJG standard tables (ITU-T T.81 Annex K, K.1
and K.2) scaled as libjpeg's ``jpeg_quality_scaling`` does (q < 50: 5000/q %, else 200 − 2q %; entries
rounded, clamped to [1, 255]); the estimate is the quality whose tables are nearest (mean absolute
difference over the 64 luminance and, when present, 64 chrominance entries). ``exact`` says the tables are
the IJG ones at that quality (Pillow, libjpeg, most software); cameras and some services use their own
tables, then the estimate is the nearest IJG quality and ``table_error`` says how near.

Scale: the suspect's short side over the median short side of the fingerprint's generated training images.
A generator that renders at one size (LDM 256², DALL-E 3 crops 512²) gives 1.0 for its own unresized images;
a 0.9 resize gives 0.9. It is a size ratio, not a proof of resampling: a crop of a larger render has scale > 1
without having been resampled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import median
from typing import Any, Iterable

import numpy as np

from fingerprint_cli import images
from fingerprint_cli.dif.augment import Augmentation
from fingerprint_cli.dif.meta import Conformal, FingerprintMeta
from fingerprint_cli.errors import InputError, UsageError

# ITU-T T.81 Annex K.1 / K.2, natural (row-major) order
IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
IJG_CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.int64)

SCALE_SLACK = 0.03       # a suspect within 3 % of the trained scale range is inside it
QUALITY_SLACK = 2        # and within 2 quality steps of the trained / calibrated JPEG range


@dataclass(frozen=True)
class Recompression(Augmentation):
    """A condition a real photo may reach an analyst in, as a whole-image operation: resized by ``scale``
    (1 = not; bicubic, antialiased when shrinking, :func:`images.resize`, then rounded to 8 bits as a lossless
    save would), then re-encoded as JPEG at ``quality`` (None = not; Pillow, 4:2:0). Detection then takes its
    centre crop as from any suspect — unlike an :class:`~.augment.Augmentation`, which works on the crop's
    window. ``id``: ``"none"``, ``"jpeg75"``, ``"resize0.9"``, ``"resize0.9+jpeg75"`` (:meth:`parse` reads it
    back); it also keys the residual cache."""

    SCALE_ID, QUALITY_ID, JOIN = "resize{:g}", "jpeg{}", "+"

    @property
    def lossless(self) -> bool:
        """The copy ends lossless (no JPEG re-encode): as distributed or resized and saved as PNG."""
        return self.quality is None

    @classmethod
    def parse(cls, text: str) -> "Recompression":
        """``none`` | ``jpegQ`` | ``resizeS`` | ``resizeS+jpegQ`` (Q in 1..100, S in (0, 4]); UsageError else."""
        t = str(text).strip().lower()
        m = _RECOMPRESSION.fullmatch(t)
        if t == "none":
            return cls()
        size, plus, q = m.groups() if m else (None, None, None)
        scale = float(size) if size else 1.0
        quality = int(q) if q else None
        well_formed = bool(m) and bool(size or q) and bool(plus) == bool(size and q)
        if not well_formed or not 0 < scale <= 4 or (quality is not None and not 1 <= quality <= 100):
            raise UsageError(f"unknown condition {text!r} (use none, jpegQ, resizeS or resizeS+jpegQ, e.g. "
                             f"jpeg75, resize0.9, resize0.9+jpeg75)")
        return cls(scale, quality)

    def encode(self, pixels: np.ndarray) -> tuple[bytes, str]:
        """The file an analyst would receive: (bytes, suffix) — JPEG for a re-encode, else PNG (8 bits)."""
        px = np.asarray(pixels, dtype=np.float32)
        if abs(self.scale - 1.0) > 1e-9:
            h, w = px.shape[:2]
            nh, nw = max(1, int(round(h * self.scale))), max(1, int(round(w * self.scale)))
            px = np.clip(images.resize(px, nh, nw), 0.0, 1.0)
        if self.quality is not None:
            return images.encode(px, "JPEG", quality=int(self.quality)), ".jpg"
        return images.encode(px, "PNG"), ".png"

    def apply(self, pixels: np.ndarray, path: str = "") -> np.ndarray:
        """The whole image after this condition, decoded as from :meth:`encode`'s file: float32 (H', W', 3)."""
        if self.id == "none":
            return np.ascontiguousarray(pixels, dtype=np.float32)
        return images.decode(self.encode(pixels)[0], path or "<copy>").pixels


_RECOMPRESSION = re.compile(r"(?:resize(\d+(?:\.\d+)?))?(\+)?(?:jpeg(\d{1,3}))?")

#: What `fpx dif-calibrate` calibrates on by default besides the images as distributed (docs/dif.md)
DEFAULT_RECOMPRESSIONS = ("none", "jpeg90", "jpeg75", "jpeg50", "resize0.9")


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """The IJG table ``base`` scaled to ``quality`` (1–100) exactly as libjpeg does with force_baseline."""
    q = int(min(max(quality, 1), 100))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((base * scale + 50) // 100, 1, 255)


_TABLES = {q: (ijg_table(IJG_LUMINANCE, q), ijg_table(IJG_CHROMINANCE, q)) for q in range(1, 101)}


def estimate_quality(tables: dict[int, Iterable[int]] | None) -> dict[str, Any] | None:
    """Nearest IJG quality of JPEG quantisation ``tables`` ({0: luminance, 1: chrominance, ...}, natural order).

    Returns {"quality", "table_error" (mean |difference| per entry), "exact"} or None without tables. Ties
    (high qualities share tables) resolve to the highest quality."""
    if not tables or 0 not in tables:
        return None
    lum = np.asarray(list(tables[0]), dtype=np.int64)
    chrom = np.asarray(list(tables[1]), dtype=np.int64) if 1 in tables else None
    if lum.size != 64 or (chrom is not None and chrom.size != 64):
        return None
    best_q, best_e = None, None
    for q in range(100, 0, -1):
        tl, tc = _TABLES[q]
        e = float(np.abs(lum - tl).sum())
        n = 64
        if chrom is not None:
            e += float(np.abs(chrom - tc).sum())
            n += 64
        e /= n
        if best_e is None or e < best_e:
            best_q, best_e = q, e
    return {"quality": int(best_q), "table_error": round(float(best_e), 3), "exact": best_e == 0.0}


def describe(info: dict[str, Any]) -> dict[str, Any]:
    """The condition of one image from its :func:`fingerprint_cli.images.header` header facts."""
    q = estimate_quality(info.get("quantization"))
    return {"format": info.get("format"), "width": info.get("width"), "height": info.get("height"),
            "short_side": min(info.get("width") or 0, info.get("height") or 0) or None,
            "lossless": info.get("format") != "JPEG",
            "jpeg_quality": q["quality"] if q else None,
            "jpeg_table_error": q["table_error"] if q else None,
            "jpeg_tables": None if q is None else ("IJG" if q["exact"] else "non-IJG (nearest IJG quality)")}


def probe_many(paths: Iterable[str]) -> list[dict[str, Any]]:
    """:func:`describe` of each readable path (unreadable ones are left out: the residual step reports them)."""
    out = []
    for p in paths:
        try:
            out.append(describe(images.header(p)))
        except InputError:
            continue
    return out


def summarise(conds: list[dict[str, Any]]) -> dict[str, Any]:
    """What a set of images covers: count, lossless / JPEG counts, JPEG quality range, short-side range."""
    qs = [c["jpeg_quality"] for c in conds if c.get("jpeg_quality") is not None]
    sides = [c["short_side"] for c in conds if c.get("short_side")]
    return {"n": len(conds), "lossless": sum(1 for c in conds if c.get("lossless")),
            "jpeg": sum(1 for c in conds if not c.get("lossless")),
            "jpeg_quality": [min(qs), max(qs)] if qs else None,
            "short_side": [min(sides), int(median(sides)), max(sides)] if sides else None}


def training_conditions(generated: list[dict[str, Any]], real: list[dict[str, Any]],
                        augment: dict[str, Any] | None = None) -> dict[str, Any]:
    """``meta["conditions"]`` of a fit: what each training class covered and the suspect conditions it implies.

    ``scale`` is the range of generated training short sides relative to their median (so [1, 1] for a
    generator with one output size); ``jpeg_quality`` the range of JPEG qualities among the generated
    training images (None: none was JPEG); ``lossless`` whether any was lossless. A training profile that
    augments (random JPEG, rescaling) passes ``augment`` = {"jpeg_quality": [lo, hi], "scale": [lo, hi],
    "lossless": bool}, which widens those ranges."""
    g, r = summarise(generated), summarise(real)
    ref = g["short_side"][1] if g["short_side"] else None
    scale = [round(g["short_side"][0] / ref, 4), round(g["short_side"][2] / ref, 4)] if ref else None
    quality = g["jpeg_quality"]
    lossless = g["lossless"] > 0
    if augment:
        if augment.get("scale") and scale:
            scale = [min(scale[0], float(augment["scale"][0])), max(scale[1], float(augment["scale"][1]))]
        if augment.get("jpeg_quality"):
            lo, hi = (int(x) for x in augment["jpeg_quality"])
            quality = [min(lo, quality[0]), max(hi, quality[1])] if quality else [lo, hi]
        lossless = lossless or bool(augment.get("lossless", True))
    return {"generated": g, "real": r, "reference_short_side": ref, "scale": scale, "jpeg_quality": quality,
            "lossless": lossless, "augment": augment or None}


def check(cond: dict[str, Any], meta: Any, crop: int) -> dict[str, Any]:
    """Compare one suspect's condition with a fingerprint's (``meta``: its :class:`~.fingerprint.FingerprintMeta`
    or the metadata dict): {"scale", "within", "warnings", "calibration_sets"}.

    ``within`` is None when the fingerprint records no training conditions (fingerprints from fpx ≤ 0.1).
    ``calibration_sets``: the calibration sets the suspect's p-value is taken over (:func:`calibration_sets`;
    None when the fingerprint is not calibrated)."""
    m = meta if isinstance(meta, FingerprintMeta) else FingerprintMeta.from_obj(meta)
    side = cond.get("short_side")
    warnings = crop_warning(side, crop)
    cal = m.conformal if isinstance(m.conformal, Conformal) else None
    sets, cal_warnings = calibration_sets(cond, cal) if cal is not None else (None, [])
    tc = m.conditions
    if not tc:
        return {"scale": None, "within": None, "warnings": warnings, "calibration_sets": sets}
    scale, scale_warning = _scale(side, tc)
    warnings += scale_warning + _training_jpeg_warnings(cond, tc) + cal_warnings
    return {"scale": scale, "within": not warnings, "warnings": warnings, "calibration_sets": sets}


def crop_warning(side: int | None, crop: int) -> list[str]:
    """The warning of a suspect whose short side is under the crop (only the fingerprint's centre is used)."""
    if side and side < crop:
        return [f"{side} px short side, smaller than the {crop}-px crop: only the centre of the fingerprint is used"]
    return []


def _scale(side: int | None, tc: dict[str, Any]) -> tuple[float | None, list[str]]:
    """The suspect's scale relative to the generated training images, and a warning when it is outside the
    trained range."""
    ref = tc.get("reference_short_side")
    if not (ref and side):
        return None, []
    scale = round(side / ref, 4)
    lo, hi = tc.get("scale") or [1.0, 1.0]
    if scale < lo * (1 - SCALE_SLACK) or scale > hi * (1 + SCALE_SLACK):
        return scale, [f"scale {scale:.3g} relative to the generated training images ({ref} px), outside the "
                       f"trained {_range(lo, hi)} (detection at this scale is unmeasured)"]
    return scale, []


def _training_jpeg_warnings(cond: dict[str, Any], tc: dict[str, Any]) -> list[str]:
    """The suspect's encoding against the generated training images' (detection power is measured only there)."""
    q, tq = cond.get("jpeg_quality"), tc.get("jpeg_quality")
    if cond.get("lossless"):
        if not tc.get("lossless", True):
            return ["lossless, but the generated training images were all JPEG (detection of lossless copies "
                    "is unmeasured)"]
    elif q is not None:
        if tq is None:
            return [f"JPEG q≈{q}, but the generated training images were all lossless (detection of "
                    f"recompressed copies is unmeasured)"]
        if q < tq[0] - QUALITY_SLACK or q > tq[1] + QUALITY_SLACK:
            return [f"JPEG q≈{q}, outside the trained JPEG quality {_range(*tq)} (detection at this quality is "
                    f"unmeasured)"]
    return []


#: the smallest side (px) of a detection window: an image under it cannot be correlated with a fingerprint
MIN_WINDOW = 16


# ------------------------------------------------------------------ which calibration set a suspect belongs to
AS_DISTRIBUTED = "as distributed"
LOSSLESS_SET = "lossless"  # the lossless real photos calibrated as their own set (``conformal["lossless"]``)


def _jpeg_qualities(cal: Conformal) -> dict[str, tuple[int, int] | None]:
    """Each calibration set's final JPEG quality range (None: it ends lossless)."""
    q = (cal.conditions or {}).get("jpeg_quality")
    out = {AS_DISTRIBUTED: (int(q[0]), int(q[1])) if q else None}
    for cid in cal.recompressions or {}:
        r = Recompression.parse(cid)
        out[cid] = None if r.quality is None else (int(r.quality), int(r.quality))
    if cal.lossless:
        out[LOSSLESS_SET] = None
    return out


def calibration_sets(cond: dict[str, Any], cal: Conformal) -> tuple[list[str], list[str]]:
    """The calibration sets a suspect in condition ``cond`` may belong to, and warnings.

    A fingerprint calibrated as distributed only has one set (and the warnings say when the suspect's
    encoding differs from the calibration images'). With recompression sets: a JPEG suspect keeps the sets
    whose final JPEG quality is within :data:`QUALITY_SLACK` of its estimate (when none is, the nearest
    calibrated quality on each side, with a warning that the stated rate is not guaranteed there); a lossless
    suspect keeps the sets that end lossless (resized copies saved as PNG) and the images as distributed — a
    decoded JPEG saved losslessly is not told apart from its header and is not covered (measured in
    docs/benchmarks.md) — with a warning when the calibration images were all JPEG (no lossless photo was
    calibrated on); a suspect whose encoding is unknown keeps every set. The suspect's p-value is the
    largest over the kept sets, so its false-positive rate is at most the stated one whenever its true
    condition is one of them. A calibration with a lossless real set (``conformal["lossless"]``) adds it to a
    lossless suspect's sets, and the lossless warning is not given."""
    if not cal.recompressions and not cal.lossless:
        return [AS_DISTRIBUTED], _as_distributed_warnings(cond, cal)
    quals = _jpeg_qualities(cal)
    q = cond.get("jpeg_quality")
    if cond.get("lossless"):
        return [cid for cid, qr in quals.items() if qr is None or cid == AS_DISTRIBUTED], _lossless_warnings(cal)
    if not cond or q is None:
        return list(quals), []
    near = [cid for cid, qr in quals.items() if qr is not None and qr[0] - QUALITY_SLACK <= q <= qr[1] + QUALITY_SLACK]
    return (near, []) if near else _bracketing(q, quals)


def _lossless_warnings(cal: Conformal) -> list[str]:
    """A lossless suspect against a calibration whose images were all JPEG as distributed: its lossless sets are
    resized copies only, so the stated rate is not measured on unresampled lossless photos (issue 15 round 5:
    the shipped LDM fingerprint called 39 of 144 lossless Kodak24 tiles generated at a stated 0.01)."""
    cc = cal.conditions
    if cal.lossless or not cc or cc.get("lossless") or not cc.get("jpeg"):
        return []
    return ["lossless, but the false-positive rate was calibrated on JPEG photos and resized copies of them only: "
            "the stated rate is not measured on lossless photos (docs/benchmarks.md, issue 15 round 5)"]


def _bracketing(q: int, quals: dict[str, tuple[int, int] | None]) -> tuple[list[str], list[str]]:
    """For a JPEG quality no calibration set has: the nearest calibrated JPEG set below and above it."""
    below = [(qr[1], cid) for cid, qr in quals.items() if qr is not None and qr[1] < q]
    above = [(qr[0], cid) for cid, qr in quals.items() if qr is not None and qr[0] > q]
    picked = ([max(below)[1]] if below else []) + ([min(above)[1]] if above else [])
    if not picked:  # no JPEG set at all: any set could be it
        return list(quals), [f"JPEG q≈{q}, but the false-positive rate was calibrated on lossless copies only"]
    return picked, [f"JPEG q≈{q} is not among the calibrated JPEG qualities: the larger p-value of "
                    f"{' and '.join(picked)} is used, the stated false-positive rate is not guaranteed here"]


def _as_distributed_warnings(cond: dict[str, Any], cal: Conformal) -> list[str]:
    """A suspect's encoding against the calibration images' as distributed (old, single-set calibration)."""
    cc = cal.conditions
    if not cc:
        return []
    q, cq = cond.get("jpeg_quality"), cc.get("jpeg_quality")
    if cond.get("lossless") and not cc.get("lossless"):
        return ["lossless, but the false-positive rate was calibrated on JPEG photos only"]
    if not cond.get("lossless") and q is not None:
        if cq is None:
            return [f"JPEG q≈{q}, but the false-positive rate was calibrated on lossless images only"]
        if q < cq[0] - QUALITY_SLACK or q > cq[1] + QUALITY_SLACK:
            return [f"JPEG q≈{q}, outside the JPEG quality {_range(*cq)} the false-positive rate was calibrated "
                    f"on"]
    return []


def _range(lo, hi) -> str:
    return f"value {lo:g}" if lo == hi else f"range {lo:g}–{hi:g}"
