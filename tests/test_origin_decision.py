"""fpx origin, issue 12 round 3: the similarity-or-distinctiveness decision and the sealed projection (--dim)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import natural_image

from fingerprint_cli import images, origin
from fingerprint_cli.errors import UsageError
from fingerprint_cli.origin import embedders, library
from fingerprint_cli.origin.index import calibrate, duplicates_of, load_index, p_value, project


def _textured(h, w, seed, sigma=3.0, amount=0.6):
    """natural_image plus a smooth random texture of its own (natural_image's images all share one edge);
    ``sigma`` px the texture's smoothness, ``amount`` its strength."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal((h, w, 1)), (sigma, sigma, 0))
    return np.clip(natural_image(h, w, seed) + amount * tex, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("drefs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(16):
        images.save_png(_textured(96, 128, seed=500 + i), refs / f"r{i:02d}.png")
    src = images.load_image(refs / "r04.png").pixels
    (refs / "r04_copy.jpg").write_bytes(images.encode(src, "JPEG", quality=95))  # a near-duplicate group
    idx, _ = origin.build_index([str(refs)], str(d / "lib.fpxindex"), n_calibration=17, ref_views="crops",
                                decision="similarity+distinct")
    return d, refs, idx


def _ref_max(idx, views):
    """Brute force: best cosine of the query views to each reference over all its rows."""
    rows = np.concatenate([idx.vectors[:, None], idx.view_vectors], axis=1)  # (N, V, D)
    return np.einsum("qd,nvd->nqv", views, rows).reshape(idx.n, -1).max(axis=1)


def _distinct(s1, s2):
    return max(0.0, 1 - (1 - s1) / (1 - s2))


def _brute_impostor(idx, views, owner):
    s = _ref_max(idx, views)
    s[duplicates_of(idx, owner)] = -np.inf
    t = int(np.argmax(s))
    s1 = s[t]
    s[duplicates_of(idx, t)] = -np.inf
    return s1, _distinct(s1, s.max())


def test_distinct_threshold_is_the_conformal_quantile_of_brute_force_impostor_ratios(lib):
    _, _, idx = lib
    pairs = np.array([_brute_impostor(idx, v, int(o)) for v, o in zip(idx.calib_vectors, idx.calib_owner)])
    cal = calibrate(idx, fmr=0.2, decision="similarity+distinct")
    assert cal["decision"] == "similarity+distinct"
    n = len(pairs)
    rank = math.ceil((n + 1) * 0.9) - 1  # each test at half the stated rate
    assert np.allclose(cal["impostor_scores_sorted"], np.sort(pairs[:, 0]), atol=1e-5)
    assert np.allclose(cal["impostor_distinct_sorted"], np.sort(pairs[:, 1]), atol=1e-5)
    assert cal["threshold"] == pytest.approx(np.sort(pairs[:, 0])[rank], abs=1e-5)
    assert cal["distinct_threshold"] == pytest.approx(np.sort(pairs[:, 1])[rank], abs=1e-5)
    def fm(eps):  # a score equal to its threshold (it is one of them) may fall either side in float32
        return np.mean((pairs[:, 0] > cal["threshold"] + eps) | (pairs[:, 1] > cal["distinct_threshold"] + eps))

    assert fm(1e-5) <= cal["impostor_false_match_in_sample"] <= fm(-1e-5)
    assert cal["impostor_false_match_in_sample"] <= 0.2
    calibrate(idx, fmr=0.01, decision="similarity+distinct")


def _check_against_brute_force(idx, cal, emb, p, r) -> str:
    """Assert one query record's scores, p-value, decision and reasons against brute force; its label."""
    views = project(idx.proj_weight, emb.embed(library.views(images.load_image(p).pixels)))
    s = _ref_max(idx, views)
    t = int(np.argmax(s))
    s1 = s[t]
    s[duplicates_of(idx, t)] = -np.inf
    d = _distinct(s1, s.max())
    assert r.features["similarity_top1"] == pytest.approx(s1, abs=1e-5)
    assert r.features["distinctiveness"] == pytest.approx(d, abs=1e-4)
    found = s1 > cal["threshold"] or d > cal["distinct_threshold"]
    assert (r.decision["label"] == "found") == found, p.name
    ps, pd = p_value(cal, s1), p_value(cal, d, "impostor_distinct_sorted")
    assert r.decision["p_value"] == pytest.approx(min(1.0, 2 * min(ps, pd)), abs=1e-6)
    if found:
        assert r.decision["origin"]["path"] == idx.refs[t]["path"]
        assert r.decision["origin"]["passed"] == ("similarity" if s1 > cal["threshold"] else "distinct")
    assert [x["feature"] for x in r.reasons] == ["similarity_top1", "distinctiveness"]
    return r.decision["label"]


def test_query_decision_is_the_rule_on_brute_force_scores(lib, tmp_path):
    _, refs, idx = lib
    cal = calibrate(idx, fmr=0.2, decision="similarity+distinct")  # a loose rate: both tests decide some suspects
    paths = []
    for i, name in enumerate(["r02.png", "r07.png", "r11.png"]):
        px = images.load_image(refs / name).pixels
        variants = {"crop": library.crop_view(px, 0.7, 0.3, 0.6), "jpeg": px, "grade": np.clip(px * 0.8 + 0.1, 0, 1)}
        for kind, v in variants.items():
            p = tmp_path / f"{i}_{kind}.jpg"
            p.write_bytes(images.encode(v, "JPEG", quality=55))
            paths.append(p)
    for j in range(4):
        images.save_png(natural_image(96, 128, seed=900 + j), tmp_path / f"stranger{j}.png")
        paths.append(tmp_path / f"stranger{j}.png")
    recs = origin.query([str(p) for p in paths], idx, k=3)
    emb = embedders.get_embedder("dct-layout")
    labels = {_check_against_brute_force(idx, cal, emb, p, r) for p, r in zip(paths, recs)}
    assert labels == {"found", "not-in-library"}
    calibrate(idx, fmr=0.01, decision="similarity+distinct")


def test_a_near_duplicate_is_not_the_other_origin_of_the_ratio_test(lib):
    _, refs, idx = lib
    calibrate(idx, fmr=0.2, decision="similarity+distinct")  # 85 impostors: too few for the test at 0.5%
    rec = origin.query([str(refs / "r04.png")], idx, k=3)[0]
    names = [c["path"].split("/")[-1] for c in rec.details["candidates"]]
    assert set(names[:2]) == {"r04.png", "r04_copy.jpg"}  # the copy is ranked second ...
    # ... but the ratio test compares the top with the best reference of ANOTHER origin (the third)
    assert rec.reasons[1]["second_origin_similarity"] == pytest.approx(rec.details["candidates"][2]["similarity"],
                                                                         abs=1e-6)
    assert rec.features["distinctiveness"] > 0.5 and rec.decision["label"] == "found"
    cal = calibrate(idx, fmr=0.01, decision="similarity+distinct")
    assert cal["distinct_threshold"] is None and "not used" in cal["distinct_note"]
    rec = origin.query([str(refs / "r04.png")], idx, k=3)[0]
    assert rec.reasons[1]["threshold"] is None and rec.reasons[1]["says"].startswith("not used")


def test_similarity_rule_is_the_old_decision(lib, tmp_path):
    d, refs, _ = lib
    idx, _ = origin.build_index([str(refs)], str(d / "sim.fpxindex"), n_calibration=17, decision="similarity")
    assert load_index(d / "sim.fpxindex").calibration["decision"] == "similarity"
    px = images.load_image(refs / "r09.png").pixels
    images.save_png(library.crop_view(px, 0.75, 0.1, 0.9), tmp_path / "c.png")
    rec = origin.query([str(tmp_path / "c.png")], idx, k=2)[0]
    assert (rec.decision["label"] == "found") == (rec.features["similarity_top1"] > idx.threshold)
    assert rec.decision["distinct_threshold"] is None and len(rec.reasons) == 1
    with pytest.raises(UsageError, match="unknown --decision"):
        calibrate(idx, decision="vote")


# ---------------------------------------------------------------- the sealed projection
def test_projection_is_the_top_singular_subspace_and_queries_go_through_it(lib, tmp_path):
    from sklearn.decomposition import TruncatedSVD

    d, refs, _ = lib
    raw, _ = origin.build_index([str(refs)], str(d / "raw.fpxindex"), n_calibration=17, dim=0)
    idx, recs = origin.build_index([str(refs)], str(d / "p16.fpxindex"), n_calibration=17, dim=16)
    P = idx.proj_weight
    assert P.shape == (16, raw.dim) and idx.vectors.shape == (idx.n, 16)
    # the default (128 dims for dct-layout) needs 8 rows per dimension: this 17-reference library gets none
    assert load_index(d / "lib.fpxindex").projection is None
    auto, _ = origin.build_index([str(refs)], str(d / "auto.fpxindex"), n_calibration=17)
    assert auto.proj_weight is None and auto.dim == raw.dim
    with pytest.raises(UsageError, match="needs at least 100 indexed rows"):
        origin.build_index([str(refs)], str(d / "few.fpxindex"), n_calibration=0, dim=100)
    assert np.allclose(P @ P.T, np.eye(16), atol=1e-5)
    svd = TruncatedSVD(n_components=16, algorithm="arpack", random_state=0).fit(raw.vectors.astype(np.float64))
    C = svd.components_
    assert np.allclose(P.T @ P, C.T @ C, atol=1e-4)  # the same subspace as an independent (uncentred) SVD
    ref = raw.vectors @ P.T
    assert np.allclose(idx.vectors, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    assert recs[-1].details["projection"]["out_dim"] == 16
    loaded = load_index(d / "p16.fpxindex")
    assert json.loads(json.dumps(loaded.projection))["in_dim"] == raw.dim
    assert np.array_equal(loaded.proj_weight, P)
    rec = origin.query([str(refs / "r05.png")], loaded, k=2)[0]
    assert rec.details["candidates"][0]["path"] == str(refs / "r05.png")
    assert rec.provenance["index"]["projection"]["out_dim"] == 16
    extra = tmp_path / "extra"
    extra.mkdir()
    images.save_png(natural_image(96, 128, seed=777), extra / "new.png")
    with pytest.raises(UsageError, match="--dim 8 differs"):
        origin.build_index([str(extra)], str(d / "p16.fpxindex"), add=True, dim=8)
    grown, _ = origin.build_index([str(extra)], str(d / "p16.fpxindex"), add=True)
    assert grown.n == idx.n + 1 and np.array_equal(grown.proj_weight, P)
    new = embedders.get_embedder("dct-layout").embed([images.load_image(extra / "new.png").pixels])[0] @ P.T
    assert np.allclose(grown.vectors[-1], new / np.linalg.norm(new), atol=1e-5)
    with pytest.raises(UsageError, match="--dim must be between"):
        origin.build_index([str(refs)], str(d / "bad.fpxindex"), dim=raw.dim)


def test_cli_decision_and_dim_options(lib, tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    _, refs, _ = lib
    run = CliRunner().invoke
    out = tmp_path / "c.fpxindex"
    res = run(app, ["origin", "index", str(refs), "-o", str(out), "--decision", "vote"])
    assert res.exit_code == 2 and not out.exists()
    res = run(app, ["origin", "index", str(refs), "-o", str(out), "--dim", "12", "--decision", "similarity", "-q"])
    assert res.exit_code == 0, res.output
    idx = load_index(out)
    assert idx.dim == 12 and idx.calibration["decision"] == "similarity"
    res = run(app, ["origin", "query", str(refs / "r03.png"), "-i", str(out), "-f", "json"])
    rec = json.loads(res.stdout)[0]
    assert rec["decision"]["label"] == "found" and rec["decision"]["rule"] == "similarity"


# ---------------------------------------------------------------- pixel verification (rule similarity+verify)
def test_verify_score_finds_a_crop_inside_its_origin_and_not_inside_a_stranger():
    from fingerprint_cli.origin import verify

    ref = _textured(120, 160, seed=41)
    crop = library.crop_view(ref, 0.6, 0.8, 0.2)
    jpeg = images.decode(images.encode(crop, "JPEG", quality=60), "<jpeg>").pixels
    assert verify.score(crop, ref) > 0.8 and verify.score(jpeg, ref) > 0.7
    assert verify.score(np.ascontiguousarray(crop[:, ::-1]), ref) == pytest.approx(verify.score(crop, ref))
    assert verify.score(ref, ref) == pytest.approx(1.0, abs=1e-3)
    strangers = [verify.score(crop, _textured(120, 160, seed=s)) for s in (42, 43, 44)]
    assert max(strangers) < verify.score(jpeg, ref) - 0.3
    assert verify.score(np.full((50, 60, 3), 0.5, np.float32), ref) == -1.0  # a flat suspect verifies nothing


def test_verify_rule_is_calibrated_on_brute_force_impostor_scores_and_decides_crops(lib, tmp_path):
    from fingerprint_cli.origin import verify
    from fingerprint_cli.origin.index import calib_transform

    d, refs, idx = lib
    cal = calibrate(idx, fmr=0.2, decision="similarity+verify")
    assert cal["tests"] == ["similarity", "verify"] and "distinct_threshold" not in cal
    expect = []
    for views, o, t in zip(idx.calib_vectors, idx.calib_owner, idx.calib_transform):
        s = _ref_max(idx, views)
        s[duplicates_of(idx, int(o))] = -np.inf
        top = int(np.argmax(s))
        q = calib_transform(t, images.load_image(idx.refs[int(o)]["path"]).pixels)
        expect.append(verify.score(q, images.load_image(idx.refs[top]["path"]).pixels))
    assert np.allclose(cal["impostor_verify_sorted"], np.sort(expect), atol=1e-5)
    n = len(expect)
    assert cal["verify_threshold"] == pytest.approx(np.sort(expect)[math.ceil((n + 1) * 0.9) - 1], abs=1e-5)
    px = images.load_image(refs / "r06.png").pixels
    images.save_png(library.crop_view(px, 0.65, 0.5, 0.5), tmp_path / "crop.png")
    images.save_png(natural_image(96, 128, seed=4242), tmp_path / "stranger.png")
    crop, stranger = origin.query([str(tmp_path / "crop.png"), str(tmp_path / "stranger.png")], idx, k=3)
    v = verify.score(images.load_image(tmp_path / "crop.png").pixels, px)
    assert crop.details["candidates"][0]["path"] == str(refs / "r06.png")
    assert crop.features["similarity_top1"] <= cal["threshold"]  # a 65% crop: the layout alone does not decide
    assert crop.reasons[1]["value"] == pytest.approx(v, abs=1e-6) and v > cal["verify_threshold"]
    assert crop.decision["label"] == "found" and crop.decision["origin"]["passed"] == "verify"
    assert stranger.reasons[1]["feature"] == "verify"
    sv = stranger.reasons[1]["value"]
    assert (stranger.decision["label"] == "found") == (
        stranger.features["similarity_top1"] > cal["threshold"] or (sv is not None and sv > cal["verify_threshold"]))
    calibrate(idx, fmr=0.01, decision="similarity+distinct")
