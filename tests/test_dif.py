"""Deep Image Fingerprints: correlation maths, residual caching, fitting on planted patterns, artifacts,
denoiser compatibility, CLI errors and exit codes. Tiny images, the weight-free Gaussian denoiser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import natural_image, planted as planted_trace, write_two_generator_corpus
from typer.testing import CliRunner

from fingerprint_cli import images
from fingerprint_cli.cli.app import app
from fingerprint_cli.dif import detect, extract
from fingerprint_cli.dif.baselines import average_pattern, log_spectrum
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import ResidualCache, compute, get_denoiser
from fingerprint_cli.errors import ArtifactError, InputError, UsageError

S = 48  # image side and crop


def planted(kind: int) -> np.ndarray:
    return planted_trace(kind, S)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    dirs = write_two_generator_corpus(tmp_path_factory.mktemp("dif"), S)
    return {k: str(v) for k, v in dirs.items()}


def paths(folder):
    return [str(p) for p in images.list_images(folder)]


@pytest.fixture(scope="module")
def fitted(corpus):
    return extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", crop=S, epochs=8,
                       denoiser="gaussian", batch_size=16, unet_width=8, test_fraction=0.25, lr=2e-3)


# ------------------------------------------------------------------ correlation maths
def test_rho_is_pearson_correlation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 16, 16, generator=g)
    f = torch.randn(3, 16, 16, generator=g) * 3 + 1
    a[2] = 0.5 * a[2] + 2 * f  # one strongly correlated
    got = detect.rho(a, f).numpy()
    want = [np.corrcoef(a[i].flatten().numpy(), f.flatten().numpy())[0, 1] for i in range(5)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[2] > 0.9


def _shifted_copy_and_noise():
    """A pattern f (3, 32, 32) and residuals r: f moved by (1, −2) px plus noise, and pure noise."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(3, 32, 32, generator=g)
    r = torch.stack([torch.roll(f, shifts=(1, -2), dims=(1, 2)) + 0.5 * torch.randn(3, 32, 32, generator=g),
                     torch.randn(3, 32, 32, generator=g)])
    return f, r


