"""score.py + encoders.py through the real import path with a tiny random DINOv2-architecture model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import encoders, score
from fingerprint_cli.batch import Pair
from fingerprint_cli.errors import ArtifactError


def _write(tmp_path, name, arr):
    p = tmp_path / name
    images.save_png(arr, p)
    return str(p)


def test_architecture_read_from_weights(model_home):
    enc = encoders.load_encoder(resolution=112)
    assert enc.arch["patch_size"] == 14 and enc.arch["embed_dim"] == 64 and enc.arch["depth"] == 2
    assert enc.installed.verified is False
    tok = enc.encode([natural_image(50, 70)])[0]
    assert tok.patches.shape == (64, 64) and tok.grid == (8, 8)


def test_not_a_vit_refused():
    import torch

    with pytest.raises(ArtifactError, match="not a DINOv2"):
        encoders.build_vit({"w": torch.zeros(2)}, "vit_base_patch14_dinov2")


def test_identical_pair_is_zero_and_one(model_home, tmp_path):
    a = _write(tmp_path, "a.png", natural_image(seed=3))
    enc = encoders.load_encoder(resolution=112)
    res = score.Scorer(enc).score([Pair(a, a)])[0]
    f = res.record.features
    assert f["patch_mean"] == pytest.approx(0.0, abs=1e-6)
    assert f["cls_distance"] == pytest.approx(0.0, abs=1e-6)
    assert f["ssim_clean"] == pytest.approx(1.0, abs=1e-12)
    assert res.distance_map.shape == (8, 8)


def test_distances_grow_with_distortion(model_home, tmp_path):
    ref = natural_image(seed=4)
    a = _write(tmp_path, "ref.png", ref)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(ref.shape)
    pairs = [Pair(a, _write(tmp_path, f"s{i}.png", np.clip(ref + s * noise, 0, 1)))
             for i, s in enumerate([0.02, 0.08, 0.25])]
    enc = encoders.load_encoder(resolution=112)
    feats = [r.record.features for r in score.Scorer(enc).score(pairs)]
    pm = [f["patch_mean"] for f in feats]
    ss = [f["ssim_clean"] for f in feats]
    assert pm[0] < pm[1] < pm[2]
    assert ss[0] > ss[1] > ss[2]


def test_patch_mean_matches_manual_computation(model_home, tmp_path):
    ref = natural_image(seed=5)
    sus = np.clip(ref[:, ::-1] * 0.9, 0, 1)
    a, b = _write(tmp_path, "r.png", ref), _write(tmp_path, "s.png", sus)
    enc = encoders.load_encoder(resolution=112)
    rec = score.Scorer(enc, use_disk_cache=False).score([Pair(a, b)])[0].record
    # independent computation straight from the timm model
    import torch

    def toks(path):
        px = images.resize(images.load_image(path).pixels, 112, 112)
        x = (px - np.array(enc.spec.mean, np.float32)) / np.array(enc.spec.std, np.float32)
        with torch.no_grad():
            return enc.model.forward_features(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0, 1:]

    d = 1 - torch.nn.functional.cosine_similarity(toks(a), toks(b), dim=1)
    assert rec.features["patch_mean"] == pytest.approx(float(d.mean()), abs=1e-5)
    assert rec.features["patch_max"] == pytest.approx(float(d.max()), abs=1e-5)


def test_reference_tokens_computed_once(model_home, tmp_path, monkeypatch):
    ref = natural_image(seed=6)
    a = _write(tmp_path, "r.png", ref)
    sus = [_write(tmp_path, f"s{i}.png", np.clip(ref + 0.01 * i, 0, 1)) for i in range(3)]
    enc = encoders.load_encoder(resolution=112)
    calls = []
    orig = enc.encode
    monkeypatch.setattr(enc, "encode", lambda batch, **kw: calls.append(len(batch)) or orig(batch, **kw))
    score.Scorer(enc, use_disk_cache=False).score([Pair(a, s) for s in sus], batch_size=8)
    assert calls == [4]  # one batch: the reference once, then the three suspects
    # a second scorer finds the reference tokens in the disk cache
    calls.clear()
    s1 = score.Scorer(enc)
    s1.score([Pair(a, sus[0])])
    enc2 = encoders.load_encoder(resolution=112)
    calls2 = []
    orig2 = enc2.encode
    monkeypatch.setattr(enc2, "encode", lambda batch, **kw: calls2.append(len(batch)) or orig2(batch, **kw))
    score.Scorer(enc2).score([Pair(a, sus[1])])
    assert calls2 == [1]  # only the suspect: the reference came from the disk cache
    assert enc2.cache_path(images.load_image(a).sha256).exists()


def test_different_sizes_are_aligned(tmp_path):
    ref = natural_image(80, 100, seed=7)
    a = _write(tmp_path, "r.png", ref)
    b = _write(tmp_path, "s.png", images.resize(ref, 40, 50))
    rec = score.Scorer(None).score([Pair(a, b)])[0].record
    assert rec.ok and rec.features["ssim_clean"] > 0.7
    assert "resized 50x40 -> 100x80" in rec.details["steps"]["suspect"][0]


def test_bad_suspect_is_a_failure_record(tmp_path):
    a = _write(tmp_path, "r.png", natural_image())
    (tmp_path / "bad.png").write_bytes(b"garbage")
    out = score.Scorer(None).score([Pair(a, str(tmp_path / "bad.png")), Pair(a, a)])
    assert [r.record.status for r in out] == ["error", "ok"]
    assert "bad.png" in out[0].record.error["message"]


def test_jobs_give_identical_results(tmp_path):
    ref = natural_image(seed=8)
    a = _write(tmp_path, "r.png", ref)
    pairs = [Pair(a, _write(tmp_path, f"s{i}.png", np.clip(ref + 0.02 * i, 0, 1))) for i in range(4)]
    one = [r.record.features for r in score.Scorer(None, jobs=1).score(pairs)]
    two = [r.record.features for r in score.Scorer(None, jobs=2).score(pairs)]
    assert one == two
