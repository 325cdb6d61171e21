"""fpx origin, issue 12 round 5: reference tile keypoints, recorded local settings, ORB only when needed."""

from __future__ import annotations

import numpy as np
import pytest
from test_origin_local import _textured

from fingerprint_cli import images, origin
from fingerprint_cli.origin import index as index_mod
from fingerprint_cli.origin import library
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import load_index

FMR = 0.05


@pytest.fixture(scope="module")
def round4_lib(tmp_path_factory, monkeypatch_module):
    """An index built with the round-4 local settings (as an index of round 4 was)."""
    d = tmp_path_factory.mktemp("r5refs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(20):
        images.save_png(_textured(160, 220, seed=700 + i), refs / f"r{i:02d}.png")
    monkeypatch_module.setattr(L, "DEFAULT", L.ROUND4)
    idx, _ = origin.build_index([str(refs)], str(d / "r4.fpxindex"), n_calibration=20, false_match_rate=FMR)
    monkeypatch_module.undo()
    return d, refs, idx


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_reference_tiles_add_spread_keypoints_at_the_reference_frame():
    px = _textured(240, 320, 5)
    whole, tiled = L.extract(px), L.extract_reference(px, L.DEFAULT)
    assert np.array_equal(L.extract_reference(px, L.ROUND4).desc, whole.desc)  # round 4: the whole frame only
    n = len(whole)
    assert np.array_equal(tiled.desc[:n], whole.desc) and np.allclose(tiled.xy[:n], whole.xy)
    extra = tiled.xy[n:]
    assert len(extra) > 2 * L.DEFAULT.tile_features  # every tile contributes
    assert extra.min() >= 0 and extra[:, 0].max() <= L.SIDE and extra[:, 1].max() <= L.SIDE * 240 / 320
    # each quadrant of the frame holds tile keypoints
    for qy in (0, 1):
        for qx in (0, 1):
            inside = ((extra[:, 0] >= qx * 160) & (extra[:, 0] < (qx + 1) * 160)
                      & (extra[:, 1] >= qy * 120) & (extra[:, 1] < (qy + 1) * 120))
            assert inside.sum() >= 20


def test_a_small_crop_verifies_with_more_inliers_against_the_tiled_reference():
    got = []
    for seed in (21, 22, 23):
        px = _textured(240, 320, seed)
        crop = np.ascontiguousarray(px[130:226, 30:158])  # a 40% crop (both axes)
        q = L.extract(crop)
        got.append((L.inliers(q, L.extract_reference(px, L.ROUND4)), L.inliers(q, L.extract_reference(px, L.DEFAULT))))
    assert sum(t for _, t in got) > sum(o for o, _ in got), got


def test_settings_are_recorded_and_read_back_and_round4_documents_keep_round4_values(tmp_path):
    doc = L.DEFAULT.doc()
    assert L.Settings.from_doc(doc) == L.DEFAULT
    round4_doc = {"features": "orb", "side": 320, "n_features": 256, "knn": 4}  # what a round-4 index recorded
    assert L.Settings.from_doc(round4_doc) == L.ROUND4 and L.Settings.from_doc(None) == L.ROUND4
    assert index_mod.local_settings(L.DEFAULT)["tile_grid"] == L.DEFAULT.tile_grid


def test_new_index_records_tiles_and_queries_extract_orb_only_when_needed(tmp_path, monkeypatch):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(20):
        images.save_png(_textured(160, 220, seed=800 + i), refs / f"r{i:02d}.png")
    idx, _ = origin.build_index([str(refs)], str(tmp_path / "n.fpxindex"), n_calibration=20, false_match_rate=FMR)
    back = load_index(tmp_path / "n.fpxindex")
    assert back.local.settings == L.DEFAULT and back.document()["local"]["tile_grid"] == 2
    own = L.extract_reference(images.load_image(refs / "r03.png").pixels, L.DEFAULT)
    assert np.array_equal(back.local.features(3).desc, own.desc)
    src = images.load_image(refs / "r09.png").pixels
    images.save_png(np.ascontiguousarray(src[70:150, 10:110]), tmp_path / "crop.png")  # ~45% crop
    calls = []
    real = L.extract_views
    monkeypatch.setattr(L, "extract_views", lambda px: calls.append(px.shape) or real(px))
    same, crop = origin.query([str(refs / "r03.png"), str(tmp_path / "crop.png")], back, k=3)
    assert same.details["local"] == {"ran": False, "why": "skipped: the similarity decided"}
    assert calls == [(80, 100, 3)]  # the crop's views only: none for the suspect the similarity decided
    assert crop.details["local"]["ran"] and crop.decision["label"] == "found"
    assert crop.decision["origin"]["path"].endswith("r09.png")


def test_a_suspect_changed_between_reads_is_said_not_hidden(tmp_path, round4_lib):
    p = tmp_path / "s.png"
    images.save_png(_textured(64, 64, 1), p)
    got = library._local_views_chunk({"items": [(str(p), "0" * 64), (str(tmp_path / "gone.png"), "0" * 64)]})
    assert "changed since it was embedded" in got[0] and str(p) in got[0]
    assert isinstance(got[1], str) and "gone.png" in got[1]
    idx = round4_lib[2]
    assert library._local_skip(idx, [], got[0]) == f"not computed: {got[0]}"
    assert library._local_skip(idx, [], None) == "not computed: no local features for this suspect"


def test_round4_index_keeps_its_settings_on_query_and_add(round4_lib, tmp_path):
    d, refs, idx = round4_lib
    back = load_index(d / "r4.fpxindex")
    assert back.local.settings == L.ROUND4
    assert np.array_equal(back.local.features(0).desc, L.extract(images.load_image(refs / "r00.png").pixels).desc)
    src = images.load_image(refs / "r06.png").pixels
    images.save_png(np.ascontiguousarray(src[20:120, 30:170]), tmp_path / "crop.png")
    rec = origin.query([str(tmp_path / "crop.png")], back, k=3)[0]
    assert rec.decision["label"] == "found" and rec.decision["origin"]["path"].endswith("r06.png")
    # --add extracts the new references as the index was built (round 4), not with this fpx's defaults
    out = tmp_path / "grow.fpxindex"
    out.write_bytes((d / "r4.fpxindex").read_bytes())
    extra = tmp_path / "extra.png"
    images.save_png(_textured(160, 220, seed=799), extra)
    grown, _ = origin.build_index([str(extra)], str(out), add=True)
    assert grown.local.settings == L.ROUND4
    assert np.array_equal(grown.local.features(grown.n - 1).desc, L.extract(images.load_image(extra).pixels).desc)


def test_vote_ivf_blob_is_sealed_under_its_prefix_and_probed_as_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "FLAT_MAX", 2000)
    rng = np.random.default_rng(0)
    feats = [L.Features(rng.uniform(0, 300, (100, 2)).astype(np.float32),
                        rng.integers(0, 256, (100, 32), dtype=np.uint8)) for _ in range(40)]
    s = L.Settings(tile_grid=2, ivf_max_lists=16, ivf_nprobe=3, ivf_train_per_list=40)
    li = L.LocalIndex.from_features(feats, s)
    assert li.search_kind == "ivf"
    ivf = li.faiss_index()
    assert ivf.nlist == 16 and ivf.nprobe == 3
    t = index_mod._local_tensors("local", li)
    assert np.array_equal(t["local.faiss"], li.blob)
    calib = L.LocalIndex.from_features(feats[:30], s)  # never searched: no blob, none written
    assert "local.calib.faiss" not in index_mod._local_tensors("local.calib", calib)
    back = index_mod._local_from(t, "local", s)
    q = L.Features(np.zeros((50, 2), np.float32), li.desc[::40][:50])
    assert np.array_equal(L.votes(back, q), L.votes(li, q)) and back.faiss_index().nprobe == 3


