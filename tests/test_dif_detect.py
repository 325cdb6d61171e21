"""fpx detect with a stated error rate: conformal p-values, calibration, 'unknown' among several fingerprints,
the input's condition (JPEG quality, scale), sealed and validated fingerprint artifacts, skipping unusable
images, and the shipped-library mechanism. Tiny images, the weight-free Gaussian denoiser, the average
baseline where the test is not about training."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import natural_image, planted as planted_trace, write_two_generator_corpus
from PIL import Image
from typer.testing import CliRunner

from fingerprint_cli import artifacts, images
from fingerprint_cli.cli.app import app
from fingerprint_cli.dif import condition, detect, extract, heldout
from fingerprint_cli.dif.fingerprint import Fingerprint, load_folder, seal_of
from fingerprint_cli.errors import InputError, UsageError

S = 48


def planted(kind: int) -> np.ndarray:
    return planted_trace(kind, S)


def paths(folder):
    return [str(p) for p in images.list_images(folder)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    dirs = write_two_generator_corpus(tmp_path_factory.mktemp("difdet"), S, extra=("cal",))
    for i in range(24):
        images.save_png(natural_image(S, S, seed=300 + i), dirs["cal"] / f"c{i:02d}.png")
    return {k: str(v) for k, v in dirs.items()}


@pytest.fixture(scope="module")
def avg(corpus):
    """An average-residual fingerprint of 'gen' (no training: fast), not calibrated."""
    return extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", method="average", crop=S,
                       denoiser="gaussian", test_fraction=0.25)


@pytest.fixture(scope="module")
def calibrated(avg, corpus):
    return detect.calibrate(avg, paths(corpus["cal"]), 0.1, description="cal photos")


def run(args):
    return CliRunner().invoke(app, args)


def jsonl(text):
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


# ------------------------------------------------------------------ JPEG quality from quantisation tables
@pytest.mark.parametrize("q", [10, 30, 50, 75, 90, 95])
def test_jpeg_quality_estimate_recovers_pillow_qualities(q, tmp_path):
    px = natural_image(40, 40, seed=1)
    f = tmp_path / f"q{q}.jpg"
    f.write_bytes(images.encode(px, "JPEG", quality=q))
    est = condition.estimate_quality(images.header(f)["quantization"])
    assert est["exact"] and est["quality"] == q
    grey = tmp_path / "g.jpg"
    grey.write_bytes(images.encode(images.to_uint8(px)[..., 0], "JPEG", quality=q))
    assert condition.estimate_quality(images.header(grey)["quantization"])["quality"] == q  # luminance only


def test_ijg_tables_and_non_jpeg(tmp_path):
    np.testing.assert_array_equal(condition.ijg_table(condition.IJG_LUMINANCE, 50), condition.IJG_LUMINANCE)
    assert condition.ijg_table(condition.IJG_LUMINANCE, 100).max() == 1
    assert condition.ijg_table(condition.IJG_CHROMINANCE, 1).max() == 255  # clamped (baseline)
    f = tmp_path / "a.png"
    images.save_png(natural_image(20, 30, seed=2), f)
    info = images.header(f)
    assert info["quantization"] is None and (info["width"], info["height"]) == (30, 20)
    d = condition.describe(info)
    assert d["lossless"] and d["jpeg_quality"] is None and d["short_side"] == 20
    # custom (non-IJG) tables: nearest quality with a non-zero error
    custom = {0: [int(x) for x in np.clip(condition.ijg_table(condition.IJG_LUMINANCE, 80) + 1, 1, 255)]}
    est = condition.estimate_quality(custom)
    assert not est["exact"] and 70 <= est["quality"] <= 85 and est["table_error"] > 0


# ------------------------------------------------------------------ conformal p-values
def synthetic(cal_rho, fpr=0.05, mu_gen=1.0):
    meta = {"mu_real": 0.0, "mu_gen": mu_gen, "sigma_real": 1.0, "crop": 8,
            "conformal": {"fpr": fpr, "n": len(cal_rho), "rho": [float(x) for x in cal_rho]}}
    return Fingerprint("syn", "dif", torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0)), meta)


def test_p_values_match_brute_force_and_are_uniform_on_calibration_data():
    rng = np.random.default_rng(0)
    cal = rng.normal(size=49)
    fp = synthetic(cal)
    x = np.concatenate([rng.normal(size=200), cal[:5], [np.inf * 0]])
    got = detect.p_values(fp, x)
    want = [(1 + np.sum(cal >= v)) / (len(cal) + 1) for v in x[:-1]]
    np.testing.assert_allclose(got[:-1], want)
    assert np.isnan(got[-1])
    # uniform on calibration data: each calibration point scored against the other n − 1 gets its rank,
    # so the n leave-one-out p-values are exactly 1/n, 2/n, ..., 1
    loo = [detect.p_values(synthetic(np.delete(cal, j)), cal[j:j + 1])[0] for j in range(len(cal))]
    np.testing.assert_allclose(np.sort(loo), np.arange(1, 50) / 49)
    # orientation: a fingerprint whose generated class correlates negatively counts from the other side
    neg = synthetic(cal, mu_gen=-1.0)
    np.testing.assert_allclose(detect.p_values(neg, x[:5]), [(1 + np.sum(cal <= v)) / 50 for v in x[:5]])


def test_false_positive_rate_holds_on_exchangeable_real_images():
    """Over many draws of (calibration set, new real image) from one distribution, P(p ≤ α) ≤ α — and is
    close to ⌊α(n+1)⌋/(n+1), so the bound is not vacuous."""
    rng = np.random.default_rng(1)
    n, alpha, trials = 39, 0.05, 4000
    hits = 0
    for _ in range(trials):
        fp = synthetic(rng.standard_t(3, size=n), fpr=alpha)
        hits += int(detect.p_values(fp, rng.standard_t(3, size=1))[0] <= alpha)
    rate = hits / trials
    exact = np.floor(alpha * (n + 1)) / (n + 1)
    se = np.sqrt(exact * (1 - exact) / trials)
    assert abs(rate - exact) < 4 * se and rate < alpha + 3 * se


def test_threshold_agrees_with_p_values_and_minimum_sizes():
    rng = np.random.default_rng(2)
    fp = synthetic(rng.normal(size=99), fpr=0.05)
    thr = detect.rho_threshold(fp)
    x = np.linspace(-4, 4, 2001)
    np.testing.assert_array_equal(detect.p_values(fp, x) <= 0.05, x > thr)
    assert [detect.min_calibration_images(a) for a in (0.01, 0.05, 0.1, 0.5)] == [99, 19, 9, 1]
    with pytest.raises(UsageError):
        detect.check_fpr(0.0)
    with pytest.raises(UsageError):
        detect.check_fpr(0.7)


def test_judge_is_calibrated_only_when_calibrated():
    rng = np.random.default_rng(3)
    fp = synthetic(rng.normal(size=19), fpr=0.05)
    top = float(max(fp.meta["conformal"]["rho"]))
    assert detect.judge(fp, top + 0.01)["generated"] is True
    assert detect.judge(fp, top)["generated"] is False  # ties count against the image
    # nearest-mean would call 0.6 generated (nearer μ_gen = 1); the calibrated rule does not
    assert detect.judge(fp, 0.6)["generated"] is (0.6 > top)
    old = Fingerprint("o", "dif", fp.pattern, {k: v for k, v in fp.meta.items() if k != "conformal"})
    c = detect.judge(old, 0.6)
    assert c["generated"] is True and c["p_value"] is None and "not calibrated" in c["rule"]
    assert detect.judge(fp, float("nan"))["generated"] is None


# ------------------------------------------------------------------ several fingerprints
def call(score, gen=True):
    return {"score": score, "generated": gen, "p_value": 0.01, "fpr": 0.05, "rule": "x"}


def test_decide_names_a_clear_winner_only():
    names = ["a", "b", "c"]
    d = detect.decide(names, [call(9.0), call(4.0), call(1.0, False)])
    assert d["label"] == "a" and d["clear"] and d["called_by"] == ["a", "b"]
    d = detect.decide(names, [call(5.0), call(6.5), call(1.0, False)])
    assert d["label"] == "unknown" and d["generated"] is True and d["clear"] is False
    assert d["called_by"] == ["b", "a"] and d["score_gap"] == pytest.approx(1.5)
    assert detect.decide(names, [call(5.0), call(6.5), call(1.0, False)], margin=1.0)["label"] == "b"
    assert detect.decide(names, [call(5.0), call(2.0, False), call(1.0, False)])["label"] == "a"
    none = detect.decide(names, [call(1.0, False)] * 3)
    # no claimant: not-detected (not "real"): no miss rate is stated, so no claim either way, and the note says so
    assert none["label"] == "not-detected" and none["detected"] is False and none["generated"] is None
    assert "not evidence that the image is real" in none["note"] and "miss rate is not calibrated" in none["note"]
    assert not detect.claimed(none) and detect.claimed(d)
    bad = detect.decide(names, [call(9.0), {"score": None, "generated": None}, call(1.0, False)])
    assert bad["label"] == "unknown" and bad["generated"] is None


# ------------------------------------------------------------------ calibration on images
def test_calibrate_skips_training_images_and_stores_the_rate(avg, corpus):
    skipped = []
    train_real = [d["path"] for d in avg.meta["train"]["real"]]
    cal = detect.calibrate(avg, paths(corpus["cal"]) + train_real[:3], 0.1,
                           on_skip=lambda p, why: skipped.append((p, why)))
    assert len(skipped) == 3 and all("training image" in w for _, w in skipped)
    c = cal.meta["conformal"]
    assert c["n"] == 24 and c["fpr"] == 0.1 and len(c["images"]) == 24
    assert c["conditions"]["lossless"] == 24 and c["conditions"]["jpeg_quality"] is None
    assert "conformal" not in avg.meta  # the input is not changed
    with pytest.raises(UsageError, match="needs at least 99"):
        detect.calibrate(avg, paths(corpus["cal"]), 0.01)


def test_detect_calls_generated_only_below_the_stated_rate(calibrated, corpus, tmp_path):
    out = tmp_path / "cal.fpx.safetensors"
    calibrated.save(out)
    back = Fingerprint.load(out)
    assert back.calibrated and back.fpr == 0.1 and back.verified
    test_g = [d["path"] for d in back.meta["test"]["generated"]]
    test_r = [d["path"] for d in back.meta["test"]["real"]]
    res = run(["detect", str(out), *test_g, *test_r, "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    recs = jsonl(res.stdout)
    for r in recs:
        d = r["decision"]
        assert d["fpr"] == 0.1 and d["calibration"].startswith("conformal") and d["verified"] is True
        hit = r["features"]["p_value"] <= 0.1
        assert d["detected"] == hit and d["generated"] is (True if hit else None)
        assert 0 < r["features"]["p_value"] <= 1
    assert [r["decision"]["label"] for r in recs[:len(test_g)]] == ["gen"] * len(test_g)
    assert recs[0]["provenance"]["fingerprints"][0]["calibration"].startswith("conformal, 24")


def test_uncalibrated_fingerprint_says_so_in_every_record(avg, corpus, tmp_path):
    out = tmp_path / "old.fpx.safetensors"
    avg.save(out)
    res = run(["detect", str(out), *paths(corpus["gen"])[:2], *paths(corpus["real"])[:2], "--no-cache"])
    assert res.exit_code == 0, res.output
    recs = jsonl(res.stdout)
    assert len(recs) == 4
    for r in recs:
        assert r["decision"]["calibration"] == "p-values: not calibrated"
        assert r["decision"]["fpr"] is None and r["features"]["p_value"] is None
    assert "not calibrated" in res.stderr


def test_several_fingerprints_unknown_without_a_clear_winner(calibrated, corpus, tmp_path):
    a = tmp_path / "a.fpx.safetensors"
    b = tmp_path / "b.fpx.safetensors"
    calibrated.save(a)
    twin = calibrated.copy(name="twin")
    twin.save(b)  # the same pattern under another name: ties on every image
    g = [d["path"] for d in calibrated.meta["test"]["generated"]][:2]
    res = run(["detect", "-F", str(a), "-F", str(b), *g, "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    for r in jsonl(res.stdout):
        d = r["decision"]
        assert d["label"] == "unknown" and d["generated"] is True and sorted(d["called_by"]) == ["gen", "twin"]
        assert d["fpr_any"] == pytest.approx(0.2)


def test_clear_winner_between_two_generators(corpus, tmp_path):
    fa = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", method="average", crop=S,
                     denoiser="gaussian", test_fraction=0.25)
    fb = extract.fit(paths(corpus["gen2"]), paths(corpus["real"]), name="gen2", method="average", crop=S,
                     denoiser="gaussian", test_fraction=0.25)
    fa, fb = (detect.calibrate(f, paths(corpus["cal"]), 0.1) for f in (fa, fb))
    recs = list(detect.detect_many([fa, fb], [d["path"] for d in fa.meta["test"]["generated"]] +
                                   [d["path"] for d in fb.meta["test"]["generated"]]))
    labels = [r.decision["label"] for r in recs]
    assert labels == ["gen"] * 4 + ["gen2"] * 4
    assert all(r.decision["clear"] for r in recs)


# ------------------------------------------------------------------ the input's condition
def test_records_carry_jpeg_quality_and_scale_and_warn_outside_conditions(calibrated, corpus, tmp_path):
    out = tmp_path / "c.fpx.safetensors"
    calibrated.save(out)
    g = paths(corpus["gen"])[0]
    px = images.load_image(g).pixels
    jpg = tmp_path / "g_q70.jpg"
    jpg.write_bytes(images.encode(px, "JPEG", quality=70))
    big = tmp_path / "g_big.png"
    images.save_png(np.clip(images.resize(px, 64, 64), 0, 1), big)
    res = run(["detect", str(out), g, str(jpg), str(big), "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    plain, q, scaled = jsonl(res.stdout)
    assert plain["details"]["condition"]["jpeg_quality"] is None and plain["details"]["condition"]["scale"] == 1.0
    assert plain["decision"]["within_conditions"] is True and not plain["details"]["condition"]["warnings"]
    assert q["details"]["condition"]["jpeg_quality"] == 70 and q["decision"]["within_conditions"] is False
    assert any("lossless" in w for w in q["details"]["condition"]["warnings"])
    assert scaled["details"]["condition"]["scale"] == pytest.approx(64 / 48, abs=1e-3)
    assert any("scale" in w for w in scaled["details"]["condition"]["warnings"])
    # warned on stderr, one line per image; outside its conditions a claim is not made (its stated rate does not
    # hold there): the label is unknown and the fingerprint's calibrated call is kept, stated, in the record
    warn_lines = [x for x in res.stderr.splitlines() if "outside the fingerprint" in x]
    assert len(warn_lines) == 2 and str(jpg) in warn_lines[0]
    for r in (q, scaled):
        claimed = r["features"]["p_value"] <= 0.1
        if claimed:
            assert r["decision"]["label"] == "unknown" and r["decision"]["generated"] is None
            assert r["decision"]["call_outside_conditions"]["generated"] is True
            assert r["decision"]["abstained"] == "outside the calibrated conditions"
        else:  # a non-detection outside the conditions abstains too (it used to stay "real")
            assert r["decision"]["label"] == "unknown" and r["decision"]["detected"] is None
            assert r["decision"]["call_outside_conditions"]["label"] == "not-detected"
            assert r["decision"]["abstained"] == "outside the calibrated conditions"
    assert any(r["features"]["p_value"] <= 0.1 for r in (q, scaled)), "the test needs one claim outside"
    assert plain["decision"]["detected"] == (plain["features"]["p_value"] <= 0.1)  # within: decided as before


def test_abstain_outside_only_for_claims_by_fingerprints_outside():
    names = ["a", "b"]
    inside, outside = {"within": True}, {"within": False}
    claim_a = {"label": "a", "generated": True, "called_by": ["a"], "p_value": 0.001}
    kept = detect.abstain_outside(dict(claim_a), names, [inside, outside])  # b is outside but claims nothing
    assert kept["label"] == "a" and kept["generated"] is True
    dropped = detect.abstain_outside(dict(claim_a), names, [outside, inside])
    assert dropped["label"] == "unknown" and dropped["call_outside_conditions"]["label"] == "a"
    missed = {"label": "not-detected", "generated": None, "detected": False, "called_by": [], "note": "n"}
    assert detect.abstain_outside(dict(missed), names, [inside, inside]) == missed
    assert detect.abstain_outside(dict(missed), names, [inside, {"within": None}]) == missed
    # inside one fingerprint's conditions a non-detection stands for that one, naming the other as outside
    part = detect.abstain_outside(dict(missed), names, [inside, outside])
    assert part["label"] == "not-detected" and part["not_detected_by"] == ["a"] and part["outside_conditions"] == ["b"]
    # outside every fingerprint's conditions a non-detection abstains as a claim there does (it stayed "real" before)
    gone = detect.abstain_outside(dict(missed), names, [outside, outside])
    assert gone["label"] == "unknown" and gone["detected"] is None and gone["generated"] is None
    assert gone["call_outside_conditions"] == {"label": "not-detected", "generated": None, "detected": False,
                                               "fingerprints": ["a", "b"]}
    assert "note" not in gone and not detect.claimed(gone) and detect.claimed(dropped)
    legacy = detect.abstain_outside({"label": "a", "generated": True}, ["a"], [{"within": None}])
    assert legacy["label"] == "a"  # no recorded conditions: decided as before


def test_training_conditions_cover_augmentation():
    gen = [{"short_side": 256, "lossless": True, "jpeg_quality": None}] * 3
    real = [{"short_side": 321, "lossless": False, "jpeg_quality": 90}]
    tc = condition.training_conditions(gen, real)
    assert tc["scale"] == [1.0, 1.0] and tc["jpeg_quality"] is None and tc["lossless"]
    rob = condition.training_conditions(gen, real, {"jpeg_quality": [60, 100], "scale": [0.5, 1.5]})
    meta = {"conditions": rob}
    ok = condition.check({"short_side": 230, "lossless": False, "jpeg_quality": 75}, meta, 256)
    assert ok["within"] is False and "smaller than the 256-px crop" in ok["warnings"][0]
    assert condition.check({"short_side": 300, "lossless": False, "jpeg_quality": 75}, meta, 256)["within"]
    assert not condition.check({"short_side": 300, "lossless": False, "jpeg_quality": 40}, meta, 256)["within"]
    assert condition.check({"short_side": 300}, {}, 256)["within"] is None  # old fingerprint: unknown


# ------------------------------------------------------------------ sealed, validated artifacts
def _rewrite(src, dst, *, pattern=None, meta_update=None, reseal=True, md_update=None):
    tensors, md = artifacts.read_tensors(src)
    if pattern is not None:
        tensors["pattern"] = pattern
    if meta_update:
        m = json.loads(md["meta"])
        m.update(meta_update)
        md["meta"] = json.dumps(m)
    if md_update:
        md.update(md_update)
    if reseal:
        md["seal"] = seal_of(tensors, md)
    artifacts.write_tensors(dst, tensors, md)
    return dst


def test_seal_refuses_edits_unless_forced(calibrated, tmp_path):
    good = tmp_path / "g.fpx.safetensors"
    calibrated.save(good)
    raw = bytearray(good.read_bytes())
    raw[-20] ^= 0xFF  # a flipped byte inside the pattern
    flipped = tmp_path / "flipped.fpx.safetensors"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="seal does not match") as exc:
        Fingerprint.load(flipped)
    assert str(flipped) in str(exc.value)
    forced = Fingerprint.load(flipped, force=True)
    assert forced.verified is False and forced.seal == "mismatch"
    edited = _rewrite(good, tmp_path / "edited.fpx.safetensors", meta_update={"mu_gen": 0.5}, reseal=False)
    with pytest.raises(InputError, match="seal"):
        Fingerprint.load(edited)
    res = run(["detect", str(flipped), paths_of(calibrated)[0], "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 2 and str(flipped) in res.output
    res = run(["detect", str(flipped), paths_of(calibrated)[0], "--force", "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0
    rec = jsonl(res.stdout)[0]
    assert rec["decision"]["verified"] is False and rec["provenance"]["fingerprints"][0]["verified"] is False


def paths_of(fp):
    return [d["path"] for d in fp.meta["test"]["generated"]]


def test_format_1_fingerprint_loads_unverified_and_uncalibrated(avg, tmp_path):
    good = tmp_path / "g.fpx.safetensors"
    avg.save(good)
    tensors, md = artifacts.read_tensors(good)
    legacy = tmp_path / "legacy.fpx.safetensors"
    md = {k: v for k, v in md.items() if k not in ("seal", "seal_algorithm")}
    md["format_version"] = "1"
    artifacts.write_tensors(legacy, tensors, md)
    fp = Fingerprint.load(legacy)
    assert fp.verified is False and fp.seal == "absent" and not fp.calibrated
    future = _rewrite(good, tmp_path / "future.fpx.safetensors", md_update={"format_version": "9"})
    with pytest.raises(InputError, match="format version '9'"):
        Fingerprint.load(future)


@pytest.mark.parametrize("case,why", [
    ("nan", "NaN"), ("zeros", "constant"), ("sigma0", "sigma_real"), ("sigmanan", "sigma_real"),
    ("same_mu", "mu_gen equals"), ("crop", "crop"), ("shape", "shape"), ("newer", "newer than this fpx"),
    ("statistic", "detection statistic"), ("cal_short", "fewer than the"), ("cal_nan", "not finite"),
    ("cal_fpr", "false-positive rate"),
])
def test_degenerate_fingerprints_are_refused_with_the_reason(calibrated, tmp_path, case, why):
    good = tmp_path / "g.fpx.safetensors"
    calibrated.save(good)
    pat = calibrated.pattern.clone()
    cal = dict(calibrated.meta["conformal"])
    kw = {
        "nan": {"pattern": torch.where(torch.arange(pat.numel()).reshape(pat.shape) % 7 == 0,
                                       torch.tensor(float("nan")), pat)},
        "zeros": {"pattern": torch.zeros_like(pat)},
        "sigma0": {"meta_update": {"sigma_real": 0.0}},
        "sigmanan": {"meta_update": {"sigma_real": float("nan")}},
        "same_mu": {"meta_update": {"mu_gen": calibrated.meta["mu_real"]}},
        "crop": {"meta_update": {"crop": 64}},
        "shape": {"pattern": pat[:2]},
        "newer": {"meta_update": {"fpx_version": "99.0.0"}},
        "statistic": {"meta_update": {"search": "median"}},
        "cal_short": {"meta_update": {"conformal": dict(cal, rho=cal["rho"][:5], n=5)}},
        "cal_nan": {"meta_update": {"conformal": dict(cal, rho=[float("nan")] + cal["rho"][1:])}},
        "cal_fpr": {"meta_update": {"conformal": dict(cal, fpr=0.9)}},
    }[case]
    bad = _rewrite(good, tmp_path / f"{case}.fpx.safetensors", **kw)
    with pytest.raises(InputError, match=why) as exc:
        Fingerprint.load(bad)
    assert str(bad) in str(exc.value)
    res = run(["detect", str(bad), paths_of(calibrated)[0]])
    assert res.exit_code == 2 and str(bad) in res.output


def test_float16_storage_leaves_detection_unchanged(avg, calibrated, corpus, tmp_path):
    a, b = tmp_path / "a32.fpx.safetensors", tmp_path / "a16.fpx.safetensors"
    calibrated.save(a)
    with pytest.raises(ValueError, match="quantised"):
        calibrated.save(b, dtype="float16")  # its calibration belongs to the float32 pattern
    detect.calibrate(avg.quantized("float16"), paths(corpus["cal"]), 0.1).save(b, dtype="float16")
    assert b.stat().st_size < a.stat().st_size
    f32, f16 = Fingerprint.load(a), Fingerprint.load(b)
    assert f16.verified and f16.pattern.dtype == torch.float32 and f16.meta["storage_dtype"] == "float16"
    # the stored calibration statistics are reproduced exactly by the stored pattern
    cal = [d["path"] for d in f16.meta["conformal"]["images"]]
    np.testing.assert_array_equal(detect.correlations(f16, cal), f16.meta["conformal"]["rho"])
    held_out = [d["path"] for cls in ("generated", "real") for d in f32.meta["test"][cls]] + paths(corpus["gen2"])
    r32, r16 = detect.correlations(f32, held_out), detect.correlations(f16, held_out)
    assert np.abs(r32 - r16).max() < 1e-3
    np.testing.assert_array_equal(detect.p_values(f32, r32) <= 0.1, detect.p_values(f16, r16) <= 0.1)


def test_fingerprints_folder_skips_other_files_and_refuses_tampered(calibrated, tmp_path):
    d = tmp_path / "fps"
    d.mkdir()
    calibrated.save(d / "gen.fpx.safetensors")
    (d / "README.txt").write_text("not a fingerprint")
    artifacts.write_tensors(d / "weights.safetensors", {"w": torch.zeros(2)}, {})
    skipped = []
    fps = load_folder(d, on_skip=lambda f, why: skipped.append(f))
    assert [fp.name for fp in fps] == ["gen"] and len(skipped) == 2
    res = run(["detect", "--fingerprints", str(d), paths_of(calibrated)[0], "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "README.txt: skipped" in res.stderr and "weights.safetensors: skipped" in res.stderr
    raw = bytearray((d / "gen.fpx.safetensors").read_bytes())
    raw[-8] ^= 0x01
    (d / "gen.fpx.safetensors").write_bytes(bytes(raw))
    res = run(["detect", "--fingerprints", str(d), paths_of(calibrated)[0], "--no-cache"])
    assert res.exit_code == 2 and "seal" in res.output
    empty = tmp_path / "none"
    empty.mkdir()
    res = run(["detect", "--fingerprints", str(empty), paths_of(calibrated)[0]])
    assert res.exit_code == 2 and "no fpx fingerprint" in res.output


# ------------------------------------------------------------------ dif-extract: skipping, overlap, --fpr
def _mixed_folder(corpus, tmp_path):
    """The generated images plus: a too-small one, a corrupt one, grey / RGBA / larger JPEG variants."""
    d = tmp_path / "mixed"
    d.mkdir()
    for p in paths(corpus["gen"]):
        (d / p.split("/")[-1]).write_bytes(Path(p).read_bytes())
    images.save_png(natural_image(20, 20, seed=9), d / "tiny.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    g = images.to_uint8(images.load_image(paths(corpus["gen"])[0]).pixels)
    Image.fromarray(g[..., 0]).save(d / "grey.png")
    Image.fromarray(np.dstack([g, np.full(g.shape[:2], 255, np.uint8)])).save(d / "rgba.png")
    big = np.pad(g, ((8, 8), (8, 8), (0, 0)), mode="reflect")
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=95)
    (d / "big.jpg").write_bytes(buf.getvalue())
    return d


def test_dif_extract_skips_unusable_images_with_one_warning_each(corpus, tmp_path):
    mixed = _mixed_folder(corpus, tmp_path)
    out = tmp_path / "m.fpx.safetensors"
    res = run(["dif-extract", "--generated", str(mixed), "--real", corpus["real"], "-o", str(out), "--crop",
               str(S), "--method", "average", "--denoiser", "gaussian", "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    warn = [x for x in res.stderr.splitlines() if "skipped" in x]
    assert len(warn) == 3, warn  # tiny, broken, and the count
    assert any("tiny.png" in x and "smaller than" in x for x in warn)
    assert any("broken.png" in x for x in warn) and "2 image(s) skipped (2 generated)" in warn[-1]
    rec = json.loads(res.stdout)[0]
    assert len(rec["details"]["skipped"]) == 2
    fp = Fingerprint.load(out)
    used = {d["path"] for cls in ("train", "test") for d in fp.meta[cls]["generated"]}
    assert {str(mixed / n) for n in ("grey.png", "rgba.png", "big.jpg")} <= used
    gc = fp.meta["conditions"]["generated"]
    assert gc["jpeg"] >= 0 and gc["short_side"][0] == S


def test_dif_extract_fails_below_the_minimum_and_refuses_overlapping_classes(corpus, tmp_path):
    out = tmp_path / "x.fpx.safetensors"
    base = ["--crop", str(S), "--method", "average", "--denoiser", "gaussian", "--no-cache", "-o", str(out)]
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"], *base, "--min-images", "20"])
    assert res.exit_code == 2 and "fewer than the minimum of 20" in res.output
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["gen"], *base])
    assert res.exit_code == 2 and "both the generated and the real set" in res.output
    mixed = tmp_path / "realplus"
    mixed.mkdir()
    for p in paths(corpus["real"]):
        (mixed / p.split("/")[-1]).write_bytes(Path(p).read_bytes())
    (mixed / "copy_of_gen.png").write_bytes(Path(paths(corpus["gen"])[3]).read_bytes())  # same content
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", str(mixed), *base])
    assert res.exit_code == 2 and "same content" in res.output
    assert not out.exists()


def test_dif_extract_fpr_and_dif_calibrate(corpus, tmp_path):
    out = tmp_path / "f.fpx.safetensors"
    base = ["--crop", str(S), "--method", "average", "--denoiser", "gaussian", "--no-cache"]
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"], "-o", str(out), *base,
               "--fpr", "0.01"])
    assert res.exit_code == 2 and "needs at least 99" in res.output and not out.exists()
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"], "-o", str(out), *base,
               "--fpr", "0.1", "--calibration-real", corpus["cal"], "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["features"]["fpr"] == 0.1 and rec["features"]["calibration_n"] == 24
    fp = Fingerprint.load(out)
    assert fp.calibrated and fp.meta["conformal"]["description"] == "the --calibration-real images"
    # dif-calibrate an uncalibrated fingerprint; refuses to write over its input
    plain = tmp_path / "plain.fpx.safetensors"
    assert run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"], "-o", str(plain),
                *base]).exit_code == 0
    res = run(["dif-calibrate", str(plain), "--real", corpus["cal"], "--fpr", "0.1", "-o", str(plain)])
    assert res.exit_code == 2 and "refusing to write over" in res.output
    new = tmp_path / "plain-cal.fpx.safetensors"
    res = run(["dif-calibrate", str(plain), "--real", corpus["cal"], "--real", corpus["real"], "--fpr", "0.05",
               "-o", str(new), "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    # the real training images are skipped (one warning each), the held-out real ones are kept
    counts = Fingerprint.load(plain).meta["counts"]
    assert len(rec["details"]["skipped"]) == counts["train_real"] == 13
    assert rec["features"]["n"] == 24 + counts["test_real"]
    assert all("training image" in d["reason"] for d in rec["details"]["skipped"])
    assert Fingerprint.load(new).fpr == 0.05
    res = run(["dif-calibrate", str(plain), "--real", corpus["cal"], "--fpr", "0.01", "-o", str(new)])
    assert res.exit_code == 2 and "needs at least 99" in res.output
    res = run(["dif-calibrate", str(plain), "--real", corpus["cal"], "--fpr", "0.6", "-o", str(new)])
    assert res.exit_code == 2


# ------------------------------------------------------------------ the shipped library mechanism
@pytest.fixture
def library(calibrated, tmp_path, monkeypatch):
    from fingerprint_cli import fingerprints

    d = tmp_path / "lib"
    d.mkdir()
    digest = calibrated.save(d / "gen-average-v1.fpx.safetensors")
    fingerprints.write_index([{"id": "gen-average-v1", "name": "gen", "version": "1",
                               "file": "gen-average-v1.fpx.safetensors", "sha256": digest,
                               "held_out": {"tpr": 1.0, "fpr": 0.0}, "calibration": {"fpr": 0.1}}], d)
    monkeypatch.setattr(fingerprints, "LIBRARY_DIR", d)
    monkeypatch.setattr(artifacts, "REGISTRY", dict(artifacts.REGISTRY))
    artifacts._register_shipped_fingerprints()
    return d


def test_detect_without_fingerprint_uses_the_shipped_library(library, calibrated):
    res = run(["detect", paths_of(calibrated)[0], "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    rec = jsonl(res.stdout)[0]
    assert rec["decision"]["label"] == "gen" and rec["decision"]["verified"] is True
    assert rec["provenance"]["fingerprints"][0]["library"]["id"] == "gen-average-v1"
    res = run(["models", "list", "--format", "json"])
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["gen-average-v1"]["kind"] == "fingerprint" and rows["gen-average-v1"]["installed"]
    assert artifacts.verify("gen-average-v1")["verified"] is True


def test_shipped_fingerprint_pinned_to_its_sha256(library, calibrated):
    f = library / "gen-average-v1.fpx.safetensors"
    resealed = calibrated.copy(name="gen")
    resealed.info.mu_gen = resealed.info.mu_gen * 1.5  # an edit, resealed: the seal matches, the pin not
    resealed.save(f)
    assert Fingerprint.load(f).verified
    res = run(["detect", paths_of(calibrated)[0], "--no-cache"])
    assert res.exit_code == 2 and "pinned" in res.output
    res = run(["detect", paths_of(calibrated)[0], "--force", "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["decision"]["verified"] is False


def test_the_real_shipped_library_is_intact():
    """Whatever library this checkout ships: every entry's file matches its pin, loads, is sealed, calibrated
    and carries its held-out measurements."""
    from fingerprint_cli import fingerprints
    from fingerprint_cli.dif.fingerprint import load_library

    entries = fingerprints.index()
    # the package ships a library, and lists every fingerprint file it holds (none unpinned, none missing)
    shipped_files = sorted(p.name for p in fingerprints.LIBRARY_DIR.glob("*.fpx.safetensors"))
    assert entries and sorted(e["file"] for e in entries) == shipped_files
    fps = load_library()
    assert len(fps) == len(entries)
    for fp, e in zip(fps, entries):
        assert fp.verified and fp.calibrated and fp.meta["library"]["pinned"]
        assert e["held_out"]["n_real"] > 0 and 0 <= e["held_out"]["fpr"] <= 1
        assert e["storage_check"]["decisions_changed"] == 0


def test_build_fingerprint_library_script_end_to_end(tmp_path, monkeypatch):
    """scripts/build_fingerprint_library.py on a tiny stand-in of shared/data: fit + calibrate + measure +
    install; the installed library then drives `fpx detect` without -F."""
    import importlib.util

    from fingerprint_cli import fingerprints
    from fingerprint_cli.dif.fingerprint import load_library

    data = tmp_path / "data"
    for d in ("generators/gena", "generators/hfapi_sd/m1", "generators/real_kodak24", "real_bsds500/train",
              "real_bsds500/val"):
        (data / d).mkdir(parents=True)
    for i in range(16):
        images.save_png(np.clip(natural_image(S, S, seed=i) + planted(0), 0, 1), data / f"generators/gena/g{i}.png")
        images.save_png(np.clip(natural_image(S, S, seed=900 + i) + planted(1), 0, 1),
                        data / f"generators/hfapi_sd/m1/m{i}.png")
    for i in range(30):
        (data / f"real_bsds500/train/t{i}.jpg").write_bytes(images.encode(natural_image(S, S, seed=100 + i),
                                                                           "JPEG", quality=90))
    for i in range(12):
        (data / f"real_bsds500/val/v{i}.jpg").write_bytes(images.encode(natural_image(S, S, seed=500 + i),
                                                                         "JPEG", quality=90))
    path = Path(__file__).resolve().parents[1] / "scripts" / "build_fingerprint_library.py"
    spec = importlib.util.spec_from_file_location("build_fingerprint_library", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert list(mod.generator_folders(data)) == ["gena", "m1"]  # hfapi_sd/<model> expanded, real_* left out
    lib = tmp_path / "lib"
    assert mod.main(["--data", str(data), "--out-dir", str(lib), "--fpr", "0.1", "--real-fit", "15", "--method",
                     "average", "--denoiser", "gaussian", "--crop", str(S), "--cache", str(tmp_path / "c"),
                     "--work", str(tmp_path / "w")]) == 0
    entries = fingerprints.index(lib)
    assert [e["id"] for e in entries] == ["gena-average-v1", "m1-average-v1"]
    for e in entries:
        assert e["storage"] == "float16" and e["storage_check"]["decisions_changed"] == 0
        assert e["calibration"]["n"] == 15 + 4 and e["held_out"]["n_real"] == 12
        assert e["held_out"]["tpr"] == 1.0 and e["training_set"]["manifest_sha256"]
    fps = load_library(lib)
    assert all(fp.verified and fp.calibrated and fp.meta["storage_dtype"] == "float16" for fp in fps)
    monkeypatch.setattr(fingerprints, "LIBRARY_DIR", lib)
    res = run(["detect", str(data / "generators/gena/g3.png"), str(data / "real_bsds500/val/v0.jpg"),
               "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    a, b = jsonl(res.stdout)
    # the PNG suspect is lossless and the library was calibrated on JPEG photos only: gena's call is kept but no
    # claim is made (its stated rate is not measured on lossless images)
    assert a["decision"]["label"] == "unknown" and a["decision"]["call_outside_conditions"]["label"] == "gena"
    assert any("lossless" in w for w in a["details"]["condition"]["warnings"]) 
    # the JPEG photo is not detected, but JPEG copies of the (lossless) generated training images were never
    # measured, so the non-detection has no miss rate there: unknown, the withheld not-detected kept (was "real")
    assert b["decision"]["within_conditions"] is False and b["decision"]["label"] == "unknown"
    assert b["decision"]["call_outside_conditions"]["label"] == "not-detected"
    assert b["details"]["condition"]["jpeg_quality"] == 90 and b["decision"]["fpr_any"] == pytest.approx(0.2)
    # re-calibrated under recompressions without refitting: same calibration images, new pins, still detects
    path = Path(__file__).resolve().parents[1] / "scripts" / "recalibrate_library.py"
    spec = importlib.util.spec_from_file_location("recalibrate_library", path)
    rec_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec_mod)
    before = {fp.name: fp for fp in fps}
    assert rec_mod.main(["--data", str(data), "--dir", str(lib), "--conditions", "jpeg75,jpeg50",
                         "--cache", str(tmp_path / "c")]) == 0
    after = load_library(lib)
    for fp, e in zip(after, fingerprints.index(lib)):
        old_fp = before[fp.name]
        assert fp.verified and e["sha256"] != old_fp.sha256 and torch.equal(fp.pattern, old_fp.pattern)
        assert fp.conformal.manifest_sha256 == old_fp.conformal.manifest_sha256 == e["calibration"]["manifest_sha256"]
        assert sorted(fp.conformal.recompressions) == sorted(e["calibration"]["recompressions"]) == ["jpeg50",
                                                                                                      "jpeg75"]
        assert e["held_out"]["n_real"] == 12 and 0 <= e["held_out"]["fpr"] <= 1
    res = run(["detect", str(data / "generators/gena/g3.png"), str(data / "real_bsds500/val/v0.jpg"),
               "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0 and "calibrated as distributed only" not in res.stderr, res.output
    a, b = jsonl(res.stdout)
    assert b["decision"]["call_outside_conditions"]["label"] == "not-detected"


def test_cli_min_images_default_is_the_library_constant():
    import inspect

    from fingerprint_cli.cli import dif_cmd
    from fingerprint_cli.dif import extract

    assert f"typer.Option({extract.DEFAULT_MIN_IMAGES}, \"--min-images\"" in inspect.getsource(dif_cmd)


def test_held_out_measure_counts_by_both_rules_and_matches_brute_force(calibrated):
    """dif.heldout.measure (what the library scripts store): TPR / FPR by the p-value rule equal a count done
    here from the p-values, and `fpx detect`'s rule agrees on a fingerprint calibrated as distributed only."""
    gen = [d["path"] for d in calibrated.meta["test"]["generated"]]
    real = [d["path"] for d in calibrated.meta["test"]["real"]]
    by_p = heldout.measure(calibrated, gen, real)
    pg = detect.p_values(calibrated, detect.correlations(calibrated, gen))
    pr = detect.p_values(calibrated, detect.correlations(calibrated, real))
    assert by_p["tpr"] == round(sum(p <= 0.1 for p in pg) / len(gen), 4)
    assert by_p["fpr"] == round(sum(p <= 0.1 for p in pr) / len(real), 4)
    assert by_p["balanced_accuracy"] == round((by_p["tpr"] + 1 - by_p["fpr"]) / 2, 4)
    assert (by_p["n_generated"], by_p["n_real"], by_p["at"]) == (len(gen), len(real), "p <= 0.1")
    by_detect = heldout.measure(calibrated, gen, real, rule="detect")
    assert {k: by_detect[k] for k in ("tpr", "fpr", "auc")} == {k: by_p[k] for k in ("tpr", "fpr", "auc")}
    assert "largest over the calibration sets" in by_detect["at"]
    with pytest.raises(ValueError, match="rule must be one of"):
        heldout.measure(calibrated, gen, real, rule="vote")
    with pytest.raises(ValueError, match="needs generated and real"):
        heldout.measure(calibrated, [], real)


def test_detection_window_refusal_names_the_size_not_an_option_detect_lacks():
    """Detection takes any window down to MIN_WINDOW px; below it the refusal says so (fpx detect has no --crop
    to suggest), while a fit's refusal still points at --crop."""
    from fingerprint_cli.dif.residuals import centre_crop

    small = natural_image(condition.MIN_WINDOW - 4, 40, seed=3)
    with pytest.raises(InputError, match="too small for a fingerprint window") as exc:
        centre_crop(small, 64, "s.png", allow_smaller=True)
    assert "--crop" not in str(exc.value)
    assert centre_crop(natural_image(condition.MIN_WINDOW, 40, seed=3), 64, allow_smaller=True).shape[0] == 16
    with pytest.raises(InputError, match=r"smaller than the 64x64 crop \(use a smaller --crop\)"):
        centre_crop(natural_image(40, 40, seed=3), 64, "f.png")
