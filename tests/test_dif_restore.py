"""Scale restoration at detection (issue 15): a resized suspect is resampled back to the training scale only where
the fingerprint holds calibration sets for its scale band, its p-value comes from real photos that went through the
same resize and restoration, the record says what was done, and an old fingerprint keeps today's behaviour.
Tiny images, the weight-free Gaussian denoiser, the average baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli_jsonl as jsonl, cli_run as run, folder_paths as paths, natural_image, write_calibration_corpus

from fingerprint_cli import images
from fingerprint_cli.dif import detect, extract, restore
from fingerprint_cli.dif.condition import Recompression
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import centre_crop
from fingerprint_cli.errors import InputError, UsageError

S = 48


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    yy, xx = np.mgrid[0:S, 0:S]
    trace = (np.sin(2 * np.pi * xx / 8) * np.cos(2 * np.pi * yy / 8))[..., None] * np.array([1, -0.5, 0.7]) * 0.06
    return write_calibration_corpus(tmp_path_factory.mktemp("difrestore"), S, trace, 16, (S + 16, S + 24))


@pytest.fixture(scope="module")
def fps(corpus, tmp_path_factory):
    """(uncalibrated, calibrated without restoration, calibrated with bands 0.75 and 0.5) fingerprint files."""
    fp = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", method="average", crop=S,
                     denoiser="gaussian", test_fraction=0.25)
    d = tmp_path_factory.mktemp("fps")
    fp.save(d / "raw.fpx.safetensors")
    old = detect.calibrate(fp, paths(corpus["cal"]), 0.1, recompressions=["jpeg75"])
    old.save(d / "old.fpx.safetensors")
    new = detect.calibrate(fp, paths(corpus["cal"]), 0.1, recompressions=["jpeg75"], restore_scales=[0.75, 0.5],
                           restore_encodings=["none", "jpeg85"])
    new.save(d / "new.fpx.safetensors")
    return {k: str(d / f"{k}.fpx.safetensors") for k in ("raw", "old", "new")}


def resized_copy(src: str, out, scale: float, quality: int | None = None) -> str:
    """The suspect an analyst receives: the image resized by ``scale`` (PNG, or JPEG at ``quality``)."""
    data, sfx = Recompression(scale, quality).encode(images.load_image(src).pixels)
    f = out / (f"{scale:g}-{quality}-" + src.rsplit("/", 1)[-1].rsplit(".", 1)[0] + sfx)
    f.write_bytes(data)
    return str(f)


def residual_rho(fp: Fingerprint, pixels: np.ndarray) -> float:
    """ρ of one image's centre crop, computed here from the denoiser (the independent reference path)."""
    c = centre_crop(pixels, fp.crop, allow_smaller=True)
    r = detect.denoiser_for(fp).residual(torch.from_numpy(c.transpose(2, 0, 1).copy())[None])[0].numpy()
    return float(detect.correlate_residuals(fp, [r])[0])


def test_restore_and_band_copy_are_the_documented_resamplings():
    px = natural_image(40, 60, seed=1)
    out = restore.Restore(80, "bicubic").apply(px)
    assert out.shape == (80, 120, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, np.clip(images.resize(px, 80, 120), 0, 1))
    lanczos = restore.Restore(80, "lanczos").apply(px)
    assert not np.allclose(lanczos, out)  # the kernel is used
    bc = restore.BandCopy(0.5, 80, 85, "bicubic")
    small = np.clip(images.resize(px, 40, 60), 0, 1)  # short side round(0.5 * 80) = 40: unchanged here
    ref = images.resize(images.decode(images.encode(small, "JPEG", quality=85), "x").pixels, 80, 120)
    np.testing.assert_allclose(bc.apply(px), np.clip(ref, 0, 1), atol=1e-6)
    ids = {restore.BandCopy(s, 80, q, m).id for s in (0.5, 0.75) for q in (None, 85) for m in ("bicubic", "lanczos")}
    assert len(ids) == 8  # every copy has its own residual-cache key


def test_parse_scales_and_kernels_refuse_bad_values():
    assert restore.parse_scales("0.9,0.75, 0.9") == [0.9, 0.75]
    assert restore.parse_scales("default") == list(restore.DEFAULT_SCALES)
    assert restore.parse_scales("") == []
    for bad in ("1.2", "0.99", "x", "0"):
        with pytest.raises(UsageError, match="--restore-scales"):
            restore.parse_scales(bad)
    with pytest.raises(UsageError, match="unknown restoration kernel 'cubic'"):
        restore.check_method("cubic")


