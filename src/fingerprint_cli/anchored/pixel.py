"""Further reference-anchored pixel features (no model weights needed), for ``fpx attribute`` / ``calibrate``.

Input: the reference ``r`` and the suspect aligned to its grid ``s``, float RGB in [0, 1], shape (H, W, 3).
All features are computed on luma ``Y = 0.299 R + 0.587 G + 0.114 B`` unless stated. ``hp(x)`` is the
high-pass residual ``x - G_σ=1(x)`` (Gaussian, σ = 1 px); ``d = s - r``.

* ``hf_ratio`` — log10 of the high-pass energy ratio ``Σ hp(s)² / Σ hp(r)²``; < 0 when the system
  smooths (denoisers, super-resolution round trips), > 0 when it adds noise or sharpens.
* ``hp_corr`` — Pearson correlation of ``hp(d)`` with ``hp(r)``: ≈ −1 when the system removes the
  reference's own fine detail, ≈ 0 when the change is unrelated to it (regeneration, added noise).
* ``lowfreq_share`` — share of the energy of ``d`` that survives a Gaussian low-pass (σ = 2 px):
  near 1 for colour/tone shifts and smooth regeneration, near 0 for fine-grain changes.
* ``log_colour_shift`` — log10(1e-5 + mean over channels of ``|mean(s_c) - mean(r_c)|``) (global colour/tone
  drift, on a log scale because it spans decades between benign coding and regeneration).
* ``chroma_hf_ratio`` — as ``hf_ratio`` on the chroma planes (B − Y, R − Y): JPEG 4:2:0 and many networks
  smooth chroma more than luma;
* ``gain_k`` / ``coh_k`` (k = 0..3) — the system's transfer per radial frequency octave, see :func:`spectral`;
* ``grid8`` — JPEG-grid energy: mean ``|∂x d|`` and ``|∂y d|`` across 8-pixel block boundaries divided by
  the mean across all other columns/rows (≈ 1 when the change has no 8×8 block structure; JPEG coding moves
  it away from 1, upwards at strong compression).

**Tone-corrected features (v2, issue 11).** A global monotone tone or colour edit (levels, gamma, a contrast
curve, white balance) changes every pixel but no structure; the features above read it as a large change. The
``tc_*`` features are the ones above computed on the *curve-corrected* suspect: for each RGB channel c a
monotone non-decreasing curve ``f_c`` from reference to suspect is fitted (scikit-learn ``IsotonicRegression``
on the per-bin means of a 64-bin histogram of the reference channel, weighted by bin counts), and the suspect
is mapped back through its inverse, ``s'_c = f_c⁻¹(s_c)`` (linear interpolation; a global tone/colour edit is
then undone exactly up to quantisation). The fitted curve is kept as features of its own (``curve_*``, see
:func:`tone_curve`). ``tc_ssim`` / ``tc_psnr`` are SSIM / PSNR (:mod:`fingerprint_cli.anchored.metrics`) of the
corrected suspect.

The same features computed on any pair are descriptive forensic measurements, not the published system's features; they let thresholds
be calibrated where the DINOv2 weights are unavailable.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import ndimage

from fingerprint_cli import images
from fingerprint_cli.anchored import artifact_features, features, metrics

FEATURES: dict[str, tuple[str, str]] = features.table("anchored")  # (direction, description): the registry
NAMES = tuple(FEATURES)  # the v1 group (``compute``)

CURVE_FEATURES: dict[str, tuple[str, str]] = features.table("tone_curve")
TC_FEATURES: dict[str, tuple[str, str]] = features.table("tone_corrected")
V2_NAMES = tuple(TC_FEATURES) + tuple(CURVE_FEATURES)  # the v2 group (``compute_v2``)
FEATURES.update(TC_FEATURES)
FEATURES.update(CURVE_FEATURES)
ARTIFACT_NAMES = artifact_features.NAMES  # the round-11 group (``artifact_features.compute``)
FEATURES.update(artifact_features.FEATURES)


_hp = metrics.highpass


def compute(reference: np.ndarray, suspect: np.ndarray) -> dict[str, float]:
    """The features above for two same-shaped float RGB images in [0, 1]."""
    r, s, yr, ys = metrics.pair_luma(reference, suspect)
    hr, hs = _hp(yr), _hp(ys)
    eps = 1e-12
    er, es = float(np.sum(hr * hr)), float(np.sum(hs * hs))
    hf_ratio = float(np.log10((es + eps) / (er + eps)))
    d = ys - yr
    hd = _hp(d)
    a, b = hd.ravel() - hd.mean(), hr.ravel() - hr.mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    hp_corr = float(np.sum(a * b) / den) if den > eps else 0.0
    dc = d - d.mean()
    tot = float(np.sum(dc * dc))
    low = ndimage.gaussian_filter(dc, 2.0, mode="reflect")
    lowfreq_share = float(np.sum(low * low) / tot) if tot > eps else 1.0
    colour_shift = float(np.log10(1e-5 + np.mean(np.abs(s.reshape(-1, 3).mean(0) - r.reshape(-1, 3).mean(0)))))
    gx = np.abs(np.diff(d, axis=1))  # gx[:, j] = d[:, j+1] - d[:, j]
    gy = np.abs(np.diff(d, axis=0))
    grid8 = 1.0
    if gx.shape[1] >= 16 and gy.shape[0] >= 16:
        bx = (np.arange(gx.shape[1]) % 8) == 7
        by = (np.arange(gy.shape[0]) % 8) == 7
        on = gx[:, bx].mean() + gy[by, :].mean()
        off = gx[:, ~bx].mean() + gy[~by, :].mean()
        grid8 = float(on / off) if off > eps else 1.0
    out = {"hf_ratio": hf_ratio, "hp_corr": hp_corr, "lowfreq_share": lowfreq_share,
           "log_colour_shift": colour_shift, "grid8": grid8, "chroma_hf_ratio": chroma_hf_ratio(r, s)}
    out.update(spectral(r, s))
    return out


BANDS = ((0.5, 1.0), (0.25, 0.5), (0.125, 0.25), (0.0625, 0.125))  # radial octaves, fraction of Nyquist


def spectral(reference: np.ndarray, suspect: np.ndarray) -> dict[str, float]:
    """Reference-anchored transfer of the system per radial frequency octave (luma, Hann window).

    ``gain_k = log10(Σ|S|² / Σ|R|²)`` over octave k (k = 0 highest: 0.5–1 × Nyquist, … 3: 1/16–1/8), and
    ``coh_k = Re Σ S·R̄ / sqrt(Σ|S|² Σ|R|²)``: ≈ 1 when the suspect keeps the reference's own content at
    those frequencies, ≈ 0 when it is replaced (regenerated) or buried in new noise.
    """
    yr, ys = images.luma(reference, np.float64), images.luma(suspect, np.float64)
    h, w = yr.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    R = np.fft.fft2((yr - yr.mean()) * win)
    S = np.fft.fft2((ys - ys.mean()) * win)
    fy = np.fft.fftfreq(h)[:, None] * 2
    fx = np.fft.fftfreq(w)[None, :] * 2
    rad = np.sqrt(fx ** 2 + fy ** 2)  # 1.0 = Nyquist along an axis
    out = {}
    for k, (lo, hi) in enumerate(BANDS):
        m = (rad > lo) & (rad <= hi)
        pr = float(np.sum(np.abs(R[m]) ** 2))
        ps = float(np.sum(np.abs(S[m]) ** 2))
        cross = float(np.real(np.sum(S[m] * np.conj(R[m]))))
        out[f"gain_{k}"] = float(np.log10((ps + 1e-12) / (pr + 1e-12)))
        out[f"coh_{k}"] = cross / np.sqrt(ps * pr) if ps > 1e-12 and pr > 1e-12 else 1.0
    return out


def chroma_hf_ratio(reference: np.ndarray, suspect: np.ndarray) -> float:
    """log10 high-pass energy ratio suspect / reference of the chroma (Cb, Cr) planes."""
    def chroma(x):
        x = np.asarray(x, dtype=np.float64)
        y = images.luma(x, np.float64)
        return np.stack([x[..., 2] - y, x[..., 0] - y], 0)

    cr, cs = chroma(reference), chroma(suspect)
    er = sum(float(np.sum(_hp(c) ** 2)) for c in cr)
    es = sum(float(np.sum(_hp(c) ** 2)) for c in cs)
    return float(np.log10((es + 1e-12) / (er + 1e-12)))


BINS = 64


def tone_curve(reference: np.ndarray, suspect: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, dict[str, float]]:
    """Fit a monotone curve per channel from reference to suspect; return the curve-corrected suspect and
    the curve features.

    Per channel: reference values are put in ``bins`` equal bins on [0, 1]; for every non-empty bin the mean
    reference value x_b and mean suspect value y_b are taken, and a non-decreasing ``f`` is fitted to
    (x_b, y_b) with weights = bin counts (``sklearn.isotonic.IsotonicRegression``, clipped to [0, 1]). The
    corrected suspect is ``f⁻¹(s)`` (``np.interp`` on the fitted points, made strictly increasing by a 1e-6
    ramp); below the first and above the last bin mean the curve continues with slope 1 to 0 and 1.

    Curve features: ``curve_shift`` = mean over channels and pixels of ``f_c(r) − r``; ``curve_contrast`` =
    log10 of the mean-curve slope between the reference luma-free 25th and 75th percentiles (pooled over
    channels); ``curve_colour`` = RMS over pixels and channels of ``f_c(r) − mean_c f_c(r)`` minus the same for
    the identity (i.e. of the channels' departures from their common curve); ``curve_rough`` = RMS of the
    second difference of each channel's curve on the 64-bin grid; ``curve_share`` = 1 − Σ(s − f(r))² /
    Σ(s − r)² (1 when the change is exactly a per-channel tone curve, ≤ 0 when the curve explains nothing).
    """
    from sklearn.isotonic import IsotonicRegression

    r = np.asarray(reference, dtype=np.float64)
    s = np.asarray(suspect, dtype=np.float64)
    corrected = np.empty_like(s)
    mapped = np.empty_like(r)  # f_c(r)
    grid = (np.arange(bins) + 0.5) / bins
    on_grid = []
    for c in range(r.shape[-1]):
        rc, sc = r[..., c].ravel(), s[..., c].ravel()
        idx = np.minimum((rc * bins).astype(np.int64), bins - 1)
        n = np.bincount(idx, minlength=bins).astype(np.float64)
        keep = n > 0
        xb = np.bincount(idx, weights=rc, minlength=bins)[keep] / n[keep]
        yb = np.bincount(idx, weights=sc, minlength=bins)[keep] / n[keep]
        if len(xb) < 2:  # a flat channel: nothing to fit
            corrected[..., c] = s[..., c]
            mapped[..., c] = r[..., c] + (yb[0] - xb[0] if len(xb) else 0.0)
            on_grid.append(grid + (yb[0] - xb[0] if len(xb) else 0.0))
            continue
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        fy = iso.fit(xb, yb, sample_weight=n[keep]).predict(xb)
        # beyond the first / last bin mean the curve continues with slope 1 (to 0 and 1)
        if xb[0] > 0.0:
            xb, fy = np.r_[0.0, xb], np.r_[max(0.0, fy[0] - xb[0]), fy]
        if xb[-1] < 1.0:
            xb, fy = np.r_[xb, 1.0], np.r_[fy, min(1.0, fy[-1] + 1.0 - xb[-1])]
        mapped[..., c] = np.interp(r[..., c], xb, fy)
        on_grid.append(np.interp(grid, xb, fy))
        # strictly increasing for the inverse: lift only the runs of equal values (an isotonic fit's flat
        # steps), so a curve that is already strictly increasing (the identity) is inverted exactly
        fy_strict = fy + 1e-6 * np.r_[0, np.cumsum(np.diff(fy) <= 0)]
        corrected[..., c] = np.interp(s[..., c], fy_strict, xb)
    g = np.stack(on_grid)  # (C, bins)
    d_tot = float(np.sum((s - r) ** 2))
    d_res = float(np.sum((s - mapped) ** 2))
    share = 1.0 - d_res / d_tot if d_tot > 1e-12 else 1.0
    mean_map = mapped.mean(-1, keepdims=True)
    colour = float(np.sqrt(np.mean(((mapped - mean_map) - (r - r.mean(-1, keepdims=True))) ** 2)))
    q25, q75 = np.quantile(r, [0.25, 0.75])
    gm = g.mean(0)
    if q75 - q25 > 1e-3:
        slope = (np.interp(q75, grid, gm) - np.interp(q25, grid, gm)) / (q75 - q25)
    else:
        slope = 1.0
    feats = {"curve_shift": float(np.mean(mapped - r)),
             "curve_contrast": float(np.log10(max(slope, 1e-3))),
             "curve_colour": colour,
             "curve_rough": float(np.sqrt(np.mean(np.diff(g, 2, axis=1) ** 2))),
             "curve_share": float(max(share, -1.0))}
    return np.clip(corrected, 0.0, 1.0), feats


def compute_v2(reference: np.ndarray, suspect: np.ndarray, corrected_curve=None) -> dict[str, float]:
    """The v2 group: ``tc_*`` (the change features on the curve-corrected suspect) and ``curve_*``.

    ``corrected_curve`` is :func:`tone_curve`'s result when the caller has it already (it is not refitted)."""
    r = np.asarray(reference, dtype=np.float64)
    corrected, feats = corrected_curve if corrected_curve is not None else tone_curve(r, suspect)
    base = compute(r, corrected)
    out = {"tc_ssim": float(metrics.ssim(r, corrected)), "tc_psnr": float(metrics.psnr(r, corrected))}
    out.update({f"tc_{k}": v for k, v in base.items() if k != "log_colour_shift"})
    out.update(feats)
    return out


def feature_hook(names) -> Callable:
    """A :class:`~fingerprint_cli.anchored.score.Scorer` ``extra_features`` hook computing the groups ``names`` need
    (v1: :func:`compute`, v2: :func:`compute_v2`, the artifact family: :func:`.artifact_features.compute` on the
    curve-corrected suspect, only the artifact groups ``names`` use; the tone curve is fitted once for both)."""
    want = set(names)
    v1, v2, art = bool(want & set(NAMES)), bool(want & set(V2_NAMES)), bool(want & set(ARTIFACT_NAMES))

    def fn(pair, ref, suspect_aligned):
        feats: dict[str, float] = {}
        if v1:
            feats.update(compute(ref.pixels, suspect_aligned))
        fitted = tone_curve(np.asarray(ref.pixels, dtype=np.float64), suspect_aligned) if v2 or art else None
        if v2:
            feats.update(compute_v2(ref.pixels, suspect_aligned, fitted))
        if art:
            feats.update(artifact_features.compute(ref.pixels, fitted[0], want))
        return feats, {k: FEATURES[k][0] for k in feats}, {}

    return fn


def feature_fn(pair, ref, suspect_aligned) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """The :class:`~fingerprint_cli.anchored.score.Scorer` ``extra_features`` hook for these features."""
    feats = compute(ref.pixels, suspect_aligned)
    return feats, {k: FEATURES[k][0] for k in feats}, {}


def difference_map(reference: np.ndarray, suspect: np.ndarray, grid: tuple[int, int] = (16, 16)) -> np.ndarray:
    """Per-block RMS luma difference on a ``grid`` (rows, cols) — the heatmap when no encoder is used."""
    d = images.luma(suspect, np.float64) - images.luma(reference, np.float64)
    h, w = d.shape
    gh, gw = min(grid[0], h), min(grid[1], w)
    ys = np.linspace(0, h, gh + 1).astype(int)
    xs = np.linspace(0, w, gw + 1).astype(int)
    out = np.zeros((gh, gw))
    for i in range(gh):
        for j in range(gw):
            blk = d[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            out[i, j] = float(np.sqrt(np.mean(blk * blk))) if blk.size else 0.0
    return out
