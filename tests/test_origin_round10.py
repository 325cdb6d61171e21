"""fpx origin, issue 12 round 10: suspect sub-windows in the local stage (``local.Settings.suspect_windows``; an
index without the key has none and queries as before)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_origin_local import _crop, _textured
from test_origin_round6 import cli_build_and_add
from test_origin_round9 import twelve_refs

from fingerprint_cli import images, origin
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, load_index
from fingerprint_cli.origin.library import _local_settings_for

FMR = 0.1
WIN = dataclasses.replace(L.ROUND9, suspect_windows="halves-thirds")


def test_window_keypoints_are_expressed_in_the_whole_frames_coordinates():
    """A window's keypoints, detected on the window zoomed to SIDE px, map onto the whole image's own keypoints
    by the identity (RANSAC), on the image and on its mirror."""
    a = _textured(180, 240, 1001)
    whole = L.extract(a)
    mirror_whole = L.extract(np.ascontiguousarray(a[:, ::-1]))
    views = L.suspect_views(a, WIN)
    assert len(views) == L.n_views(WIN) == 2 + 2 * len(L.SUSPECT_WINDOWS["halves-thirds"])
    for vi in (2, 3, 9, 21):  # left, left mirrored, the mirror of bottom-2/3's neighbour, centre mirrored
        ref = mirror_whole if L.is_mirrored(vi) else whole
        qi, _, A = L.fit(views[vi], ref)
        assert A is not None and len(qi) >= 10, (vi, len(qi))
        assert np.allclose(A[:, :2], np.eye(2), atol=0.03), (vi, A)
        assert np.all(np.abs(A[:, 2]) < 2.0), (vi, A)
    # every window keypoint lies inside its window (in the whole frame at SIDE scale)
    s = L.SIDE / 240
    _, y0, y1, x0, x1 = L.SUSPECT_WINDOWS["halves-thirds"][0]  # left half
    xy = views[2].xy
    assert xy[:, 0].max() <= x1 * 240 * s + 1 and xy[:, 0].min() >= x0 * 240 * s - 1
    assert xy[:, 1].max() <= y1 * 180 * s + 1 and xy[:, 1].min() >= y0 * 180 * s - 1


def test_without_windows_the_views_are_the_two_of_before():
    a = _textured(120, 160, 1002)
    old, new = L.extract_views(a), L.suspect_views(a, L.ROUND9)
    assert len(new) == 2 == L.n_views(L.ROUND9)
    for f, g in zip(old, new):
        assert np.array_equal(f.xy, g.xy) and np.array_equal(f.desc, g.desc)
    assert [L.view_name(i, WIN) for i in (0, 1, 2, 3, 21)] == ["original", "mirrored", "left", "left, mirrored",
                                                              "centre, mirrored"]


def test_settings_without_the_key_have_no_windows():
    doc = L.ROUND9.doc()
    assert doc["suspect_windows"] == "none"
    del doc["suspect_windows"]
    assert L.Settings.from_doc(doc) == L.ROUND9
    assert L.Settings.from_doc({**doc, "suspect_windows": "halves-thirds"}) == WIN
    with pytest.raises(ValueError, match="suspect_windows"):
        L.Settings(suspect_windows="quarters")


def _collage(a: np.ndarray, other: np.ndarray) -> np.ndarray:
    """A two-photo collage: a crop of ``a`` beside a same-height picture crammed with block letters, JPEG q85."""
    c = _crop(a, 10, 20, 130, 180)
    h, w = c.shape[:2]
    o = np.clip(images.resize(other, h, w), 0, 1)
    rng = np.random.default_rng(5)
    for y in range(4, h - 10, 14):  # rows of white and black "letters" (strong corners)
        x = 3
        while x < w - 8:
            bw = int(rng.integers(3, 8))
            o[y:y + 9, x:x + bw] = 1.0 if (x // 7) % 2 else 0.0
            x += bw + int(rng.integers(2, 4))
    return images.decode(images.encode(np.concatenate([o, c], axis=1), "JPEG", quality=85), "<jpeg>").pixels


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same 12 references indexed without and with suspect windows, a collage query and an absent one."""
    d, refs = twelve_refs(tmp_path_factory, "r10refs", 1010)
    kw = {"n_calibration": 12, "false_match_rate": FMR}
    plain, _ = origin.build_index([str(refs)], str(d / "plain.fpxindex"), suspect_windows="none", **kw)
    win, _ = origin.build_index([str(refs)], str(d / "win.fpxindex"), **kw)  # the default (round 10)
    src = images.load_image(refs / "r04.png").pixels
    images.save_png(_collage(src, _textured(150, 200, 1099)), d / "collage.png")
    images.save_png(_textured(120, 150, seed=1098), d / "absent.png")
    return d, refs, plain, win


