"""Robust fingerprint fitting (issue 15): augmentations, per-(image, augmentation) residual cache, view-aware
training and calibration, the --profile option. Tiny images, the weight-free Gaussian denoiser."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import natural_image
from PIL import Image
from typer.testing import CliRunner

from fingerprint_cli import images
from fingerprint_cli.cli.app import app
from fingerprint_cli.dif import augment, detect, extract
from fingerprint_cli.dif.augment import Augmentation
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import ResidualCache, compute, compute_views, get_denoiser
from fingerprint_cli.errors import InputError, UsageError

S = 48


def blocky(seed: int) -> np.ndarray:
    """A colour pattern of 8-px blocks: low frequency, so it survives JPEG and mild rescaling."""
    rng = np.random.default_rng(seed)
    tile = rng.normal(0, 1, (S // 8, S // 8, 3))
    return np.kron(tile, np.ones((8, 8, 1)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    gen, real = root / "gen", root / "real"
    gen.mkdir()
    real.mkdir()
    pat = 0.1 * blocky(7)
    for i in range(16):
        images.save_png(np.clip(natural_image(S, S, seed=i) + pat, 0, 1), gen / f"g{i:02d}.png")
        images.save_png(natural_image(S, S, seed=200 + i), real / f"r{i:02d}.png")
    return {"gen": str(gen), "real": str(real)}


def paths(folder):
    return [str(p) for p in images.list_images(folder)]


# ------------------------------------------------------------------ augmentations
def test_identity_view_is_the_centre_crop():
    px = natural_image(60, 70, seed=1)
    out = augment.apply(px, augment.IDENTITY, 48)
    np.testing.assert_array_equal(out, px[6:54, 11:59])


def test_jpeg_view_matches_pillow_directly():
    px = natural_image(S, S, seed=2)
    out = augment.apply(px, Augmentation(quality=70), S)
    buf = io.BytesIO()
    Image.fromarray(images.to_uint8(px)).save(buf, format="JPEG", quality=70)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert np.abs(out - px).mean() > 1e-3  # it did recompress


def test_rescaled_view_matches_resizing_the_whole_image():
    px = natural_image(96, 96, seed=3)
    out = augment.apply(px, Augmentation(scale=0.75), 48)
    full = np.clip(images.resize(px, 72, 72), 0, 1)
    ref = full[12:60, 12:60]
    assert out.shape == (48, 48, 3)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_downscale_is_clamped_to_what_the_image_allows_and_small_images_are_refused():
    px = natural_image(S, S, seed=4)
    # a crop-sized image cannot be shrunk: the view is the image itself
    np.testing.assert_array_equal(augment.apply(px, Augmentation(scale=0.5), S), px)
    with pytest.raises(InputError, match="smaller than the 64x64 crop"):
        augment.apply(px, augment.IDENTITY, 64, "small.png")


def test_views_are_fixed_per_image_and_seed_and_follow_the_robust_bounds():
    a = augment.draw_views("robust", "abc", seed=0, views=50)
    assert a == augment.draw_views("robust", "abc", seed=0, views=50)
    assert a != augment.draw_views("robust", "abd", seed=0, views=50)
    assert a != augment.draw_views("robust", "abc", seed=1, views=50)
    q = [v.quality for v in a if v.quality is not None]
    s = [v.scale for v in a if v.scale != 1.0]
    assert q and all(60 <= x <= 100 for x in q) and len(q) < 50      # some views are not recompressed
    assert s and all(0.5 <= x <= 1.5 for x in s) and len(s) < 50
    assert augment.draw_views("plain", "abc", seed=0) == [augment.IDENTITY]
    assert len(augment.draw_views("robust", "abc", seed=0)) == augment.PROFILES["robust"].views
    assert {v.id for v in augment.draw_views("mixed", "x", 0, 40)} <= {"none", "q75", "q50", "s0.500"}


def test_unknown_profile_suggests_the_close_one():
    with pytest.raises(UsageError, match="did you mean 'robust'"):
        augment.get_profile("robus")


# ------------------------------------------------------------------ residual cache per (image, augmentation)
def test_view_residuals_equal_direct_computation_and_are_cached_per_augmentation(corpus, tmp_path, monkeypatch):
    den = get_denoiser("gaussian")
    ps = paths(corpus["gen"])[:4]
    vs = [augment.IDENTITY, Augmentation(quality=80), Augmentation(scale=1.3, quality=65)]
    cache = ResidualCache(disk=tmp_path / "c")
    r, infos, views = compute_views(ps, lambda sha: vs, den, S, cache=cache)
    assert r.shape == (4, 3, 3, S, S) and views == [vs] * 4
    for i, p in enumerate(ps):
        px = images.load_image(p).pixels
        for k, v in enumerate(vs):
            x = torch.from_numpy(augment.apply(px, v, S).transpose(2, 0, 1)[None].copy())
            np.testing.assert_allclose(r[i, k], den.residual(x)[0].numpy(), atol=1e-6)
    # the identity view shares the plain residual's key: the plain compute finds it
    plain, _ = compute(ps, den, S, cache=cache)
    np.testing.assert_array_equal(plain, r[:, 0])
    # a fresh cache on the same folder: nothing is decoded again
    monkeypatch.setattr(images, "load_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    again = ResidualCache(disk=tmp_path / "c")
    r2, _, _ = compute_views(ps, lambda sha: vs, den, S, cache=again)
    np.testing.assert_array_equal(r, r2)
    assert again.misses == 0 and again.hits == 12
    # another augmentation is a different key
    assert again.get(infos[0]["sha256"], den.sha256, S, aug="q81") is None


def test_bad_images_are_reported_or_raised(corpus, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    den = get_denoiser("gaussian")
    with pytest.raises(InputError):
        compute_views([str(bad)], lambda sha: [augment.IDENTITY], den, S)
    seen = []
    r, infos, _ = compute_views([str(bad)] + paths(corpus["gen"])[:1], lambda sha: [augment.IDENTITY], den, S,
                                on_error=lambda p, e: seen.append(p))
    assert seen == [str(bad)] and r.shape[0] == 1 and len(infos) == 1


# ------------------------------------------------------------------ training and calibration with views
def test_view_training_takes_as_many_steps_as_the_plain_fit():
    g = torch.randn(6 * 2, 3, 16, 16)
    r = torch.randn(6 * 2, 3, 16, 16)
    _, plain = extract.train_dif(g[::2], r[::2], epochs=3, seed=0, batch_size=4, width=4, depth=2)
    _, views = extract.train_dif(g, r, epochs=3, seed=0, batch_size=4, width=4, depth=2, views=2)
    assert plain["steps"] == views["steps"] == 3 * 3
    with pytest.raises(ValueError, match="whole sets"):
        extract.train_dif(g[:5], r, epochs=1, seed=0, views=2)


def test_average_calibration_leaves_out_every_view_of_the_image():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 3, 8, 8)).astype(np.float32)
    rg = np.repeat(base, 2, axis=0) + 0.01 * rng.normal(size=(10, 3, 8, 8)).astype(np.float32)
    rr = rng.normal(size=(6, 3, 8, 8)).astype(np.float32)
    fp = Fingerprint("g", "average", torch.from_numpy(rg.mean(0)), {"tolerance": 0, "search": "crossfit"})
    cg, _ = extract._loo_correlations(fp, rg, rr, views=2)
    # brute force: image i's two views against the mean of the other images' views
    for i in range(10):
        keep = [j for j in range(10) if j // 2 != i // 2]
        ref = detect.rho(torch.from_numpy(rg[i:i + 1]), torch.from_numpy(rg[keep].mean(0)))[0]
        assert cg[i] == pytest.approx(float(ref), abs=1e-5)
    # the per-view leave-one-out would keep the twin view in and inflate μ_gen
    cg1, _ = extract._loo_correlations(fp, rg, rr, views=1)
    assert cg1.mean() > cg.mean() + 0.1


@pytest.fixture(scope="module")
def robust_fp(corpus):
    return extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", crop=S, method="average",
                       denoiser="gaussian", test_fraction=0.25, profile="robust", views=3)


def test_robust_dif_fit_runs_with_views(corpus):
    fp = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", crop=S, epochs=2,
                     denoiser="gaussian", batch_size=8, unet_width=4, test_fraction=0.25, profile="robust",
                     views=2)
    assert fp.meta["steps"] == 2 * 3 and fp.meta["augment"]["views"] == 2
    assert fp.pattern.shape == (3, S, S) and torch.isfinite(fp.pattern).all()


def test_robust_fit_records_its_views_and_detects_recompressed_images(robust_fp, corpus, tmp_path):
    fp = robust_fp
    a = fp.meta["augment"]
    assert a["profile"] == "robust" and a["views"] == 3
    assert a["generated"]["views"] == 3 * fp.meta["counts"]["train_generated"]
    assert a["generated"]["jpeg"] > 0
    tg = [d["path"] for d in fp.meta["test"]["generated"]]
    tr = [d["path"] for d in fp.meta["test"]["real"]]
    out = tmp_path / "jpeg"
    out.mkdir()
    jp = {}
    for cls, ps in (("g", tg), ("r", tr)):
        jp[cls] = []
        for p in ps:
            q = out / f"{cls}_{len(jp[cls])}.jpg"
            q.write_bytes(images.encode(images.load_image(p).pixels, "JPEG", quality=70))
            jp[cls].append(str(q))
    for gt, rt in ((tg, tr), (jp["g"], jp["r"])):
        cg, cr = detect.correlations(fp, gt), detect.correlations(fp, rt)
        assert detect.auc(cg, cr) == 1.0
        assert detect.is_generated(fp, cg).mean() + (1 - detect.is_generated(fp, cr).mean()) >= 1.5
    # the artifact keeps the profile through save / load
    fp.save(tmp_path / "r.fpx.safetensors")
    assert Fingerprint.load(tmp_path / "r.fpx.safetensors").meta["augment"]["profile"] == "robust"


def test_plain_profile_is_the_unaugmented_fit(corpus):
    kw = dict(name="gen", crop=S, epochs=3, denoiser="gaussian", batch_size=16, unet_width=8, test_fraction=0.25,
              method="average")
    a = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), profile="plain", **kw)
    b = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), profile="robust", views=2, **kw)
    assert a.meta["augment"] == {"profile": "plain", "views": 1}
    rg, _ = compute([d["path"] for d in a.meta["train"]["generated"]], get_denoiser("gaussian"), S)
    torch.testing.assert_close(a.pattern, torch.from_numpy(rg).mean(0))
    assert not torch.allclose(a.pattern, b.pattern)


def test_cli_profile_option(corpus, tmp_path):
    out = tmp_path / "g.fpx.safetensors"
    res = CliRunner().invoke(app, ["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"],
                                   "-o", str(out), "--crop", str(S), "--epochs", "2", "--denoiser", "gaussian",
                                   "--method", "average", "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Fingerprint.load(out).meta["augment"]["profile"] == extract.DEFAULT_PROFILE
    assert f'"profile": "{extract.DEFAULT_PROFILE}"' in res.stdout  # the default, in the record
    res = CliRunner().invoke(app, ["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"],
                                   "-o", str(out), "--crop", str(S), "--denoiser", "gaussian", "--method", "average",
                                   "--profile", "robust", "--views", "3", "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Fingerprint.load(out).meta["augment"] == {**Fingerprint.load(out).meta["augment"], "profile": "robust",
                                                     "views": 3}
    res = CliRunner().invoke(app, ["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"],
                                   "-o", str(tmp_path / "x.fpx.safetensors"), "--crop", str(S), "--profile",
                                   "robustt", "--denoiser", "gaussian", "--quiet"])
    flat = " ".join(res.output.replace("│", " ").split())  # the message as read, whatever the box's wrapping
    assert res.exit_code == 2 and "did you mean 'robust'" in flat and "format-matched" in flat
