"""Artifact features (issue 11 round 11): what tells image-to-image networks apart from each other and from benign
edits, computed on the **tone-corrected** suspect (:func:`fingerprint_cli.anchored.pixel.tone_curve`) against its
reference, so a global tone or colour edit moves none of them.

Notation: ``r`` the reference, ``s`` the curve-corrected suspect (float RGB in [0, 1], same shape), ``Y`` luma,
``d = Y(s) − Y(r)``, ``hp(x) = x − G_1(x)`` (Gaussian σ = 1 px, reflected borders), ``bp_k`` the octave-k band-pass
(``bp_0 = hp``, ``bp_1 = G_1 − G_2``).

* ``af_period_k`` (k = 2, 3, 4) — **periodic resampling traces** of a ×k round trip (interpolated pixels are
  smoother than kept ones, so the magnitude of a linear predictor's residual varies with period k — Popescu &
  Farid's observation): ``|∂Y|`` and ``|∂²Y|`` along each axis are averaged into profiles; the *lattice peak* is log10 of the
  profile's power at 1/k cycles/px over the median power at the neighbouring offsets ``1/k ± m/N`` (m = 2…5,
  :func:`lattice_peak`; powers scaled by each profile's squared mean, then pooled over the four profiles); ``af_period_k`` is the suspect's lattice peak minus the
  reference's (content periodicities cancel). ≈ 0 when the suspect has no more period-k structure than the
  reference.
* ``af_halluc_k`` (k = 0, 1) — **hallucinated detail**: the octave-k band-pass of the suspect regressed on the
  reference's (least squares, one gain); log10(1e-6 + unexplained energy / reference band energy). New texture a
  network invents (or added noise) is unexplained; a sharpening or a blur of the reference's own detail is
  explained by the gain.
* ``af_edge_flat`` — **edge-vs-flat behaviour**: log10 high-pass energy gain suspect / reference on the strongest
  20% gradient pixels of the reference minus the same on its flattest 50% (Sobel magnitude of ``Y(r)``). > 0 when
  flats are smoothed more than edges (edge-preserving denoisers), < 0 when flats gain texture.
* ``af_sparsity`` — **shape of the change**: log10(kurtosis / 3) of ``hp(d)`` (Pearson kurtosis; 0 for a
  Gaussian change, > 0 when it is concentrated on few pixels — edges, impulses); 0 when there is no change.
* ``af_chroma_coupling`` — **luma–chroma coupling**: Pearson correlation over pixels of ``|hp(d_Y)|`` and
  ``sqrt(hp(d_Cb)² + hp(d_Cr)²)``; high when the change lands on luma and chroma together (per-RGB-channel
  networks), low when one of them changes alone (chroma subsampling, luma-only edits); 0 without a change.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fingerprint_cli import images
from fingerprint_cli.anchored import features, metrics

FEATURES: dict[str, tuple[str, str]] = features.table("artifact")  # (direction, description): the registry
NAMES = tuple(FEATURES)
PERIODS = (2, 3, 4)
NEIGHBOURS = (2, 3, 4, 5)  # offsets m (in 1/N steps) of the neighbourhood of a lattice frequency
EPS = 1e-12


_hp = metrics.highpass


def _band(y: np.ndarray, k: int) -> np.ndarray:
    """The octave-k band-pass: ``hp`` for k = 0, ``G_1 − G_2`` for k = 1."""
    if k == 0:
        return _hp(y)
    return ndimage.gaussian_filter(y, 1.0, mode="reflect") - ndimage.gaussian_filter(y, 2.0, mode="reflect")


def _power_at(profile: np.ndarray, f: float) -> float:
    """|Σ_x p(x) e^{−2πi f x}|² of the mean-removed profile (a DFT at any frequency f, cycles/px)."""
    p = profile - profile.mean()
    x = np.arange(len(p))
    return float(np.abs(np.sum(p * np.exp(-2j * np.pi * f * x))) ** 2)


def lattice_powers(profile: np.ndarray, k: int) -> tuple[float, float]:
    """(power at 1/k cycles/px, median power at ``1/k ± m/N`` for m in :data:`NEIGHBOURS`, frequencies kept inside
    (0, 0.5]) of a profile, both divided by the profile's squared mean (so profiles of different scale add)."""
    n = len(profile)
    f0 = 1.0 / k
    near = [f0 + s * m / n for m in NEIGHBOURS for s in (-1, 1)]
    near = [f for f in near if 0.0 < f <= 0.5]
    scale = float(np.mean(profile)) ** 2 * n * n + EPS
    return _power_at(profile, f0) / scale, float(np.median([_power_at(profile, f) for f in near])) / scale


