"""Reference-anchored pixel features (pixel.py) and the blind spectrum features, against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import pixel, blind


@pytest.fixture(scope="module")
def ref():
    # width 122: the synthetic image's vertical step edge (at w // 2) is not on the 8-pixel grid
    return natural_image(96, 122, seed=5).astype(np.float64)


def test_identity_is_neutral(ref):
    f = pixel.compute(ref, ref)
    for k in range(4):
        assert f[f"gain_{k}"] == pytest.approx(0, abs=1e-9)
        assert f[f"coh_{k}"] == pytest.approx(1, abs=1e-9)
    assert f["hf_ratio"] == pytest.approx(0, abs=1e-9)
    assert f["chroma_hf_ratio"] == pytest.approx(0, abs=1e-9)
    assert f["log_colour_shift"] == pytest.approx(-5, abs=1e-9)
    assert f["grid8"] == 1.0


def test_contrast_gain_is_exact(ref):
    """s - mean = 2 (r - mean) per channel: power x4 in every octave, same phase (coherence 1)."""
    low = 0.5 + 0.2 * (ref - ref.mean((0, 1)))
    sus = 0.5 + 0.4 * (ref - ref.mean((0, 1)))
    f = pixel.compute(low, sus)
    for k in range(4):
        assert f[f"gain_{k}"] == pytest.approx(np.log10(4), abs=1e-9)
        assert f[f"coh_{k}"] == pytest.approx(1, abs=1e-9)
    assert f["hf_ratio"] == pytest.approx(np.log10(4), abs=1e-9)


def test_blur_noise_colour_and_jpeg_signatures(ref):
    blur = ndimage.gaussian_filter(ref, (1.5, 1.5, 0))
    fb = pixel.compute(ref, blur)
    assert fb["gain_0"] < fb["gain_1"] < fb["gain_2"] < 0.0  # a low-pass: the highest octave loses most
    assert fb["coh_3"] > 0.99  # zero-phase filter keeps the reference's own low-frequency content
    assert fb["hp_corr"] < -0.5  # the change is minus the reference's detail
    noisy = np.clip(ref + np.random.default_rng(0).normal(0, 0.08, ref.shape), 0, 1)
    fn = pixel.compute(ref, noisy)
    assert fn["gain_0"] > 0.3 and fn["coh_0"] < 0.5 and abs(fn["hp_corr"]) < 0.2
    shifted = ref.copy()
    shifted[..., 0] = shifted[..., 0] * 0.5 + 0.05  # a colour shift of the red channel
    expect = np.log10(1e-5 + np.mean(np.abs(shifted.reshape(-1, 3).mean(0) - ref.reshape(-1, 3).mean(0))))
    assert pixel.compute(ref, shifted)["log_colour_shift"] == pytest.approx(expect)
    jpeg = images.decode(images.encode(ref, "JPEG", quality=30), "<q30>").pixels
    assert fb["grid8"] == pytest.approx(1.0, abs=0.05)  # no block structure in a blur
    assert pixel.compute(ref, jpeg)["grid8"] > fb["grid8"] + 0.05


def test_difference_map_blocks():
    r = np.zeros((32, 32, 3))
    s = r.copy()
    s[:16, :16] = 0.5
    m = pixel.difference_map(r, s, grid=(2, 2))
    np.testing.assert_allclose(m, [[0.5, 0], [0, 0]], atol=1e-12)


def test_blind_features_see_only_the_suspect_and_flag_periodic_structure():
    a = natural_image(300, 300, seed=1)
    fa = blind.features(a)
    assert fa.shape == (2 * blind.BINS,) and np.all(np.isfinite(fa))
    # smaller inputs are reflect-padded to the analysis size
    assert np.all(np.isfinite(blind.features(natural_image(48, 64, seed=1))))
    # a low-pass suspect has a steeper amplitude spectrum (last radial bins lower)
    fb = blind.features(ndimage.gaussian_filter(a, (2, 2, 0)))
    assert fb[blind.BINS - 1] < fa[blind.BINS - 1] - 1.0
    assert len(blind.names()) == 2 * blind.BINS


# ---------------------------------------------------------------- tone-corrected features (issue 11)
def test_tone_curve_is_undone_and_kept_as_features(ref):
    """A global monotone per-channel curve (gamma + white balance) leaves the tc_* features at identity."""
    ident = pixel.compute_v2(ref, ref)
    curved = np.clip(ref ** np.array([0.7, 0.8, 1.3]) * np.array([1.0, 0.95, 0.9]), 0, 1)
    f = pixel.compute_v2(ref, curved)
    corrected, _ = pixel.tone_curve(ref, curved)
    assert np.abs(corrected - ref).mean() < 1.5 / 255  # undone up to the 64-bin interpolation
    assert f["tc_ssim"] > 0.995 and f["tc_psnr"] > 40
    for k in range(4):
        assert f[f"tc_gain_{k}"] == pytest.approx(ident[f"tc_gain_{k}"], abs=0.03)
        assert f[f"tc_coh_{k}"] > 0.99
    assert f["curve_share"] > 0.95 and f["curve_colour"] > 0.02
    g = pixel.compute_v2(ref, ref ** 0.7)  # brighter, no colour cast
    assert g["curve_shift"] > 0.02 and g["curve_colour"] < 0.5 * f["curve_colour"] and g["tc_ssim"] > 0.995
    # uncorrected, the same edit is a large change
    assert pixel.compute(ref, curved)["log_colour_shift"] > -1.5
    assert ident["curve_shift"] == pytest.approx(0, abs=1e-9) and ident["curve_colour"] == pytest.approx(0, abs=1e-9)


def test_tone_correction_does_not_hide_structural_change(ref):
    """Noise and blur are not tone curves: the curve explains little and the tc_* features still move."""
    noisy = np.clip(ref + np.random.default_rng(1).normal(0, 0.05, ref.shape), 0, 1)
    fn = pixel.compute_v2(ref, noisy)
    assert fn["curve_share"] < 0.1 and fn["tc_hf_ratio"] > 0.3 and fn["tc_coh_0"] < 0.6
    blur = ndimage.gaussian_filter(ref, (1.5, 1.5, 0))
    fb = pixel.compute_v2(ref, blur)
    assert fb["tc_gain_0"] < fb["tc_gain_1"] < 0.0 and fb["tc_hp_corr"] < -0.5
    # a decreasing curve (negative) cannot be undone by a non-decreasing fit
    neg = pixel.compute_v2(ref, 1.0 - ref)
    assert neg["tc_ssim"] < 0.5


def test_feature_hook_computes_only_the_groups_asked_for(ref):
    class R:
        pixels = ref
    feats, dirs, _ = pixel.feature_hook(["tc_ssim", "curve_share"])(None, R, ref)
    assert set(feats) == set(pixel.V2_NAMES) and set(dirs) == set(feats)
    feats1, _, _ = pixel.feature_hook(["hf_ratio"])(None, R, ref)
    assert set(feats1) == set(pixel.NAMES)
