"""`fpx attribute` / `fpx calibrate` end to end on a tiny synthetic image corpus (issue 4)."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import thresholds
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import ArtifactError

BANDS = {"blur": "tight", "noise": "drift", "jpeg": "benign"}


def system_output(system: str, ref: np.ndarray, rep: int, seed: int) -> np.ndarray:
    if system == "blur":
        return ndimage.gaussian_filter(ref, (1.0 + 0.2 * rep, 1.0 + 0.2 * rep, 0))
    if system == "noise":
        return np.clip(ref + np.random.default_rng(seed).normal(0, 0.04, ref.shape), 0, 1)
    return images.decode(images.encode(ref, "JPEG", quality=40 + 10 * rep), "<jpeg>").pixels


def make_image_corpus(root: Path, n_images: int = 6, reps: int = 2, h: int = 48, w: int = 64,
                      band_column: bool = True) -> Path:
    """Three 'systems' with distinct pixel signatures (blur = tight, noise = drift, JPEG = benign)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        ref = natural_image(h, w, seed=100 + i)
        images.save_png(ref, root / f"ref{i}.png")
        for rep in range(reps):
            for s in BANDS:
                p = f"sus{i}_{s}_{rep}.png"
                images.save_png(system_output(s, ref, rep, 1000 * i + rep), root / p)
                row = {"reference": f"ref{i}.png", "suspect": p, "system": s, "image_id": f"img{i}",
                       "domain": "even" if i % 2 == 0 else "odd", "rep": str(rep)}
                if band_column:
                    row["band"] = BANDS[s]
                rows.append(row)
    path = root / "corpus.csv"
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return path


