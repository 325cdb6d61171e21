"""Issue 15 round 4: the ``robust-jpeg`` training profile (the image itself plus JPEG q 70–95 views of both
classes). A synthetic generator leaves two traces: a strong pixel checkerboard, which JPEG removes, and a
weaker trace of 8-px blocks, which JPEG keeps. Fitted on the lossless images as they are, the fingerprint
rests on the checkerboard and misses the JPEG-re-saved copies; fitted through JPEG views, it must find the
block trace too and still separate the re-saved copies.

Tiny images, the weight-free Gaussian denoiser, no shared data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import natural_image

from fingerprint_cli import images
from fingerprint_cli.dif import augment, condition, detect, extract
from fingerprint_cli.dif.augment import Augmentation
from fingerprint_cli.dif.detect import standardise
from fingerprint_cli.dif.residuals import get_denoiser

S = 48
HF_AMP, LF_AMP = 6 / 255, 3 / 255  # checkerboard (removed by JPEG q75), 8-px blocks (kept)
N_TRAIN, N_TEST = 24, 16


def _traces():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:S, 0:S]
    hf = np.where((yy + xx) % 2 == 0, 1.0, -1.0)[..., None] * rng.choice([-1.0, 1.0], 3)
    lf = np.kron(rng.standard_normal((S // 8, S // 8, 3)), np.ones((8, 8, 1)))
    return hf, (lf - lf.mean()) / lf.std()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust_jpeg")
    hf, lf = _traces()
    sets = {}
    for split, n, base in (("train", N_TRAIN, 0), ("test", N_TEST, 1000)):
        for cls, off in (("gen", 0), ("real", 500)):
            folder, jpeg = root / split / cls, root / split / f"{cls}_jpeg"
            folder.mkdir(parents=True)
            jpeg.mkdir()
            for i in range(n):
                px = natural_image(S, S, seed=base + off + i)
                if cls == "gen":
                    px = np.clip(px + HF_AMP * hf + LF_AMP * lf, 0, 1)
                images.save_png(px, folder / f"{i:02d}.png")
                (jpeg / f"{i:02d}.jpg").write_bytes(images.encode(images.load_image(folder / f"{i:02d}.png").pixels,
                                                                  "JPEG", quality=75))
            sets[split, cls] = [str(p) for p in images.list_images(folder)]
            sets[split, cls + "_jpeg"] = [str(p) for p in images.list_images(jpeg)]
    return sets, lf


@pytest.fixture(scope="module")
def fits(corpus):
    sets, _ = corpus
    kw = dict(name="synthetic", crop=S, epochs=30, seed=0, denoiser="gaussian", test_fraction=0.0, batch_size=16,
              unet_width=8, tolerance=0)
    return {prof: extract.fit(sets["train", "gen"], sets["train", "real"], profile=prof, **kw)
            for prof in ("plain", "robust-jpeg")}


def _auc(fp, sets, suffix):
    return detect.auc(detect.correlations(fp, sets["test", "gen" + suffix]),
                      detect.correlations(fp, sets["test", "real" + suffix]))


def test_views_are_the_image_itself_plus_received_jpeg_qualities():
    vs = augment.draw_views("robust-jpeg", "abc", seed=0, views=40)
    assert vs[0] == augment.IDENTITY and len(vs) == 40
    assert all(v.scale == 1.0 and augment.RECEIVED_QUALITY[0] <= v.quality <= augment.RECEIVED_QUALITY[1]
               for v in vs[1:])
    assert len({v.quality for v in vs[1:]}) > 5  # drawn, not one fixed quality
    assert vs == augment.draw_views("robust-jpeg", "abc", seed=0, views=40)
    assert augment.draw_views("robust-jpeg", "abc", seed=0) == vs[:augment.PROFILES["robust-jpeg"].views]
    assert augment.draw_views("robust-jpeg", "abc", seed=0, views=1) == [augment.IDENTITY]


def test_robust_jpeg_fit_detects_re_saved_copies_that_the_plain_fit_misses(corpus, fits):
    sets, _ = corpus
    for fp in fits.values():  # both detect the lossless copies
        assert _auc(fp, sets, "") == 1.0
    plain, robust = _auc(fits["plain"], sets, "_jpeg"), _auc(fits["robust-jpeg"], sets, "_jpeg")
    assert robust >= 0.85 and plain <= 0.8 and robust - plain >= 0.15, (plain, robust)
    # at its own threshold the plain fingerprint calls every re-saved generated image real
    cg = detect.correlations(fits["plain"], sets["test", "gen_jpeg"])
    assert detect.is_generated(fits["plain"], cg).mean() <= 0.25


def test_robust_jpeg_fingerprint_holds_more_of_the_trace_that_jpeg_keeps(corpus, fits):
    _, lf = corpus
    den = get_denoiser("gaussian")
    trace = den.residual(torch.from_numpy((0.5 + LF_AMP * lf).transpose(2, 0, 1)[None].astype(np.float32)))[0]
    corr = {k: float((standardise(fp.pattern[None]) * standardise(trace[None])).mean()) for k, fp in fits.items()}
    # (small in absolute terms: the hinge stops once the classes are a margin apart, docs/benchmarks.md round 3)
    assert corr["robust-jpeg"] >= 0.02 and corr["plain"] <= 0.01, corr


def test_robust_jpeg_records_its_profile_and_the_conditions_it_covers(fits):
    fp = fits["robust-jpeg"]
    a = fp.meta["augment"]
    assert a["profile"] == "robust-jpeg" and a["views"] == 2
    n = fp.meta["counts"]["train_generated"]
    assert a["generated"]["identity"] == n and a["generated"]["jpeg"] == n and a["generated"]["resized"] == 0
    lo, hi = a["generated"]["jpeg_quality"]
    assert augment.RECEIVED_QUALITY[0] <= lo <= hi <= augment.RECEIVED_QUALITY[1]
    # the suspect conditions it covers: JPEG q 70-95 and lossless, no rescaling beyond the training sizes
    c = fp.meta["conditions"]
    assert c["jpeg_quality"] == list(augment.RECEIVED_QUALITY) and c["lossless"] is True
    assert c["scale"] == [1.0, 1.0]
    assert fits["plain"].meta["conditions"]["jpeg_quality"] is None
    jpeg50 = condition.check({"short_side": S, "jpeg_quality": 50, "lossless": False}, fp.meta, S)
    assert not jpeg50["within"] and any("q≈50" in w for w in jpeg50["warnings"])
    assert condition.check({"short_side": S, "jpeg_quality": 80, "lossless": False}, fp.meta, S)["within"]


def test_keep_original_applies_only_to_the_first_view():
    prof = augment.Profile("t", lambda rng: Augmentation(quality=80), 3, "test", keep_original=True)
    assert augment.draw_views(prof, "x", 0) == [augment.IDENTITY, Augmentation(quality=80), Augmentation(quality=80)]
