"""The CLI as users run it: exit codes, parseable output, stderr/stdout separation, batches, resume."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.cli.app import app


def run(*args, **kw):
    r = CliRunner()
    return r.invoke(app, [str(a) for a in args], **kw)


@pytest.fixture
def files(tmp_path):
    ref = natural_image(seed=11)
    paths = {"ref": tmp_path / "ref.png", "s1": tmp_path / "s1.png", "s2": tmp_path / "s2.png"}
    images.save_png(ref, paths["ref"])
    images.save_png(np.clip(ref + 0.03, 0, 1), paths["s1"])
    images.save_png(np.clip(ref * 0.8, 0, 1), paths["s2"])
    return paths


def test_version_and_help_list_every_command():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.startswith("fpx ")
    r = run("--help")
    for cmd in ("perturb", "score", "attribute", "calibrate", "dif-extract", "detect", "lineage", "models",
                "doctor"):
        assert f" {cmd} " in r.stdout, cmd


def test_score_json_parses_and_stdout_is_results_only(model_home, files):
    r = run("score", files["ref"], files["s1"], files["s2"], "--format", "json", "--resolution", "112")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [Path_name(x["inputs"]["suspect"]["path"]) for x in recs] == ["s1.png", "s2.png"]
    for rec in recs:
        assert rec["schema_version"] == 1 and rec["status"] == "ok"
        assert rec["provenance"]["verified"] is False and rec["provenance"]["resolution"] == 112
        assert rec["inputs"]["reference"]["sha256"] == images.sha256_file(files["ref"])
        assert rec["directions"]["patch_mean"] == "higher = more change"


def Path_name(p):
    from pathlib import Path

    return Path(p).name


def test_missing_file_named_exit_2(files):
    r = run("score", files["ref"], files["ref"].parent / "nope.png", "--encoder", "none", "-f", "jsonl")
    assert r.exit_code == 2
    assert "nope.png: no such file" in r.stderr
    rec = json.loads(r.stdout.strip())
    assert rec["status"] == "error"


def test_batch_with_failure_exits_3_and_keeps_going(files, tmp_path):
    (tmp_path / "junk.png").write_text("junk")
    r = run("score", files["ref"], files["s1"], tmp_path / "junk.png", files["s2"], "--encoder", "none",
            "-f", "jsonl")
    assert r.exit_code == 3
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["status"] for x in recs] == ["ok", "error", "ok"]
    assert "junk.png" in r.stderr


def test_offline_without_weights_is_clear(files):
    r = run("score", files["ref"], files["s1"])
    assert r.exit_code == 1
    assert "fpx models pull dinov2-vitb14" in r.stderr and "fpx models import" in r.stderr
    assert r.stdout == ""


def test_pairs_csv_and_dirs(files, tmp_path):
    pcsv = tmp_path / "pairs.csv"
    pcsv.write_text("reference,suspect\nref.png,s1.png\nref.png,s2.png\n")
    r = run("score", "--pairs", pcsv, "--encoder", "none", "-f", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 2 and float(rows[0]["features.ssim_clean"]) > float(rows[1]["features.ssim_clean"]) - 1

    refs, sus = tmp_path / "refs", tmp_path / "sus"
    refs.mkdir(), sus.mkdir()
    images.save_png(natural_image(seed=1), refs / "cat.png")
    images.save_png(natural_image(seed=2), refs / "dog.png")
    images.save_png(natural_image(seed=1), sus / "cat_flux_1.png")
    images.save_png(natural_image(seed=2), sus / "dog.png")
    images.save_png(natural_image(seed=3), sus / "bird.png")
    r = run("score", "--ref-dir", refs, "--suspect-dir", sus, "--encoder", "none", "-f", "json")
    assert r.exit_code == 3  # bird has no reference
    recs = {Path_name(x["inputs"]["suspect"]["path"]): x for x in json.loads(r.stdout)}
    assert Path_name(recs["cat_flux_1.png"]["inputs"]["reference"]["path"]) == "cat.png"
    assert recs["cat_flux_1.png"]["features"]["ssim_clean"] == pytest.approx(1.0)
    assert recs["bird.png"]["status"] == "error" and "matching file stem" in recs["bird.png"]["error"]["message"]


def test_output_file_and_resume(files, tmp_path):
    out = tmp_path / "scores.jsonl"
    r = run("score", files["ref"], files["s1"], "--encoder", "none", "-o", out)
    assert r.exit_code == 0 and r.stdout == ""
    assert len(out.read_text().splitlines()) == 1
    r = run("score", files["ref"], files["s1"], files["s2"], "--encoder", "none", "-o", out, "--resume")
    assert r.exit_code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [Path_name(x["inputs"]["suspect"]["path"]) for x in lines] == ["s1.png", "s2.png"]
    assert "1 pair(s) already in" in r.stderr
    assert not (tmp_path / "scores.jsonl.partial").exists()


def test_output_refuses_to_overwrite_input(files):
    before = files["s1"].read_bytes()
    r = run("score", files["ref"], files["s1"], "--encoder", "none", "-o", files["s1"])
    assert r.exit_code == 2 and "refusing to write over the input" in r.stderr
    assert files["s1"].read_bytes() == before


def test_usage_errors_exit_2(files, tmp_path):
    assert run("score", "--encoder", "none").exit_code == 2
    assert run("score", files["ref"], "--encoder", "none").exit_code == 2
    r = run("score", files["ref"], files["s1"], "--encoder", "dinov3")
    assert r.exit_code == 2 and "did you mean" in r.stderr
    r = run("score", files["ref"], files["s1"], "--resolution", "100")
    assert r.exit_code != 0


def test_models_commands(tiny_model_file, tmp_path):
    r = run("models", "import", tiny_model_file, "--name", "dinov2-vitb14")
    assert r.exit_code == 1 and "does not match the pinned" in r.stderr
    r = run("models", "list", "-f", "json")
    rows = json.loads(r.stdout)
    assert rows[0]["name"] == "dinov2-vitb14" and rows[0]["installed"] is False
    r = run("models", "import", tiny_model_file, "--name", "dinov2-vitb14", "--force")
    assert r.exit_code == 0 and json.loads(r.stdout)["verified"] is False
    r = run("models", "verify", "dinov2-vitb14", "-f", "json")
    assert r.exit_code == 1 and json.loads(r.stdout)[0]["intact"] is True  # unverified pin -> exit 1
    assert run("models", "path").stdout.strip().endswith("fpx-home")
    r = run("models", "pull", "dinov2-vitb14x")
    assert r.exit_code == 2 and "did you mean" in r.stderr


def test_doctor_json():
    r = run("doctor", "--json")
    info = json.loads(r.stdout)
    assert info["offline"] is True and info["artifacts"][0]["name"] == "dinov2-vitb14"


def test_console_script_pipes_jsonl(files, tmp_path):
    """A real subprocess: piped stdout defaults to jsonl, nothing else on stdout."""
    p = subprocess.run([sys.executable, "-m", "fingerprint_cli", "score", str(files["ref"]), str(files["s1"]),
                        "--encoder", "none"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["command"] == "score" and rec["features"]["ssim_clean"] < 1


def test_maps_written_per_pair(model_home, files, tmp_path):
    out = tmp_path / "maps"
    r = run("score", files["ref"], files["s1"], files["s2"], "--resolution", "112", "--maps", out, "-f", "json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    for rec, name in zip(recs, ["s1", "s2"]):
        assert Path_name(rec["details"]["map"]) == f"{name}__map.png"
        im = images.load_image(rec["details"]["map"])
        assert im.width > 50
    r = run("score", files["ref"], files["s1"], "--encoder", "none", "--maps", out, "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["details"]["map"].endswith("s1__map.png")
