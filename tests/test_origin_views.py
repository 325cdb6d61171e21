"""fpx origin --views: reference crop views as extra index rows (issue 12 follow-up: crop-robust retrieval)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import natural_image

from fingerprint_cli import images, origin
from fingerprint_cli.errors import ArtifactError, UsageError
from fingerprint_cli.origin import embedders, library
from fingerprint_cli.origin.index import OriginIndex, load_index


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("vrefs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(natural_image(96, 128, seed=300 + i), refs / f"r{i:02d}.png")
    # dim=0: no sealed projection, so that rows compare with the raw embeddings (the projection: test_origin_decision)
    full, _ = origin.build_index([str(refs)], str(d / "full.fpxindex"), n_calibration=12, dim=0, local=False)
    crops, recs = origin.build_index([str(refs)], str(d / "crops.fpxindex"), n_calibration=12, ref_views="crops", local=False,
                                     dim=0)
    return d, refs, full, crops, recs


def _off_centre_crop_mirror(px, frac=0.8):
    """The benchmark's failing family: an 80% crop at a quarter of the slack, mirrored."""
    return library.crop_view(px, frac, 0.25, 0.25)[:, ::-1]


def test_crop_views_are_the_embeddings_of_the_crops(lib):
    _, _, full, crops, recs = lib
    emb = embedders.get_embedder(embedders.DEFAULT_EMBEDDER)
    assert crops.n == full.n == 12 and crops.n_views == 6 and crops.n_rows == 72
    assert np.array_equal(crops.vectors, full.vectors)  # row i is still reference i's full view
    assert crops.ref_views["views"] == ["full", "centre_0.8", "tl_0.8", "tr_0.8", "bl_0.8", "br_0.8"]
    px = images.load_image(crops.refs[5]["path"]).pixels
    h, w = px.shape[:2]
    want = emb.embed([px[0:77, 0:102], px[19:96, 26:128]])  # independent crop arithmetic: tl and br 80%
    assert np.allclose(crops.view_vectors[5, [1, 4]], want, atol=1e-6)
    assert recs[-1].details["ref_views"] == crops.ref_views["views"]
    assert recs[-1].details["memory_bytes"] > 5 * full.memory_bytes() - 12 * 200


