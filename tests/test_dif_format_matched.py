"""Issue 15: the ``format-matched`` training profile. Every lossless image — training image of either class,
calibration photo or suspect — is re-encoded as JPEG at the JPEG training images' quality before its residual,
so a fingerprint cannot learn "lossless vs JPEG".

The synthetic corpus has the confound built in: the generated class is lossless PNG with a weak 8-px block trace
(which JPEG keeps), the real class is JPEG q90. Fitted plainly, a fingerprint may rest on the format; fitted
format-matched, a lossless real photo is scored exactly as its JPEG q90 copy, and the block trace is still found.

Tiny images, the weight-free Gaussian denoiser, no shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import natural_image

from fingerprint_cli import images
from fingerprint_cli.dif import augment, detect, extract
from fingerprint_cli.dif.residuals import ResidualCache, compute, compute_matched, get_denoiser
from fingerprint_cli.errors import UsageError

S = 48
Q = 90
TRACE_AMP = 4 / 255
N_TRAIN, N_TEST = 24, 16


def _trace():
    rng = np.random.default_rng(7)
    lf = np.kron(rng.standard_normal((S // 8, S // 8, 3)), np.ones((8, 8, 1)))
    return (lf - lf.mean()) / lf.std()


def _png_set(folder, seeds, trace) -> list[str]:
    """PNG 'photos' (natural_image of each seed) plus ``trace`` (0: clean) in ``folder``; their paths."""
    folder.mkdir(parents=True)
    for s in seeds:
        images.save_png(np.clip(natural_image(S, S, seed=s) + trace, 0, 1), folder / f"{s:04d}.png")
    return [str(p) for p in images.list_images(folder)]


def _jpeg_copy(png, folder):
    f = folder / (png.stem + ".jpg")
    f.write_bytes(images.encode(images.load_image(png).pixels, "JPEG", quality=Q))
    return f


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{(split, kind): paths}: kinds gen (PNG + trace), real_png, real_jpeg (the q90 copies of real_png)."""
    root = tmp_path_factory.mktemp("format_matched")
    lf = _trace()
    sets: dict = {}
    for split, n, base in (("train", N_TRAIN, 0), ("test", N_TEST, 1000)):
        sets[split, "gen"] = _png_set(root / split / "gen", range(base, base + n), TRACE_AMP * lf)
        sets[split, "real_png"] = _png_set(root / split / "real_png", range(base + 500, base + 500 + n), 0.0)
        jpeg = root / split / "real_jpeg"
        jpeg.mkdir()
        sets[split, "real_jpeg"] = [str(_jpeg_copy(p, jpeg)) for p in map(Path, sets[split, "real_png"])]
    return sets


@pytest.fixture(scope="module")
def fits(corpus):
    kw = dict(name="synthetic", crop=S, epochs=30, seed=0, denoiser="gaussian", test_fraction=0.0, batch_size=16,
              unet_width=8, tolerance=0)
    return {prof: extract.fit(corpus["train", "gen"], corpus["train", "real_jpeg"], profile=prof, **kw)
            for prof in ("plain", "format-matched")}


def test_the_profile_is_registered_and_draws_no_views():
    prof = augment.get_profile("format-matched")
    assert prof.match_format and prof.views == 1
    assert not augment.get_profile("plain").match_format
    assert augment.draw_views("format-matched", "abc", seed=0) == [augment.IDENTITY]


def test_the_matched_quality_is_read_from_the_jpeg_training_images_and_recorded(fits):
    fp = fits["format-matched"]
    assert fp.info.augment["match_quality"] == Q == detect.matched_quality(fp)
    assert fp.info.augment["matched"] == {"generated": N_TRAIN, "real": 0}
    assert fp.info.conditions["jpeg_quality"] == [Q, Q] and fp.info.conditions["lossless"] is True
    assert detect.matched_quality(fits["plain"]) is None


def test_a_lossless_image_is_scored_exactly_as_its_jpeg_copy_at_the_matched_quality(fits, corpus):
    fp = fits["format-matched"]
    png, jpg = corpus["test", "real_png"], corpus["test", "real_jpeg"]
    np.testing.assert_array_equal(detect.correlations(fp, png), detect.correlations(fp, jpg))
    # the plain fingerprint reads the lossless files as they are: different numbers
    plain = fits["plain"]
    assert np.abs(detect.correlations(plain, png) - detect.correlations(plain, jpg)).max() > 1e-4


def test_the_matched_fingerprint_still_finds_the_trace_that_survives_jpeg(fits, corpus):
    fp = fits["format-matched"]
    auc = detect.auc(detect.scores(fp, detect.correlations(fp, corpus["test", "gen"])),
                     detect.scores(fp, detect.correlations(fp, corpus["test", "real_png"])))
    assert auc > 0.9