def test_max_shifted_rho_matches_explicit_shift_search_and_recovers_a_shift():
    f, r = _shifted_copy_and_noise()
    got = detect.max_shifted_rho(r, f, tolerance=2).numpy()
    want = [max(float(detect.rho(torch.roll(r[i], shifts=(dy, dx), dims=(1, 2))[None], f)[0])
                for dy in range(-2, 3) for dx in range(-2, 3)) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[0] > 0.8 and float(detect.rho(r[:1], f)[0]) < 0.2  # the plain ρ misses the shifted copy
    np.testing.assert_allclose(detect.max_shifted_rho(r, f, 0).numpy(), detect.rho(r, f).numpy())


def _half_rho(r, f, mask, dy, dx):
    """ρ over the pixels where ``mask`` is 1, with r rolled by (dy, dx): an explicit, loop-based reference."""
    a = detect.standardise(r.double()[None])[0]
    b = detect.standardise(f.double()[None])[0]
    moved = torch.roll(a, shifts=(-dy, -dx), dims=(1, 2))  # moved(x) = a(x + d)
    return float((moved * b * mask).sum() / (3 * mask.sum()))


def test_crossfit_search_matches_a_loop_reference_and_recovers_a_shift():
    f, r = _shifted_copy_and_noise()
    got = detect.shifted_rho(r, f, tolerance=2).numpy()
    m_a = detect.quadrant_mask(32, 32)
    assert float(m_a.sum()) == 512 and float(m_a[0, 0]) == 1 and float(m_a[0, 31]) == 0
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    for i in range(2):
        on_a = [_half_rho(r[i], f, m_a, *d) for d in shifts]
        on_b = [_half_rho(r[i], f, 1 - m_a, *d) for d in shifts]
        d_a, d_b = int(np.argmax(on_a)), int(np.argmax(on_b))
        assert got[i] == pytest.approx((on_b[d_a] + on_a[d_b]) / 2, abs=1e-5)
    assert got[0] > 0.8 and abs(got[1]) < 0.2
    np.testing.assert_allclose(detect.shifted_rho(r, f, 0).numpy(), detect.rho(r, f).numpy())


def test_crossfit_search_is_unbiased_on_unrelated_residuals_where_the_max_is_not():
    """On residuals independent of F the plain ρ is centred on 0; the max over 9 shifts is lifted by about
    1.5 standard deviations, the cross-fitted statistic is not (what keeps aligned accuracy)."""
    g = torch.Generator().manual_seed(7)
    f = torch.randn(3, 32, 32, generator=g)
    noise = torch.randn(400, 3, 32, 32, generator=g)
    plain = detect.rho(noise, f).numpy()
    sd, se = plain.std(), plain.std() / np.sqrt(len(plain))
    mx = detect.max_shifted_rho(noise, f, 1).numpy()
    cf = detect.shifted_rho(noise, f, 1).numpy()
    assert mx.mean() > 1.0 * sd  # the maximum of 9 null correlations
    assert abs(cf.mean()) < 4 * se * 1.5  # centred like the plain ρ (a little wider: half-image ρ's)
    # and a signal at the zero shift keeps (almost) its aligned value
    carrier = 0.2 * detect.standardise(f[None]) + noise[:50]
    assert float(detect.shifted_rho(carrier, f, 1).mean()) == pytest.approx(float(detect.rho(carrier, f).mean()), abs=0.02)


def test_scores_and_decision_follow_the_calibration():
    fp = Fingerprint("x", "dif", torch.zeros(3, 16, 16), {"mu_real": 0.01, "mu_gen": 0.05, "sigma_real": 0.01})
    rho = np.array([0.0, 0.029, 0.031, 0.2])
    assert detect.is_generated(fp, rho).tolist() == [False, False, True, True]
    np.testing.assert_allclose(detect.scores(fp, rho), [-1.0, 1.9, 2.1, 19.0])
    flipped = Fingerprint("x", "dif", torch.zeros(3, 16, 16), {"mu_real": 0.05, "mu_gen": 0.01, "sigma_real": 0.01})
    assert detect.scores(flipped, np.array([0.0]))[0] > 0  # oriented toward the generator
    assert detect.auc([3, 4, 5], [0, 1, 2]) == 1.0 and detect.auc([1], [1]) == 0.5


# ------------------------------------------------------------------ residuals and cache
def test_gaussian_residual_is_image_minus_blur():
    from scipy.ndimage import gaussian_filter

    x = natural_image(S, S, seed=3)
    r = get_denoiser("gaussian").residual(torch.from_numpy(x.transpose(2, 0, 1))[None])[0].numpy()
    want = x.transpose(2, 0, 1) - np.stack([gaussian_filter(x[..., c], 1.0, mode="mirror", truncate=3.0)
                                            for c in range(3)])
    np.testing.assert_allclose(r[:, 4:-4, 4:-4], want[:, 4:-4, 4:-4], atol=1e-5)


def test_cached_residuals_equal_recomputed_and_skip_decoding(corpus, tmp_path, monkeypatch):
    den = get_denoiser("gaussian")
    ps = paths(corpus["gen"])[:5]
    fresh, info = compute(ps, den, S)
    cache = ResidualCache(disk=tmp_path / "cache")
    first, _ = compute(ps, den, S, cache=cache)
    assert cache.misses == 5 and cache.hits == 0
    np.testing.assert_array_equal(first, fresh)

    def no_decode(*a, **k):
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(images, "load_image", no_decode)
    again, info2 = compute(ps, den, S, cache=cache)
    np.testing.assert_array_equal(again, fresh)
    assert cache.hits == 5 and [i["sha256"] for i in info2] == [i["sha256"] for i in info]
    disk_only = ResidualCache(disk=tmp_path / "cache")  # a new process: reads the .npy files back
    from_disk, _ = compute(ps, den, S, cache=disk_only)
    np.testing.assert_array_equal(from_disk, fresh)
    assert disk_only.hits == 5


def test_correlations_with_cache_equal_without(fitted, corpus):
    ps = paths(corpus["real"])[:4] + paths(corpus["gen"])[:4]
    cache = ResidualCache()
    a = detect.correlations(fitted, ps, cache=cache)
    b = detect.correlations(fitted, ps, cache=cache)
    c = detect.correlations(fitted, ps)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-7)


# ------------------------------------------------------------------ fitting
def test_dif_fingerprint_separates_planted_pattern(fitted):
    fp = fitted
    assert fp.meta["mu_gen"] > fp.meta["mu_real"]
    tg = [d["path"] for d in fp.meta["test"]["generated"]]
    tr = [d["path"] for d in fp.meta["test"]["real"]]
    assert len(tg) == 4 and len(tr) == 4 and all(d["sha256"] for d in fp.meta["test"]["generated"])
    train = {d["path"] for d in fp.meta["train"]["generated"]}
    assert not train & set(tg)  # disjoint split
    cg, cr = detect.correlations(fp, tg), detect.correlations(fp, tr)
    assert detect.is_generated(fp, cg).all() and not detect.is_generated(fp, cr).any()
    assert detect.scores(fp, cg).min() > 3 > detect.scores(fp, cr).max()
    # the learned fingerprint correlates with the planted pattern itself
    planted_t = torch.from_numpy(planted(0).transpose(2, 0, 1).copy())
    assert abs(float(detect.rho(planted_t[None], fp.pattern)[0])) > 0.3


