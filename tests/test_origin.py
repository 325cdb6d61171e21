"""fpx origin: embedders, the sealed faiss index, calibration, queries, the head, scale-out and refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import natural_image

from fingerprint_cli import images, origin
from fingerprint_cli.errors import ArtifactError, InputError, UsageError
from fingerprint_cli.origin import embedders, library
from fingerprint_cli.origin import head as head_mod
from fingerprint_cli.origin.index import OriginIndex, calibrate, load_index, p_value


@pytest.fixture
def refs(tmp_path):
    d = tmp_path / "refs"
    d.mkdir()
    for i in range(14):
        images.save_png(natural_image(80, 112, seed=100 + i), d / f"r{i:02d}.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


@pytest.fixture
def built(refs, tmp_path):
    out = tmp_path / "lib.fpxindex"
    idx, recs = origin.build_index([str(refs)], str(out), n_calibration=14, local=False)  # the similarity+verify rule (local: test_origin_local)
    return idx, recs, out


# ---------------------------------------------------------------- embedders
def test_dct_layout_is_unit_norm_and_cancels_a_global_regrade():
    e = embedders.get_embedder("dct-layout")
    x = natural_image(90, 120, seed=3) * 0.8 + 0.1
    v = e.embed([x, 0.9 * x + 0.05, natural_image(90, 120, seed=4)])
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v.shape == (3, e.dim) and e.dim == (16 * 16 - 1) + 2 * (8 * 8 - 1)
    assert float(v[0] @ v[1]) > 0.9999  # brightness/contrast change cancels (centring, luma std)
    assert float(v[0] @ v[2]) < 0.9


def test_dct_layout_matches_an_independent_dct():
    from scipy.fft import dct

    e = embedders.DctLayout(size=16, y_keep=4, c_keep=2, alpha=1.0, chroma=0.5)
    x = natural_image(16, 16, seed=5)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    yy = (y - y.mean()) / y.std()
    c = dct(dct(yy, axis=0, norm="ortho"), axis=1, norm="ortho")[:4, :4]  # separable 1-D DCTs
    u, w = np.mgrid[0:4, 0:4]
    want = (c * np.sqrt(u * u + w * w)).ravel()[1:]
    got = e.one(x)[:15]
    assert np.allclose(got, want, atol=1e-4)


def test_unknown_embedder_suggests_a_close_name():
    with pytest.raises(UsageError, match="did you mean 'dct-layout'"):
        embedders.get_embedder("dct-layuot")


# ---------------------------------------------------------------- index build, search, seal
def test_build_keeps_going_past_an_unreadable_reference(built, refs):
    idx, recs, out = built
    assert idx.n == 14
    bad = [r for r in recs if not r.ok]
    assert len(bad) == 1 and "broken.png" in bad[0].error["message"]
    assert recs[-1].inputs["index"]["sha256"] == idx.seal and recs[-1].features["n_references"] == 14
    assert out.exists() and not out.with_name(out.name + ".partial").exists()


def test_exact_search_equals_brute_force(built):
    idx, _, out = built
    loaded = load_index(out)
    assert loaded.seal == idx.seal and np.array_equal(loaded.vectors, idx.vectors)
    q = loaded.vectors[[2, 7]] + 0.05 * np.random.default_rng(0).standard_normal((2, loaded.dim)).astype(np.float32)
    sims, ids = loaded.search(q, 5)
    brute = q @ loaded.vectors.T
    assert np.array_equal(ids, np.argsort(-brute, axis=1)[:, :5])
    assert np.allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_a_tampered_index_is_refused(built, tmp_path):
    _, _, out = built
    data = bytearray(out.read_bytes())
    data[-7] ^= 0x01  # a bit in the tensor data (vectors / calibration)
    bad = tmp_path / "bad.fpxindex"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="modified after it was sealed") as e:
        load_index(bad)
    assert "fpx models pull" in str(e.value) and "fpx models import" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_edited_reference_list_is_refused(built, tmp_path):
    import torch
    from safetensors.torch import save_file

    from fingerprint_cli import artifacts

    _, _, out = built
    tensors, meta = artifacts.read_tensors(out)
    doc = json.loads(meta["fpx_index"])
    doc["refs"][0]["path"] = "/evidence/planted.png"
    meta["fpx_index"] = json.dumps(doc, sort_keys=True)
    forged = tmp_path / "forged.fpxindex"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(forged), metadata=meta)
    with pytest.raises(ArtifactError, match="sealed"):
        load_index(forged)
    with pytest.raises(InputError, match="not an fpx origin index"):
        save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
        load_index(tmp_path / "other.safetensors")


def test_ivf_search_finds_exact_duplicates():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3000, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for kind in ("ivf", "ivfpq"):
        idx = OriginIndex(embedder={}, refs=[{"path": str(i), "sha256": str(i)} for i in range(len(v))], vectors=v,
                          search_cfg={"kind": kind})
        _, ids = idx.search(v[:200], 1)
        assert np.mean(ids[:, 0] == np.arange(200)) > 0.9, kind


# ---------------------------------------------------------------- calibration and decisions
def test_threshold_is_the_conformal_quantile_of_brute_force_impostor_scores(built):
    idx, _, _ = built
    imp = []
    for views, o in zip(idx.calib_vectors, idx.calib_owner):
        s = np.max(views @ idx.vectors.T, axis=0)
        s[o] = -np.inf
        imp.append(s.max())
    imp = np.sort(imp)
    assert np.allclose(idx.calibration["impostor_scores_sorted"], imp, atol=1e-5)
    cal = calibrate(idx, fmr=0.2, decision="similarity")
    n = len(imp)
    assert cal["threshold"] == pytest.approx(imp[math.ceil((n + 1) * 0.8) - 1], abs=1e-6)
    assert cal["impostor_false_match_in_sample"] <= 0.2
    assert "distinct_threshold" not in cal
    cal = calibrate(idx, fmr=0.2, decision="similarity+distinct")  # each test at half the rate (Bonferroni)
    assert cal["threshold"] == pytest.approx(imp[math.ceil((n + 1) * 0.9) - 1], abs=1e-6)
    assert cal["impostor_false_match_in_sample"] <= 0.2
    assert p_value(cal, imp[-1] + 1) == pytest.approx(1 / (n + 1))
    assert p_value(cal, -2) == 1.0


def _passes_rule(rec, top_similarity):
    """The index's rule on a query record: the similarity test, or its second test (each reason: value, threshold)."""
    assert rec.decision["rule"] == "similarity+verify" and [x["feature"] for x in rec.reasons] == [
        "similarity_top1", "verify"]
    v, thr = rec.reasons[1]["value"], rec.decision["verify_threshold"]
    if thr is None:  # too few impostors to calibrate the second test at half the rate: it is not used
        assert v is None and rec.reasons[1]["says"].startswith("not used")
    return top_similarity > rec.decision["threshold"] or (v is not None and thr is not None and v > thr)