def test_windows_are_recorded_and_the_calibration_queries_get_them(built):
    d, _, plain, win = built
    w, p = load_index(d / "win.fpxindex"), load_index(d / "plain.fpxindex")
    assert w.document()["local"]["suspect_windows"] == "halves-thirds" and w.local.settings == WIN
    assert p.local.settings == L.ROUND9 and L.DEFAULT == WIN == L.ROUND10 == _local_settings_for(None, True)
    assert w.local_calib.n == L.n_views(WIN) * len(w.local_calib_owner)
    assert p.local_calib.n == 2 * len(p.local_calib_owner)
    # the same queries' two whole-frame views come first in both
    k = L.n_views(WIN)
    for j in range(3):
        assert np.array_equal(w.local_calib.features(k * j).desc, p.local_calib.features(2 * j).desc)
    # more views: an impostor's best inliers can only grow (the whole frame's views are among them)
    assert np.sum(win.calibration["impostor_local_sorted"]) >= np.sum(plain.calibration["impostor_local_sorted"])
    assert win.calibration["local_in_sample"]["n_queries"] == plain.calibration["local_in_sample"]["n_queries"]
    again = load_index(d / "win.fpxindex")
    calibrate(again, FMR)  # recalibrated under its own settings: the same scores
    assert again.calibration["impostor_local_sorted"] == win.calibration["impostor_local_sorted"]


def test_a_collage_gets_more_inliers_on_a_window_and_the_record_names_it(built):
    d, refs, plain, win = built
    want = str(refs / "r04.png")
    rec_w, rec_abs = origin.query([str(d / "collage.png"), str(d / "absent.png")], win, k=3)
    rec_p = origin.query([str(d / "collage.png")], plain, k=3)[0]
    top = rec_w.details["candidates"][0]
    assert top["path"] == want and rec_w.decision["label"] == "found"
    assert top["local_view"] not in ("original", "mirrored")  # a sub-window matched
    assert rec_w.details["local"]["verified"][0]["view"] == top["local_view"]
    assert "views" not in rec_w.details["local"]
    inl_p = {c["path"]: c.get("local_inliers", 0) for c in rec_p.details["candidates"]}.get(want, 0)
    assert top["local_inliers"] > inl_p, (top["local_inliers"], inl_p)
    assert all("local_view" not in c for c in rec_p.details["candidates"])  # an index without windows: as before
    assert rec_abs.decision["label"] == "not-in-library"


def test_cli_suspect_windows_recorded_kept_by_add_and_a_typo_is_refused(tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    idx, grown = cli_build_and_add(tmp_path, ["--suspect-windows", "halves-thirds"], 1080)
    assert idx.local.settings == WIN
    assert grown.local.settings == WIN and grown.n == 7
    assert grown.local_calib.n == L.n_views(WIN) * len(grown.local_calib_owner)
    res = CliRunner().invoke(app, ["origin", "index", str(tmp_path / "refs"), "-o", str(tmp_path / "t.fpxindex"),
                                   "--suspect-windows", "halves"])
    assert res.exit_code == 2 and not (tmp_path / "t.fpxindex").exists()
