"""Pixel similarity metrics.

SSIM convention (fpx ``ssim_clean``): Wang, Bovik, Sheikh & Simoncelli (2004), computed on each RGB
channel of float images in [0, 1] (``data_range = 1``) with a Gaussian window σ = 1.5 truncated at 3.5σ
(an 11×11 window), K1 = 0.01, K2 = 0.03, population (not sample) covariances, ``reflect`` border
handling, the SSIM map cropped by the window radius (5 px) on every side before averaging, and the mean
taken over the three channels. This is exactly
``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)`` — checked to 1e-6 in ``tests/test_metrics.py``.

PSNR: 10·log10(1 / MSE) over all pixels and channels in [0, 1]; identical images give +inf, which
records carry as ``null`` and tables as ``-``; it is capped at 100 dB so that it stays finite
(MSE below 1e-10).
"""

from __future__ import annotations

import numpy as np

from fingerprint_cli import images

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
K1, K2 = 0.01, 0.03
PSNR_CAP_DB = 100.0


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM of two single-channel float images (same shape), uncropped."""
    from scipy.ndimage import gaussian_filter  # scipy loads when first needed, not at `fpx` start-up

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    f = lambda x: gaussian_filter(x, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")  # noqa: E731
    ua, ub = f(a), f(b)
    vaa = f(a * a) - ua * ua
    vbb = f(b * b) - ub * ub
    vab = f(a * b) - ua * ub
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    return ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two (H, W) or (H, W, C) float images under the convention above."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of one shape, got {a.shape} and {b.shape}")
    pad = (2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1 - 1) // 2
    if min(a.shape[0], a.shape[1]) <= 2 * pad:
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is too small for SSIM (needs more than {2 * pad} px)")
    chans = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[2])]
    chans_b = [b] if b.ndim == 2 else [b[..., c] for c in range(b.shape[2])]
    vals = [ssim_map(x, y, data_range)[pad:-pad, pad:-pad].mean() for x, y in zip(chans, chans_b)]
    return float(np.mean(vals))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse <= data_range ** 2 * 10 ** (-PSNR_CAP_DB / 10):
        return PSNR_CAP_DB
    return float(10.0 * np.log10(data_range ** 2 / mse))


def highpass(y: np.ndarray) -> np.ndarray:
    """``y − G_σ=1(y)``: the high-pass residual the pixel feature groups share (Gaussian, reflected borders)."""
    from scipy import ndimage

    return y - ndimage.gaussian_filter(y, 1.0, mode="reflect")


def pair_luma(reference: np.ndarray, suspect: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(r, s, Y(r), Y(s)) in float64 for two same-shaped RGB images; a ValueError naming both shapes otherwise."""
    r = np.asarray(reference, dtype=np.float64)
    s = np.asarray(suspect, dtype=np.float64)
    if r.shape != s.shape:
        raise ValueError(f"shapes differ: {r.shape} vs {s.shape}")
    return r, s, images.luma(r, np.float64), images.luma(s, np.float64)