def _check_ranked_to(r, want: str, name: str) -> None:
    """Assert a query record ranks ``want`` first, its 3 candidates in order, its decision by the rule."""
    assert r.details["candidates"][0]["path"] == want, name
    assert [c["rank"] for c in r.details["candidates"]] == [1, 2, 3]
    sims = [c["similarity"] for c in r.details["candidates"]]
    assert sims == sorted(sims, reverse=True)
    assert (r.decision["label"] == "found") == _passes_rule(r, sims[0])


def test_query_finds_edited_and_mirrored_origins_and_abstains_on_strangers(built, tmp_path):
    idx, _, out = built
    src = images.load_image(idx.refs[5]["path"]).pixels
    edits = {"mirror_regrade.png": np.clip(src[:, ::-1] * 0.85 + 0.08, 0, 1),
             "jpeg.jpg": None, "tiny.png": images.resize(src, 24, 34)}
    for name, px in edits.items():
        if name == "jpeg.jpg":
            (tmp_path / name).write_bytes(images.encode(src, "JPEG", quality=40))
        else:
            images.save_png(np.clip(px, 0, 1), tmp_path / name)
    images.save_png(natural_image(80, 112, seed=999), tmp_path / "stranger.png")
    recs = origin.query([str(tmp_path / n) for n in [*edits, "stranger.png"]], str(out), k=3)
    by = {r.inputs["suspect"]["path"].split("/")[-1]: r for r in recs}
    for n in edits:
        _check_ranked_to(by[n], idx.refs[5]["path"], n)
    assert by["mirror_regrade.png"].decision["label"] == "found"
    assert by["mirror_regrade.png"].decision["origin"]["view"] == "mirrored"
    assert "upsampled" in by["tiny.png"].details and "upsampled" not in by["jpeg.jpg"].details
    stranger = by["stranger.png"]
    assert stranger.decision["label"] == "not-in-library" and stranger.decision["origin"] is None
    # a small library has too few impostor scores for 1%: the record states the rate its threshold holds
    rates = [v for k, v in stranger.decision["calibration"].items() if k.endswith("_false_match_rate")]
    assert idx.calibration["false_match_rate_requested"] == 0.01
    assert stranger.decision["false_match_rate"] == pytest.approx(max(0.01, sum(rates)), abs=1e-6)
    assert stranger.decision["false_match_rate"] > 0.01  # this index's 35-odd impostors cannot reach 1%


