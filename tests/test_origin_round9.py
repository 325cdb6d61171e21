"""fpx origin, issue 12 round 9: dense verification summed inside the convex hull of the RANSAC inliers
(``local.Settings.dense_region``; an index without the key scores over the whole overlap, as in round 8)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_origin_local import _crop, _textured
from test_origin_round6 import cli_build_and_add

from fingerprint_cli import images, origin
from fingerprint_cli.origin import dense as D
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, dense_best, load_index
from fingerprint_cli.origin.library import _local_settings_for

FMR = 0.1


def test_hull_mask_fills_the_dilated_convex_hull_of_the_points():
    """Checked against a brute-force point-in-polygon (matplotlib.path) and the margin's distance (scipy)."""
    from matplotlib.path import Path as MPath
    from scipy.ndimage import distance_transform_edt

    xy = np.array([[10.0, 12.0], [60.0, 15.0], [40.0, 70.0], [30.0, 30.0]])  # one point inside the triangle
    k = 1.0
    m = D.hull_mask(xy, (100, 120), k)
    assert set(np.unique(m)) == {0.0, 1.0}
    v, u = np.mgrid[:100, :120]
    inside = MPath(xy[[0, 1, 2]]).contains_points(np.c_[u.ravel(), v.ravel()]).reshape(100, 120)
    assert np.all(m[inside] == 1)  # the whole hull is in
    dist = distance_transform_edt(~inside)
    assert np.all(m[dist > D.HULL_MARGIN + 2] == 0)  # nothing beyond the margin (the vertices: pixel-grid slack)
    assert np.all(m[(dist > 0) & (dist <= D.HULL_MARGIN - 1.5)] == 1)  # the margin itself is in
    # the work scale: points in frame px shown k x
    m2 = D.hull_mask(xy * 2, (100, 120), 0.5)
    assert np.mean(m2 != m) < 0.01
    assert D.hull_mask(np.zeros((0, 2)), (20, 30), 1.0).sum() == 0


def _inset(a: np.ndarray, bg: np.ndarray, y0: int, x0: int, crop=(20, 30, 70, 90)) -> np.ndarray:
    """A picture-in-picture suspect: a crop of ``a`` pasted into ``bg`` at (y0, x0), JPEG q85."""
    out = np.array(bg, np.float32)
    c = _crop(a, *crop)
    out[y0:y0 + c.shape[0], x0:x0 + c.shape[1]] = c
    return images.decode(images.encode(np.clip(out, 0, 1), "JPEG", quality=85), "<jpeg>").pixels


def test_the_hull_scores_an_inset_crop_high_where_the_whole_overlap_dilutes_it():
    """A crop of the candidate pasted into an unrelated photo: the warped candidate covers the inset's
    surroundings too (they are not the candidate's), so the overlap score is diluted; inside the inliers' hull
    it is high. The same map laid on an unrelated candidate stays near 0 in either region."""
    a, b, c = _textured(160, 220, 41), _textured(150, 200, 42), _textured(160, 220, 43)
    suspect = _inset(a, b, 40, 60)
    views = L.extract_views(suspect)
    ref = L.extract_reference(a, L.ROUND5)
    fits = [L.fit(v, ref) for v in views]
    assert fits[0][2] is not None and len(np.unique(fits[0][0])) >= 8
    whole = dense_best(views, suspect, ref, a)
    hull = dense_best(views, suspect, ref, a, "hull")
    assert dense_best(views, suspect, ref, a, "overlap") == pytest.approx(whole, abs=1e-12)  # the default
    assert hull > 0.8, hull
    assert hull > whole + 0.15, (hull, whole)
    qi, _, A = fits[0]
    assert D.score(suspect, a, A, False, L.SIDE, views[0].xy[qi]) == pytest.approx(hull, abs=1e-9)
    unrelated = D.score(suspect, c, A, False, L.SIDE, views[0].xy[qi])
    assert abs(unrelated) < 0.25, unrelated


def test_new_indexes_verify_densely_inside_the_hull_by_default():
    # round 10's default keeps round 9's dense verification and adds the suspect's sub-windows
    assert L.DEFAULT == dataclasses.replace(L.ROUND9, suspect_windows="halves-thirds")
    assert L.DEFAULT.dense and L.DEFAULT.dense_region == "hull"
    nowin = {"suspect_windows": "none"}
    assert dataclasses.replace(L.DEFAULT, dense=False, dense_region="overlap", **nowin) == L.ROUND5  # same features
    assert _local_settings_for(None, True, suspect_windows="none") == L.ROUND9
    assert _local_settings_for(None, True, dense=False, suspect_windows="none") == L.ROUND5  # round 5's index
    assert _local_settings_for(None, True, dense=True, suspect_windows="none") == L.ROUND9  # this fpx's region
    assert _local_settings_for(None, True, dense_region="overlap", suspect_windows="none") == \
        dataclasses.replace(L.ROUND5, dense=True)


