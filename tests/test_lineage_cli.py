"""fpx lineage through the real fingerprint code (fingerprint_cli.dif, "gaussian" denoiser) and the CLI.

Fingerprints are fitted with ``extract.fit(method="average")`` — the same artifact, split and detection path
as DIF but seconds instead of minutes to fit, which keeps these tests fast; the lineage logic does not depend
on how the pattern was learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_traced_set
from fingerprint_cli import images
from fingerprint_cli.cli.app import app

S = 48
CROP = 32


def _pat(seed, tile=8):
    """A generator trace: a random tile×tile pattern repeated over the image (an upsampler's grid)."""
    t = np.random.default_rng(seed).standard_normal((tile, tile, 3)).astype(np.float32)
    return np.tile(t, (S // tile, S // tile, 1))


def _write(folder: Path, pat, n, s0, amp=0.04):
    return write_traced_set(folder, pat, n, s0, S, amp)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    from fingerprint_cli.dif import extract

    root = tmp_path_factory.mktemp("lineage-cli")
    parent = _pat(100)
    pats = {"parent": parent, "child": parent + 0.35 * _pat(102), "other": _pat(101)}
    real = _write(root / "real", None, 16, 9000)
    fps = {}
    for k, (name, pat) in enumerate(pats.items()):
        gen = _write(root / name, pat, 16, 1000 * (k + 1))
        fp = extract.fit(gen, real, name=name, method="average", crop=CROP, denoiser="gaussian",
                         test_fraction=0.5, seed=0)
        path = root / f"{name}.fpx.safetensors"
        fp.save(path)
        fps[name] = path
    # one more made with another denoiser, one with another crop
    fp = extract.fit(_write(root / "x", pats["other"], 6, 7000), real, name="x", method="average", crop=CROP,
                     denoiser="gaussian-sigma2", test_fraction=0.5)
    fp.save(root / "x_sigma2.fpx.safetensors")
    fp = extract.fit(_write(root / "y", pats["other"], 6, 7100), real, name="y", method="average", crop=16,
                     denoiser="gaussian", test_fraction=0.5)
    fp.save(root / "y_crop16.fpx.safetensors")
    return {"root": root, "fps": fps}


def invoke(args):
    return CliRunner().invoke(app, ["lineage", *map(str, args)])


def records(res):
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def test_families_and_json_schema(bed):
    f = bed["fps"]
    res = invoke([f["parent"], f["child"], f["other"], "-f", "jsonl", "-q"])
    assert res.exit_code == 0, res.output
    recs = records(res)
    assert len(recs) == 3 * 3 + 1
    pairs, summary = recs[:-1], recs[-1]
    # stable schema: top-level keys, pair features, summary decision/details keys
    top = ["schema_version", "command", "status", "inputs", "features", "directions", "decision", "reasons",
           "error", "details", "provenance"]
    assert all(list(r) == top for r in recs)
    assert all(r["command"] == "lineage" and r["schema_version"] == 1 for r in recs)
    for r in pairs:
        assert set(r["inputs"]) == {"fingerprint", "images_of"}
        assert set(r["features"]) == {"cross_accuracy", "tpr", "tnr", "auc", "grid_auc",
                                      "fingerprint_correlation", "grid_correlation", "relatedness"}
        assert {"fingerprint", "images_of", "same_family", "n_generated", "n_real", "n_excluded_training",
                "fingerprint_shift", "test_images", "real_images"} <= set(r["details"])
        assert len(r["inputs"]["fingerprint"]["sha256"]) == 64
    assert summary["decision"]["label"] == "families"
    assert summary["decision"]["families"] == [["parent", "child"], ["other"]]
    assert summary["features"]["n_families"] == 2
    # every family link states its test against chance and its error rate; the planted link is supported
    err = summary["decision"]["error_rate"]
    assert err["alpha"] == 0.01 and err["calibrated"] is False and "chance" in err["test"]
    assert summary["decision"]["unresolved_links"] == []
    (link,) = summary["reasons"]
    assert link["supported"] is True and 0 <= link["p_value"] <= 0.01
    d = summary["details"]
    assert {"names", "cross_accuracy", "auc", "fingerprint_correlation", "relatedness", "links", "linkage",
            "timing"} <= set(d)
    assert d["names"] == ["parent", "child", "other"]
    assert np.array(d["cross_accuracy"]).shape == (3, 3)
    assert summary["reasons"][0]["link"].startswith("child ~ parent: ")
    # pair records agree with the summary matrix
    for r in pairs:
        i, j = d["names"].index(r["details"]["fingerprint"]), d["names"].index(r["details"]["images_of"])
        assert r["features"]["cross_accuracy"] == pytest.approx(d["cross_accuracy"][i][j])
    # the recorded held-out split is used: 8 of 16 generated and 8 of 16 real per cell, none of them trained on
    assert all(r["details"]["n_generated"] == 8 and r["details"]["n_real"] == 8 for r in pairs)
    assert all(r["details"]["n_excluded_training"] == 0 for r in pairs)


def test_images_override_excludes_training_images_and_plots(bed, tmp_path):
    from fingerprint_cli.dif.fingerprint import Fingerprint

    f = bed["fps"]
    fp_parent = Fingerprint.load(f["parent"])
    # a folder of child images that also holds parent's TRAINING images
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for e in fp_parent.meta["train"]["generated"][:5]:
        (mixed / ("p_" + Path(e["path"]).name)).write_bytes(Path(e["path"]).read_bytes())
    for p in sorted((bed["root"] / "child").glob("*.png"))[:6]:
        (mixed / p.name).write_bytes(p.read_bytes())
    png = tmp_path / "lineage.png"
    out = tmp_path / "lineage.json"
    res = invoke([f["parent"], f["child"], "--images", f"child={mixed}", "--plot", png, "-o", out, "-q"])
    assert res.exit_code == 0, res.output
    recs = json.loads(out.read_text())
    cell = next(r for r in recs[:-1] if r["details"]["fingerprint"] == "parent"
                and r["details"]["images_of"] == "child")
    assert cell["details"]["n_excluded_training"] == 5 and cell["details"]["test_images"] == str(mixed)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert images.load_image(png).width > 200


def test_table_output(bed):
    f = bed["fps"]
    res = invoke([f["parent"], f["child"], f["other"], "-f", "table"])
    assert res.exit_code == 0, res.output
    assert "families" in res.stdout and "{parent, child}; {other}" in res.stdout


def test_refuses_incomparable_fingerprints(bed):
    f, root = bed["fps"], bed["root"]
    res = invoke([f["parent"], root / "x_sigma2.fpx.safetensors"])
    assert res.exit_code == 2
    assert "denoiser" in res.stderr and "re-extract" in res.stderr and "x_sigma2" in res.stderr
    res = invoke([f["parent"], root / "y_crop16.fpx.safetensors"])
    assert res.exit_code == 2 and "crop" in res.stderr


def test_bad_inputs(bed, tmp_path):
    f = bed["fps"]
    bogus = tmp_path / "bogus.fpx.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    res = invoke([f["parent"], bogus])
    assert res.exit_code == 2 and str(bogus) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = invoke([f["parent"]])
    assert res.exit_code == 2 and "two fingerprints" in res.stderr
    res = invoke([f["parent"], f["child"], "--images", f"chld={tmp_path}"])
    assert res.exit_code == 2 and "did you mean 'child'" in res.stderr
    res = invoke([f["parent"], f["child"], "--plot", f["child"]])
    assert res.exit_code == 2 and "refusing to write over" in res.stderr
    res = invoke([f["parent"], tmp_path])  # a folder where a fingerprint file is wanted: said as such
    assert res.exit_code == 2 and f"{tmp_path}: is a folder, not a fingerprint file" in res.stderr
    res = invoke([f["parent"], tmp_path / "absent.fpx.safetensors"])
    assert res.exit_code == 2 and "absent.fpx.safetensors: no such fingerprint file" in res.stderr


def test_cell_without_usable_images_is_a_failed_item(bed, tmp_path):
    from fingerprint_cli.dif.fingerprint import Fingerprint

    f = bed["fps"]
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    for e in Fingerprint.load(f["child"]).meta["train"]["generated"]:
        (only_train / Path(e["path"]).name).write_bytes(Path(e["path"]).read_bytes())
    (only_train / "broken.png").write_bytes(b"\x89PNG broken")
    res = invoke([f["parent"], f["child"], "--images", f"child={only_train}", "-f", "jsonl"])
    assert res.exit_code == 3, res.output
    recs = records(res)
    bad = [r for r in recs if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["details"]["fingerprint"] == "child"
    assert bad[0]["details"]["images_of"] == "child"
    assert "could not be read" in res.stderr


def test_metric_auc(bed):
    f = bed["fps"]
    res = invoke([f["parent"], f["child"], f["other"], "--metric", "auc", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)[-1]
    assert summary["decision"]["metric"] == "auc" and "AUCs" in summary["decision"]["rule"]
    assert summary["decision"]["families"] == [["parent", "child"], ["other"]]
    assert "cross-detection AUC" in summary["reasons"][0]["link"]
    res = invoke([f["parent"], f["child"], "--metric", "f1"])
    assert res.exit_code == 2 and "--metric" in res.stderr


def test_real_per_fingerprint(bed, tmp_path):
    f, root = bed["fps"], bed["root"]
    extra = _write(tmp_path / "real_other", None, 5, 9900)
    res = invoke([f["parent"], f["child"], f["other"], "--real", f"other={Path(extra[0]).parent}",
                  "-f", "jsonl", "-q"])
    assert res.exit_code == 0, res.output
    recs = records(res)
    for r in recs[:-1]:
        if r["details"]["fingerprint"] == "other":
            assert r["details"]["n_real"] == 5 and r["details"]["real_images"] == str(tmp_path / "real_other")
        else:
            assert r["details"]["n_real"] == 8 and r["details"]["real_images"] == "artifact"
    # a shared folder plus one override
    res = invoke([f["parent"], f["child"], "--real", root / "real", "--real", f"child={tmp_path / 'real_other'}",
                  "-f", "jsonl", "-q"])
    assert res.exit_code == 0, res.output
    n_real = {r["details"]["fingerprint"]: r["details"]["n_real"] for r in records(res)[:-1]}
    assert n_real["child"] == 5 and n_real["parent"] == 8  # 16 real minus parent's 8 training images
    res = invoke([f["parent"], f["child"], "--real", root / "real", "--real", tmp_path / "real_other"])
    assert res.exit_code == 2 and "only one folder" in res.stderr
    res = invoke([f["parent"], f["child"], "--real", f"parnt={root / 'real'}"])
    assert res.exit_code == 2 and "did you mean 'parent'" in res.stderr
    res = invoke([f["parent"], f["child"], "--real", tmp_path / "nope"])
    assert res.exit_code == 2 and "nope" in res.stderr


def test_grid_metric_refusals(bed, tmp_path):
    from fingerprint_cli.dif import extract

    f, root = bed["fps"], bed["root"]
    res = invoke([f["parent"], f["child"], "--period", "32"])
    assert res.exit_code == 2 and "--period 32" in res.stderr and "1 to 16" in res.stderr
    res = invoke([f["parent"], f["child"], "--period", "32", "--metric", "accuracy", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output            # the whole-pattern metric does not need the grid
    assert json.loads(res.stdout)[-1]["details"]["grid_auc"] is None
    real = sorted(str(p) for p in (root / "real").glob("*.png"))
    gen = sorted(str(p) for p in (root / "parent").glob("*.png"))
    sp = extract.fit(gen, real, name="spec", method="spectral", crop=CROP, denoiser="gaussian", test_fraction=0.5)
    sp.save(tmp_path / "spec.fpx.safetensors")
    sp2 = extract.fit(gen, real, name="spec2", method="spectral", crop=CROP, denoiser="gaussian",
                      test_fraction=0.5, seed=1)
    sp2.save(tmp_path / "spec2.fpx.safetensors")
    pair = [tmp_path / "spec.fpx.safetensors", tmp_path / "spec2.fpx.safetensors"]
    res = invoke(pair)
    assert res.exit_code == 2 and "spectral" in res.stderr and "--metric accuracy" in res.stderr
    res = invoke([*pair, "--metric", "auc", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)[-1]
    assert summary["details"]["grid_auc"] is None and summary["decision"]["metric"] == "auc"


def test_run_shares_one_residual_per_image(bed):
    """lineage.run with a given cache: each image's residual is computed once for the whole matrix and looked
    up once per fingerprint (ρ and ρ_grid come from the same lookup); a second run computes nothing."""
    from fingerprint_cli import lineage
    from fingerprint_cli.dif.residuals import ResidualCache

    f = bed["fps"]
    paths = [str(f["parent"]), str(f["child"]), str(f["other"])]
    cache = ResidualCache()
    res, _ = lineage.run(paths, cache=cache)
    n_images = int(res.timing["images"])
    assert n_images > 0 and cache.misses == n_images and len(cache) == n_images
    assert cache.hits + cache.misses == len(paths) * n_images
    again, _ = lineage.run(paths, cache=cache)
    assert cache.misses == n_images
    np.testing.assert_array_equal(again.grid_auc, res.grid_auc)
    assert again.clustering.families == res.clustering.families


def test_equalise_correlates_jpeg_resaved_copies_of_every_test_image(bed, tmp_path):
    """--equalise jpeg90: each test image (generated and real) is re-saved as JPEG q90 before its residual —
    the same ρ as running on JPEG copies made by hand; cached per (image, augmentation), once per image."""
    from fingerprint_cli import lineage
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.fingerprint import Fingerprint
    from fingerprint_cli.dif.residuals import ResidualCache

    f = bed["fps"]
    paths = [str(f["parent"]), str(f["other"])]
    cache = ResidualCache()
    res, prov = lineage.run(paths, cache=cache, equalise="jpeg90", metric="auc")
    assert prov["equalise"] == "q90"
    n_images = int(res.timing["images"])
    assert cache.misses == n_images and all(len(k) == 4 and k[3] == "q90" for k in cache._mem)
    plain, prov0 = lineage.run(paths, equalise="none", metric="auc")
    assert prov0["equalise"] == "none"
    # reference: the same cells computed by hand on JPEG q90 copies of the centre crops
    fps = [Fingerprint.load(p) for p in paths]
    def jpeg_copies(ps, sub):
        out = []
        (tmp_path / sub).mkdir(exist_ok=True)
        for p in ps:
            px = images.load_image(p).pixels
            y, x = (px.shape[0] - CROP) // 2, (px.shape[1] - CROP) // 2
            q = tmp_path / sub / (Path(p).stem + ".jpg")
            q.write_bytes(images.encode(px[y:y + CROP, x:x + CROP], "JPEG", quality=90))
            out.append(str(q))
        return out
    for i, fp in enumerate(fps):
        real = jpeg_copies([e["path"] for e in fp.meta["test"]["real"]], f"r{i}")
        for j, other in enumerate(fps):
            gen = jpeg_copies([e["path"] for e in other.meta["test"]["generated"]], f"g{i}{j}")
            sign = 1.0 if fp.meta["mu_gen"] >= fp.meta["mu_real"] else -1.0
            ref = detect.auc(sign * detect.correlations(fp, gen), sign * detect.correlations(fp, real))
            assert res.auc[i, j] == pytest.approx(ref, abs=1e-9)
    assert plain.names == res.names


def test_equalise_bad_value_is_a_usage_error(bed):
    res = invoke([bed["fps"]["parent"], bed["fps"]["child"], "--equalise", "jpeg"])
    assert res.exit_code == 2 and "jpegQ" in res.output


def _resave_jpeg(paths, folder: Path, quality: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        (folder / (Path(p).stem + ".jpg")).write_bytes(
            images.encode(images.load_image(p).pixels, "JPEG", quality=quality))
    return folder


def test_control_format_tests_a_jpeg_column_against_photos_resaved_like_it(bed, tmp_path):
    """--control format, through the real fingerprint code: the JPEG column's real side is the photos' centre
    window re-saved at the column's quality (checked against an independent computation of the same AUC with
    scikit-learn), the lossless column is exactly the uncontrolled one, and a JPEG real class warns."""
    from sklearn.metrics import roc_auc_score

    from fingerprint_cli import lineage
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.fingerprint import Fingerprint

    f = bed["fps"]
    child = Fingerprint.load(f["child"])
    jpeg_child = _resave_jpeg([e["path"] for e in child.meta["test"]["generated"]], tmp_path / "child_q75", 75)
    pair = [str(f["parent"]), str(f["child"])]
    base, _ = lineage.run(pair, images=[f"child={jpeg_child}"])
    res, prov = lineage.run(pair, images=[f"child={jpeg_child}"], control="format")
    assert res.control == prov["control"] == "format"
    assert res.control_formats == {"parent": "lossless", "child": "jpeg75"}
    ip, ic = res.names.index("parent"), res.names.index("child")
    np.testing.assert_array_equal(res.auc[:, ip], base.auc[:, ip])          # lossless column: unchanged
    np.testing.assert_array_equal(res.grid_auc[:, ip], base.grid_auc[:, ip])
    # independent reference for the JPEG column: each real test photo's centre crop re-saved at q75 by hand
    parent = Fingerprint.load(f["parent"])
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    refs = []
    for e in parent.meta["test"]["real"]:
        px = images.load_image(e["path"]).pixels
        y, x = (px.shape[0] - CROP) // 2, (px.shape[1] - CROP) // 2
        win = images.decode(images.encode(px[y:y + CROP, x:x + CROP], "JPEG", quality=75), "w").pixels
        refs.append(str(ref_dir / (Path(e["path"]).stem + ".png")))
        images.save_png(win, refs[-1])
    sign = 1.0 if parent.meta["mu_gen"] >= parent.meta["mu_real"] else -1.0
    pos = sign * detect.correlations(parent, [str(p) for p in images.list_images(jpeg_child)])
    neg = sign * detect.correlations(parent, refs)
    want = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    assert res.auc[ip, ic] == pytest.approx(want, abs=1e-9)
    assert res.n_real[ip, ic] == len(refs) == base.n_real[ip, ic]
    assert not res.warnings
    # real photos that are JPEG themselves: a lossless column cannot be matched, and the run says so
    jpeg_real = _resave_jpeg([e["path"] for e in parent.meta["test"]["real"]], tmp_path / "real_q90", 90)
    res2, _ = lineage.run(pair, images=[f"child={jpeg_child}"], real_dir=str(jpeg_real), control="format")
    assert any("no lossless copy" in w and "parent" in w for w in res2.warnings)


def test_control_option_on_the_cli(bed):
    f = bed["fps"]
    res = invoke([f["parent"], f["child"], f["other"], "--control", "format", "-f", "jsonl", "-q"])
    assert res.exit_code == 0, res.output
    summary = records(res)[-1]
    assert summary["details"]["control"] == "format" and summary["provenance"]["control"] == "format"
    assert "re-saved in that generator's format" in summary["decision"]["rule"]
    assert summary["details"]["control_formats"] == {"parent": "lossless", "child": "lossless", "other": "lossless"}
    # all lossless: the control changes nothing
    assert summary["decision"]["families"] == [["parent", "child"], ["other"]]
    res = invoke([f["parent"], f["child"], "--control", "formats"])
    assert res.exit_code == 2 and "--control" in res.stderr
