"""JND maps against values computed by hand from Chou & Li (1995) and Yang et al. (2005)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fingerprint_cli.anchored import jnd
from fingerprint_cli.errors import UsageError


def _grey(level: float, h: int = 16, w: int = 16) -> np.ndarray:
    return np.full((h, w, 3), level / 255.0, dtype=np.float64)


@pytest.mark.parametrize("model", ["chou-li", "namm"])
@pytest.mark.parametrize("bg, expected", [
    (0, 17 * (1 - math.sqrt(0 / 127)) + 3),       # 20 levels: darkest background
    (64, 17 * (1 - math.sqrt(64 / 127)) + 3),      # 7.932...
    (127, 3.0),                                    # the minimum of the U-shaped curve
    (200, 3 / 128 * (200 - 127) + 3),              # 4.711
    (255, 3 / 128 * (255 - 127) + 3),              # 6.0
])
def test_flat_patch_gives_the_luminance_adaptation_threshold(model, bg, expected):
    # flat patch: mg = 0, so Chou-Li f1 = 0.5 - 0.01 bg <= 0.5 < f2, and NAMM texture term = 0
    j = jnd.jnd_map(_grey(bg), model)
    np.testing.assert_allclose(j, expected, rtol=1e-5)


def test_chou_li_on_a_vertical_step_edge_by_hand():
    img = np.full((15, 15), 100.0)
    img[:, 8:] = 140.0
    # pixel (7, 7): its 5x5 window has columns 100,100,100,140,140
    # bg = (5*100 + 8*100 + 6*100 + 8*140 + 5*140) / 32 (column sums of B) = 116.25
    bg = (5 * 100 + 8 * 100 + 6 * 100 + 8 * 140 + 5 * 140) / 32
    # G4 column sums (16, 0, -16) -> |16*100 - 16*140| / 16 = 40; G2/G3 give 30, G1 gives 0
    mg = 40.0
    f1 = mg * (0.0001 * bg + 0.115) + (0.5 - 0.01 * bg)
    f2 = 17 * (1 - math.sqrt(bg / 127)) + 3
    expected = max(f1, f2)
    assert bg == pytest.approx(116.25) and expected == pytest.approx(4.4025)
    assert jnd.background_luminance(img)[7, 7] == pytest.approx(bg)
    assert jnd.max_gradient(img)[7, 7] == pytest.approx(mg)
    j = jnd.jnd_map(np.repeat((img / 255.0)[..., None], 3, axis=2), "chou-li")
    assert j[7, 7] == pytest.approx(expected, rel=1e-5)


def test_namm_protects_edges_relative_to_its_unweighted_formula():
    img = np.full((32, 32), 100.0)
    img[:, 16:] = 160.0
    y = img
    w = jnd.edge_weight(y)
    edge_col = int(np.argmin(w[16]))
    assert edge_col in (15, 16) and w[16, edge_col] < 0.6 and w[16, 2] == pytest.approx(1.0)
    tl = jnd.luminance_adaptation(jnd.background_luminance(y))
    tt_unprotected = 0.117 * jnd.max_gradient(y)
    unprotected = tl + tt_unprotected - 0.3 * np.minimum(tl, tt_unprotected)
    j = jnd.jnd_map(np.repeat((img / 255.0)[..., None], 3, axis=2), "namm")
    assert j[16, edge_col] < unprotected[16, edge_col] - 0.5


@pytest.mark.parametrize("model", ["chou-li", "namm"])
def test_textured_regions_get_larger_thresholds_than_flat_sky(model):
    # same mean luminance on both halves: flat 'sky' on the left, grass-like texture on the right
    img = np.full((96, 128, 3), 0.5)
    rng = np.random.default_rng(0)
    img[:, 64:] += rng.normal(0, 0.2, (96, 64, 1))
    j = jnd.jnd_map(np.clip(img, 0, 1), model)
    assert np.median(j[8:-8, 72:-8]) > 1.5 * np.median(j[8:-8, 8:56])


def test_luminance_uses_bt601_weights_in_levels():
    px = np.zeros((1, 3, 3))
    px[0, 0, 0] = px[0, 1, 1] = px[0, 2, 2] = 1.0
    np.testing.assert_allclose(jnd.luminance(px)[0], [0.299 * 255, 0.587 * 255, 0.114 * 255])


def test_unknown_model_is_a_usage_error_with_a_suggestion():
    with pytest.raises(UsageError, match="did you mean namm"):
        jnd.jnd_map(_grey(10), "nam")


def test_map_picture_scale():
    pic = jnd.to_picture(np.array([[0.0, 3.0, 40.0]]))
    assert pic.dtype == np.uint8 and pic.tolist() == [[0, 24, 255]]