def calibrate_synthetic(tmp_path_factory, folder: str, artifact: str, options: list[str], **corpus):
    """``fpx calibrate`` (200 bootstrap rounds, quiet) on a :func:`make_image_corpus` corpus written into a fresh
    folder; returns (folder, artifact path, the command's stdout)."""
    root = tmp_path_factory.mktemp(folder)
    csv_path = make_image_corpus(root, **corpus)
    out = root / artifact
    res = CliRunner().invoke(app, ["calibrate", str(csv_path), "-o", str(out), *options, "--bootstrap", "200",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    return root, out, res.stdout


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    # a v1-style artifact (no conformal part): with 10 calibration calls per system a conformal p-value
    # cannot go below 1/11, so this tiny corpus exercises the posterior/distance rule kept for v1 artifacts
    return calibrate_synthetic(tmp_path_factory, "corpus", "syn-pixel-v1.json",
                               ["--features", "pixel", "--no-conformal"])


def run(args):
    return CliRunner().invoke(app, args)


def test_calibrate_cli_recovers_systems_and_writes_artifact(calibrated):
    root, out, stdout = calibrated
    doc = thresholds.load(out)
    cal = doc["calibration"]
    assert doc["encoder"] is None and doc["id"] == "syn-pixel-v1"
    assert cal["corpus"]["n_images"] == 6 and cal["corpus"]["n_calls"] == 36
    assert cal["loo"]["accuracy"] >= 0.9
    assert cal["band_loo"]["accuracy"] >= 0.9
    assert cal["loo"]["ci95"][0] <= cal["loo"]["accuracy"] <= cal["loo"]["ci95"][1]
    assert cal["loo"]["chance"] == pytest.approx(1 / 3)
    assert cal["blind_baseline"] is not None and "loo" in cal["blind_baseline"]
    assert cal["eta_squared"]["domain"] is not None
    assert doc["band_rule"]["bands"] == BANDS
    assert len(cal["corpus"]["sha256"]) == 64
    assert (root / "syn-pixel-v1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "LOO system accuracy" in stdout and "blind baseline" in stdout


def test_attribute_calls_each_system_and_aggregates(calibrated):
    root, art, _ = calibrated
    # a fresh image (not in the corpus) processed by each system
    ref = natural_image(48, 64, seed=999)
    images.save_png(ref, root / "new_ref.png")
    sus = []
    for s in BANDS:
        images.save_png(system_output(s, ref, 0, 7), root / f"new_{s}.png")
        sus.append(str(root / f"new_{s}.png"))
    res = run(["attribute", str(root / "new_ref.png"), *sus, "-t", str(art), "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    pair_recs = [r for r in recs if "suspect" in r["inputs"]]
    # the most probable system is right for each; a call is never wrong, at worst inconclusive (a 6-image
    # corpus gives a rough covariance, so an unseen image may land beyond the "far" rule)
    assert [r["decision"]["top_k"][0]["system"] for r in pair_recs] == list(BANDS)
    for r, s in zip(pair_recs, BANDS):
        assert r["decision"]["system"] in (s, "inconclusive")
        assert r["decision"]["band"] in (BANDS[s], "inconclusive")
    assert sum(r["decision"]["system"] == s for r, s in zip(pair_recs, BANDS)) >= 2
    for r in pair_recs:
        d = r["decision"]
        assert r["command"] == "attribute"
        assert sum(d["band_probabilities"].values()) == pytest.approx(1.0)
        assert d["top_k"][0]["p"] >= d["top_k"][1]["p"]
        assert d["thresholds"]["id"] == "syn-pixel-v1" and d["thresholds"]["sha256"]
        assert {x["feature"] for x in r["reasons"]} == set(d["thresholds"]["features"])
        assert all("z" in x for x in r["reasons"])
    agg = [r for r in recs if "suspect" not in r["inputs"]]
    assert len(agg) == 1 and agg[0]["decision"]["calls"] == 3
    assert len(agg[0]["details"]["suspects"]) == 3


def test_repeat_calls_of_one_system_give_a_confident_per_image_call(calibrated):
    root, art, _ = calibrated
    ref = natural_image(48, 64, seed=555)
    images.save_png(ref, root / "r555.png")
    paths = []
    for rep in range(3):
        images.save_png(system_output("noise", ref, rep, 50 + rep), root / f"r555_n{rep}.png")
        paths.append(str(root / f"r555_n{rep}.png"))
    res = run(["attribute", str(root / "r555.png"), *paths, "-t", str(art), "--format", "jsonl", "--quiet"])
    assert res.exit_code == 0, res.output
    agg = [json.loads(x) for x in res.stdout.splitlines() if '"suspects"' in x][0]
    assert agg["decision"]["system"] == "noise" and agg["decision"]["band"] == "drift"


def test_far_point_is_inconclusive(calibrated):
    from fingerprint_cli.anchored.attribute import Decider

    _, art, _ = calibrated
    doc = thresholds.load(art)
    dec = Decider(doc)
    mean = np.array(doc["standardisation"]["mean"])
    sd = np.array(doc["standardisation"]["std"])
    far = dict(zip(doc["features"], (mean + 40 * sd).tolist()))
    d, reasons = dec.decide(far)
    assert d["system"] == "inconclusive" and d["band"] == "inconclusive" and d["inconclusive"]
    assert any("far from every" in w for w in d["why_inconclusive"])
    assert abs(reasons[0]["z"]) == pytest.approx(40, rel=1e-6)


def test_artifact_round_trip_and_tamper_refused(calibrated, tmp_path):
    _, art, _ = calibrated
    doc = thresholds.load(art)
    copy = tmp_path / "copy.json"
    again = thresholds.save({k: v for k, v in doc.items() if k != "_path"}, copy)
    assert again["sha256"] == doc["sha256"]  # sealing is deterministic: the content round-trips
    assert thresholds.load(copy)["class_model"] == doc["class_model"]

    data = json.loads(art.read_text())
    data["class_model"]["means"][0][0] += 0.5
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="modified"):
        thresholds.load(bad)
    ref = tmp_path / "r.png"
    images.save_png(natural_image(48, 64, seed=1), ref)
    res = run(["attribute", str(ref), str(ref), "-t", str(bad), "--quiet"])
    assert res.exit_code == 1
    assert "modified" in res.stderr and "tampered.json" in res.stderr

    bad.write_text("{not json")
    res = run(["attribute", str(ref), str(ref), "-t", str(bad)])
    assert res.exit_code == 1 and "not valid JSON" in res.stderr


def test_batch_goes_past_a_bad_suspect(calibrated, tmp_path):
    _, art, _ = calibrated
    ref = tmp_path / "r.png"
    images.save_png(natural_image(48, 64, seed=2), ref)
    good = tmp_path / "g.png"
    images.save_png(system_output("blur", images.load_image(ref).pixels, 0, 0), good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    before = {p: images.sha256_file(p) for p in (ref, good, broken)}
    res = run(["attribute", str(ref), str(good), str(broken), "-t", str(art), "--format", "jsonl", "--quiet"])
    assert res.exit_code == 3
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["status"] for r in recs if "suspect" in r["inputs"]] == ["ok", "error"]
    assert "broken.png" in res.stderr
    assert {p: images.sha256_file(p) for p in before} == before  # inputs untouched, byte for byte
    assert sorted(x.name for x in tmp_path.iterdir() if x.name != "fpx-home") == ["broken.png", "g.png", "r.png"]


def test_calibrate_usage_errors(tmp_path, calibrated):
    root, _, _ = calibrated
    bad = tmp_path / "c.csv"
    bad.write_text("reference,suspect\na.png,b.png\n")
    res = run(["calibrate", str(bad), "-o", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "system" in res.stderr and "c.csv" in res.stderr
    res = run(["calibrate", str(root / "corpus.csv"), "-o", str(root / "corpus.csv")])
    assert res.exit_code == 2
    res = run(["calibrate", str(root / "corpus.csv"), "-o", str(tmp_path / "o.json"), "--features", "nope"])
    assert res.exit_code == 2 and "unknown feature" in res.stderr


def test_calibrate_without_band_column_derives_bands(tmp_path):
    corpus = make_image_corpus(tmp_path / "nb", n_images=4, reps=1, band_column=False)
    out = tmp_path / "nb.json"
    res = run(["calibrate", str(corpus), "-o", str(out), "--features", "ssim-psnr", "--bootstrap", "100",
               "--no-blind", "--quiet"])
    assert res.exit_code == 0, res.output
    doc = thresholds.load(out)
    assert "no band column" in doc["band_rule"]["how"]
    assert set(doc["band_rule"]["bands"].values()) <= {"tight", "drift"}
    assert doc["calibration"]["blind_baseline"] is None


def test_default_uses_shipped_artifact(tmp_path):
    shipped = thresholds.shipped()
    # the package ships thresholds artifacts, and every one of them is valid: shipped() must not have dropped any
    # (a corrupted shipped artifact fails here instead of making this test skip)
    files = [e for e in (resources.files("fingerprint_cli") / "thresholds").iterdir() if e.name.endswith(".json")]
    assert files and sorted(d["id"] for d in shipped) == sorted(json.loads(e.read_text())["id"] for e in files)
    ref = natural_image(64, 64, seed=3)
    images.save_png(ref, tmp_path / "r.png")
    images.save_png(images.decode(images.encode(ref, "JPEG", quality=50), "j").pixels, tmp_path / "s.png")
    res = run(["attribute", str(tmp_path / "r.png"), str(tmp_path / "s.png"), "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["decision"]["chosen"].startswith("default: best shipped artifact")
    assert rec["decision"]["thresholds"]["id"] in {d["id"] for d in shipped}
    assert rec["provenance"]["thresholds"]["chosen"] == rec["decision"]["chosen"]


# ---------------------------------------------------------------- the DINOv2 path (tiny random model)
def test_dinov2_path_end_to_end_and_encoder_mismatch_refused(model_home, tmp_path):
    corpus = make_image_corpus(tmp_path / "dc", n_images=4, reps=1)
    out = tmp_path / "dino.json"
    res = run(["calibrate", str(corpus), "-o", str(out), "--features", "plane", "--bootstrap", "100",
               "--no-blind", "--resolution", "56", "--quiet"])
    assert res.exit_code == 0, res.output
    doc = thresholds.load(out)
    assert doc["encoder"]["id"] == "dinov2-vitb14" and doc["encoder"]["resolution"] == 56
    assert doc["calibration"]["plane"]["features"] == ["patch_mean", "ssim_clean"]
    root = tmp_path / "dc"
    res = run(["attribute", str(root / "ref0.png"), str(root / "sus0_noise_0.png"), "-t", str(out),
               "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["features"]["patch_mean"] is not None
    assert rec["provenance"]["encoder"] == "dinov2-vitb14" and rec["provenance"]["resolution"] == 56
    # another resolution than the artifact's: refused
    res = run(["attribute", str(root / "ref0.png"), str(root / "sus0_noise_0.png"), "-t", str(out),
               "--resolution", "70"])
    assert res.exit_code == 1 and "resolution 56" in res.stderr
    # other weights than the artifact's: refused
    data = {k: v for k, v in doc.items() if k != "_path"}
    data["encoder"] = dict(data["encoder"], weights_sha256="0" * 64)
    other = tmp_path / "other.json"
    thresholds.save(data, other)
    res = run(["attribute", str(root / "ref0.png"), str(root / "sus0_noise_0.png"), "-t", str(other)])
    assert res.exit_code == 1 and "weights sha256" in res.stderr and "other.json" in res.stderr


def test_pairs_csv_resume_and_failed_calibration_pair(calibrated, tmp_path):
    root, art, _ = calibrated
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"reference,suspect\n{root / 'ref0.png'},{root / 'sus0_jpeg_0.png'}\n"
                     f"{root / 'ref1.png'},{root / 'sus1_blur_1.png'}\n")
    out = tmp_path / "calls.jsonl"
    res = run(["attribute", "--pairs", str(pairs), "-t", str(art), "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["decision"]["system"] for r in recs] == ["jpeg", "blur"]
    assert res.stdout == ""  # records went to the file, nothing to stdout
    # --resume: nothing left to do, the file keeps its two records
    res = run(["attribute", "--pairs", str(pairs), "-t", str(art), "-o", str(out), "--resume", "--quiet"])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 2

    # a corpus row whose suspect is unreadable: reported, left out, artifact still written, exit 3
    rows = (root / "corpus.csv").read_text().splitlines()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    corpus = tmp_path / "corpus.csv"
    extra = rows[1].split(",")
    extra[0], extra[1] = str(root / extra[0]), str(bad)
    corpus.write_text("\n".join([rows[0]] + [",".join([str(root / r.split(",")[0]), str(root / r.split(",")[1])]
                                                      + r.split(",")[2:]) for r in rows[1:]]
                                + [",".join(extra)]) + "\n")
    o = tmp_path / "t.json"
    res = run(["calibrate", str(corpus), "-o", str(o), "--features", "ssim-psnr", "--bootstrap", "100",
               "--no-blind", "--quiet"])
    assert res.exit_code == 3, res.output
    assert "broken.png" in res.stderr
    doc = thresholds.load(o)
    assert doc["calibration"]["corpus"]["n_calls"] == 36 and doc["calibration"]["corpus"]["failed_pairs"] == 1


# ---------------------------------------------------------------- open-set decisions (issue 11)
@pytest.fixture(scope="module")
def conformal_art(tmp_path_factory):
    """A v2-style artifact (tone-corrected features + conformal part) on 14 images x 2 reps x 3 systems."""
    return calibrate_synthetic(tmp_path_factory, "corpus_v2", "syn-v2.json", ["--features", "pixel-v2", "--no-blind"],
                               n_images=14, reps=2, h=40, w=48)


def test_calibrate_reports_conformal_coverage(conformal_art):
    _, out, stdout = conformal_art
    doc = thresholds.load(out)
    rep = doc["calibration"]["conformal"]
    assert doc["conformal"]["alpha"] == 0.05 and rep["alpha"] == 0.05
    assert set(rep["per_system"]) == set(BANDS)
    assert 0.85 <= rep["coverage"] <= 1.0  # 84 calls: 1 - alpha within its sampling error
    assert "coverage" in stdout and "alpha 0.05" in stdout
    assert all(len(doc["conformal"]["calibration_scores"][s]) == 28 for s in BANDS)


def test_attribute_unknown_for_a_processing_far_from_every_system(conformal_art):
    root, art, _ = conformal_art
    ref = natural_image(40, 48, seed=4242)
    images.save_png(ref, root / "u_ref.png")
    images.save_png(np.roll(ref, 9, axis=1), root / "u_shift.png")  # no calibrated system moves content
    images.save_png(system_output("noise", ref, 0, 77), root / "u_noise.png")
    res = run(["attribute", str(root / "u_ref.png"), str(root / "u_shift.png"), str(root / "u_noise.png"),
               "-t", str(art), "--format", "json", "--quiet", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    shift, noise = json.loads(res.stdout)
    d = shift["decision"]
    assert d["label"] == "unknown" and d["prediction_set"] == [] and d["unknown"]
    assert max(d["p_values"].values()) < 0.05 and d["conformal"]["calibrated"]
    assert "noise" in noise["decision"]["prediction_set"]
    assert noise["decision"]["p_values"]["noise"] >= 0.05
    # a tiny alpha keeps more systems in the set, never fewer
    res2 = run(["attribute", str(root / "u_ref.png"), str(root / "u_noise.png"), "-t", str(art),
                "--format", "json", "--quiet", "--alpha", "0.01"])
    d2 = json.loads(res2.stdout)[0]["decision"]
    assert d2["alpha"] == 0.01 and set(noise["decision"]["prediction_set"]) <= set(d2["prediction_set"])


@pytest.mark.parametrize("bad", ["0", "-0.1", "0.6", "1"])
def test_alpha_outside_range_is_a_usage_error(conformal_art, bad):
    root, art, _ = conformal_art
    res = run(["attribute", str(root / "ref0.png"), str(root / "sus0_blur_0.png"), "-t", str(art), "--alpha", bad,
               "--quiet"])
    assert res.exit_code == 2 and "--alpha" in res.output
    res = run(["calibrate", str(root / "corpus.csv"), "-o", str(root / "x.json"), "--alpha", bad, "--quiet"])
    assert res.exit_code == 2 and "--alpha" in res.output


def test_v1_artifact_loads_gives_the_same_numbers_and_says_not_calibrated():
    """The shipped v1 artifact on the README's example images: the numbers it gave before issue 11."""
    ex = Path(__file__).resolve().parents[1] / "examples"
    res = run(["attribute", str(ex / "ref.png"), str(ex / "suspect_jpeg.jpg"), str(ex / "suspect_blur.png"),
               "-t", "local-offline-pixel-v1", "--format", "json", "--quiet", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    jpeg, blur = (r["decision"] for r in json.loads(res.stdout))
    assert (jpeg["system"], blur["system"]) == ("jpeg_q50", "ffdnet_s15")
    assert jpeg["p_system"] == pytest.approx(0.7956, abs=1e-4) and blur["p_system"] == pytest.approx(0.8984, abs=1e-4)
    for d in (jpeg, blur):
        assert d["conformal"]["calibrated"] is False and "p-values: not calibrated" in d["conformal"]["note"]
        assert d["p_values"] is None and d["prediction_set"] is None
        assert d["thresholds"]["id"] == "local-offline-pixel-v1" and d["thresholds"]["p_values"] == "not calibrated"


def test_calibrate_reuse_scores_gives_the_same_artifact_without_rescoring(tmp_path):
    corpus = make_image_corpus(tmp_path / "c", n_images=4, reps=1)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    sc = tmp_path / "scores.jsonl"
    base = ["--features", "pixel-v2", "--bootstrap", "100", "--no-blind", "--quiet", "--id", "x", "--format", "json"]
    r1 = run(["calibrate", str(corpus), "-o", str(a), "--scores", str(sc), *base])
    assert r1.exit_code == 0, r1.output
    # change one suspect: it must be scored again, the rest reused
    images.save_png(np.zeros((48, 64, 3)), tmp_path / "c" / "sus0_blur_0.png")
    r2 = run(["calibrate", str(corpus), "-o", str(b), "--reuse-scores", str(sc),
              *[x for x in base if x != "--quiet"]])
    assert r2.exit_code == 0, r2.output
    assert "11 of 12 pair(s) reused" in r2.stderr
    da, db = thresholds.load(a), thresholds.load(b)
    assert da["features"] == db["features"]
    assert da["class_model"]["means"] != db["class_model"]["means"]  # the changed pair was really rescored


def test_malformed_conformal_part_is_a_clear_artifact_error(conformal_art, tmp_path):
    _, art, _ = conformal_art
    doc = thresholds.load(art).to_dict()
    assert "_path" not in doc and "path" not in doc  # the artifact's path is an attribute, not a sealed key
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo"  # the default score (issue 11, round 2)
    doc["conformal"]["scales"] = doc["conformal"]["scales"][:1]
    bad = tmp_path / "bad.json"
    thresholds.save(doc, bad)  # resealed: the seal is valid, the content is not
    from fingerprint_cli.anchored.attribute import Decider

    with pytest.raises(ArtifactError, match="inconsistent conformal part"):
        Decider(thresholds.load(bad))


def test_calibrate_warns_when_a_system_has_too_few_calls_for_alpha(tmp_path):
    corpus = make_image_corpus(tmp_path / "small", n_images=3, reps=1)
    res = run(["calibrate", str(corpus), "-o", str(tmp_path / "s.json"), "--features", "ssim-psnr",
               "--bootstrap", "100", "--no-blind"])
    assert res.exit_code == 0, res.output
    assert "needs at least 20 calibration calls" in res.stderr and "blur has 3" in res.stderr


# ---------------------------------------------------------------- v3: robust top-3 nonconformity (issue 11, round 2)
def test_v3_and_v2_still_load_with_their_numbers():
    """v3 (robust top-3 score; the default until issue 11 round 4) and v2 (Mahalanobis score) still load, v2 gives
    the p-values the README printed for it; both records name their score."""
    from fingerprint_cli.anchored.attribute import Decider

    doc = thresholds.find("local-offline-pixel-v3")
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo"
    assert thresholds.SHIPPED_PINS["local-offline-pixel-v3"] == doc["sha256"]
    ex = Path(__file__).resolve().parents[1] / "examples"
    res = run(["attribute", str(ex / "ref.png"), str(ex / "suspect_jpeg.jpg"), str(ex / "suspect_blur.png"),
               "-t", "local-offline-pixel-v2", "--format", "json", "--quiet", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    jpeg, blur = (r["decision"] for r in json.loads(res.stdout))
    assert jpeg["p_values"]["jpeg2000"] == pytest.approx(0.2684, abs=1e-4)
    assert blur["p_values"]["realesrgan_x4plus"] == pytest.approx(0.07029, abs=1e-4)
    assert jpeg["conformal"]["score"] == "mahalanobis"
    dec = Decider(thresholds.find("local-offline-pixel-v3"))
    assert dec.conformal.score == "robust-top3" and dec.conformal.scales.shape == (16, 20)
    # the calibration calls' p-values are roughly uniform: coverage per system within a couple of points
    rep = dec.doc["calibration"]["conformal"]
    assert rep["score"] == "robust-top3"
    for s, v in rep["per_system"].items():  # identity: every call is an exact copy, all scores tie -> covered
        assert (v["coverage"] == 1.0) if s == "identity" else (0.93 <= v["coverage"] <= 0.97), s


def test_an_identical_copy_is_covered_by_identity_despite_stored_rounding(tmp_path):
    """An exact copy has every change feature at its neutral value, like every identity calibration call; the
    artifact's 9-digit medians make its score ~1e-7 instead of 0, which must tie with the calibration zeros."""
    ref = natural_image(120, 120, seed=32)
    images.save_png(ref, tmp_path / "ref.png")
    images.save_png(ref, tmp_path / "same.png")
    res = run(["attribute", str(tmp_path / "ref.png"), str(tmp_path / "same.png"), "-t", "local-offline-pixel-v3",
               "--format", "json", "--quiet", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)[0]["decision"]
    assert "identity" in d["prediction_set"] and d["p_values"]["identity"] == 1.0


def test_v3_does_not_name_a_system_for_a_tone_edit_outside_the_calibrated_range(tmp_path):
    """gamma 0.5 (the tone-curve system was calibrated on gamma 0.8-1.25): v3 names no system (at most the benign
    band: tone curve and colour balance both fit), never an AI band."""
    ref = natural_image(160, 160, seed=31)
    images.save_png(ref, tmp_path / "ref.png")
    images.save_png(np.clip(ref, 0, 1) ** 0.5, tmp_path / "gamma.png")
    res = run(["attribute", str(tmp_path / "ref.png"), str(tmp_path / "gamma.png"),
               "-t", "local-offline-pixel-v3", "--format", "json", "--quiet", "--no-aggregate"])
    assert res.exit_code == 0, res.output
    gamma = json.loads(res.stdout)[0]["decision"]
    assert gamma["system"] in ("unknown", "inconclusive") and gamma["label"] in ("unknown", "inconclusive", "benign")
    assert gamma["band"] not in ("tight", "drift")


# ---------------------------------------------------------------- round 7: the exact identity rule

def _png16_rgb(path: Path, a16: np.ndarray) -> None:
    """A 16-bit RGB PNG written by raw zlib (Pillow writes none): the loader reads it at 8 bits."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a16)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    h, w = a16.shape[:2]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def exact_files(tmp_path_factory):
    """A reference PNG and versions of it that are, or are not, exact copies of its pixels."""
    import tifffile
    from PIL import Image

    d = tmp_path_factory.mktemp("exact")
    a = (np.clip(natural_image(40, 48, seed=71), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(a).save(d / "ref.png")
    Image.fromarray(a).save(d / "copy.png")
    one = a.copy()
    one[5, 7, 1] = one[5, 7, 1] + 1 if one[5, 7, 1] < 255 else 254  # one sample of one pixel, one level
    Image.fromarray(one).save(d / "onepx.png")
    opaque = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], 2)
    Image.fromarray(opaque).save(d / "rgba_opaque.png")
    hole = opaque.copy()
    hole[0, 0, 3] = 0
    Image.fromarray(hole).save(d / "rgba_hole.png")
    tifffile.imwrite(d / "rgb16.tif", a.astype(np.uint16) * 257, photometric="rgb")  # the lossless widening
    tifffile.imwrite(d / "rgb16_low.tif", a.astype(np.uint16) * 257 + 1, photometric="rgb")  # low bits differ
    _png16_rgb(d / "rgb16.png", a.astype(np.uint16) * 257)
    g = a[..., 0]
    Image.fromarray(g).save(d / "grey.png")
    Image.fromarray(np.repeat(g[..., None], 3, 2)).save(d / "grey_as_rgb.png")
    Image.fromarray((g.astype(np.uint16) * 257).astype(np.uint16)).save(d / "grey16.png")
    return d


@pytest.mark.parametrize("ref, sus, identical, why", [
    ("ref.png", "copy.png", True, "identical"),
    ("ref.png", "onepx.png", False, "differ"),
    ("ref.png", "rgba_opaque.png", True, "identical"),  # an opaque alpha carries nothing
    ("ref.png", "rgba_hole.png", False, "alpha composited"),  # compositing can hide a difference: not compared
    ("ref.png", "rgb16.tif", True, "identical"),  # 16-bit samples exactly 257 v: the same values
    ("ref.png", "rgb16_low.tif", False, "differ"),  # the low bits are seen, and differ
    ("ref.png", "rgb16.png", False, "read at 8"),  # the decoder drops the low bytes: never an exact answer
    ("grey.png", "grey_as_rgb.png", True, "identical"),
    ("grey.png", "grey16.png", True, "identical"),
])
def test_exact_copy_definition_mode_alpha_bit_depth(exact_files, ref, sus, identical, why):
    from fingerprint_cli.anchored.score import exact_copy

    r, s = images.load_image(exact_files / ref), images.load_image(exact_files / sus)
    out = exact_copy(r, s)
    assert out["identical"] is identical and why in out["why"], out
    assert exact_copy(s, r)["identical"] is identical  # symmetric


def test_exact_copy_of_a_different_size_is_not_exact(exact_files, tmp_path):
    from PIL import Image

    from fingerprint_cli.anchored.score import exact_copy

    a = np.asarray(Image.open(exact_files / "ref.png"))
    Image.fromarray(a[:, :-1]).save(tmp_path / "narrow.png")
    out = exact_copy(images.load_image(exact_files / "ref.png"), images.load_image(tmp_path / "narrow.png"))
    assert not out["identical"] and "sizes differ" in out["why"]


def _attr(ref, sus, art):
    res = run(["attribute", str(ref), *map(str, sus), "-t", str(art), "--format", "json", "--quiet",
               "--no-aggregate"])
    assert res.exit_code == 0, res.output
    return [r["decision"] for r in json.loads(res.stdout)]


def test_exact_copy_is_identity_with_error_rate_zero_and_a_change_goes_statistical(exact_files):
    d = exact_files
    copy, opaque, onepx, rgb16png = _attr(d / "ref.png", [d / "copy.png", d / "rgba_opaque.png", d / "onepx.png",
                                                          d / "rgb16.png"], "local-offline-pixel-v5")
    for e in (copy, opaque):
        assert (e["label"], e["system"], e["band"]) == ("identity", "identity", "benign")
        assert e["rule"] == "exact-copy" and e["error_rate"] == 0.0 and "without statistics" in e["rule_text"]
        assert not e["inconclusive"] and not e["unknown"] and e["why_inconclusive"] == []
        assert set(e["p_values"]) >= {"identity", "colour_cast"} and e["prediction_set"] is not None  # listed
        assert e["p_value"] == e["p_values"]["identity"]
    for e in (onepx, rgb16png):
        assert e["rule"] == "conformal-prediction-set" and "error_rate" not in e and "statistical_label" not in e


def test_exact_rule_overrides_a_wider_or_empty_set_and_keeps_the_statistics(conformal_art):
    """The synthetic artifact has no identity system at all: an exact copy still answers identity (band benign),
    and the p-values are those the statistical path computed."""
    from fingerprint_cli.anchored import attribute
    from fingerprint_cli.batch import Pair

    root, art, _ = conformal_art
    doc = thresholds.load(art)
    decider = attribute.Decider(doc)
    (res,) = attribute.make_scorer(decider.features, None).score([Pair(str(root / "ref0.png"),
                                                                        str(root / "sus0_jpeg_0.png"))])
    feats = res.record.features
    assert not res.record.details["exact_copy"]["identical"]
    plain, _ = decider.decide(feats)
    exact, _ = decider.decide(feats, exact={"identical": True, "why": "test"})
    assert plain["label"] != "identity" and plain["rule"] == "conformal-prediction-set"
    assert exact["label"] == "identity" and exact["band"] == "benign" and exact["rule"] == "exact-copy"
    assert exact["statistical_label"] == plain["label"]
    assert exact["p_values"] == plain["p_values"] and exact["prediction_set"] == plain["prediction_set"]
    not_exact, _ = decider.decide(feats, exact={"identical": False, "why": "differ"})
    assert not_exact.to_dict() == plain.to_dict()
    # end to end: the copy of a calibration reference is identity although no identity system was calibrated
    images.save_png(images.load_image(root / "ref1.png").pixels, root / "ref1_copy.png")
    (e,) = _attr(root / "ref1.png", [root / "ref1_copy.png"], art)
    assert e["label"] == "identity" and e["rule"] == "exact-copy" and "identity" not in e["p_values"]


def test_exact_rule_holds_for_a_v1_artifact_and_the_python_api(exact_files):
    from fingerprint_cli import api

    d = exact_files
    (e,) = _attr(d / "ref.png", [d / "copy.png"], "local-offline-pixel-v1")
    assert e["label"] == "identity" and e["rule"] == "exact-copy" and not e["conformal"]["calibrated"]
    recs = api.attribute(d / "ref.png", [d / "copy.png", d / "onepx.png"], thresholds_name="local-offline-pixel-v5",
                         quiet=True, aggregate=False)
    assert [r.decision["rule"] for r in recs] == ["exact-copy", "conformal-prediction-set"]
    assert recs[0].details["exact_copy"]["identical"] and not recs[1].details["exact_copy"]["identical"]
