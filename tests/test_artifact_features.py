"""The artifact feature family (issue 11 round 11): each feature equals an independent numpy/scipy computation,
moves the stated way on a synthetic case, and the family leaves the earlier feature groups (v9's vectors) alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from fingerprint_cli.anchored import artifact_features as A
from fingerprint_cli.anchored import features, pixel

from conftest import natural_image


def _luma(x):
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _round_trip(x: np.ndarray, k: int) -> np.ndarray:
    """k x k block means repeated back up (a replicated-pixel x k round trip)."""
    h, w = x.shape[:2]
    small = x.reshape(h // k, k, w // k, k, -1).mean((1, 3))
    return np.repeat(np.repeat(small, k, 0), k, 1)


def _band(y, lo, hi):
    """G_lo(y) - G_hi(y) (G_0 = identity), raveled."""
    g = ndimage.gaussian_filter(y, lo, mode="reflect") if lo else y
    return (g - ndimage.gaussian_filter(y, hi, mode="reflect")).ravel()


@pytest.fixture(scope="module")
def ref():
    return natural_image(120, 120, seed=5).astype(np.float64)


def test_the_family_is_registered_with_directions_and_probes():
    assert set(A.NAMES) == set(features.names("artifact")) and len(A.NAMES) == 8
    for n in A.NAMES:
        f = features.get(n)
        assert f.probe and f.neutral is not None and f.description
        assert pixel.FEATURES[n] == (f.direction_text, f.description)


def test_lattice_peak_equals_the_fft_bins_when_the_frequencies_fall_on_them():
    rng = np.random.default_rng(0)
    p = rng.random(120) + 0.3 * np.cos(np.pi * np.arange(120))  # a period-2 component
    for k in (2, 3, 4):
        spec = np.abs(np.fft.fft(p - p.mean())) ** 2
        j0 = 120 // k
        near = [j0 + s * m for m in A.NEIGHBOURS for s in (-1, 1) if 0 < j0 + s * m <= 60]
        want = np.log10((spec[j0] + A.EPS) / (np.median(spec[near]) + A.EPS))
        assert A.lattice_peak(p, k) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert A.lattice_peak(p, 2) > 1.0  # the planted period stands out
    assert A.lattice_peak(np.ones(50), 3) == 0.0


def test_a_round_trip_leaves_its_own_period(ref):
    rng = np.random.default_rng(1)
    noisy = np.clip(ref + 0.01 * rng.standard_normal(ref.shape), 0, 1)
    for k in (2, 3, 4):
        f = A.compute(ref, 0.5 * noisy + 0.5 * _round_trip(ref, k))
        assert f[f"af_period_{k}"] > 0.3, (k, f)
        if k != 4:  # (a x4 lattice also carries period 2)
            assert all(abs(f[f"af_period_{j}"]) < 0.15 for j in (2, 3, 4) if j != k), (k, f)
    plain = A.compute(ref, noisy)
    assert all(abs(plain[f"af_period_{k}"]) < 0.15 for k in (2, 3, 4)), plain


def test_hallucination_equals_a_least_squares_residual_and_grows_with_new_detail(ref):
    rng = np.random.default_rng(2)
    yr = _luma(ref)
    sharp = np.clip(ref + 0.8 * (ref - ndimage.gaussian_filter(ref, (1, 1, 0))), 0, 1)
    noisy = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    for s in (sharp, noisy):
        ys = _luma(s)
        for k, (lo, hi) in enumerate(((0, 1), (1, 2))):
            br, bs = _band(yr, lo, hi), _band(ys, lo, hi)
            coef, *_ = np.linalg.lstsq(br[:, None], bs, rcond=None)
            want = np.log10(1e-6 + np.sum((bs - br * coef[0]) ** 2) / np.sum(br * br))
            assert A.hallucination(yr, ys, k) == pytest.approx(want, rel=1e-9)
    # a sharpening of the reference's own detail is mostly explained; added noise is not
    assert A.hallucination(yr, _luma(sharp), 0) < A.hallucination(yr, _luma(noisy), 0) - 0.5


def test_edge_flat_equals_an_independent_masked_gain_and_reads_an_edge_preserving_smoothing(ref):
    yr = _luma(ref)
    g = ndimage.generic_gradient_magnitude(yr, ndimage.sobel, mode="reflect")
    smooth = ndimage.gaussian_filter(ref, (1.5, 1.5, 0))
    keep = (g >= np.percentile(g, 80))[..., None]
    s = np.where(keep, ref, smooth)
    ys = _luma(s)
    hr = (yr - ndimage.gaussian_filter(yr, 1, mode="reflect")) ** 2
    hs = (ys - ndimage.gaussian_filter(ys, 1, mode="reflect")) ** 2
    e, f = g >= np.percentile(g, 80), g <= np.percentile(g, 50)
    want = np.log10((hs[e].sum() + 1e-9) / (hr[e].sum() + 1e-9)) - np.log10((hs[f].sum() + 1e-9) / (hr[f].sum() + 1e-9))
    assert A.edge_flat(yr, ys) == pytest.approx(want, rel=1e-9)
    assert A.edge_flat(yr, ys) > 0.3  # flats smoothed, edges kept
    assert A.edge_flat(yr, _luma(smooth)) < A.edge_flat(yr, ys)  # a plain blur treats both alike


def test_sparsity_is_scipys_kurtosis_and_impulses_raise_it(ref):
    rng = np.random.default_rng(3)
    yr = _luma(ref)
    gauss = yr + 0.02 * rng.standard_normal(yr.shape)
    imp = yr + 0.5 * (rng.random(yr.shape) < 0.005)
    for ys in (gauss, imp):
        h = (ys - yr) - ndimage.gaussian_filter(ys - yr, 1, mode="reflect")
        assert A.sparsity(ys - yr) == pytest.approx(np.log10(stats.kurtosis(h.ravel(), fisher=False) / 3), rel=1e-9)
    assert abs(A.sparsity(gauss - yr)) < 0.1 < 1.0 < A.sparsity(imp - yr)
    assert A.sparsity(np.zeros((20, 20))) == 0.0


def test_chroma_coupling_is_a_pearson_correlation_and_separates_coupled_from_luma_only_changes(ref):
    rng = np.random.default_rng(4)
    n = rng.standard_normal(ref.shape[:2])
    grey = np.clip(ref + 0.03 * n[..., None], 0, 1)  # equal change in every channel: luma only
    red = ref.copy()
    red[..., 0] = np.clip(red[..., 0] + 0.05 * n, 0, 1)  # one channel: luma and chroma together

    def hp(x):
        return x - ndimage.gaussian_filter(x, 1, mode="reflect")

    for s in (grey, red):
        dy = np.abs(hp(_luma(s) - _luma(ref))).ravel()
        cb = hp((s[..., 2] - _luma(s)) - (ref[..., 2] - _luma(ref)))
        cr = hp((s[..., 0] - _luma(s)) - (ref[..., 0] - _luma(ref)))
        want = np.corrcoef(dy, np.sqrt(cb ** 2 + cr ** 2).ravel())[0, 1]
        assert A.chroma_coupling(ref, s) == pytest.approx(want, abs=1e-9)
    assert A.chroma_coupling(ref, red) > 0.9 > A.chroma_coupling(ref, grey) + 0.4


def test_a_global_tone_edit_leaves_the_artifact_features_near_neutral(ref):
    s = ref ** 0.7
    corrected, _ = pixel.tone_curve(ref, s)
    f = A.compute(ref, corrected)
    noisy = A.compute(ref, np.clip(ref + 0.03 * np.random.default_rng(6).standard_normal(ref.shape), 0, 1))
    assert f["af_halluc_0"] < noisy["af_halluc_0"] - 1.0
    assert abs(f["af_edge_flat"]) < abs(noisy["af_edge_flat"]) + 0.05


def test_the_hook_adds_the_family_without_changing_v9s_features(ref, tmp_path):
    from fingerprint_cli import images
    from fingerprint_cli.anchored.attribute import FEATURE_SETS

    class Ref:
        pixels = ref.astype(np.float32)

    sus = np.clip(ref * 0.9 + 0.02, 0, 1).astype(np.float32)
    v2 = list(FEATURE_SETS["pixel-v2"])
    old, _, _ = pixel.feature_hook(v2)(None, Ref, sus)
    both, dirs, _ = pixel.feature_hook(v2 + list(A.NAMES))(None, Ref, sus)
    assert set(old) == set(pixel.V2_NAMES) and not set(old) & set(A.NAMES)
    assert {k: both[k] for k in old} == old  # bit-identical: v9's vectors are unchanged
    corrected, _ = pixel.tone_curve(Ref.pixels.astype(np.float64), sus)
    assert {k: both[k] for k in A.NAMES} == A.compute(Ref.pixels, corrected)
    assert dirs["af_period_2"] == "higher = period-2 resampling trace"
    assert images  # the module is importable beside the feature code


def test_only_the_groups_asked_for_are_computed_with_the_same_values():
    """An artifact that uses the three period features (v10) gets exactly those, equal to the full computation's."""
    rng = np.random.default_rng(41)
    ref = rng.random((48, 56, 3))
    sus = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    full = A.compute(ref, sus)
    period = ["af_period_2", "af_period_3", "af_period_4"]
    part = A.compute(ref, sus, period)
    assert sorted(part) == period and part == {k: full[k] for k in period}
    assert A.compute(ref, sus, ["af_sparsity", "af_halluc_1"]) == {k: full[k] for k in ("af_sparsity", "af_halluc_1")}
    assert A.compute(ref, sus, []) == {}

    class Ref:
        pixels = ref.astype(np.float32)

    v10 = list(pixel.V2_NAMES) + period
    feats, _, _ = pixel.feature_hook(v10)(None, Ref, sus.astype(np.float32))
    assert set(feats) & set(A.NAMES) == set(period)
