"""fpx origin, issue 12 round 6: overlay crops among the local calibration queries (recorded in the index)."""

from __future__ import annotations

import numpy as np
import pytest
from test_origin_local import _textured

from fingerprint_cli import images, origin
from fingerprint_cli.origin import index as index_mod
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, load_index

FMR = 0.05


def _graphic(seed: int, overlay: str) -> np.ndarray:
    """A reference that itself carries a templated overlay (a stock library's captioned or meme graphics):
    the overlay crop of another picture, at the library's size."""
    return images.resize(L.calib_transform(overlay, np.array(_textured(160, 220, seed), np.float32)), 160, 220)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """The same references — 12 pictures and 4 graphics with templated overlays — indexed with the round-5
    local settings (the default until round 9: ``dense=False``) and with the overlay calibration crops (opt-in)."""
    d = tmp_path_factory.mktemp("r6refs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(_textured(160, 220, seed=600 + i), refs / f"r{i:02d}.png")
    for i, t in enumerate(("lov_caption_band", "lov_meme_bands", "lov_caption_band", "lov_sticker")):
        images.save_png(_graphic(700 + i, t), refs / f"g{i:02d}.png")
    old, _ = origin.build_index([str(refs)], str(d / "r5.fpxindex"), n_calibration=16, false_match_rate=FMR,
                                dense=False, suspect_windows="none")
    new, _ = origin.build_index([str(refs)], str(d / "r6.fpxindex"), n_calibration=16, false_match_rate=FMR,
                                calibration_overlays=True, dense=False, suspect_windows="none")
    return d, refs, old, new


def test_overlay_transforms_are_deterministic_and_draw_where_they_say():
    px = _textured(200, 300, 3)
    assert L.calib_names(L.ROUND5) == list(L.CALIB_TRANSFORMS) and L.calib_names(L.ROUND4) == list(L.CALIB_TRANSFORMS)
    assert L.DEFAULT == L.ROUND10 and not L.DEFAULT.calib_overlays  # round 6's rule: not the default
    assert L.calib_names(L.OVERLAYS) == list(L.CALIB_TRANSFORMS) + list(L.OVERLAY_TRANSFORMS)
    for name in L.OVERLAY_TRANSFORMS:
        a, b = L.calib_transform(name, px), L.calib_transform(name, px)
        assert np.array_equal(a, b)  # seeded: the same overlay every time
    cap = L.calib_transform("lov_caption_band", px)
    assert cap.shape[:2] == (140, 210)  # the 70% crop
    band = cap[-cap.shape[0] // 5 + 2:]
    assert band.max() > 0.85 and band.min() < 0.2  # a light band holding dark blocks
    meme = L.calib_transform("lov_meme_bands", px)
    assert np.median(meme[:8]) < 0.15 and meme[:20].max() > 0.8  # a dark band with light text at the top
    frame = L.calib_transform("lov_frame", px)
    assert frame.shape[:2] == px.shape[:2] and np.abs(frame[2, 2] - np.float32([0.85, 0.8, 0.7])).max() < 0.15
    st = L.calib_transform("lov_sticker", px)
    h, w = st.shape[:2]
    corner = st[round(0.05 * h) + 2:round(0.05 * h) + 8, w - round(0.05 * w) - 8:w - round(0.05 * w) - 2]
    assert corner[..., 0].mean() > 0.7 and corner[..., 2].mean() < 0.3  # the saturated red patch


def test_new_index_records_and_calibrates_on_the_overlay_crops(libs):
    d, refs, old, new = libs
    n_old, n_new = len(old.local_calib_transform), len(new.local_calib_transform)
    assert n_new == n_old // 3 * 7 and new.local_calib.n == 2 * n_new
    assert set(new.local_calib_transform) == set(L.calib_names(L.OVERLAYS))
    back = load_index(d / "r6.fpxindex")
    assert back.local.settings == L.OVERLAYS and back.local.settings.calib_overlays
    assert back.document()["local"]["calib_transforms"] == L.calib_names(L.OVERLAYS)
    assert load_index(d / "r5.fpxindex").local.settings == L.ROUND5
    # an overlay query's views are the overlay crop of its own reference, extracted as a suspect's
    j = new.local_calib_transform.index("lov_meme_bands")
    o = int(new.local_calib_owner[j])
    want = L.extract_views(L.calib_transform("lov_meme_bands", images.load_image(new.refs[o]["path"]).pixels))
    assert np.array_equal(new.local_calib.features(2 * j).desc, want[0].desc)
    # the references' own features are untouched by the change
    assert np.array_equal(new.local.desc, old.local.desc)


def _impostors_of(idx, queries: list[int]) -> list[float]:
    """The local impostor score of some of an index's calibration queries, recomputed (own group excluded)."""
    groups = {}
    out = []
    for j in queries:
        o = int(idx.local_calib_owner[j])
        if o not in groups:
            groups[o] = set(index_mod.duplicates_of(idx, o).tolist()) | L.local_duplicates(idx.local, o, range(idx.n))
        out.append(index_mod._local_impostor(idx.local, [idx.local_calib.features(2 * j),
                                                         idx.local_calib.features(2 * j + 1)], o, groups[o]))
    return out


def test_an_overlay_impostor_raises_the_local_threshold(libs):
    _, _, old, new = libs
    imp_old = np.asarray(old.calibration["impostor_local_sorted"])
    imp_new = np.asarray(new.calibration["impostor_local_sorted"])
    assert len(imp_new) == len(imp_old) // 3 * 7
    # a caption-band crop of a picture meets the graphics' identical bands: impostors the old crops never made
    assert imp_new.max() > imp_old.max() + 20
    j = [i for i, t in enumerate(new.local_calib_transform) if t == "lov_caption_band"]
    assert np.median(_impostors_of(new, j)) > imp_old.max()
    assert new.calibration["local_threshold"] > old.calibration["local_threshold"]
    # brute force: the threshold is the conformal quantile of the impostor scores, overlay queries included
    thr, _ = index_mod.conformal_threshold(imp_new, FMR / 2)
    assert new.calibration["local_threshold"] == thr


def test_round5_index_calibrates_and_grows_as_before(libs, tmp_path):
    d, refs, old, _ = libs
    back = load_index(d / "r5.fpxindex")
    thr = back.calibration["local_threshold"]
    calibrate(back, FMR)
    assert back.calibration["local_threshold"] == thr
    assert back.calibration["impostor_local_sorted"] == old.calibration["impostor_local_sorted"]
    out = tmp_path / "grow.fpxindex"
    out.write_bytes((d / "r5.fpxindex").read_bytes())
    extra = []
    for i in range(3):
        p = tmp_path / f"x{i}.png"
        images.save_png(_textured(160, 220, seed=690 + i), p)
        extra.append(str(p))
    grown, _ = origin.build_index(extra, str(out), add=True, n_calibration=3)
    assert grown.local.settings == L.ROUND5
    assert set(grown.local_calib_transform) == set(L.CALIB_TRANSFORMS)  # no overlay crops in a round-5 index
    assert len(grown.local_calib_transform) > len(old.local_calib_transform)


def cli_build_and_add(tmp_path, options: list[str], seed: int):
    """``fpx origin index`` of 6 pictures with ``options`` (2 calibration references), then ``--add`` of a 7th:
    the index as built and as grown."""
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(6):
        images.save_png(_textured(120, 160, seed=seed + i), refs / f"r{i}.png")
    out = tmp_path / "o.fpxindex"
    run = CliRunner().invoke
    res = run(app, ["origin", "index", str(refs), "-o", str(out), *options, "--calibration-refs", "2", "-q"])
    assert res.exit_code == 0, res.output
    idx = load_index(out)
    extra = tmp_path / "x.png"
    images.save_png(_textured(120, 160, seed=seed + 59), extra)
    res = run(app, ["origin", "index", str(extra), "-o", str(out), "--add", "-q"])
    assert res.exit_code == 0, res.output
    return idx, load_index(out)


def test_cli_calibration_overlays_opt_in_is_recorded_and_kept_by_add(tmp_path):
    idx, grown = cli_build_and_add(tmp_path, ["--calibration-overlays"], 640)
    assert idx.local.settings.calib_overlays
    assert idx.local_calib_transform == L.calib_names(L.OVERLAYS) * 2
    assert grown.local.settings == idx.local.settings and grown.n == 7
    assert set(grown.local_calib_transform) == set(L.calib_names(L.OVERLAYS))
