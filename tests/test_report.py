"""`fpx attribute --report case.html`: a self-contained page that renders in headless Chromium (issue 4)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import natural_image, self_contained_html
from fingerprint_cli import images
from fingerprint_cli.cli.app import app
from test_attribute import make_image_corpus, system_output

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    corpus = make_image_corpus(root, n_images=4, reps=1)
    art = root / "rep-v1.json"
    # --no-conformal: a v1-style artifact (3 calibration calls per system cannot give a conformal p below 0.25)
    res = CliRunner().invoke(app, ["calibrate", str(corpus), "-o", str(art), "--features", "pixel",
                                   "--bootstrap", "100", "--no-blind", "--quiet", "--no-conformal"])
    assert res.exit_code == 0, res.output
    ref = natural_image(48, 64, seed=77)
    images.save_png(ref, root / "case_ref.png")
    images.save_png(system_output("blur", ref, 0, 0), root / "case_sus.png")
    images.save_png(system_output("noise", ref, 0, 1), root / "case_sus2.png")
    html = root / "case.html"
    res = CliRunner().invoke(app, ["attribute", str(root / "case_ref.png"), str(root / "case_sus.png"),
                                   str(root / "case_sus2.png"), "-t", str(art), "--report", str(html),
                                   "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    return root, html


def test_report_is_self_contained_and_complete(case):
    root, html = case
    text = self_contained_html(html)  # no external resources of any kind
    assert "http://" not in text and "https://" not in text
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    # per case: reference, suspect, heatmap, plane
    assert len(uris) == 8
    import base64

    for u in uris:
        assert base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n"
    for needle in ("case_ref.png", "case_sus.png", "band: tight", "system: blur", "band: drift",
                   "rep-v1", "Provenance", "per-block RMS luma difference", "Per-image decisions",
                   "not known (no --perturbed copy given)", images.load_image(root / "case_ref.png").sha256):
        assert needle in text, needle


def test_report_refuses_to_overwrite_an_input(case, tmp_path):
    root, _ = case
    before = (root / "case_sus.png").read_bytes()
    res = CliRunner().invoke(app, ["attribute", str(root / "case_ref.png"), str(root / "case_sus.png"),
                                   "-t", str(root / "rep-v1.json"), "--report", str(root / "case_sus.png")])
    assert res.exit_code == 2
    assert (root / "case_sus.png").read_bytes() == before


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="headless Chromium not installed (Debian package `chromium`: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(case, tmp_path):
    _, html = case
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,1600", html.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    px = images.load_image(shot).pixels
    assert px.shape[0] == 1600 and px.shape[1] == 1200
    # not a blank page: text and figures make the page far from uniform, and there is colour (the plots)
    assert px.std() > 0.1
    sat = px.max(2) - px.min(2)
    assert (sat > 0.3).mean() > 0.005
    if shutil.which("true"):  # keep the screenshot next to the report for a human look when debugging
        shutil.copy(shot, html.with_suffix(".screenshot.png"))


def test_report_shows_survival_when_the_protected_copy_is_given(case, tmp_path):
    root, _ = case
    prot = tmp_path / "prot.png"
    res = CliRunner().invoke(app, ["perturb", str(root / "case_ref.png"), "-o", str(prot), "--quiet"])
    assert res.exit_code == 0, res.output
    sus = tmp_path / "prot_jpeg.png"
    images.save_png(images.decode(images.encode(images.load_image(prot).pixels, "JPEG", quality=85), "j").pixels, sus)
    html = tmp_path / "surv.html"
    res = CliRunner().invoke(app, ["attribute", str(root / "case_ref.png"), str(sus), "-t", str(root / "rep-v1.json"),
                                   "--perturbed", str(prot), "--report", str(html), "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    import json

    rec = json.loads(res.stdout)[0]
    assert 0.0 < rec["features"]["survival"] <= 1.0
    assert f"survival = {rec['features']['survival']:.4g}" in html.read_text(encoding="utf-8")
