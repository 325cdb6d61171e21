"""Integrity 8 (review-8 finding L4): ``fpx score --perturbed`` states the error rate behind
``perturbation_detected`` in the record, and a 0 reads as "not detected", not "absent"."""

from __future__ import annotations

import json
import math

import numpy as np
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import survival
from fingerprint_cli.cli.app import app

runner = CliRunner()


def _files(tmp_path):
    x = natural_image(128, 128, 5).astype(np.float64)
    x = np.clip(x + np.random.default_rng(5).normal(0, 0.03, x.shape), 0, 1)
    images.save_png(x.astype(np.float32), tmp_path / "clean.png")
    res = runner.invoke(app, ["perturb", str(tmp_path / "clean.png"), "-o", str(tmp_path / "prot.png"), "--key", "k",
                              "-q"])
    assert res.exit_code == 0, res.output
    p = images.load_image(tmp_path / "prot.png").pixels
    (tmp_path / "prot_q85.jpg").write_bytes(images.encode(p, "JPEG", quality=85))
    (tmp_path / "clean_q85.jpg").write_bytes(images.encode(images.load_image(tmp_path / "clean.png").pixels,
                                                           "JPEG", quality=85))
    return tmp_path


def _score(d):
    res = runner.invoke(app, ["score", str(d / "clean.png"), str(d / "prot_q85.jpg"), str(d / "clean_q85.jpg"),
                              "--perturbed", str(d / "prot.png"), "--encoder", "none", "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_score_perturbed_states_the_false_alarm_bound(tmp_path):
    d = _files(tmp_path)
    pos, neg = _score(d)
    for r in (pos, neg):
        per = r["details"]["perturbation"]
        assert per["false_alarm_bound"] == math.exp(-12.5) and "Hoeffding" in per["false_alarm_rule"]
        z = r["features"]["perturbation_z"]
        assert per["p_bound"] == min(1.0, math.exp(-max(z, 0.0) ** 2 / 2))
        assert "not detected, not absent" in per["not_detected_means"]
    assert pos["features"]["perturbation_detected"] == 1 and pos["details"]["perturbation"]["p_bound"] < 3.7e-6
    assert neg["features"]["perturbation_detected"] == 0 and neg["details"]["perturbation"]["p_bound"] > 3.7e-6
    assert "not evidence of absence" in neg["directions"]["perturbation_detected"]


def test_without_a_sidecar_the_bound_is_not_calibrated(tmp_path):
    d = _files(tmp_path)
    (d / "prot.png.json").unlink()
    pos, _ = _score(d)
    per = pos["details"]["perturbation"]
    assert per["false_alarm_bound"] is None and per["p_bound"] is None
    assert per["false_alarm_rule"].startswith("not calibrated: no sidecar")
    assert survival.false_alarm(9.0, {"method": "adversarial"}, 8)["false_alarm_bound"] is None