def test_calibration_matches_lossless_photos_and_lossless_ending_copies(fits, corpus):
    fp = fits["format-matched"]
    cache = ResidualCache(disk=False)
    cal = detect.calibrate(fp, corpus["test", "real_jpeg"], 0.1, cache=cache, recompressions=["resize1.5"],
                           lossless_paths=corpus["test", "real_png"])
    den = get_denoiser("gaussian")
    sha = images.sha256_file(corpus["test", "real_jpeg"][0])
    assert (sha, den.sha256, S, f"resize1.5+jpeg{Q}") in cache  # the resized PNG copy, matched
    assert (sha, den.sha256, S, "resize1.5") not in cache and "resize1.5" in cal.conformal.recompressions
    # the lossless set: each photo scored as its JPEG q90 copy (= the as-distributed set here)
    assert sorted(cal.conformal.lossless["rho"]) == sorted(cal.conformal.rho)


def test_detect_one_records_the_matched_rho_for_a_lossless_suspect(fits, corpus):
    fp = fits["format-matched"]
    a = detect.detect_one([fp], corpus["test", "real_png"][0]).features["rho"]
    b = detect.detect_one([fp], corpus["test", "real_jpeg"][0]).features["rho"]
    assert a == b


def test_compute_matched_keeps_the_order_and_reports_a_bad_file(corpus, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    paths = [corpus["test", "real_png"][0], corpus["test", "real_jpeg"][1], str(bad), corpus["test", "gen"][2]]
    den = get_denoiser("gaussian")
    errors = []
    res, infos = compute_matched(paths, den, S, Q, on_error=lambda p, e: errors.append(p))
    assert [d["path"] for d in infos] == [paths[0], paths[1], paths[3]] and errors == [str(bad)]
    jpeg_of_first = corpus["test", "real_jpeg"][0]
    ref, _ = compute([jpeg_of_first, paths[1]], den, S)
    np.testing.assert_array_equal(res[0], ref[0])  # lossless: matched to its q90 copy
    np.testing.assert_array_equal(res[1], ref[1])  # JPEG: as it is
    plain, _ = compute([paths[3]], den, S)
    assert np.abs(res[2] - plain[0]).max() > 0  # the lossless generated image was re-encoded
    # smaller windows allowed (detection): one call per lossless image, same residuals
    res_s, _ = compute_matched(paths[:2], den, S, Q, on_error=lambda p, e: None, allow_smaller=True)
    np.testing.assert_array_equal(np.asarray(res_s), res[:2])
    assert compute_matched(paths[:2], den, S, None)[0].shape == (2, 3, S, S)


def test_format_matching_needs_a_jpeg_image_in_the_training_set(corpus):
    with pytest.raises(UsageError, match="no training image of either class is JPEG"):
        extract.fit(corpus["train", "gen"], corpus["train", "real_png"], name="x", crop=S, epochs=1,
                    denoiser="gaussian", test_fraction=0.0, profile="format-matched", unet_width=8)


def test_the_library_build_script_fits_format_matched_and_says_so(tmp_path):
    """scripts/build_fingerprint_library.py --fit-option profile=format-matched (how a v3 entry is built): the
    entry records the profile, the training-set description says what was re-encoded, the fingerprint its
    quality; its held-out measurement runs through the matched residuals."""
    import importlib.util

    from fingerprint_cli import fingerprints
    from fingerprint_cli.dif.fingerprint import load_library

    data = tmp_path / "data"
    for d in ("generators/gena", "real_bsds500/train", "real_bsds500/val"):
        (data / d).mkdir(parents=True)
    lf = _trace()
    for i in range(16):
        images.save_png(np.clip(natural_image(S, S, seed=i) + TRACE_AMP * lf, 0, 1), data / f"generators/gena/g{i}.png")
    for split, n, base in (("train", 30, 100), ("val", 12, 500)):
        for i in range(n):
            (data / f"real_bsds500/{split}/r{i}.jpg").write_bytes(
                images.encode(natural_image(S, S, seed=base + i), "JPEG", quality=Q))
    path = Path(__file__).resolve().parents[1] / "scripts" / "build_fingerprint_library.py"
    spec = importlib.util.spec_from_file_location("build_fingerprint_library", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lib = tmp_path / "lib"
    assert mod.main(["--data", str(data), "--out-dir", str(lib), "--fpr", "0.1", "--real-fit", "15", "--method",
                     "average", "--denoiser", "gaussian", "--crop", str(S), "--cache", str(tmp_path / "c"),
                     "--work", str(tmp_path / "w"), "--fit-option", "profile=format-matched",
                     "--profile-name", "format-matched", "--version", "3"]) == 0
    (e,) = fingerprints.index(lib)
    assert e["id"] == "gena-average-v3" and e["profile"] == "format-matched"
    assert e["fit_options"] == {"profile": "format-matched"}
    assert f"every lossless image re-encoded as JPEG q{Q} first" in e["training_set"]["description"]
    (fp,) = load_library(lib)
    assert detect.matched_quality(fp) == Q and fp.verified and fp.calibrated
    assert e["held_out"]["n_generated"] == 4 and e["held_out"]["n_real"] == 12
