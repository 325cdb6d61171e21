"""fpx origin, issue 12 round 8: dense verification of local matches (recorded in the index's local settings)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_origin_local import _crop, _textured
from test_origin_round6 import cli_build_and_add

from fingerprint_cli import images, origin
from fingerprint_cli.origin import dense as D
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, decide, dense_best, load_index

FMR = 0.1  # 36 local calibration queries: enough for the local share (0.05)


def _band_pair(seed: int, n: int = 48):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)


def test_weighted_ncc_is_a_gain_invariant_correlation_in_minus_one_one():
    s, r = _band_pair(1)
    m = np.ones_like(s)
    assert D.weighted_ncc(s, s, m) == pytest.approx(1.0, abs=1e-6)
    assert D.weighted_ncc(s, 3.0 * s, m) == pytest.approx(1.0, abs=1e-6)  # contrast / tint do not matter
    assert D.weighted_ncc(s, -s, m) == pytest.approx(-1.0, abs=1e-6)
    v = D.weighted_ncc(s, r, m)
    assert -0.2 < v < 0.2  # independent noise: near 0
    mix = D.weighted_ncc(s, s + r, m)  # half the energy shared: about 1/sqrt(2)
    assert 0.6 < mix < 0.8
    # a flat (zero-contrast) region inside the mask adds no weight: the score is unchanged
    big_s, big_r, big_m = (np.zeros((48, 96), np.float32) for _ in range(3))
    big_s[:, :48], big_r[:, :48] = s, r
    big_m[:] = 1
    assert D.weighted_ncc(big_s, big_r, big_m) == pytest.approx(v, abs=0.02)
    assert D.weighted_ncc(np.zeros_like(s), r, m) == 0.0


def test_work_map_samples_where_the_affine_map_says():
    """The inverse map of an affine (suspect frame -> candidate frame) at the work and candidate scales, checked
    against a direct sampling of the candidate at the mapped pixel centres (scipy.ndimage.map_coordinates)."""
    import cv2
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(4)
    ref = rng.uniform(size=(90, 120)).astype(np.float32)
    A = np.array([[0.45, -0.08, 30.0], [0.07, 0.47, 12.0]])  # frame px -> frame px
    k, g = 0.5, 0.375  # work px per suspect frame px; candidate px per candidate frame px (120 / 320)
    M = D.work_map(A, k, g)
    out = cv2.warpAffine(ref, M, (40, 30), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    v, u = np.mgrid[:30, :40].astype(np.float64)
    x, y = (u + 0.5) / k - 0.5, (v + 0.5) / k - 0.5  # suspect frame (pixel centres)
    xr, yr = A[0, 0] * x + A[0, 1] * y + A[0, 2], A[1, 0] * x + A[1, 1] * y + A[1, 2]
    X, Y = (xr + 0.5) * g - 0.5, (yr + 0.5) * g - 0.5
    want = map_coordinates(ref, [Y, X], order=1)
    inside = (X > 1) & (Y > 1) & (X < 118) & (Y < 88)
    assert inside.mean() > 0.5
    assert np.max(np.abs(out[inside] - want[inside])) < 2e-3


def _fit_view(views, ref_feats):
    fits = [L.fit(v, ref_feats) for v in views]
    return max(range(2), key=lambda i: len(fits[i][0])), fits


def test_dense_separates_a_tinted_jpeg_crop_from_an_unrelated_image_at_the_fitted_map():
    a, b = _textured(160, 220, 31), _textured(160, 220, 32)
    q = _crop(a, 30, 50, 90, 120)
    tinted = images.decode(images.encode(np.clip(q * np.float32([1.1, 1.0, 0.85]) + 0.03, 0, 1), "JPEG",
                                         quality=70), "<jpeg>").pixels
    for suspect, mirrored in ((tinted, False), (np.ascontiguousarray(tinted[:, ::-1]), True)):
        views = L.extract_views(suspect)
        vi, fits = _fit_view(views, L.extract_reference(a, L.ROUND5))
        assert vi == int(mirrored) and fits[vi][2] is not None
        s = D.score(suspect, a, fits[vi][2], mirrored, L.SIDE)
        assert s > 0.7, s
        assert D.score(suspect, a, fits[vi][2], not mirrored, L.SIDE) < 0.3  # the wrong view does not agree
        assert dense_best(views, suspect, L.extract_reference(a, L.ROUND5), a) == pytest.approx(s, abs=1e-9)
        # the same map laid on an unrelated image correlates near 0
        assert abs(D.score(suspect, b, fits[vi][2], mirrored, L.SIDE)) < 0.2
    assert dense_best(views, suspect, L.extract_reference(a, L.ROUND5), None) is None


def test_a_map_that_leaves_the_candidate_gives_no_evidence():
    a = _textured(160, 220, 33)
    far = np.array([[1.0, 0.0, 1000.0], [0.0, 1.0, 1000.0]])
    assert D.score(_crop(a, 0, 0, 80, 80), a, far, False, L.SIDE) == 0.0


def test_an_index_without_the_key_verifies_as_before():
    doc = L.ROUND5.doc()
    assert doc["dense"] is False
    del doc["dense"]
    assert L.Settings.from_doc(doc) == L.ROUND5 and not L.Settings.from_doc({}).dense
    assert L.Settings.from_doc({**doc, "dense": True}).dense


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same 12 references indexed without and with dense verification, and a crop query of one."""
    d = tmp_path_factory.mktemp("r8refs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(_textured(160, 220, seed=860 + i), refs / f"r{i:02d}.png")
    old, _ = origin.build_index([str(refs)], str(d / "old.fpxindex"), n_calibration=12, false_match_rate=FMR,
                                dense=False)  # round 5's (no dense verification; the default up to round 8)
    new, _ = origin.build_index([str(refs)], str(d / "new.fpxindex"), n_calibration=12, false_match_rate=FMR,
                                dense_region="overlap")  # round 8's dense score (over the whole overlap)
    src = images.load_image(refs / "r05.png").pixels
    images.save_png(_crop(src, 20, 40, 80, 110), d / "crop.png")
    images.save_png(_textured(120, 150, seed=999), d / "absent.png")
    return d, refs, old, new


def test_dense_is_recorded_and_calibrated_at_the_local_share(built):
    d, _, old, new = built
    back = load_index(d / "new.fpxindex")
    assert back.local.settings.dense and back.document()["local"]["dense"] is True
    assert back.document()["local"]["dense_work"] == D.WORK and back.document()["local"]["dense_top"] == D.TOP
    assert "dense" not in load_index(d / "old.fpxindex").document()["local"] or \
        load_index(d / "old.fpxindex").document()["local"]["dense"] is False
    assert "dense_work" not in old.document()["local"]
    cal, oc = new.calibration, old.calibration
    assert "dense_threshold" not in oc and "impostor_dense_sorted" not in oc
    # same features, same inlier calibration: dense only adds its own threshold
    assert np.array_equal(back.local.desc, old.local.desc)
    assert cal["impostor_local_sorted"] == oc["impostor_local_sorted"] and cal["local_threshold"] == oc["local_threshold"]
    imp = np.asarray(cal["impostor_dense_sorted"])
    assert len(imp) == cal["dense_n_impostor"] == len(new.local_calib_owner)
    assert np.all((imp >= -1) & (imp <= 1)) and np.any(np.isclose(imp, cal["dense_threshold"], atol=1e-6))
    assert cal["dense_false_match_rate"] <= cal["local_false_match_rate"] + 1e-12
    ls = cal["local_in_sample"]
    assert ls["genuine_dense_median"] > 0.7 > ls["impostor_dense_median"]
    assert ls["miss_with_dense"] >= ls["miss"]
    # an old index recalibrated under its own settings is unchanged (no dense keys appear)
    same = load_index(d / "old.fpxindex")
    calibrate(same, FMR)
    assert same.calibration["impostor_local_sorted"] == oc["impostor_local_sorted"]
    assert "dense_threshold" not in same.calibration


def test_the_round8_upgrade_path_reproduces_a_dense_build(built):
    d, _, _, new = built
    up = load_index(d / "old.fpxindex")
    up.local.settings = up.local_calib.settings = dataclasses.replace(up.local.settings, dense=True)
    calibrate(up, FMR)
    assert up.calibration["impostor_dense_sorted"] == new.calibration["impostor_dense_sorted"]
    assert up.calibration["dense_threshold"] == new.calibration["dense_threshold"]


def test_query_records_carry_the_dense_evidence(built):
    d, refs, old, new = built
    rec_new, rec_abs = origin.query([str(d / "crop.png"), str(d / "absent.png")], new, k=3)
    rec_old = origin.query([str(d / "crop.png")], old, k=3)[0]
    want = str(refs / "r05.png")
    for rec in (rec_new, rec_old):
        assert rec.decision["label"] == "found" and rec.decision["origin"]["path"] == want
    dec = rec_new.decision
    assert dec["dense"] > dec["dense_threshold"] and 0 < dec["p_value_dense"] <= 1
    assert dec["p_value_local"] >= dec["p_value_dense"]
    assert "dense" in dec["evidence"] and "local-inliers" in dec["evidence"]
    top = rec_new.details["candidates"][0]
    assert top["path"] == want and top["dense"] == pytest.approx(dec["dense"])
    assert rec_new.details["local"]["verified"][0]["dense"] == pytest.approx(dec["dense"])
    assert any(r["feature"] == "dense" for r in rec_new.reasons)
    # the index without dense: no dense keys anywhere
    assert "dense" not in rec_old.decision and all("dense" not in c for c in rec_old.details["candidates"])
    assert "dense" not in rec_old.decision["evidence"]
    assert rec_abs.decision["label"] == "not-in-library"


def test_the_local_test_needs_both_the_inliers_and_the_dense_score(built):
    _, _, _, new = built
    cal = new.calibration
    top = 3
    hits = [(top, 0.1, 0, 0), (7, 0.05, 0, 0)]  # similarity far below its threshold: only the local test decides
    many = {top: cal["local_threshold"] + 10}
    hi, lo = cal["dense_threshold"] + 0.01, cal["dense_threshold"] - 0.01
    assert decide(new, hits, local=many, dense={top: hi})["passed"] == "local"
    assert not decide(new, hits, local=many, dense={top: lo})["found"]
    assert not decide(new, hits, local=many, dense={})["found"]  # not computed: not confirmed
    assert not decide(new, hits, local={top: cal["local_threshold"]}, dense={top: 1.0})["found"]
    # an index without dense decides on the inliers alone, as before
    plain = dataclasses.replace(new)
    plain.calibration = {k: v for k, v in cal.items() if not k.startswith("dense") and k != "impostor_dense_sorted"}
    assert decide(plain, hits, local=many, dense={top: lo})["passed"] == "local"


def test_cli_dense_is_recorded_and_kept_by_add(tmp_path):
    idx, grown = cli_build_and_add(tmp_path, ["--dense"], 870)
    assert idx.local.settings.dense and grown.local.settings == idx.local.settings and grown.n == 7
    # --add keeps the index's own rule (it fell back to similarity+verify before round 8) and dense key
    assert grown.calibration["decision"] == idx.calibration["decision"] == "similarity+local"
    assert ("dense_threshold" in grown.calibration) == ("dense_threshold" in idx.calibration)
