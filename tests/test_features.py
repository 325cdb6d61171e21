"""The feature registry: one invariant test per registered feature, and the registry agrees with what the
scoring modules publish.

For every feature with a neutral value: a suspect identical to its reference gives that value. For every
feature with a probe: a stronger distortion of the probe's family moves the value in the registered
direction (computed through the real scoring path — files on disk, Scorer, the tiny random ViT)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fingerprint_cli import images
from fingerprint_cli.anchored import pixel, encoders, features, score, survival
from fingerprint_cli.anchored.attribute import make_scorer
from fingerprint_cli.batch import Pair
from fingerprint_cli.errors import UsageError

from conftest import natural_image

COMPUTED = features.names(("tokens", "pixel", "anchored", "tone_corrected", "tone_curve", "artifact"))


def _luma(x):
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _jpeg(x, quality):
    buf = io.BytesIO()
    Image.fromarray(images.to_uint8(x)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255.0


def _chroma_blur(x, s):
    y = _luma(x)[..., None]
    c = x - y  # per-channel chroma offsets; blurring them keeps luma up to clipping
    return np.clip(y + ndimage.gaussian_filter(c, (s, s, 0)), 0, 1)


def _probe(name: str, ref: np.ndarray, strength: int) -> np.ndarray:
    """Strength 1 (mild) or 2 (strong) of a distortion family."""
    rng = np.random.default_rng(7)
    n = rng.standard_normal(ref.shape)
    if name == "noise":
        return np.clip(ref + (0.03, 0.12)[strength - 1] * n, 0, 1)
    if name == "blur":
        s = (0.8, 2.0)[strength - 1]
        return ndimage.gaussian_filter(ref, (s, s, 0))
    if name == "smooth_shift":
        h, w = ref.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        field = np.sin(xx / w * np.pi)[..., None] * np.cos(yy / h * np.pi)[..., None]
        return np.clip(ref + 0.01 * n + (0.03, 0.12)[strength - 1] * field, 0, 1)
    if name == "tone":
        return ref ** (0.9, 0.6)[strength - 1]
    if name == "jpeg":
        return _jpeg(ref, (92, 30)[strength - 1])
    if name == "chroma_blur":
        return _chroma_blur(ref, (0.8, 2.5)[strength - 1])
    if name == "contrast":
        return np.clip(0.5 + (1.1, 1.3)[strength - 1] * (ref - 0.5), 0, 1)
    if name == "colour_cast":
        return np.clip(ref * np.array([(1.04, 1.12)[strength - 1], 1.0, 1.0]), 0, 1)
    if name == "posterize":
        q = (32, 8)[strength - 1]
        return np.round(ref * (q - 1)) / (q - 1)
    if name == "tone_over_noise":  # the same fixed noise, a stronger tone curve on top: the curve explains more
        return np.clip(ref + 0.02 * n, 0, 1) ** (0.9, 0.6)[strength - 1]
    return _artifact_probe(name, ref, strength, n)


def _round_trip(x: np.ndarray, k: int) -> np.ndarray:
    """Block means of k x k cells repeated back up (a nearest-neighbour x k round trip; edge cells replicated)."""
    h, w = (x.shape[0] // k) * k, (x.shape[1] // k) * k
    small = x[:h, :w].reshape(h // k, k, w // k, k, -1).mean((1, 3))
    up = np.repeat(np.repeat(small, k, 0), k, 1)
    return np.pad(up, ((0, x.shape[0] - h), (0, x.shape[1] - w), (0, 0)), mode="edge")


def _artifact_probe(name: str, ref: np.ndarray, strength: int, n: np.ndarray) -> np.ndarray:
    """The artifact family's probes (issue 11 round 11), on top of the same fixed mild noise."""
    base = np.clip(ref + 0.01 * n, 0, 1)
    if name == "resample":  # more of the x2 / x3 / x4 round trips blended in
        w = (0.3, 1.0)[strength - 1]
        rt = np.mean([_round_trip(ref, k) for k in (2, 3, 4)], 0)
        return np.clip((1 - w) * base + w * rt, 0, 1)
    if name == "edge_preserving":  # flats blurred, the reference's edges kept (a stronger blur of the flats)
        y = _luma(ref)
        g = np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1))
        keep = np.clip(g / np.quantile(g, 0.8), 0, 1)[..., None]
        s = (0.8, 2.0)[strength - 1]
        return keep * ref + (1 - keep) * ndimage.gaussian_filter(ref, (s, s, 0))
    if name == "impulse":  # the same 1% of pixels hit by stronger impulses
        hit = (np.random.default_rng(3).random(ref.shape[:2]) < 0.01)[..., None]
        return np.clip(base + hit * (0.1, 0.5)[strength - 1], 0, 1)
    if name == "red_noise":  # grey (luma-only) noise plus more noise on the red channel alone (luma and chroma)
        red = np.zeros_like(ref)
        red[..., 0] = n[..., 1]
        return np.clip(ref + 0.03 * n[..., :1] + (0.01, 0.06)[strength - 1] * red, 0, 1)
    raise AssertionError(f"unknown probe {name}")