def test_calibration_stores_band_sets_computed_as_a_suspect_would_be(fps, corpus):
    fp = Fingerprint.load(fps["new"])
    r = fp.conformal.restored
    assert r["to"] == S and r["method"] == restore.DEFAULT_METHOD and set(r["bands"]) == {"0.75", "0.5"}
    assert set(r["bands"]["0.5"]["sets"]) == {"none", "jpeg85"}
    got = r["bands"]["0.75"]["sets"]["jpeg85"]["rho"]
    want = [residual_rho(fp, restore.BandCopy(0.75, S, 85).apply(images.load_image(p).pixels))
            for p in paths(corpus["cal"])]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, r["bands"]["0.75"]["sets"]["none"]["rho"])
    # the rest of the calibration is the same as without restoration
    old = Fingerprint.load(fps["old"])
    assert fp.conformal.rho == old.conformal.rho and fp.conformal.recompressions == old.conformal.recompressions


def test_restored_detection_record_and_p_value(fps, corpus, tmp_path):
    fp = Fingerprint.load(fps["new"])
    src = paths(corpus["gen"])[0]
    sus = resized_copy(src, tmp_path, 0.5)
    rec = detect.detect_one([fp], sus, restore_scale=True)
    cond = rec.details["condition"]
    assert cond["scale"] == 0.5
    assert cond["scale_restored"] == {"from": 0.5, "to": 1.0, "to_short_side": S, "method": restore.DEFAULT_METHOD,
                                     "band": "0.5"}
    assert cond["calibration_sets"] == ["restored0.5/none"]
    # 24 px before restoration, under the 48-px crop; restored it is at the training size: no warning at all, a call
    assert cond["warnings"] == [] and rec.decision["within_conditions"] is True
    assert rec.decision["label"] in ("gen", "not-detected")
    rho = residual_rho(fp, restore.Restore(S).apply(images.load_image(sus).pixels))
    assert rec.features["rho"] == pytest.approx(rho, abs=1e-6)
    cal = np.asarray(fp.conformal.restored["bands"]["0.5"]["sets"]["none"]["rho"])
    s, s_cal = detect.scores(fp, np.array([rho]))[0], detect.scores(fp, cal)
    assert rec.features["p_value"] == pytest.approx((1 + np.sum(s_cal >= s - 1e-12)) / (len(cal) + 1))
    # off: today's behaviour — the unrestored ρ against the ordinary sets, and the scale warning
    off = detect.detect_one([fp], sus, restore_scale=False)
    assert off.details["condition"]["scale_restored"] is None
    assert any("scale 0.5" in w for w in off.details["condition"]["warnings"])
    assert off.features["rho"] == pytest.approx(residual_rho(fp, images.load_image(sus).pixels), abs=1e-6)


def test_a_jpeg_suspect_in_a_band_takes_the_bands_jpeg_set(fps, corpus, tmp_path):
    fp = Fingerprint.load(fps["new"])
    sus = resized_copy(paths(corpus["gen"])[1], tmp_path, 0.75, 86)
    cond = detect.detect_one([fp], sus, restore_scale=True).details["condition"]
    assert cond["scale_restored"]["band"] == "0.75" and cond["calibration_sets"] == ["restored0.75/jpeg85"]
    sus = resized_copy(paths(corpus["gen"])[1], tmp_path, 0.75, 60)  # no calibrated quality near: both sides, warned
    cond = detect.detect_one([fp], sus, restore_scale=True).details["condition"]
    assert cond["calibration_sets"] == ["restored0.75/jpeg85"] and "not guaranteed" in " ".join(cond["warnings"])


def test_old_fingerprints_and_scales_between_bands_keep_todays_behaviour(fps, corpus, tmp_path):
    sus = resized_copy(paths(corpus["gen"])[2], tmp_path, 0.5)
    between = resized_copy(paths(corpus["gen"])[2], tmp_path, 0.625)
    for f, p in ((fps["old"], sus), (fps["raw"], sus), (fps["new"], between)):
        fp = Fingerprint.load(f)
        on = detect.detect_one([fp], p, restore_scale=True)
        off = detect.detect_one([fp], p, restore_scale=False)
        assert on.details["condition"]["scale_restored"] is None
        assert on.features == off.features and on.decision == off.decision
        assert any("outside the trained value 1" in w for w in on.details["condition"]["warnings"])
    # an unresized suspect is never restored
    fp = Fingerprint.load(fps["new"])
    assert detect.detect_one([fp], paths(corpus["gen"])[3], restore_scale=True).details["condition"][
        "scale_restored"] is None


