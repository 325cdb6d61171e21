"""Survival and detection of the perturbation, and `fpx score --perturbed`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import perturb, survival
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import InputError

runner = CliRunner()


def _clean(seed=0, h=128, w=128):
    img = natural_image(h, w, seed).astype(np.float64)
    rng = np.random.default_rng(seed)
    img += rng.normal(0, 0.03, img.shape)
    return images.decode(images.encode(np.clip(img, 0, 1), "PNG"), "c.png").pixels


def _protect(clean, key="k", strength=0.3):
    return perturb.perturb(clean, key=key, strength=strength).protected.astype(np.float32) / 255.0


def _jpeg(px, q):
    return images.decode(images.encode(px, "JPEG", quality=q), "j.jpg").pixels


def _reference_survival(x, p, y):
    d = (p.astype(np.float64) - x) * 255
    r = (y.astype(np.float64) - x) * 255
    return float(np.vdot(r.ravel(), d.ravel()) / np.vdot(d.ravel(), d.ravel()))


def test_survival_is_one_for_the_protected_image_and_detected():
    x = _clean(1)
    p = _protect(x)
    m = survival.measure(x, p, p)
    assert m["survival"] == pytest.approx(1.0, abs=1e-9)
    n_blocks = (128 // 8) ** 2
    assert 5 < m["perturbation_z"] <= np.sqrt(n_blocks) + 1e-9 and m["perturbation_detected"] == 1


def test_survival_near_zero_for_an_unrelated_image_and_the_clean_one():
    x = _clean(1)
    p = _protect(x)
    other = _clean(7)
    m = survival.measure(x, p, other)
    assert abs(m["survival"]) < 0.5 and m["perturbation_detected"] == 0
    assert m["survival"] == pytest.approx(_reference_survival(x, p, other), rel=1e-9)
    m0 = survival.measure(x, p, x)
    assert m0["survival"] == 0.0 and m0["perturbation_detected"] == 0


def test_survival_falls_with_jpeg_quality():
    x = _clean(2)
    p = _protect(x, strength=0.5)
    s = {q: survival.measure(x, p, _jpeg(p, q))["survival"] for q in (98, 85, 50, 15)}
    assert 1.05 > s[98] > s[85] > s[50] > s[15]
    assert s[98] > 0.8 and s[15] < 0.5
    for q in (98, 85, 50, 15):
        assert s[q] == pytest.approx(_reference_survival(x, p, _jpeg(p, q)), rel=1e-9)


def test_detection_null_is_calibrated_on_processed_clean_images():
    """z of JPEG/blur of the *clean* image against many protected copies (different keys) behaves like N(0,1)."""
    x = _clean(3)
    suspects = [_jpeg(x, 85), _jpeg(x, 60), np.clip(x + 0.01 * np.random.default_rng(0).standard_normal(x.shape),
                                                    0, 1)]
    zs = []
    for i in range(25):
        p = _protect(x, key=f"key{i}")
        for y in suspects:
            zs.append(survival.measure(x, p, y)["perturbation_z"])
    zs = np.array(zs)
    assert np.all(zs < survival.Z_THRESHOLD)
    assert abs(zs.mean()) < 0.5 and 0.6 < zs.std() < 1.5
    # while JPEG Q85 of the protected copy is detected for every key
    for i in range(5):
        p = _protect(x, key=f"key{i}")
        assert survival.measure(x, p, _jpeg(p, 85))["perturbation_detected"] == 1


def test_identical_protected_copy_is_refused():
    x = _clean(4)
    with pytest.raises(ValueError, match="no perturbation"):
        survival.measure(x, x, x)


@pytest.fixture
def protected_files(tmp_path):
    x = _clean(5)
    clean = tmp_path / "clean.png"
    images.save_png(x, clean)
    res = runner.invoke(app, ["perturb", str(clean), "-o", str(tmp_path / "prot.png"), "--key", "k", "-q"])
    assert res.exit_code == 0, res.output
    p = images.load_image(tmp_path / "prot.png").pixels
    (tmp_path / "prot_q85.jpg").write_bytes(images.encode(p, "JPEG", quality=85))
    (tmp_path / "clean_q85.jpg").write_bytes(images.encode(x, "JPEG", quality=85))
    return tmp_path


def test_score_cli_adds_survival_features(protected_files):
    d = protected_files
    res = runner.invoke(app, ["score", str(d / "clean.png"), str(d / "prot_q85.jpg"), str(d / "clean_q85.jpg"),
                              "--perturbed", str(d / "prot.png"), "--encoder", "none", "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    pos, neg = recs
    assert pos["features"]["perturbation_detected"] == 1 and 0.3 < pos["features"]["survival"] < 1.0
    assert neg["features"]["perturbation_detected"] == 0 and abs(neg["features"]["survival"]) < 0.1
    assert pos["details"]["perturbation"]["sidecar"].endswith("prot.png.json")
    assert pos["details"]["perturbation"]["method"] == "keyed"


def test_score_cli_refuses_a_protected_copy_of_another_image(protected_files, tmp_path):
    d = protected_files
    other = tmp_path / "other.png"
    images.save_png(_clean(9), other)  # same size, different image
    res = runner.invoke(app, ["score", str(other), str(d / "prot_q85.jpg"), "--perturbed", str(d / "prot.png"),
                              "--encoder", "none", "--format", "json"])
    assert res.exit_code == 2
    rec = json.loads(res.stdout)[0]
    assert rec["status"] == "error" and "prot.png" in rec["error"]["message"]
    assert "sidecar" in rec["error"]["message"]


def test_score_cli_refuses_a_wrong_size_or_edited_protected_copy(protected_files, tmp_path):
    d = protected_files
    small = tmp_path / "small.png"
    images.save_png(_clean(5, 64, 64), small)
    res = runner.invoke(app, ["score", str(small), str(small), "--perturbed", str(d / "prot.png"),
                              "--encoder", "none", "--format", "json"])
    assert res.exit_code == 2 and "64x64" in res.stdout
    # a protected file edited after fpx perturb wrote it no longer matches its sidecar: refused up front
    edited = images.load_image(d / "prot.png").pixels.copy()
    edited[0, 0] = 1 - edited[0, 0]
    images.save_png(edited, d / "prot2.png")
    (d / "prot2.png.json").write_text((d / "prot.png.json").read_text())
    res = runner.invoke(app, ["score", str(d / "clean.png"), str(d / "prot_q85.jpg"), "--perturbed",
                              str(d / "prot2.png"), "--encoder", "none"])
    assert res.exit_code == 2 and "prot2.png" in res.output and "sidecar" in res.output


def test_score_cli_reads_perturbed_from_the_pairs_csv(protected_files):
    d = protected_files
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reference", "suspect", "perturbed"])
        w.writerow(["clean.png", "prot_q85.jpg", "prot.png"])
        w.writerow(["clean.png", "clean_q85.jpg", "prot.png"])
        w.writerow(["clean.png", "clean_q85.jpg", ""])
    res = runner.invoke(app, ["score", "--pairs", str(d / "pairs.csv"), "--encoder", "none", "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert [r["features"].get("perturbation_detected") for r in recs] == [1, 0, None]


def test_feature_fn_fails_fast_on_unreadable_protected(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.png"):
        survival.feature_fn(str(bad))


def test_null_is_not_biased_by_clipping_near_0_and_255():
    """Clipping makes delta one-signed at 0/255 and JPEG ringing there is one-signed too: without the mask
    the processed *clean* image correlates with delta (z ~ 18 here); with it the null is N(0, 1)."""
    img = natural_image(96, 96, 4).astype(np.float64)
    img[:, :48] = 1.0            # saturated white with black lines: clipped JPEG ringing
    img[::6, :48] = 0.0
    img[:, 3:48:7] = 0.0
    x = images.decode(images.encode(np.clip(img, 0, 1), "PNG"), "d.png").pixels
    y = _jpeg(x, 85)
    zs, unmasked = [], []
    for i in range(30):
        p = _protect(x, key=f"sat{i}")
        zs.append(survival.measure(x, p, y, block=2)["perturbation_z"])
        d = (p.astype(np.float64) - x) * 255
        s = survival._block_sums((d * (y - x) * 255).sum(axis=2), 2).ravel()
        unmasked.append(s.sum() / np.sqrt(np.sum(s * s)))
        if i < 5:
            assert survival.measure(x, p, _jpeg(p, 90), block=2)["perturbation_detected"] == 1
    assert min(unmasked) > survival.Z_THRESHOLD          # the bias the mask removes
    assert max(zs) < survival.Z_THRESHOLD and abs(np.mean(zs)) < 0.75 and 0.5 < np.std(zs) < 1.6