def test_search_lists_each_reference_once_at_its_best_view_as_brute_force(lib):
    _, _, _, crops, _ = lib
    rng = np.random.default_rng(1)
    q = crops.view_vectors[[3, 8], 2] + 0.05 * rng.standard_normal((2, crops.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    got = crops.search_views_detail(q, k=12)
    assert [t[0] for t in got] and len({t[0] for t in got}) == len(got) == 12  # deduplicated by reference
    allrows = np.concatenate([crops.vectors[:, None], crops.view_vectors], axis=1)  # (N, V, D)
    s = np.einsum("qd,nvd->qnv", q, allrows)  # brute force over query views × reference views
    best = s.max(axis=(0, 2))
    order = np.argsort(-best, kind="stable")
    assert [t[0] for t in got] == order.tolist()
    assert np.allclose([t[1] for t in got], best[order], atol=1e-5)
    r0 = got[0][0]
    qv, rv = np.unravel_index(np.argmax(s[:, r0, :]), s[:, r0, :].shape)
    assert (got[0][2], got[0][3]) == (int(qv), int(rv))


def test_impostor_scores_are_the_max_over_every_view_of_other_references(lib):
    _, _, _, crops, _ = lib
    allrows = np.concatenate([crops.vectors[:, None], crops.view_vectors], axis=1)
    imp = []
    for views, o in zip(crops.calib_vectors, crops.calib_owner):
        s = np.einsum("qd,nvd->nqv", views, allrows).reshape(crops.n, -1).max(axis=1)
        s[o] = -np.inf  # the test refs have no near-duplicates: the group is the reference itself
        imp.append(s.max())
    assert np.allclose(crops.calibration["impostor_scores_sorted"], np.sort(imp), atol=1e-5)
    n = len(imp)
    assert crops.threshold == pytest.approx(np.sort(imp)[math.ceil((n + 1) * 0.99) - 1] if
                                            math.ceil((n + 1) * 0.99) <= n else max(imp), abs=1e-6)


def test_crop_views_find_an_off_centre_crop_that_the_full_index_ranks_lower(lib):
    d, _, full, crops, _ = lib
    wins = 0
    for r in range(12):
        px = images.load_image(crops.refs[r]["path"]).pixels
        images.save_png(_off_centre_crop_mirror(px), d / f"q{r}.png")
    qs = [str(d / f"q{r}.png") for r in range(12)]
    rf = origin.query(qs, full, k=3)
    rc = origin.query(qs, crops, k=3)
    for r, (a, b) in enumerate(zip(rf, rc)):
        sf = {c["path"]: c["similarity"] for c in a.details["candidates"]}
        sc = {c["path"]: c["similarity"] for c in b.details["candidates"]}
        true = crops.refs[r]["path"]
        assert b.details["candidates"][0]["path"] == true  # crops: the origin ranks first
        assert sc[true] >= sf.get(true, -1.0) - 1e-6  # the full view is one of the crop index's rows
        wins += sc[true] > sf.get(true, -1.0) + 1e-3
        assert b.details["candidates"][0]["reference_view"] in crops.ref_views["views"]
        assert len({c["path"] for c in b.details["candidates"]}) == 3
    assert wins >= 10  # a crop view matches the cropped query better than the full image does
    assert sum(b.details["candidates"][0]["reference_view"] == "tl_0.8" for b in rc) >= 6


def test_views_survive_the_file_add_keeps_them_and_a_mismatch_is_refused(lib, tmp_path):
    d, refs, _, crops, _ = lib
    loaded = load_index(crops.path)
    assert loaded.n_views == 6 and np.array_equal(loaded.view_vectors, crops.view_vectors)
    meta = json.loads(__import__("safetensors").safe_open(crops.path, "np").metadata()["fpx_index"])
    assert meta["format_version"] == 2 and meta["ref_views"]["scheme"] == "crops"
    more = tmp_path / "more"
    more.mkdir()
    images.save_png(natural_image(96, 128, seed=999), more / "n.png")
    grown_path = tmp_path / "g.fpxindex"
    grown_path.write_bytes(open(crops.path, "rb").read())
    with pytest.raises(UsageError, match="--views full differs"):
        origin.build_index([str(more)], str(grown_path), add=True, ref_views="full")
    grown, _ = origin.build_index([str(more)], str(grown_path), add=True)
    assert grown.n == 13 and grown.view_vectors.shape[:2] == (13, 5)
    assert np.array_equal(grown.view_vectors[:12], crops.view_vectors)
    grid = library.ref_view_scheme("crops-grid")
    assert len(grid["views"]) == 26 and [0.8, 0.25, 0.75] in grid["crops"]
    with pytest.raises(UsageError, match="unknown --views"):
        origin.build_index([str(refs)], str(tmp_path / "x.fpxindex"), ref_views="tiles")
    bad = OriginIndex(embedder=crops.embedder, refs=crops.refs, vectors=crops.vectors,
                      view_vectors=crops.view_vectors[:, :2], ref_views=crops.ref_views)
    bad.save(tmp_path / "bad.fpxindex")
    with pytest.raises(ArtifactError, match="reference views"):
        load_index(tmp_path / "bad.fpxindex")


def test_cli_views_option(lib, tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    d, refs, _, crops, _ = lib
    out = tmp_path / "c.fpxindex"
    run = CliRunner().invoke
    res = run(app, ["origin", "index", str(refs), "-o", str(out), "--views", "crops", "-q"])
    assert res.exit_code == 0, res.output
    px = images.load_image(crops.refs[7]["path"]).pixels
    images.save_png(_off_centre_crop_mirror(px), tmp_path / "s.png")
    res = run(app, ["origin", "query", str(tmp_path / "s.png"), "--index", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["details"]["candidates"][0]["path"] == crops.refs[7]["path"]
    assert rec["provenance"]["index"]["ref_views"] == "crops"
    res = run(app, ["origin", "index", str(refs), "-o", str(tmp_path / "y.fpxindex"), "--views", "bogus"])
    # refused by the parser (a closed set), naming the option and the bad value, before anything is embedded
    assert res.exit_code == 2 and "--views" in res.output and "bogus" in res.output
    assert not (tmp_path / "y.fpxindex").exists() and not (tmp_path / "y.fpxindex.partial").exists()
