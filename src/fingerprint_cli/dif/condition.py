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

from statistics import median
from typing import Any, Iterable

import numpy as np

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
    from fingerprint_cli import images
    from fingerprint_cli.errors import InputError

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


def check(cond: dict[str, Any], meta: dict[str, Any], crop: int) -> dict[str, Any]:
    """Compare one suspect's condition with a fingerprint's: {"scale", "within", "warnings"}.

    ``within`` is None when the fingerprint records no training conditions (fingerprints from fpx ≤ 0.1)."""
    warnings: list[str] = []
    tc = meta.get("conditions")
    scale = None
    side = cond.get("short_side")
    if side and side < crop:
        warnings.append(f"{side} px short side, smaller than the {crop}-px crop: only the centre of the "
                        f"fingerprint is used")
    if not tc:
        return {"scale": None, "within": None, "warnings": warnings}
    ref = tc.get("reference_short_side")
    if ref and side:
        scale = round(side / ref, 4)
        lo, hi = tc.get("scale") or [1.0, 1.0]
        if scale < lo * (1 - SCALE_SLACK) or scale > hi * (1 + SCALE_SLACK):
            warnings.append(f"scale {scale:.3g} relative to the generated training images ({ref} px), outside "
                            f"the trained {_range(lo, hi)} (detection at this scale is unmeasured)")
    q = cond.get("jpeg_quality")
    tq = tc.get("jpeg_quality")
    if cond.get("lossless"):
        if not tc.get("lossless", True):
            warnings.append("lossless, but the generated training images were all JPEG (detection of lossless "
                            "copies is unmeasured)")
    elif q is not None:
        if tq is None:
            warnings.append(f"JPEG q≈{q}, but the generated training images were all lossless (detection of "
                            f"recompressed copies is unmeasured)")
        elif q < tq[0] - QUALITY_SLACK or q > tq[1] + QUALITY_SLACK:
            warnings.append(f"JPEG q≈{q}, outside the trained JPEG quality {_range(*tq)} (detection at this "
                            f"quality is unmeasured)")
    cal = meta.get("conformal") or {}
    cc = cal.get("conditions")
    if cc:
        cq = cc.get("jpeg_quality")
        if cond.get("lossless") and not cc.get("lossless"):
            warnings.append("lossless, but the false-positive rate was calibrated on JPEG photos only")
        elif not cond.get("lossless") and q is not None:
            if cq is None:
                warnings.append(f"JPEG q≈{q}, but the false-positive rate was calibrated on lossless images only")
            elif q < cq[0] - QUALITY_SLACK or q > cq[1] + QUALITY_SLACK:
                warnings.append(f"JPEG q≈{q}, outside the JPEG quality {_range(*cq)} the false-positive rate "
                                f"was calibrated on")
    return {"scale": scale, "within": not warnings, "warnings": warnings}


def _range(lo, hi) -> str:
    return f"value {lo:g}" if lo == hi else f"range {lo:g}–{hi:g}"
