"""Review 9: an ``fpx attribute`` pair whose suspect is much smaller than its reference (upsampled to compare)
or of another shape (stretched to compare) says that it lies outside the calibrated sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import natural_image
from typer.testing import CliRunner

from fingerprint_cli import images, pair_conditions
from fingerprint_cli.cli.app import app
from fingerprint_cli.records import Record


@pytest.mark.parametrize("ref,sus,scale,aspect,within", [
    ((256, 256), (256, 256), 1.0, 0.0, True),
    ((256, 256), (218, 218), 218 / 256, 0.0, True),      # a 0.85 downscale: inside the corpora's chains
    ((256, 256), (128, 128), 0.5, 0.0, True),            # exactly the limit: not refused
    ((256, 256), (12, 12), 12 / 256, 0.0, False),        # 21x smaller
    ((400, 300), (400, 280), (280 / 300) ** 0.5, abs((400 / 280) / (400 / 300) - 1), False),  # 7% stretch
    ((400, 300), (404, 300), (404 / 400) ** 0.5, 0.01, True),
])
def test_check_measures_scale_and_aspect(ref, sus, scale, aspect, within):
    c = pair_conditions.check({"reference": list(ref), "suspect": list(sus)})
    assert c["scale"] == pytest.approx(scale, abs=1e-4) and c["aspect_change"] == pytest.approx(aspect, abs=1e-4)
    assert c["within"] is within and (len(c["warnings"]) > 0) is (not within)


def test_check_without_sizes_says_nothing():
    assert pair_conditions.check(None) is None and pair_conditions.check({"reference": [0, 5]}) is None
    r = Record(command="attribute", inputs={}, status="error")
    pair_conditions.apply(r)
    assert r.decision is None and not r.details


def test_cli_marks_the_upsampled_and_the_stretched_suspect_and_warns(tmp_path):
    ref = natural_image(96, 128, seed=3)
    images.save_png(ref, tmp_path / "ref.png")
    images.save_png(np.ascontiguousarray(ref[::8, ::8]), tmp_path / "small.png")        # 12 x 16: 8x smaller
    images.save_png(np.ascontiguousarray(ref[:, :96]), tmp_path / "square.png")          # other shape
    images.save_png(np.clip(ref + 0.01, 0, 1), tmp_path / "same.png")
    r = CliRunner().invoke(app, ["attribute", str(tmp_path / "ref.png"), str(tmp_path / "small.png"),
                                 str(tmp_path / "square.png"), str(tmp_path / "same.png"), "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    recs = {json.loads(x)["inputs"].get("suspect", {}).get("path"): json.loads(x)
            for x in r.stdout.splitlines() if x.startswith("{")}
    small, square, same = (recs[str(tmp_path / n)] for n in ("small.png", "square.png", "same.png"))
    assert small["decision"]["within_conditions"] is False and "8.0x smaller" in small["decision"]["outside_conditions"]
    assert square["decision"]["within_conditions"] is False and "aspect ratio" in square["decision"]["outside_conditions"]
    assert same["decision"]["within_conditions"] is True and "outside_conditions" not in same["decision"]
    assert same["details"]["condition"] == {"scale": 1.0, "aspect_change": 0.0, "within": True, "warnings": []}
    warned = [x for x in r.stderr.splitlines() if "outside the calibrated conditions" in x]
    assert len(warned) == 2 and any("small.png" in w for w in warned) and any("square.png" in w for w in warned)


def test_calibrate_without_a_band_column_warns_that_it_named_ai_bands(tmp_path):
    from test_attribute import make_image_corpus

    corpus = make_image_corpus(tmp_path / "nb", n_images=4, reps=1, band_column=False)
    args = ["calibrate", str(corpus), "-o", str(tmp_path / "nb.json"), "--features", "ssim-psnr", "--bootstrap",
            "100", "--no-blind"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    line = [x for x in r.stderr.splitlines() if "no band column" in x]
    assert len(line) == 1 and "named as AI bands" in line[0] and "benign / tight / drift" in line[0]
    bands = json.loads((tmp_path / "nb.json").read_text())["band_rule"]["bands"]
    assert all(f"{s}={b}" in line[0] for s, b in bands.items())
    with_bands = make_image_corpus(tmp_path / "wb", n_images=4, reps=1)
    r2 = CliRunner().invoke(app, ["calibrate", str(with_bands), "-o", str(tmp_path / "wb.json"), "--features", "ssim-psnr",
                                  "--bootstrap", "100", "--no-blind"])
    assert r2.exit_code == 0 and "no band column" not in r2.stderr
