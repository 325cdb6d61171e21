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

The same features computed on any pair are descriptive forensic measurements, not the published system's features; they let thresholds
be calibrated where the DINOv2 weights are unavailable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

FEATURES: dict[str, tuple[str, str]] = {
    "hf_ratio": ("lower = smoother than the reference", "log10 high-pass energy of suspect / reference (luma)"),
    "hp_corr": ("lower = reference detail removed", "corr(high-pass of suspect-reference, high-pass of reference)"),
    "lowfreq_share": ("higher = smoother change", "share of the difference energy below a sigma=2 px low-pass"),
    "log_colour_shift": ("higher = more change", "log10(1e-5 + mean |channel-mean difference|) suspect vs reference"),
    "grid8": ("higher = more 8x8 block edges", "difference gradient on 8-px block boundaries / elsewhere"),
    "chroma_hf_ratio": ("lower = chroma smoothed", "log10 high-pass energy of suspect / reference chroma (Cb, Cr)"),
    **{f"gain_{k}": ("lower = octave attenuated", f"log10 luma power suspect / reference, octave {k}")
       for k in range(4)},
    **{f"coh_{k}": ("lower = reference content replaced", f"coherence of suspect with reference, octave {k}")
       for k in range(4)},
}
NAMES = tuple(FEATURES)


def _luma(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _hp(y: np.ndarray) -> np.ndarray:
    return y - ndimage.gaussian_filter(y, 1.0, mode="reflect")


def compute(reference: np.ndarray, suspect: np.ndarray) -> dict[str, float]:
    """The features above for two same-shaped float RGB images in [0, 1]."""
    r = np.asarray(reference, dtype=np.float64)
    s = np.asarray(suspect, dtype=np.float64)
    if r.shape != s.shape:
        raise ValueError(f"shapes differ: {r.shape} vs {s.shape}")
    yr, ys = _luma(r), _luma(s)
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
    yr, ys = _luma(reference), _luma(suspect)
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
        y = _luma(x)
        return np.stack([x[..., 2] - y, x[..., 0] - y], 0)

    cr, cs = chroma(reference), chroma(suspect)
    er = sum(float(np.sum(_hp(c) ** 2)) for c in cr)
    es = sum(float(np.sum(_hp(c) ** 2)) for c in cs)
    return float(np.log10((es + 1e-12) / (er + 1e-12)))


def feature_fn(pair, ref, suspect_aligned) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """The :class:`~fingerprint_cli.score.Scorer` ``extra_features`` hook for these features."""
    feats = compute(ref.pixels, suspect_aligned)
    return feats, {k: FEATURES[k][0] for k in feats}, {}


def difference_map(reference: np.ndarray, suspect: np.ndarray, grid: tuple[int, int] = (16, 16)) -> np.ndarray:
    """Per-block RMS luma difference on a ``grid`` (rows, cols) — the heatmap when no encoder is used."""
    d = _luma(np.asarray(suspect)) - _luma(np.asarray(reference))
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
