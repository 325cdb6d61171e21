"""The Python API (fingerprint_cli.api) returns the records the CLI prints; the documented example runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fingerprint_cli import api, images
from fingerprint_cli.batch import Results
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import InputError, UsageError

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
VOLATILE = ("utc_time",)  # the only fields allowed to differ between two runs


def _cli(args) -> list[dict]:
    res = CliRunner().invoke(app, args)
    assert res.exit_code in (0, 3), res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _stable(d, volatile=VOLATILE):
    if isinstance(d, dict):
        return {k: _stable(v, volatile) for k, v in d.items() if k not in volatile}
    if isinstance(d, list):
        return [_stable(v, volatile) for v in d]
    return d


def _pairs_dir(tmp_path: Path) -> dict:
    rng = np.random.default_rng(7)
    ref = rng.random((40, 48, 3)).astype(np.float32)
    paths = {"ref": tmp_path / "r.png", "a": tmp_path / "a.png", "b": tmp_path / "b.png",
             "bad": tmp_path / "bad.png"}
    images.save_png(ref, paths["ref"])
    images.save_png(np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32), paths["a"])
    images.save_png(np.clip(ref * 0.8 + 0.1, 0, 1).astype(np.float32), paths["b"])
    paths["bad"].write_bytes(b"not a png")
    return {k: str(v) for k, v in paths.items()}


def test_score_api_equals_cli(tmp_path):
    p = _pairs_dir(tmp_path)
    sus = [p["a"], p["b"], p["bad"]]
    recs = api.score(Path(p["ref"]), [Path(s) for s in sus], encoder="none", quiet=True)  # Paths or strings
    assert isinstance(recs, Results) and recs.items == 3 and recs.exit_code == 3
    assert [r.ok for r in recs] == [True, True, False]
    assert "bad.png" in recs[2].error["message"] or recs[2].error["path"] == p["bad"]
    cli = _cli(["score", p["ref"], *sus, "--encoder", "none", "--format", "jsonl"])
    assert [_stable(r.to_dict()) for r in recs] == [_stable(d) for d in cli]
    # the numbers are the metrics' own: SSIM against the reference is 1 only for the reference itself
    same = api.score(p["ref"], [p["ref"]], encoder="none", quiet=True)
    assert same[0].features["ssim_clean"] == pytest.approx(1.0) and recs[0].features["ssim_clean"] < 0.99
    assert same.exit_code == 0 and same.items == 1


def test_attribute_api_equals_cli(tmp_path):
    p = _pairs_dir(tmp_path)
    sus = [p["a"], p["b"]]
    recs = api.attribute(p["ref"], sus, thresholds_name="local-offline-ssim-psnr-v1", quiet=True)
    json.dumps([r.to_dict() for r in recs])  # JSON-ready as returned
    cli = _cli(["attribute", p["ref"], *sus, "-t", "local-offline-ssim-psnr-v1", "--format", "jsonl", "--quiet"])
    assert [_stable(r.to_dict()) for r in recs] == [_stable(d) for d in cli]
    # two suspects of one reference: two calls and one per-image aggregate, last
    assert len(recs) == 3 and "suspect" not in recs[2].inputs and recs[2].decision["calls"] == 2
    assert all(r.decision["thresholds"]["id"] == "local-offline-ssim-psnr-v1" for r in recs[:2])
    flat = api.attribute(p["ref"], sus, thresholds_name="local-offline-ssim-psnr-v1", aggregate=False, quiet=True)
    assert len(flat) == 2


def test_api_writes_output_and_resumes(tmp_path):
    p = _pairs_dir(tmp_path)
    out = tmp_path / "o" / "scores.jsonl"
    out.parent.mkdir()
    first = api.score(p["ref"], [p["a"]], encoder="none", output=out, quiet=True)
    assert [json.loads(x)["inputs"]["suspect"]["path"] for x in out.read_text().splitlines()] == [p["a"]]
    again = api.score(p["ref"], [p["a"], p["b"]], encoder="none", output=out, resume=True, quiet=True)
    # only the new pair is scored; the file keeps both
    assert [r.inputs["suspect"]["path"] for r in again] == [p["b"]] and again.items == 2
    assert len(out.read_text().splitlines()) == 2 and first[0].ok


def test_api_raises_before_any_work(tmp_path):
    p = _pairs_dir(tmp_path)
    with pytest.raises(UsageError, match="name pairs one way"):
        api.score(p["ref"], [p["a"]], pairs=tmp_path / "x.csv", encoder="none")
    with pytest.raises(UsageError, match="--resume needs --output"):
        api.score(p["ref"], [p["a"]], encoder="none", resume=True)
    with pytest.raises(InputError):
        api.attribute(p["ref"], [p["a"]], thresholds_name=str(tmp_path / "missing.json"), quiet=True)
    with pytest.raises(UsageError):
        api.perturb([p["ref"]], out=tmp_path / "x.jpg", quiet=True)  # a protected image is a PNG
    assert not (tmp_path / "x.jpg").exists()


def test_perturb_api_equals_cli(tmp_path):
    p = _pairs_dir(tmp_path)
    a, b = tmp_path / "pa.png", tmp_path / "pb.png"
    [rec] = api.perturb([p["ref"]], out=a, key="k", quiet=True)
    cli = _cli(["perturb", p["ref"], "-o", str(b), "--key", "k", "--format", "jsonl", "--quiet"])
    assert images.load_image(a).sha256 == images.load_image(b).sha256  # same key, same pixels
    assert rec.features == cli[0]["features"] and rec.directions == cli[0]["directions"]
    assert rec.features["max_delta_over_jnd"] <= 0.3 + 1e-6


def test_calibrate_api(tmp_path):
    rng = np.random.default_rng(3)
    rows = ["reference,suspect,system,image_id"]
    for i in range(6):
        ref = rng.random((32, 32, 3)).astype(np.float32)
        images.save_png(ref, tmp_path / f"r{i}.png")
        for name, sus in (("noise", np.clip(ref + rng.normal(0, 0.08, ref.shape), 0, 1)),
                          ("dim", np.clip(ref * 0.7, 0, 1))):
            images.save_png(sus.astype(np.float32), tmp_path / f"s{i}_{name}.png")
            rows.append(f"r{i}.png,s{i}_{name}.png,{name},{i}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    cal = api.calibrate(tmp_path / "c.csv", tmp_path / "t.json", features="ssim-psnr", bootstrap=100,
                        blind=False, quiet=True)
    assert cal.exit_code == 0 and not cal.failed and len(cal.scored) == 12
    assert json.loads((tmp_path / "t.json").read_text())["sha256"] == cal.doc["sha256"]
    assert cal.plot.is_file() and cal.doc["calibration"]["corpus"]["n_calls"] == 12
    # two well-separated systems: leave-one-image-out gets them right
    assert cal.doc["calibration"]["loo"]["accuracy"] == 1.0


def test_example_script_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, str(EX / "api_example.py"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("score ") >= 2 and "attribute per image" in res.stdout
    assert (tmp_path / "ref_protected.png").is_file() and (tmp_path / "ref_protected.png.json").is_file()


def test_cli_is_a_thin_layer_over_the_api(monkeypatch):
    """`fpx score` reconciles its flags into one api.score call and renders its Results (tests can patch it)."""
    from fingerprint_cli.records import Record

    seen = {}

    def fake_score(reference, suspects, **kw):
        seen.update(kw, reference=reference, suspects=suspects)
        inputs = {"reference": {"path": reference, "sha256": None}, "suspect": {"path": suspects[0], "sha256": None}}
        return Results([Record.failure("score", inputs, InputError("cannot decode", suspects[0]), {})], items=1)

    monkeypatch.setattr(api, "score", fake_score)
    res = CliRunner().invoke(app, ["score", "r.png", "s.png", "--encoder", "none", "--no-cache", "-j", "2",
                                   "--format", "json"])
    assert seen["use_cache"] is False and seen["jobs"] == 2 and seen["stdout"] is True
    assert seen["fmt"] == "json" and seen["encoder"] == "none" and seen["suspects"] == ["s.png"]
    assert res.exit_code == 2  # one item: its own error's code
    assert "fpx: failed:" in res.stderr and "cannot decode" in res.stderr
    # a typo in a closed option set is refused by the parser before the api is called
    seen.clear()
    res = CliRunner().invoke(app, ["score", "r.png", "s.png", "--format", "jsnl"])
    assert res.exit_code == 2 and not seen


# ---------------------------------------------------------------- DIF: extract, dif_calibrate, detect
def _dif_corpus(root: Path) -> dict:
    """16 generated images carrying one planted periodic pattern, 16 real, 24 held-out real (tiny, 48 px)."""
    from conftest import natural_image

    yy, xx = np.mgrid[0:48, 0:48]
    planted = (np.sin(2 * np.pi * xx / 4) * np.cos(2 * np.pi * yy / 8))[..., None] * np.array([1.0, -0.5, 0.7])
    dirs = {k: root / k for k in ("gen", "real", "cal")}
    for d in dirs.values():
        d.mkdir()
    for i in range(16):
        images.save_png(np.clip(natural_image(48, 48, seed=i) + 0.03 * planted, 0, 1).astype(np.float32),
                        dirs["gen"] / f"g{i:02d}.png")
        images.save_png(natural_image(48, 48, seed=100 + i), dirs["real"] / f"r{i:02d}.png")
    for i in range(24):
        images.save_png(natural_image(48, 48, seed=300 + i), dirs["cal"] / f"c{i:02d}.png")
    return {k: str(v) for k, v in dirs.items()}


def test_dif_api_equals_cli(tmp_path):
    from fingerprint_cli.dif.fingerprint import Fingerprint

    d = _dif_corpus(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images found"):  # before any work: nothing is written
        api.extract(d["gen"], tmp_path / "empty", tmp_path / "x.fpx.safetensors", quiet=True)
    assert not (tmp_path / "x.fpx.safetensors").exists()
    fp_file = tmp_path / "gen.fpx.safetensors"
    [ext] = api.extract(d["gen"], d["real"], fp_file, method="average", crop=48, denoiser="gaussian",
                        test_fraction=0.25, quiet=True)
    fp = Fingerprint.load(fp_file)
    assert ext.command == "dif-extract" and ext.details["fingerprint"]["sha256"] == fp.sha256
    assert ext.features["mu_gen"] == pytest.approx(fp.meta["mu_gen"]) and 0.0 <= ext.features["test_auc"] <= 1.0
    cal_file = tmp_path / "gen-cal.fpx.safetensors"
    cal = api.dif_calibrate(fp_file, [d["cal"]], cal_file, fpr=0.1, quiet=True)
    assert cal.exit_code == 0 and cal[0].features["n"] == 24 and cal[0].features["fpr"] == 0.1
    assert Fingerprint.load(cal_file).calibrated and not Fingerprint.load(fp_file).calibrated  # input untouched

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    targets = [d["gen"], d["cal"], str(bad)]
    recs = api.detect([cal_file], targets, quiet=True)
    assert isinstance(recs, Results) and recs.items == 16 + 24 + 1 and recs.exit_code == 3
    assert [r.ok for r in recs] == [True] * 40 + [False] and recs[-1].inputs["image"]["path"] == str(bad)
    cli = _cli(["detect", str(cal_file), *targets, "--format", "jsonl", "--quiet"])
    assert [_stable(r.to_dict()) for r in recs] == [_stable(x) for x in cli]
    # the planted pattern is what the fingerprint found: generated images score above the held-out real ones
    gen_scores = [r.features["score"] for r in recs[:16]]
    real_scores = [r.features["score"] for r in recs[16:40]]
    assert np.mean(gen_scores) > np.mean(real_scores)
    # loaded Fingerprint objects work as well as paths; the same records come back
    again = api.detect([Fingerprint.load(cal_file)], [d["gen"]], quiet=True)
    assert [_stable(r.to_dict()) for r in again] == [_stable(r.to_dict()) for r in recs[:16]]
    with pytest.raises(UsageError, match="give at least one IMAGE"):
        api.detect([cal_file], [], quiet=True)


def test_lineage_api_equals_cli(tmp_path):
    d = _dif_corpus(tmp_path)
    fps = []
    for name, seed in (("a", 0), ("b", 1)):  # two fits of one generator (different splits): one family
        fps.append(tmp_path / f"{name}.fpx.safetensors")
        api.extract(d["gen"], d["real"], fps[-1], name=name, seed=seed, method="average", crop=48,
                    denoiser="gaussian", test_fraction=0.25, evaluate=False, quiet=True)
    recs = api.lineage(fps, metric="auc", quiet=True)
    assert isinstance(recs, Results) and recs.exit_code == 0
    cli = _cli(["lineage", *map(str, fps), "--metric", "auc", "--format", "jsonl", "--quiet"])
    volatile = ("utc", "timing")  # lineage's clock fields: its UTC time and the seconds each step took
    assert [_stable(r.to_dict(), volatile) for r in recs] == [_stable(x, volatile) for x in cli]
    assert len(recs) == 2 * 2 + 1 and all(r.command == "lineage" for r in recs)
    with pytest.raises(UsageError):
        api.lineage(fps, output=fps[0], quiet=True)  # an output that is an input is refused before any work