def test_unreadable_suspect_is_an_error_record(built, tmp_path):
    _, _, out = built
    (tmp_path / "junk.png").write_bytes(b"junk")
    recs = origin.query([str(tmp_path / "junk.png"), str(tmp_path / "missing.png")], out)
    assert [r.status for r in recs] == ["error", "error"]
    assert "junk.png" in recs[0].error["message"] and "no such file" in recs[1].error["message"]


# ---------------------------------------------------------------- --add, --resume, scale-out
def test_add_grows_the_index_skips_duplicates_and_recalibrates(built, tmp_path):
    idx, _, out = built
    more = tmp_path / "more"
    more.mkdir()
    for i in range(3):
        images.save_png(natural_image(80, 112, seed=500 + i), more / f"m{i}.png")
    (more / "dup.png").write_bytes(Path(idx.refs[0]["path"]).read_bytes())
    grown, recs = origin.build_index([str(more)], str(out), add=True)
    assert grown.n == idx.n + 3
    assert np.array_equal(grown.vectors[:idx.n], idx.vectors)
    assert any("same sha256" in (r.details.get("skipped") or "") for r in recs)
    assert grown.calibration["n_references_at_calibration"] == idx.n + 3
    assert len(grown.calib_vectors) > len(idx.calib_vectors)
    with pytest.raises(UsageError, match="--add"):
        origin.build_index([str(more)], str(tmp_path / "none.fpxindex"), add=True)


