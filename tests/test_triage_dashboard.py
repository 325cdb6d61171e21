"""`fpx triage --report`: a self-contained dashboard, every user string escaped, rendered (and its sorting /
filtering script run) in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from conftest import self_contained_html
from test_triage import AI_DST, run, save, u8, xmp_packet

from fingerprint_cli import images

CHROMIUM = "/usr/bin/chromium"
EVIL = "<script>alert('x')</script>"
EVIL_NAME = "\"'><img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    inbox = root / "inbox"
    inbox.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{EVIL}\nSteps: 20, Sampler: Euler a, Model: {EVIL}")
    save(u8(1, 64, 64), inbox / EVIL_NAME, "PNG", pnginfo=info)
    save(u8(2, 64, 64), inbox / "ai.jpg", "JPEG", quality=90, xmp=xmp_packet(AI_DST, EVIL))
    save(u8(3, 64, 64), inbox / "plain.png", "PNG")
    (inbox / "notes.txt").write_text("hello")
    html = root / "out" / "triage.html"
    r = run(["triage", inbox, "-o", root / "out" / "t.jsonl", "--report", html, "-q"])
    assert r.exit_code == 3, r.output
    return root, html


def test_dashboard_is_self_contained_and_escapes_user_strings(dash):
    _, html = dash
    text = self_contained_html(html)  # no external resource at all
    assert "<script>alert" not in text and "<img src=x" not in text  # the evil strings never become markup
    assert "&lt;script&gt;alert(" in text
    assert text.count("<script>") == 1  # only the dashboard's own script
    uris = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", text)
    assert len(uris) == 3  # one thumbnail per decoded image
    for u in uris:
        assert base64.b64decode(u)[:3] == b"\xff\xd8\xff"
    for needle in ("generated", "unknown", "error", "png-text: generated", "xmp: generated", "text file",
                   "custody log head"):
        assert needle in text, needle


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="headless Chromium not installed (Debian package `chromium`: apt-get install -y chromium)")
def test_dashboard_renders_and_its_script_filters_in_headless_chromium(dash, tmp_path):
    _, html = dash
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    proc = subprocess.run(flags + ["--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,900",
                                   html.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    px = images.load_image(shot).pixels
    assert px.std() > 0.05  # something was drawn
    # the script ran: the row counter is filled in, and a filter from the URL hides the other rows
    dom = subprocess.run(flags + ["--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "4 shown" in dom, dom[-1500:]
    dom = subprocess.run(flags + ["--dump-dom", html.as_uri() + "#verdict=generated&sort=name&open=1"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "2 shown" in dom, dom[-1500:]
    assert "sorted-asc" in dom and "detail open" in dom
    if (out := Path(__file__).resolve().parent.parent / "bench" / "out").is_dir():
        shutil.copy(shot, out / "triage_dashboard_test.png")  # for a look; bench/out is git-ignored


def test_report_refuses_to_overwrite_an_input(tmp_path):
    a = save(u8(1), tmp_path / "a.png", "PNG")
    before = a.read_bytes()
    r = run(["triage", a, "--report", a])
    assert r.exit_code == 2 and a.read_bytes() == before
    assert Image.open(a).size == (48, 48)
