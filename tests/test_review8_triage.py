"""Review 8: triage reads a fingerprint's calibration as ``fpx dif-calibrate`` writes it.

Triage looked for the calibration in ``meta["calibration"]`` (an older layout); fingerprints calibrated by
``fpx dif-calibrate`` — the shipped library among them — keep it in ``meta["conformal"]``, so triage called them
"not calibrated" and decided by the nearest-mean rule: a flat grey image and pure noise were listed as "says
generated" by a shipped fingerprint that ``fpx detect`` (rightly) did not call at its stated 1%. Triage now takes
the same conformal p-value, over the same calibration sets, as ``fpx detect``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import natural_image
from test_api import _dif_corpus
from fingerprint_cli import api, images
from fingerprint_cli.triage import core


@pytest.fixture
def calibrated(tmp_path):
    return calibrated_inbox(tmp_path)


def calibrated_inbox(tmp_path: Path) -> tuple[Path, Path]:
    """A fingerprint calibrated at 5 % on 39 held-out real images and an inbox: two of its generator's images,
    two photos, a flat grey image (also used by tests/test_integrity8_detect.py)."""
    d = {k: Path(v) for k, v in _dif_corpus(tmp_path).items()}  # 16 generated, 16 real, 24 held-out real
    for i in range(24, 39):  # 39 held-out real images in all
        images.save_png(natural_image(48, 48, seed=300 + i), d["cal"] / f"c{i:02d}.png")
    inbox = tmp_path / "inbox"  # two of the generator's images (from its own planted trace), two photos, flat grey
    inbox.mkdir()
    trace = np.asarray(images.load_image(d["gen"] / "g00.png").pixels) - natural_image(48, 48, seed=0)
    for i in range(4):
        images.save_png(np.clip(natural_image(48, 48, seed=500 + i) + (trace if i < 2 else 0), 0, 1)
                        .astype(np.float32), inbox / f"x{i}.png")
    images.save_png(np.full((48, 48, 3), 0.5, np.float32), inbox / "flat.png")
    fp_file = tmp_path / "gen.fpx.safetensors"
    api.extract(d["gen"], d["real"], fp_file, name="gen", method="average", crop=48, denoiser="gaussian",
                test_fraction=0.25, quiet=True)
    cal_file = tmp_path / "gen-cal.fpx.safetensors"
    api.dif_calibrate(fp_file, [d["cal"]], cal_file, fpr=0.05, quiet=True)
    return cal_file, inbox


def test_triage_uses_the_fingerprint_calibration_detect_uses(calibrated):
    cal_file, inbox = calibrated
    det = {r.inputs["image"]["path"]: r for r in api.detect([cal_file], [inbox], quiet=True)}
    tri = {r.inputs["image"]["path"]: r for r in core.run([inbox], fingerprints=[str(cal_file)])}
    assert set(det) == set(tri) and len(det) == 5
    for path, t in tri.items():
        [f] = t.details["generator"]["fingerprints"]
        d = det[path]
        assert f["calibrated"] is True, (path, f)
        assert f["fpr"] == 0.05 and f["n_real"] == 39
        assert f["p_value"] == pytest.approx(d.features["p_value"]), path
        assert f["generated"] == d.decision["detected"], path  # detect: not-detected has generated null
        if f["generated"]:  # a calibrated claim is tier-4 evidence with its error rate
            [e] = [e for e in t.reasons if e["source"] == "fingerprint:gen"]
            assert e["tier"] == 4 and e["error_rate"] == 0.05
    assert tri[str(inbox / "flat.png")].details["generator"]["fingerprints"][0]["generated"] is False
    [prov] = next(iter(tri.values())).provenance["fingerprints"]  # the provenance says the same
    assert prov["calibrated"] is True and prov["fpr"] == 0.05 and prov["n_real"] == 39


def format_matched_fingerprint(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A ``format-matched`` fingerprint of the DIF test corpus, fitted against its real class re-saved as JPEG q85
    (so there is a quality to match), and the corpus folders (also used by tests/test_review8_lineage.py)."""
    d = {k: Path(v) for k, v in _dif_corpus(tmp_path).items()}
    real_jpeg = tmp_path / "real_jpeg"
    real_jpeg.mkdir()
    for p in images.list_images(d["real"]):
        (real_jpeg / (p.stem + ".jpg")).write_bytes(images.encode(images.load_image(p).pixels, "JPEG", quality=85))
    fp_file = tmp_path / "fm.fpx.safetensors"
    api.extract(d["gen"], real_jpeg, fp_file, name="gen", method="average", crop=48, denoiser="gaussian",
                test_fraction=0.25, profile="format-matched", quiet=True)
    return fp_file, d


def test_triage_format_matches_a_lossless_image_as_detect_does(tmp_path):
    """A ``format-matched`` fingerprint re-encodes every lossless image at its quality before the residual, in
    fitting, calibration and ``fpx detect``; triage computed the residual of the PNG as it is, so its p-value was
    not the one the stated rate was calibrated for. Triage and detect agree now."""
    fp_file, d = format_matched_fingerprint(tmp_path)
    cal_file = tmp_path / "fm-cal.fpx.safetensors"
    api.dif_calibrate(fp_file, [d["cal"]], cal_file, fpr=0.1, quiet=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        images.save_png(natural_image(48, 48, seed=700 + i), inbox / f"y{i}.png")
    det = {r.inputs["image"]["path"]: r for r in api.detect([cal_file], [inbox], quiet=True)}
    tri = {r.inputs["image"]["path"]: r for r in core.run([inbox], fingerprints=[str(cal_file)])}
    assert set(det) == set(tri) and len(det) == 3
    for path, t in tri.items():
        [f] = t.details["generator"]["fingerprints"]
        assert f["rho"] == pytest.approx(det[path].features["rho"], rel=1e-5, abs=1e-7), path
        assert f["p_value"] == pytest.approx(det[path].features["p_value"]), path