def test_one_pixel_shift_is_tolerated(fitted, corpus, tmp_path):
    tg = [d["path"] for d in fitted.meta["test"]["generated"]]
    shifted = []
    for i, p in enumerate(tg):
        px = images.load_image(p).pixels
        out = tmp_path / f"s{i}.png"
        moved = np.concatenate([px[:, 1:], px[:, -1:]], axis=1)  # content moves 1 px left, edge repeated
        images.save_png(moved, out)
        shifted.append(str(out))
    assert detect.is_generated(fitted, detect.correlations(fitted, shifted)).all()
    plain = Fingerprint(fitted.name, fitted.method, fitted.pattern, dict(fitted.meta, tolerance=0))
    assert detect.correlations(plain, shifted).mean() < detect.correlations(fitted, shifted).mean() / 2


@pytest.mark.parametrize("method", ["average", "spectral"])
def test_baselines_separate_planted_pattern(corpus, method):
    fp = extract.fit(paths(corpus["gen"]), paths(corpus["real"]), name="gen", method=method, crop=S,
                     denoiser="gaussian", test_fraction=0.25)
    tg = [d["path"] for d in fp.meta["test"]["generated"]]
    tr = [d["path"] for d in fp.meta["test"]["real"]]
    assert detect.is_generated(fp, detect.correlations(fp, tg)).all()
    assert not detect.is_generated(fp, detect.correlations(fp, tr)).any()