def test_settings_without_the_key_score_over_the_overlap_as_in_round8():
    doc = dataclasses.replace(L.ROUND5, dense=True).doc()
    assert doc["dense_region"] == "overlap"
    del doc["dense_region"]
    back = L.Settings.from_doc(doc)
    assert back.dense and back.dense_region == "overlap"
    assert L.Settings.from_doc({**doc, "dense_region": "hull"}).dense_region == "hull"
    with pytest.raises(ValueError, match="dense_region"):
        L.Settings(dense=True, dense_region="convex")


def twelve_refs(tmp_path_factory, name: str, seed: int):
    """A temporary folder ``name`` holding ``refs/`` with 12 textured pictures (seeds ``seed`` ..)."""
    d = tmp_path_factory.mktemp(name)
    refs = d / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(_textured(160, 220, seed=seed + i), refs / f"r{i:02d}.png")
    return d, refs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same 12 references indexed with overlap-dense and hull-dense verification, and an inset query."""
    d, refs = twelve_refs(tmp_path_factory, "r9refs", 960)
    kw = {"n_calibration": 12, "false_match_rate": FMR}
    over, _ = origin.build_index([str(refs)], str(d / "over.fpxindex"), dense_region="overlap", **kw)
    hull, _ = origin.build_index([str(refs)], str(d / "hull.fpxindex"), **kw)  # the default (round 9)
    src = images.load_image(refs / "r05.png").pixels
    images.save_png(_inset(src, _textured(150, 200, 999), 40, 60), d / "inset.png")
    images.save_png(_textured(120, 150, seed=998), d / "absent.png")
    return d, refs, over, hull


def test_the_region_is_recorded_and_calibrated(built):
    d, _, over, hull = built
    h, o = load_index(d / "hull.fpxindex").document()["local"], load_index(d / "over.fpxindex").document()["local"]
    assert h["dense"] is True and h["dense_region"] == "hull" and h["dense_hull_margin"] == D.HULL_MARGIN
    assert o["dense"] is True and o["dense_region"] == "overlap" and "dense_hull_margin" not in o
    assert load_index(d / "hull.fpxindex").local.settings.dense_region == "hull"
    # same features and inlier calibration; only the dense scores differ
    assert hull.calibration["impostor_local_sorted"] == over.calibration["impostor_local_sorted"]
    assert hull.calibration["impostor_dense_sorted"] != over.calibration["impostor_dense_sorted"]
    assert hull.calibration["local_in_sample"]["genuine_dense_median"] > 0.7
    # a round-8 index recalibrated under its own settings is unchanged
    same = load_index(d / "over.fpxindex")
    calibrate(same, FMR)
    assert same.calibration["impostor_dense_sorted"] == over.calibration["impostor_dense_sorted"]


def test_query_records_state_the_region(built):
    d, refs, over, hull = built
    rec, rec_abs = origin.query([str(d / "inset.png"), str(d / "absent.png")], hull, k=3)
    rec_over = origin.query([str(d / "inset.png")], over, k=3)[0]
    assert rec.decision["dense_region"] == "hull" and rec_over.decision["dense_region"] == "overlap"
    assert rec.details["local"]["dense_region"] == "hull"
    top = rec.details["candidates"][0]
    assert top["path"] == str(refs / "r05.png")
    over_top = {c["path"]: c for c in rec_over.details["candidates"]}[top["path"]]
    assert top["dense"] > over_top["dense"]  # the inset's background no longer dilutes the score
    assert rec.decision["label"] == "found" and rec.decision["origin"]["path"] == top["path"]
    assert rec_abs.decision["label"] == "not-in-library"


def test_cli_dense_region_is_recorded_kept_by_add_and_a_typo_is_refused(tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    idx, grown = cli_build_and_add(tmp_path, ["--dense-region", "hull"], 970)
    assert idx.local.settings.dense and idx.local.settings.dense_region == "hull"
    assert grown.local.settings == idx.local.settings and grown.n == 7
    res = CliRunner().invoke(app, ["origin", "index", str(tmp_path / "refs"), "-o", str(tmp_path / "t.fpxindex"),
                                   "--dense-region", "hul"])
    assert res.exit_code == 2 and not (tmp_path / "t.fpxindex").exists()
