"""SSIM and PSNR against independent references (scikit-image, the formula)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import natural_image
from fingerprint_cli.anchored import metrics


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.0, 0.3), h=st.integers(12, 40), w=st.integers(12, 40))
def test_ssim_matches_skimage(seed, noise, h, w):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w, 3))
    b = np.clip(a + noise * rng.standard_normal(a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert abs(metrics.ssim(a, b) - ref) < 1e-6


def test_ssim_identity_and_monotone():
    a = natural_image(64, 64)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    n = rng.standard_normal(a.shape)
    vals = [metrics.ssim(a, np.clip(a + s * n, 0, 1)) for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(x > y for x, y in zip(vals, vals[1:]))


def test_ssim_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_psnr_matches_skimage_and_caps():
    a = natural_image(32, 32).astype(np.float64)
    b = np.clip(a + 0.05, 0, 1)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    assert metrics.psnr(a, a) == metrics.PSNR_CAP_DB