def test_average_baseline_is_mean_residual_and_spectrum_is_shift_invariant():
    g = torch.Generator().manual_seed(2)
    gen = torch.randn(6, 3, 16, 16, generator=g)
    np.testing.assert_allclose(average_pattern(gen, gen[:2]).numpy(), gen.numpy().mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(log_spectrum(gen).numpy(), log_spectrum(torch.roll(gen, 3, dims=3)).numpy(),
                               atol=1e-4)


# ------------------------------------------------------------------ artifacts
def test_fingerprint_round_trip(fitted, tmp_path):
    out = tmp_path / "gen.fpx.safetensors"
    digest = fitted.save(out)
    assert digest == images.sha256_file(out)
    back = Fingerprint.load(out)
    assert back.name == "gen" and back.method == "dif" and back.crop == S
    torch.testing.assert_close(back.pattern, fitted.pattern)
    assert back.meta["test"] == fitted.meta["test"] and back.meta["mu_gen"] == fitted.meta["mu_gen"]
    assert back.meta["denoiser"]["sha256"] == get_denoiser("gaussian").sha256


def test_non_fingerprint_files_are_refused(tmp_path):
    from fingerprint_cli import artifacts

    other = tmp_path / "weights.safetensors"
    artifacts.write_tensors(other, {"w": torch.zeros(2)}, {})
    junk = tmp_path / "junk.fpx.safetensors"
    junk.write_text("not a safetensors file")
    for p in (other, junk, tmp_path / "missing.fpx.safetensors"):
        with pytest.raises(InputError) as exc:
            Fingerprint.load(p)
        assert str(p) in str(exc.value)


def test_other_denoiser_is_flagged_and_refused(fitted):
    other = Fingerprint("b", "dif", fitted.pattern, dict(fitted.meta, denoiser={"id": "gaussian-sigma2",
                                                                                 "sha256": "ab" * 32}))
    assert "different denoisers" in fitted.compatible_with(other)
    assert fitted.compatible_with(Fingerprint("c", "dif", fitted.pattern, dict(fitted.meta))) is None
    small = Fingerprint("d", "dif", fitted.pattern[:, :32, :32], dict(fitted.meta, crop=32))
    assert "crop" in fitted.compatible_with(small)
    with pytest.raises(ArtifactError, match="denoiser"):
        detect.correlations(other, [fitted.meta["test"]["real"][0]["path"]])


def test_bundled_dncnn_matches_its_pin():
    from fingerprint_cli import artifacts

    spec = artifacts.resolve("dncnn-fpx")
    assert spec.bundled and spec.licence
    assert artifacts.verify("dncnn-fpx")["verified"] is True
    den = get_denoiser("dncnn")
    assert den.sha256 == spec.sha256
    x = torch.from_numpy(natural_image(32, 32, seed=4).transpose(2, 0, 1))[None]
    noise = 10 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    r = den.residual(x + noise)
    assert r.shape == x.shape and float(((r - noise) ** 2).mean()) < float((noise ** 2).mean())


def test_unknown_denoiser_suggests_a_name():
    with pytest.raises(UsageError, match="did you mean 'dncnn'"):
        get_denoiser("dncn")


# ------------------------------------------------------------------ CLI
def run(args):
    return CliRunner().invoke(app, args)


def test_cli_extract_and_detect(corpus, tmp_path):
    out = tmp_path / "g.fpx.safetensors"
    plot = tmp_path / "g.png"
    res = run(["dif-extract", "--generated", corpus["gen"], "--real", corpus["real"], "-o", str(out),
               "--crop", str(S), "--epochs", "3", "--denoiser", "gaussian", "--batch-size", "16",
               "--plot", str(plot), "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert rec["details"]["name"] == "gen" and rec["features"]["test_auc"] == 1.0
    assert images.load_image(plot).width == 2 * S + 8
    out2 = tmp_path / "h.fpx.safetensors"
    res = run(["dif-extract", "--generated", corpus["gen2"], "--real", corpus["real"], "-o", str(out2),
               "--crop", str(S), "--method", "average", "--denoiser", "gaussian", "--format", "json"])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    imgs = [paths(corpus["gen"])[0], paths(corpus["gen2"])[0], paths(corpus["real"])[0], str(bad)]
    res = run(["detect", str(out), str(out2), *imgs, "--format", "jsonl"])
    assert res.exit_code == 3, res.output
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in recs] == ["ok", "ok", "ok", "error"]
    assert [r["decision"]["label"] for r in recs[:3]] == ["gen", "gen2", "not-detected"]
    assert str(bad) in recs[3]["error"]["message"]
    res = run(["detect", str(out), paths(corpus["gen"])[1], "--format", "json"])
    assert res.exit_code == 0
    rec = json.loads(res.stdout)[0]
    assert rec["decision"]["generated"] is True and rec["features"]["score"] > 3
    # --output + --resume: the second run keeps the first run's records and adds only the new image
    jl = tmp_path / "det.jsonl"
    assert run(["detect", str(out), imgs[0], "-o", str(jl), "-q"]).exit_code == 0
    res = run(["detect", str(out), imgs[0], imgs[2], "-o", str(jl), "--resume", "-q"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert sorted(r["inputs"]["image"]["path"] for r in lines) == sorted([imgs[0], imgs[2]])


@pytest.mark.parametrize("case", ["empty", "one", "crop", "corrupt", "notfp"])
def test_cli_clear_errors(corpus, tmp_path, case, monkeypatch):
    gen, real = corpus["gen"], corpus["real"]
    extra = ["--crop", str(S)]
    if case == "empty":
        gen = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif case == "one":
        (tmp_path / "one").mkdir()
        images.save_png(natural_image(S, S), tmp_path / "one" / "a.png")
        gen = str(tmp_path / "one")
    elif case == "crop":
        extra = ["--crop", "64"]
    elif case == "corrupt":
        (tmp_path / "c").mkdir()
        for i, p in enumerate(paths(corpus["gen"])[:3]):
            (tmp_path / "c" / f"{i}.png").write_bytes(open(p, "rb").read())
        (tmp_path / "c" / "broken.png").write_bytes(b"garbage")
        gen = str(tmp_path / "c")
    if case == "notfp":
        from fingerprint_cli import fingerprints

        monkeypatch.setattr(fingerprints, "LIBRARY_DIR", tmp_path)  # no shipped library to fall back on
        res = run(["detect", paths(corpus["gen"])[0], paths(corpus["gen"])[1]])
        assert res.exit_code == 2 and "fingerprint" in res.output
        txt = tmp_path / "x.safetensors"
        txt.write_text("hello")
        res = run(["detect", str(txt), paths(corpus["gen"])[1]])
        assert res.exit_code == 2 and str(txt) in res.output
        return
    out = tmp_path / "o.fpx.safetensors"
    res = run(["dif-extract", "--generated", gen, "--real", real, "-o", str(out), "--denoiser", "gaussian",
               "--epochs", "1", *extra])
    assert res.exit_code == 2, res.output
    msg = res.output.strip().splitlines()[-1]
    assert msg.startswith("fpx: error:")
    want = {"empty": "0 image", "one": "1 image", "crop": "smaller than the 64x64 crop",
            "corrupt": "broken.png"}[case]
    assert want in msg
    assert not out.exists()


def test_deepen_makes_a_17_layer_dncnn_that_computes_the_shallow_one():
    """scripts/train_denoiser.py --deepen-from: the grown net starts exactly where the shallow one is."""
    import importlib.util
    from pathlib import Path

    from fingerprint_cli.dif.denoise import DnCNN

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_denoiser.py"
    spec = importlib.util.spec_from_file_location("train_denoiser", path)
    td = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(td)
    torch.manual_seed(0)
    shallow, deep = DnCNN(depth=5, width=16), DnCNN(depth=17, width=16)
    x = torch.rand(4, 3, 24, 24)
    shallow.train()
    shallow(x)  # non-trivial running statistics in the copied batch norms
    td.deepen(shallow, deep, x)
    shallow.eval()
    deep.eval()
    with torch.no_grad():
        want, got = shallow(x), deep(x)
    assert float(want.abs().mean()) > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    with pytest.raises(SystemExit):
        td.deepen(deep, DnCNN(depth=5, width=16), x)  # cannot shrink