@pytest.fixture(scope="module")
def computed(tmp_path_factory, _model_home):
    """Features of (ref, ref), and of (ref, probe strength k) for every probe, through the scoring path."""
    import os

    old = os.environ.get("FPX_HOME")
    os.environ["FPX_HOME"] = str(_model_home)
    try:
        tmp = tmp_path_factory.mktemp("probes")
        ref = natural_image(128, 128, seed=11).astype(np.float64)
        ref_path = tmp / "ref.png"
        images.save_png(ref, ref_path)
        pairs, keys = [Pair(str(ref_path), str(ref_path))], [("identity", 0)]
        for probe in sorted({features.get(n).probe for n in COMPUTED if features.get(n).probe}):
            for k in (1, 2):
                p = tmp / f"{probe}_{k}.png"
                images.save_png(_probe(probe, ref, k), p)
                pairs.append(Pair(str(ref_path), str(p)))
                keys.append((probe, k))
        enc = encoders.load_encoder(resolution=112)
        scorer = make_scorer(COMPUTED, encoder=enc, use_disk_cache=False)
        recs = [r.record for r in scorer.score(pairs)]
    finally:
        if old is None:
            os.environ.pop("FPX_HOME", None)
        else:
            os.environ["FPX_HOME"] = old
    assert all(r.ok for r in recs), [r.error for r in recs]
    return {k: r for k, r in zip(keys, recs)}


@pytest.mark.parametrize("name", [n for n in COMPUTED if features.get(n).neutral is not None])
def test_identity_pair_gives_the_neutral_value(computed, name):
    assert computed[("identity", 0)].features[name] == pytest.approx(features.get(name).neutral, abs=1e-6)


@pytest.mark.parametrize("name", [n for n in COMPUTED if features.get(n).probe])
def test_a_stronger_probe_moves_the_feature_in_its_direction(computed, name):
    f = features.get(name)
    mild, strong = (computed[(f.probe, k)].features[name] for k in (1, 2))
    assert f.sign * (strong - mild) > 0, f"{name} ({f.direction_text}) under {f.probe}: {mild} -> {strong}"


def test_records_carry_the_registered_directions(computed):
    rec = computed[("identity", 0)]
    for name in COMPUTED:
        assert rec.directions[name] == features.get(name).direction_text


@pytest.mark.parametrize("name", COMPUTED)
def test_values_lie_in_the_registered_range(computed, name):
    lo, hi = features.get(name).range
    for rec in computed.values():
        v = rec.features[name]
        assert lo is None or v >= lo - 1e-9
        assert hi is None or v <= hi + 1e-9


def test_registry_agrees_with_the_scoring_modules():
    published = {**score.FEATURES, **pixel.FEATURES,
                 **{k: v for k, v in survival.FEATURES.items() if k in features.REGISTRY}}
    for name, (direction, description) in published.items():
        f = features.get(name)
        assert f.direction_text == direction, name
        assert f.description == description, name
    assert set(COMPUTED) == set(score.FEATURES) | set(pixel.FEATURES)


@pytest.mark.parametrize("name", ["tc_ssim", "tc_hf_ratio", "tc_gain_0", "tc_gain_1"])
def test_tone_corrected_twins_ignore_a_tone_curve(computed, name):
    """The reason the tc_* twins exist: a global monotone edit barely moves them, while it moves the original."""
    f = features.get(name)
    original = {"tc_ssim": "ssim_clean", "tc_psnr": "psnr_clean"}.get(name, name[3:])
    moved_tc = abs(computed[("tone", 2)].features[name] - f.neutral)
    moved_orig = abs(computed[("tone", 2)].features[original] - f.neutral)
    assert moved_tc < 0.25 * moved_orig, (name, moved_tc, moved_orig)


def test_sign_and_unknown_names():
    assert features.sign("ssim_clean") == -1 and features.sign("patch_mean") == 1
    assert features.sign("made_elsewhere", "lower = better") == -1
    assert features.sign("made_elsewhere", "higher = more") == 1
    with pytest.raises(UsageError, match="did you mean 'patch_mean'"):
        features.get("patch_maen")