def test_resume_reuses_journalled_chunks(refs, tmp_path, monkeypatch):
    out = tmp_path / "r.fpxindex"
    calls = []
    real = library._embed_chunk

    def interrupted(task):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies after two chunks were journalled
        calls.append(1)
        return real(task)

    monkeypatch.setattr(library, "_embed_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        origin.build_index([str(refs)], str(out), chunk_size=4, n_calibration=5)
    assert len(list((tmp_path / "r.fpxindex.partial").glob("chunk-*.json"))) == 2
    calls.clear()
    counting = []
    monkeypatch.setattr(library, "_embed_chunk", lambda t: (counting.append(1), real(t))[1])
    idx, _ = origin.build_index([str(refs)], str(out), chunk_size=4, n_calibration=5, resume=True)
    assert len(counting) == 2  # 15 files in 4 chunks, 2 from the journal
    fresh, _ = origin.build_index([str(refs)], str(tmp_path / "fresh.fpxindex"), chunk_size=4, n_calibration=5)
    assert fresh.seal == idx.seal


@pytest.mark.parametrize("jobs,scheduler", [(2, None), (2, "local")], ids=["joblib", "dask-LocalCluster"])
def test_parallel_builds_are_identical_to_serial(refs, tmp_path, jobs, scheduler):
    a, _ = origin.build_index([str(refs)], str(tmp_path / "a.fpxindex"), chunk_size=3)
    b, recs = origin.build_index([str(refs)], str(tmp_path / "b.fpxindex"), chunk_size=3, jobs=jobs,
                                 scheduler=scheduler)
    assert a.seal == b.seal  # same vectors, same order, same calibration
    assert [r["path"] for r in a.refs] == [r["path"] for r in b.refs]
    assert sum(not r.ok for r in recs) == 1


# ---------------------------------------------------------------- head
def test_cosface_head_pulls_transformed_copies_to_their_origin():
    rng = np.random.default_rng(0)
    d, k = 24, 30
    centres = rng.standard_normal((k, d))
    nuisance = rng.standard_normal((3, d))  # a few directions a transform family pushes along
    def sample(c, n):
        return centres[c] + 2.0 * rng.standard_normal((n, 3)) @ nuisance + 0.1 * rng.standard_normal((n, d))
    x = np.concatenate([sample(c, 6) for c in range(k)]).astype(np.float32)
    y = np.repeat(np.arange(k), 6)
    w, info = head_mod.fit(x, y, epochs=60, batch_origins=10, per_origin=4)
    assert info["loss_per_epoch"][-1] < info["loss_per_epoch"][0]
    test = np.concatenate([sample(c, 2) for c in range(k)]).astype(np.float32)
    ty = np.repeat(np.arange(k), 2)
    def acc(m):
        cz = embedders.l2n(centres.astype(np.float32) @ m.T)
        tz = embedders.l2n(test @ m.T)
        return np.mean(np.argmax(tz @ cz.T, axis=1) == ty)
    assert acc(w) > acc(np.eye(d, dtype=np.float32)) + 0.1


def test_train_cli_head_then_index_and_query_with_it(refs, tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    rows = ["reference,suspect"]
    for i in range(6):
        px = images.load_image(refs / f"r{i:02d}.png").pixels
        for j, fn in enumerate((lambda p: np.clip(p * 0.9 + 0.05, 0, 1), lambda p: p[:, ::-1])):
            images.save_png(fn(px), tmp_path / f"g{i}_{j}.png")
            rows.append(f"refs/r{i:02d}.png,g{i}_{j}.png")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    run = CliRunner().invoke
    res = run(app, ["origin", "train", str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "W.safetensors"),
                    "--epochs", "3", "-f", "json"])
    assert res.exit_code == 0, res.output
    h = head_mod.load(tmp_path / "W.safetensors")
    assert h.weight.shape == (381, 381) and h.meta["info"]["recipe"]["s"] == 64.0
    res = run(app, ["origin", "index", str(refs), "-o", str(tmp_path / "w.fpxindex"), "--head",
                    str(tmp_path / "W.safetensors"), "-q", "--records", str(tmp_path / "recs.jsonl")])
    assert res.exit_code == 3, res.output  # one broken reference
    idx = load_index(tmp_path / "w.fpxindex")
    assert idx.head["sha256"] == h.sha256
    recs = origin.query([str(tmp_path / "g2_1.png")], idx, head=str(tmp_path / "W.safetensors"))
    assert recs[0].details["candidates"][0]["path"].endswith("r02.png")
    other, _ = head_mod.fit(np.random.default_rng(1).standard_normal((8, 381)).astype(np.float32),
                            [0, 0, 1, 1, 2, 2, 3, 3], epochs=1)
    head_mod.save(tmp_path / "W2.safetensors", other, embedders.get_embedder().identity(), {})
    with pytest.raises(ArtifactError, match="refusing to mix heads"):
        origin.query([str(tmp_path / "g2_1.png")], idx, head=str(tmp_path / "W2.safetensors"))
    with pytest.raises(InputError, match="not an fpx origin head"):
        head_mod.load(tmp_path / "w.fpxindex")


# ---------------------------------------------------------------- sd2-vae through the artifact path
def test_sd2_vae_missing_weights_names_both_models_commands(refs, tmp_path):
    with pytest.raises(ArtifactError) as e:
        origin.build_index([str(refs)], str(tmp_path / "x.fpxindex"), embedder="sd2-vae")
    assert "fpx models pull sd2-vae" in str(e.value) and "fpx models import FILE --name sd2-vae" in str(e.value)


def test_sd2_vae_index_refuses_other_weights(refs, tmp_path):
    import torch
    from typer.testing import CliRunner

    from fingerprint_cli import artifacts
    from fingerprint_cli.cli.app import app
    from fingerprint_cli.origin import vae

    embedders._CACHE.clear()
    for seed in (0, 1):
        state = vae.random_state(small=True, seed=seed)
        artifacts.write_tensors(tmp_path / f"vae{seed}.safetensors", {k: torch.as_tensor(v) for k, v in state.items()})
    run = CliRunner().invoke
    assert run(app, ["models", "import", str(tmp_path / "vae0.safetensors"), "--name", "sd2-vae", "--force"]).exit_code == 0
    few = [str(refs / f"r{i:02d}.png") for i in range(4)]
    idx, _ = origin.build_index(few, str(tmp_path / "v.fpxindex"), embedder="sd2-vae", n_calibration=2)
    assert idx.embedder["name"] == "sd2-vae" and idx.dim == 4 * 32 * 32
    assert idx.embedder["weights_sha256"] == images.sha256_file(tmp_path / "vae0.safetensors")
    recs = origin.query([few[1]], idx, k=2)
    assert recs[0].details["candidates"][0]["path"] == few[1]
    assert recs[0].provenance["embedder"]["verified"] is False
    embedders._CACHE.clear()
    assert run(app, ["models", "import", str(tmp_path / "vae1.safetensors"), "--name", "sd2-vae", "--force"]).exit_code == 0
    res = run(app, ["origin", "query", few[1], "--index", str(tmp_path / "v.fpxindex")])
    assert res.exit_code == 1
    assert "weights_sha256" in res.output and "fpx models pull sd2-vae" in res.output
    embedders._CACHE.clear()


# ---------------------------------------------------------------- CLI and attribute --index
def test_cli_query_and_attribute_with_index(built, tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    idx, _, out = built
    src = images.load_image(idx.refs[3]["path"]).pixels
    (tmp_path / "s.jpg").write_bytes(images.encode(src, "JPEG", quality=60))
    images.save_png(natural_image(80, 112, seed=777), tmp_path / "new.png")
    run = CliRunner().invoke
    res = run(app, ["origin", "query", str(tmp_path / "s.jpg"), "--index", str(out), "-k", "2", "-f", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["decision"]["label"] == "found" and rec["decision"]["origin"]["path"] == idx.refs[3]["path"]
    assert len(rec["details"]["candidates"]) == 2
    res = run(app, ["attribute", str(tmp_path / "s.jpg"), str(tmp_path / "new.png"), "--index", str(out),
                    "-f", "json", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    recs = {r["inputs"]["suspect"]["path"].split("/")[-1]: r for r in json.loads(res.stdout)}
    assert recs["s.jpg"]["inputs"]["reference"]["path"] == idx.refs[3]["path"]
    assert recs["s.jpg"]["details"]["origin"]["similarity"] > recs["s.jpg"]["details"]["origin"]["threshold"]
    assert recs["s.jpg"]["decision"]["band"] in ("benign", "tight", "drift", "inconclusive")
    assert recs["new.png"]["decision"]["label"] == "not-in-library"
    bad = tmp_path / "bad.fpxindex"
    data = bytearray(out.read_bytes())
    data[-3] ^= 0xFF
    bad.write_bytes(bytes(data))
    res = run(app, ["origin", "query", str(tmp_path / "s.jpg"), "--index", str(bad)])
    assert res.exit_code == 1 and "sealed" in res.output


def test_ivf_index_round_trips_through_the_file(refs, tmp_path):
    idx, _ = origin.build_index([str(refs)], str(tmp_path / "ivf.fpxindex"), search="ivf", n_calibration=4)
    loaded = load_index(tmp_path / "ivf.fpxindex")
    assert loaded.search_cfg["kind"] == "ivf" and loaded.search_cfg["nlist"] >= 1
    recs = origin.query([idx.refs[4]["path"]], loaded, k=2)
    assert recs[0].details["candidates"][0]["path"] == idx.refs[4]["path"]
    assert recs[0].provenance["index"]["search"] == "ivf"
    with pytest.raises(UsageError, match="unknown --search"):
        origin.build_index([str(refs)], str(tmp_path / "x.fpxindex"), search="hnsw")


def test_near_duplicates_are_one_origin_group(refs, tmp_path):
    from fingerprint_cli.origin.index import duplicates_of

    src = images.load_image(refs / "r03.png").pixels
    (refs / "r03_copy.jpg").write_bytes(images.encode(src, "JPEG", quality=95))  # a re-saved copy
    idx, _ = origin.build_index([str(refs)], str(tmp_path / "d.fpxindex"), n_calibration=20)
    row = {r["path"].split("/")[-1]: i for i, r in enumerate(idx.refs)}
    group = duplicates_of(idx, row["r03.png"])
    assert set(group) == {row["r03.png"], row["r03_copy.jpg"]}
    # no impostor score comes from the copy: brute force with the group excluded gives the same scores
    imp = []
    for views, o in zip(idx.calib_vectors, idx.calib_owner):
        s = np.max(views @ idx.vectors.T, axis=0)
        s[duplicates_of(idx, int(o))] = -np.inf
        imp.append(s.max())
    assert np.allclose(np.sort(imp), idx.calibration["impostor_scores_sorted"], atol=1e-5)
    rec = origin.query([str(refs / "r03.png")], idx, k=3)[0]
    assert rec.decision["label"] == "found"
    assert rec.decision["origin"]["near_duplicates"] == [str(refs / "r03_copy.jpg")]


def test_stated_false_match_rate_is_one_the_threshold_can_hold():
    """Too few impostor scores for the requested rate: the threshold is their maximum and the stated rate is
    1/(n+1), not the request; enough scores: the request. A second test that cannot be calibrated adds 0."""
    from fingerprint_cli.origin.index import _thresholds

    rng = np.random.default_rng(0)
    few = _thresholds({"similarity": rng.random(35)}, 0.01, "similarity")
    assert few["false_match_rate"] == pytest.approx(1 / 36, abs=1e-6) and few["false_match_rate_requested"] == 0.01
    assert few["threshold"] == pytest.approx(max(few["impostor_scores_sorted"]))
    many = _thresholds({"similarity": rng.random(999)}, 0.01, "similarity")
    assert many["false_match_rate"] == 0.01
    # brute force: the stated rate bounds the share of fresh impostors above the threshold
    fresh = rng.random(200_000)
    assert np.mean(fresh > many["threshold"]) <= 0.01 + 0.002
    two = _thresholds({"similarity": rng.random(999), "local": rng.random(20)}, 0.01, "similarity+local")
    assert two["local_threshold"] is None and two["local_false_match_rate"] == 0.0
    assert two["false_match_rate"] == 0.01
