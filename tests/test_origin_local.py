"""fpx origin, issue 12 round 4: the local-feature stage (ORB keypoints, votes, RANSAC verification)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_origin_decision import _textured as _decision_textured
from typer.testing import CliRunner

from fingerprint_cli import artifacts, images, origin
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import ArtifactError, UsageError
from fingerprint_cli.origin import library
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, conformal_threshold, load_index

FMR = 0.05  # 24 calibration references x 3 local crops = 72 impostor scores: enough for 2.5% per test


def _textured(h, w, seed):
    """A natural-looking image with fine texture of its own (keypoints to detect)."""
    return _decision_textured(h, w, seed, sigma=1.5, amount=1.2)


def textured_refs(root, n: int, seed0: int, h: int = 160, w: int = 220):
    """A new folder ``root/refs`` of ``n`` :func:`_textured` references ``r00.png`` … (seeds ``seed0`` …)."""
    refs = root / "refs"
    refs.mkdir()
    for i in range(n):
        images.save_png(_textured(h, w, seed=seed0 + i), refs / f"r{i:02d}.png")
    return refs


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("lrefs")
    refs = textured_refs(d, 24, 900)
    idx, recs = origin.build_index([str(refs)], str(d / "lib.fpxindex"), n_calibration=24, false_match_rate=FMR)
    return d, refs, idx, recs


def _crop(px, y0, x0, h, w, flip=False):
    c = px[y0:y0 + h, x0:x0 + w]
    return np.ascontiguousarray(c[:, ::-1] if flip else c)


def test_inliers_separate_a_crop_of_the_origin_from_an_unrelated_image():
    a, b = _textured(160, 220, 1), _textured(160, 220, 2)
    q = _crop(a, 30, 50, 90, 120)
    from scipy import ndimage

    rot = np.clip(ndimage.rotate(q, 7, axes=(1, 0), reshape=False, order=1, mode="reflect"), 0, 1)
    fa, fb = L.extract(a), L.extract(b)
    assert 0 < len(fa) <= L.N_FEATURES and fa.desc.dtype == np.uint8 and fa.desc.shape[1] == 32
    for suspect in (q, rot):
        n_true, n_false = L.inliers(L.extract(suspect), fa), L.inliers(L.extract(suspect), fb)
        assert n_true >= 20 and n_false <= 8, (n_true, n_false)
    # a mirrored crop is found through the mirrored view only
    views = L.extract_views(_crop(a, 30, 50, 90, 120, flip=True))
    assert L.inliers(views[1], fa) >= 20 > L.inliers(views[0], fa)


def test_votes_equal_a_brute_force_hamming_count():
    rng = np.random.default_rng(3)
    feats = [L.Features(rng.uniform(0, 300, (n, 2)).astype(np.float32),
                        rng.integers(0, 256, (n, 32), dtype=np.uint8)) for n in (40, 0, 25, 60)]
    li = L.LocalIndex.from_features(feats)
    q = L.Features(np.zeros((30, 2), np.float32), li.desc[::5][:30] ^ np.uint8(1))  # near copies of rows
    got = L.votes(li, q)
    bits = np.unpackbits(np.bitwise_xor(q.desc[:, None], li.desc[None]), axis=2).sum(axis=2)
    owner = np.repeat(np.arange(4), [40, 0, 25, 60])
    want = np.zeros(4, int)
    for row in bits:
        nn = np.argsort(row, kind="stable")[:L.KNN]
        nn = nn[row[nn] <= L.VOTE_HAMMING]
        want[np.unique(owner[nn])] += 1
    assert got.tolist() == want.tolist() and got.sum() >= len(q) == 25


def test_index_carries_local_features_and_a_calibrated_local_threshold(lib):
    d, _, idx, recs = lib
    assert idx.local is not None and idx.local.n == idx.n
    assert idx.calibration["decision"] == "similarity+local"
    cal = idx.calibration
    scores = np.asarray(cal["impostor_local_sorted"])
    assert len(scores) == 24 * len(L.calib_names(idx.local.settings)) == 72  # 3 crops each (no overlays by default)
    assert cal["local_threshold"] == conformal_threshold(scores, FMR / 2)[0]
    assert cal["local_in_sample"]["genuine_inliers_median"] > cal["local_threshold"]
    summary = recs[-1].details
    assert summary["local_bytes_per_reference"] > 0
    assert summary["memory_bytes_per_reference"] > summary["local_bytes_per_reference"]
    back = load_index(d / "lib.fpxindex")
    assert back.document()["format_version"] == 4
    assert np.array_equal(back.local.desc, idx.local.desc) and np.array_equal(back.local.offsets, idx.local.offsets)
    assert back.local_calib.n == L.n_views(back.local.settings) * len(back.local_calib_owner)
    assert L.n_views(back.local.settings) == 22  # the default's suspect sub-windows (round 10)


def test_crop_is_found_by_the_local_stage_and_ranked_first(lib):
    d, refs, idx, _ = lib
    src = images.load_image(refs / "r07.png").pixels
    images.save_png(_crop(src, 20, 40, 80, 110, flip=True), d / "crop.png")  # 50% crop, mirrored
    images.save_png(_textured(160, 220, seed=4321), d / "absent.png")
    crop, absent = origin.query([str(d / "crop.png"), str(d / "absent.png")], idx, k=3)
    dec = crop.decision
    assert dec["label"] == "found" and dec["origin"]["path"].endswith("r07.png")
    assert dec["origin"]["passed"] == "local"
    assert dec["dense_region"] == "hull" and dec["dense"] > dec["dense_threshold"]  # the default (round 9)
    assert dec["evidence"] == (f"local-inliers {int(dec['local_inliers'])}, threshold {dec['local_threshold']:g}"
                               f"; dense {dec['dense']:.3f}, threshold {dec['dense_threshold']:.3f}")
    assert dec["local_inliers"] > dec["local_threshold"]
    assert crop.details["candidates"][0]["path"].endswith("r07.png")
    assert crop.details["candidates"][0]["local_inliers"] == dec["local_inliers"]
    assert crop.details["local"]["ran"] and crop.details["local"]["verified"][0]["path"].endswith("r07.png")
    assert 0 < dec["p_value_local"] <= 1
    assert absent.decision["label"] == "not-in-library"
    assert absent.decision["local_inliers"] is not None and absent.decision["local_inliers"] <= dec["local_threshold"]


def test_local_stage_is_skipped_when_the_similarity_decides(lib):
    d, refs, idx, _ = lib
    rec = origin.query([str(refs / "r03.png")], idx, k=2)[0]
    assert rec.decision["label"] == "found" and rec.decision["origin"]["passed"] == "similarity"
    assert rec.details["local"] == {"ran": False, "why": "skipped: the similarity decided"}
    assert rec.decision["evidence"].startswith("similarity ")


def test_tampered_local_features_are_refused(lib, tmp_path):
    d, _, idx, _ = lib
    tens, meta = artifacts.read_tensors(d / "lib.fpxindex")
    desc = tens["local.desc"].clone()
    desc[0, 0] ^= 1
    tens["local.desc"] = desc
    bad = tmp_path / "bad.fpxindex"
    artifacts.write_tensors(bad, tens, meta)
    with pytest.raises(ArtifactError, match="modified after it was sealed"):
        load_index(bad)


def test_no_local_index_queries_as_before(tmp_path, lib):
    _, refs, _, _ = lib
    idx, _ = origin.build_index([str(refs)], str(tmp_path / "v3.fpxindex"), n_calibration=24, local=False,
                                decision="similarity")
    back = load_index(tmp_path / "v3.fpxindex")
    assert back.local is None and back.document()["format_version"] == 1
    rec = origin.query([str(refs / "r05.png")], back, k=2)[0]
    assert rec.details["local"]["ran"] is False and rec.decision["local_inliers"] is None
    with pytest.raises(UsageError, match="--local"):
        calibrate(back, FMR, decision="similarity+local")
    with pytest.raises(UsageError, match="local"):
        origin.build_index([str(refs / "r00.png")], str(tmp_path / "v3.fpxindex"), add=True, local=True)


def test_add_keeps_local_features_and_resume_journal_round_trips(tmp_path, lib):
    _, refs, idx, _ = lib
    out = tmp_path / "grow.fpxindex"
    paths = sorted(str(p) for p in refs.glob("*.png"))
    origin.build_index(paths[:20], str(out), n_calibration=20, false_match_rate=FMR)
    grown, _ = origin.build_index(paths[20:], str(out), add=True)
    assert grown.local.n == grown.n == 24
    for i in (0, 23):
        j = [r["path"] for r in idx.refs].index(grown.refs[i]["path"])
        assert np.array_equal(grown.local.features(i).desc, idx.local.features(j).desc)
    with pytest.raises(UsageError, match="no-local"):
        origin.build_index(paths[:1], str(out), add=True, local=False)
    f = L.extract(images.load_image(paths[0]).pixels)
    back = library._unjournal(json.loads(json.dumps(library._journal([{"path": "x", "local": f,
                                                                       "local_calib": [[f, f]]}]))))[0]
    assert np.array_equal(back["local"].desc, f.desc) and np.allclose(back["local_calib"][0][1].xy, f.xy)


def test_cli_index_reports_memory_and_no_local(tmp_path, lib):
    _, refs, _, _ = lib
    r = CliRunner().invoke(app, ["origin", "index", str(refs), "-o", str(tmp_path / "c.fpxindex"),
                                 "--calibration-refs", "24", "--false-match-rate", "0.05"])
    assert r.exit_code == 0, r.output
    assert "bytes per reference" in r.output and "local-inliers threshold" in r.output
    r = CliRunner().invoke(app, ["origin", "index", str(refs), "-o", str(tmp_path / "n.fpxindex"), "--no-local",
                                 "--calibration-refs", "0"])
    assert r.exit_code == 0, r.output
    assert load_index(tmp_path / "n.fpxindex").local is None
    r = CliRunner().invoke(app, ["origin", "index", str(refs), "-o", str(tmp_path / "x.fpxindex"),
                                 "--decision", "similarity+locl"])
    assert r.exit_code == 2


def test_local_duplicates_group_the_same_scene_and_nothing_else():
    a, b = _textured(160, 220, 11), _textured(160, 220, 12)
    shifted = np.ascontiguousarray(np.roll(a, 25, axis=1))  # the same scene, panned: a neighbouring frame
    shifted[:, :25] = b[:, :25]
    li = L.LocalIndex.from_features([L.extract(x) for x in (a, b, shifted)])
    assert L.is_duplicate(li, 0, 2) and L.is_duplicate(li, 2, 0)
    assert not L.is_duplicate(li, 0, 1) and not L.is_duplicate(li, 1, 2)
    assert L.local_duplicates(li, 0) == {0, 2} and L.local_duplicates(li, 1) == {1}
    assert L.local_duplicates(li, 1, extra=[0, 2]) == {1}