def test_an_index_written_by_round4_without_the_settings_keys_loads_and_queries_the_same(round4_lib, tmp_path):
    import json

    from fingerprint_cli import artifacts

    d, refs, _ = round4_lib
    tens, meta = artifacts.read_tensors(d / "r4.fpxindex")
    doc = json.loads(meta["fpx_index"])
    for k in L.DEFAULT.doc():
        doc["local"].pop(k)  # what a round-4 fpx wrote
    meta = {**meta, "fpx_index": json.dumps(doc, sort_keys=True)}
    meta["seal"] = index_mod._seal(meta["fpx_index"], {k: v.numpy() for k, v in tens.items()})
    old = tmp_path / "old.fpxindex"
    artifacts.write_tensors(old, tens, meta)
    back = load_index(old)
    assert back.local.settings == L.ROUND4 and back.document()["format_version"] == 4
    src = images.load_image(refs / "r11.png").pixels
    images.save_png(np.ascontiguousarray(src[40:130, 60:200]), tmp_path / "crop.png")
    a = origin.query([str(tmp_path / "crop.png")], back, k=3)[0]
    b = origin.query([str(tmp_path / "crop.png")], load_index(d / "r4.fpxindex"), k=3)[0]
    assert a.decision["label"] == b.decision["label"] == "found"
    assert a.decision["local_inliers"] == b.decision["local_inliers"] and a.details["candidates"] == b.details["candidates"]
