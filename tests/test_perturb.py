"""fpx perturb: the alpha x JND bound after 8-bit rounding, keyed reproducibility, outputs and batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.anchored import jnd, perturb
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import UsageError

runner = CliRunner()


def _textured(h=96, w=128, seed=0):
    img = natural_image(h, w, seed).astype(np.float64)
    rng = np.random.default_rng(seed + 100)
    img[h // 2:, : w // 2] += rng.normal(0, 0.1, (h - h // 2, w // 2, 3))
    img[:8] = 0.0                       # black band: clipping at 0 and the largest JND
    img[-8:] = 1.0                      # white band: clipping at 255
    return images.decode(images.encode(np.clip(img, 0, 1), "PNG"), "x.png").pixels


def _assert_bound(clean, out_u8, strength, model):
    j = jnd.jnd_map(clean, model).astype(np.float64)
    d = np.abs(out_u8.astype(np.float64) - clean.astype(np.float64) * 255.0)
    assert np.all(d <= strength * j[..., None] + 1e-4), float((d / j[..., None]).max())
    return d, j


@pytest.mark.parametrize("model", ["chou-li", "namm"])
@pytest.mark.parametrize("strength", [0.2, 0.3, 1.0])
def test_bound_holds_on_every_pixel_after_rounding(model, strength):
    clean = _textured(seed=1)
    res = perturb.perturb(clean, strength=strength, jnd_model=model, key="k", psnr_floor=None)
    d, j = _assert_bound(clean, res.protected, strength, model)
    assert res.stats["max_delta_over_jnd"] <= strength + 1e-9
    assert res.stats["share_within_jnd"] == 1.0
    # keyed amplitude is floor(strength x JND) (the largest integer within the bound), where not clipped
    inside = (clean[..., 0] > 0.1) & (clean[..., 0] < 0.9) & (clean[..., 1] > 0.1) & (clean[..., 1] < 0.9) & \
             (clean[..., 2] > 0.1) & (clean[..., 2] < 0.9)
    np.testing.assert_array_equal(np.rint(d[..., 0][inside]), np.floor(strength * j[inside] + 1e-9))


def test_bound_holds_for_non_integer_input_levels():
    rng = np.random.default_rng(5)
    clean = np.clip(natural_image(64, 64, 2) + rng.uniform(-0.5, 0.5, (64, 64, 3)) / 255.0, 0, 1)  # 16-bit-like
    for method_key in ("a", "b"):
        res = perturb.perturb(clean, strength=0.2, key=method_key)
        _assert_bound(clean, res.protected, 0.2, "chou-li")


def test_quantize_within_rounds_toward_the_input_when_rounding_would_cross():
    x = np.array([[[100.0, 100.0, 100.4]]])
    t = np.array([[[101.6, 98.4, 101.0]]])
    q = perturb.quantize_within(x, t, np.array([[1.6]]))
    assert q.tolist() == [[[101, 99, 101]]]


def test_keyed_is_reproducible_and_keys_are_uncorrelated():
    clean = _textured(seed=2)
    a1 = perturb.perturb(clean, key="alpha").protected
    a2 = perturb.perturb(clean, key="alpha").protected
    b = perturb.perturb(clean, key="beta").protected
    np.testing.assert_array_equal(a1, a2)
    da = (a1.astype(float) - clean * 255)[8:-8]   # leave out the bands where clipping makes delta one-signed
    db = (b.astype(float) - clean * 255)[8:-8]
    corr = float(np.sum(da * db) / np.sqrt(np.sum(da * da) * np.sum(db * db)))
    # 40 x 64 independent cells: |corr| of two unrelated sign patterns is ~N(0, 1/sqrt(2560)) = 0.02
    assert abs(corr) < 0.08
    pa = perturb.keyed_pattern("alpha", 40, 40, cell=2)
    assert set(np.unique(pa)) == {-1.0, 1.0} and np.all(pa[::2, ::2] == pa[1::2, 1::2])
    assert abs(pa.mean()) < 0.2


def test_bad_parameters_are_usage_errors():
    clean = _textured()
    with pytest.raises(UsageError, match="did you mean keyed"):
        perturb.perturb(clean, method="keyd")
    with pytest.raises(UsageError, match="--strength"):
        perturb.perturb(clean, strength=0.05)
    with pytest.raises(UsageError, match="JND model"):
        perturb.perturb(clean, jnd_model="yang")


def test_cli_writes_png_and_sidecar_never_the_key(tmp_path):
    clean = _textured(seed=3)
    src = tmp_path / "clean.png"
    images.save_png(clean, src)
    before = src.read_bytes()
    out = tmp_path / "prot.png"
    res = runner.invoke(app, ["perturb", str(src), "-o", str(out), "--key", "s3cret-key", "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    side_txt = (tmp_path / "prot.png.json").read_text()
    side = json.loads(side_txt)
    assert "s3cret-key" not in side_txt and "s3cret-key" not in res.stdout
    assert side["key_id"] == perturb.key_id("s3cret-key") and side["method"] == "keyed"
    assert side["input"]["sha256"] == images.sha256_file(src)
    assert side["output"]["sha256"] == images.sha256_file(out) == rec["details"]["output_sha256"]
    assert side["max_delta_over_jnd"] <= 0.3 and side["psnr"] > 40
    loaded = images.load_image(out)
    _assert_bound(clean, images.to_uint8(loaded.pixels), 0.3, "chou-li")
    assert src.read_bytes() == before
    # never over the input
    res = runner.invoke(app, ["perturb", str(src), "-o", str(src), "--key", "k"])
    assert res.exit_code == 2 and src.read_bytes() == before
    # not a PNG name
    res = runner.invoke(app, ["perturb", str(src), "-o", str(tmp_path / "p.jpg")])
    assert res.exit_code == 2 and "PNG" in res.output


def test_cli_jnd_map_only(tmp_path):
    clean = _textured(seed=4)
    src = tmp_path / "c.png"
    images.save_png(clean, src)
    res = runner.invoke(app, ["perturb", str(src), "--jnd-map", str(tmp_path / "m.png"), "--jnd", "namm",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    pic = np.asarray(images.load_image(tmp_path / "m.png").pixels[..., 0] * 255).round()
    np.testing.assert_array_equal(pic, jnd.to_picture(jnd.jnd_map(clean, "namm")))
    assert not (tmp_path / "c_protected.png").exists()


def test_cli_batch_over_a_folder_continues_past_a_bad_file(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        images.save_png(_textured(seed=10 + i), d / f"im{i}.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = runner.invoke(app, ["perturb", str(d), "-o", str(tmp_path / "out"), "--key", "k", "--format", "jsonl"])
    assert res.exit_code == 3, res.output
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in recs] == ["error", "ok", "ok"]
    assert "broken.png" in recs[0]["error"]["message"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png", "im0.png.json", "im1.png",
                                                                    "im1.png.json"]


def test_adversarial_pushes_tokens_away_within_the_bound(model_home, tmp_path):
    from fingerprint_cli.anchored import encoders

    enc = encoders.load_encoder("dinov2-vitb14", resolution=56, device="cpu")
    clean = _textured(56, 56, seed=6)
    j = jnd.jnd_map(clean, "chou-li")
    bound = (1.0 * j).astype(np.float32)

    def dist(delta):
        a, b = enc.encode([clean, np.clip(clean + delta, 0, 1).astype(np.float32)])
        cos = np.sum(a.patches * b.patches, 1) / (np.linalg.norm(a.patches, axis=1) * np.linalg.norm(b.patches, axis=1))
        return float(np.mean(1 - cos))

    d1 = perturb.adversarial_delta(clean, bound, enc, steps=1, seed=0)
    d8 = perturb.adversarial_delta(clean, bound, enc, steps=8, seed=0)
    assert np.all(np.abs(d8) * 255 <= bound[..., None] + 1e-3)
    assert dist(d8) > dist(d1)
    src = tmp_path / "c.png"
    images.save_png(clean, src)
    res = runner.invoke(app, ["perturb", str(src), "-o", str(tmp_path / "adv.png"), "--method", "adversarial",
                              "--strength", "1.0", "--steps", "3", "--resolution", "56", "--format", "json"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "adv.png.json").read_text())
    assert side["method"] == "adversarial" and side["steps"] == 3 and side["encoder"] == "dinov2-vitb14"
    assert side["max_delta_over_jnd"] <= 1.0
    _assert_bound(clean, images.to_uint8(images.load_image(tmp_path / "adv.png").pixels), 1.0, "chou-li")


def test_psnr_floor_scales_delta_down_on_dark_images_and_keeps_the_bound():
    dark = images.decode(images.encode(natural_image(96, 128, 8) * 0.12, "PNG"), "d.png").pixels
    full = perturb.perturb(dark, key="d", psnr_floor=None)
    floored = perturb.perturb(dark, key="d", psnr_floor=40.0)
    assert full.stats["psnr"] < 40.0 and full.params["delta_scale"] == 1.0    # large JNDs on black
    assert floored.stats["psnr"] >= 40.0 and floored.params["delta_scale"] < 1.0
    _assert_bound(dark, floored.protected, 0.3, "chou-li")
    # same signs as the unscaled pattern where it moved
    d_full = full.protected.astype(float) - dark * 255
    d_fl = floored.protected.astype(float) - dark * 255
    moved = np.abs(d_fl) > 0.5
    assert moved.mean() > 0.5 and np.all(np.sign(d_fl[moved]) == np.sign(d_full[moved]))