def test_restoration_brings_back_a_planted_trace(fps, corpus, tmp_path):
    """The planted period-8 trace survives a 0.75× resize; restored, the resized generated images correlate
    above the restored real band copies (unrestored, their trace sits at another period)."""
    fp = Fingerprint.load(fps["new"])
    gen = [resized_copy(p, tmp_path, 0.75) for p in paths(corpus["gen"])[:8]]
    restored = [detect.detect_one([fp], p, restore_scale=True).features["rho"] for p in gen]
    plain = [detect.detect_one([fp], p, restore_scale=False).features["rho"] for p in gen]
    real = fp.conformal.restored["bands"]["0.75"]["sets"]["none"]["rho"]
    assert np.median(restored) > np.max(real)
    assert np.median(restored) > np.median(plain)


def test_restoration_is_refused_where_it_cannot_hold(fps, corpus, tmp_path):
    fp = Fingerprint.load(fps["raw"])
    several = fp.copy()
    several.info.conditions = dict(several.info.conditions)
    several.info.conditions["generated"] = dict(several.info.conditions["generated"], short_side=[32, 48, 64])
    with pytest.raises(UsageError, match="one size"):
        detect.calibrate(several, paths(corpus["cal"]), 0.1, restore_scales=[0.5])
    with pytest.raises(UsageError, match="jpegQ"):
        detect.calibrate(fp, paths(corpus["cal"]), 0.1, restore_scales=[0.5], restore_encodings=["resize0.5"])
    bad = Fingerprint.load(fps["new"])
    bad.info.conformal.restored["bands"]["0.5"]["sets"]["none"]["rho"] = [0.1, 0.2]
    bad.info.conformal.restored["bands"]["0.5"]["sets"]["none"]["n"] = 2
    with pytest.raises(InputError, match="restored 0.5/none"):
        bad.save(tmp_path / "bad.fpx.safetensors")
    bad = Fingerprint.load(fps["new"])
    bad.info.conformal.restored["method"] = "magic"
    with pytest.raises(InputError, match="kernel 'magic'"):
        bad.save(tmp_path / "bad.fpx.safetensors")


def test_cli_dif_calibrate_restore_scales_and_detect_switch(fps, corpus, tmp_path):
    out = tmp_path / "cal.fpx.safetensors"
    res = run(["dif-calibrate", fps["raw"], "--real", corpus["cal"], "--fpr", "0.1", "-o", str(out),
               "--restore-scales", "0.5,x", "--no-cache"])
    assert res.exit_code == 2 and "--restore-scales" in res.output and not out.exists()
    res = run(["dif-calibrate", fps["raw"], "--real", corpus["cal"], "--fpr", "0.1", "-o", str(out),
               "--restore-method", "cubic", "--no-cache"])
    assert res.exit_code == 2 and not out.exists()
    res = run(["dif-calibrate", fps["raw"], "--real", corpus["cal"], "--fpr", "0.1", "-o", str(out), "--conditions",
               "none", "--restore-scales", "0.5", "--restore-method", "lanczos", "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert "rho_threshold.restored0.5/none" in rec["features"]
    assert Fingerprint.load(out).conformal.restored["method"] == "lanczos"
    sus = resized_copy(paths(corpus["gen"])[4], tmp_path, 0.5)
    res = run(["detect", str(out), sus, "--restore-scale", "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    r = jsonl(res.stdout)[0]
    assert r["details"]["condition"]["scale_restored"]["method"] == "lanczos"
    res = run(["detect", str(out), sus, "--no-restore-scale", "--format", "jsonl", "--no-cache"])
    assert jsonl(res.stdout)[0]["details"]["condition"]["scale_restored"] is None
    assert "outside the fingerprint's trained/calibrated conditions" in res.stderr


def test_python_api_defaults_follow_the_restore_module(fps, corpus, tmp_path):
    """`api.dif_calibrate` restores with the kernel `fpx dif-calibrate` uses (restore.DEFAULT_METHOD), and
    `api.detect` without restore_scale restores exactly when restore.DETECT_DEFAULT says so."""
    from fingerprint_cli import api

    out = tmp_path / "api-cal.fpx.safetensors"
    rec = api.dif_calibrate(fps["raw"], [corpus["cal"]], out, fpr=0.1, conditions=["none"], restore_scales=[0.5],
                            use_cache=False, quiet=True)
    assert rec.exit_code == 0
    assert Fingerprint.load(out).conformal.restored["method"] == restore.DEFAULT_METHOD
    sus = resized_copy(paths(corpus["gen"])[3], tmp_path, 0.5)
    recs = {on: api.detect([str(out)], [sus], use_cache=False, quiet=True, restore_scale=on)[0]
            for on in (None, True, False)}
    restored = {on: r.details["condition"]["scale_restored"] is not None for on, r in recs.items()}
    assert restored == {None: restore.DETECT_DEFAULT, True: True, False: False}