def lattice_peak(profiles, k: int) -> float:
    """log10 of the summed lattice powers over the summed neighbourhood powers of ``profiles`` (one 1-d array or
    several); 0 when they carry no power."""
    profiles = [profiles] if isinstance(profiles, np.ndarray) else profiles
    peak, base = (sum(v) for v in zip(*(lattice_powers(p, k) for p in profiles)))
    if peak < EPS and base < EPS:
        return 0.0
    return float(np.log10((peak + EPS) / (base + EPS)))


def _axis_peaks(y: np.ndarray, k: int) -> float:
    """The lattice peak of the profiles of ``|∂y|`` and ``|∂²y|`` along x (over columns) and along y (over rows),
    pooled (first differences carry a replicated-pixel round trip's period, second ones an interpolated one's)."""
    return lattice_peak([np.abs(np.diff(y, order, axis=axis)).mean(1 - axis) for order in (1, 2) for axis in (1, 0)],
                        k)


def periodicity(yr: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    """``af_period_k``: the suspect's lattice peaks of its second-difference magnitude minus the reference's."""
    return {f"af_period_{k}": _axis_peaks(ys, k) - _axis_peaks(yr, k) for k in PERIODS}


def hallucination(yr: np.ndarray, ys: np.ndarray, k: int) -> float:
    """``af_halluc_k``: log10(1e-6 + ‖b_s − a b_r‖² / ‖b_r‖²), ``a`` the least-squares gain of b_s on b_r."""
    br, bs = _band(yr, k).ravel(), _band(ys, k).ravel()
    er = float(br @ br)
    if er < EPS:
        return float(np.log10(1e-6 + float(bs @ bs) / EPS)) if float(bs @ bs) > EPS else -6.0
    a = float(bs @ br) / er
    res = bs - a * br
    return float(np.log10(1e-6 + float(res @ res) / er))


def edge_flat(yr: np.ndarray, ys: np.ndarray) -> float:
    """``af_edge_flat``: high-pass gain on the reference's top-20% gradient pixels minus that on its bottom 50%."""
    g = np.hypot(ndimage.sobel(yr, 0, mode="reflect"), ndimage.sobel(yr, 1, mode="reflect"))
    edge = g >= np.quantile(g, 0.8)
    flat = g <= np.quantile(g, 0.5)
    hr, hs = _hp(yr) ** 2, _hp(ys) ** 2

    def gain(m):
        return float(np.log10((hs[m].sum() + 1e-9) / (hr[m].sum() + 1e-9)))

    if not edge.any() or not flat.any() or edge.all():
        return 0.0
    return gain(edge) - gain(flat)


def sparsity(d: np.ndarray) -> float:
    """``af_sparsity``: log10(kurtosis / 3) of ``hp(d)``; 0 when it carries no energy."""
    h = _hp(d).ravel()
    h = h - h.mean()
    m2 = float(np.mean(h * h))
    if m2 < 1e-14:
        return 0.0
    return float(np.log10(float(np.mean(h ** 4)) / (m2 * m2) / 3.0))


def _chroma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = images.luma(x, np.float64)
    return x[..., 2] - y, x[..., 0] - y


def chroma_coupling(r: np.ndarray, s: np.ndarray) -> float:
    """``af_chroma_coupling``: corr(|hp(d_Y)|, |hp(d_C)|) over pixels; 0 when either carries no change."""
    dy = np.abs(_hp(images.luma(s, np.float64) - images.luma(r, np.float64))).ravel()
    (cbr, crr), (cbs, crs) = _chroma(r), _chroma(s)
    dc = np.hypot(_hp(cbs - cbr), _hp(crs - crr)).ravel()
    a, b = dy - dy.mean(), dc - dc.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 1e-14 else 0.0


def compute(reference: np.ndarray, corrected: np.ndarray, names=None) -> dict[str, float]:
    """The artifact features of a reference and its (already tone-corrected) suspect, same-shaped RGB in [0, 1].

    ``names`` (optional): compute only the groups these feature names need — the periodicity group
    (``af_period_*``) and each of the others — so an artifact that uses three of the eight features does not pay for
    the rest; the values computed are the same either way."""
    want = None if names is None else set(names)

    def needs(*group: str) -> bool:
        return want is None or bool(want.intersection(group))

    r, s, yr, ys = metrics.pair_luma(reference, corrected)
    out: dict[str, float] = periodicity(yr, ys) if needs("af_period_2", "af_period_3", "af_period_4") else {}
    out.update({f"af_halluc_{k}": hallucination(yr, ys, k) for k in (0, 1) if needs(f"af_halluc_{k}")})
    if needs("af_edge_flat"):
        out["af_edge_flat"] = edge_flat(yr, ys)
    if needs("af_sparsity"):
        out["af_sparsity"] = sparsity(ys - yr)
    if needs("af_chroma_coupling"):
        out["af_chroma_coupling"] = chroma_coupling(r, s)
    return out
