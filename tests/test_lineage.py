"""fpx lineage — the pure logic, on a planted-pattern testbed with simple stand-in fingerprints.

The stand-in fingerprint is Marra et al.'s average residual (residual = image − Gaussian blur), fitted
here in a few lines so these tests do not depend on the DIF extractor; test_lineage_cli.py runs the same
testbed through the real fingerprint code and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import write_traced_set
from fingerprint_cli import images, lineage
from fingerprint_cli.errors import UsageError

S = 48


def planted(seed: int, tile: int = 8) -> np.ndarray:
    """A generator trace: a random tile×tile pattern repeated over the image (an upsampler's grid)."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((tile, tile, 3)).astype(np.float32)
    return np.tile(t, (S // tile, S // tile, 1))


def patterns() -> dict[str, np.ndarray]:
    parent = planted(100)
    other = planted(101)
    child = parent + 0.35 * planted(102)            # parent + a small change
    grandchild = child + 0.35 * planted(103)
    return {"parent": parent, "child": child, "grandchild": grandchild, "other": other,
            "stranger": planted(104)}


def residual(px: np.ndarray) -> np.ndarray:
    return px - gaussian_filter(px, sigma=(1.0, 1.0, 0))


def rho(res: np.ndarray, pat: np.ndarray) -> float:
    a = (res - res.mean()) / res.std()
    b = (pat - pat.mean()) / pat.std()
    return float((a * b).mean())


@dataclass
class FakeFP:
    name: str
    pattern: np.ndarray                      # (3, S, S)
    meta: dict = field(default_factory=dict)
    method: str = "average"
    denoiser: str = "gaussian"

    def compatible_with(self, other):
        if other.denoiser != self.denoiser:
            return f"denoiser {self.denoiser} vs {other.denoiser}"
        return None


def write_set(folder: Path, pat: np.ndarray | None, n: int, seed0: int, amp: float = 0.04) -> list[str]:
    return write_traced_set(folder, pat, n, seed0, S, amp)


def entries(paths):
    return [{"path": p, "sha256": images.sha256_file(p)} for p in paths]


def fit_fake(name, gen_train, real_train, gen_test, real_test, denoiser="gaussian") -> FakeFP:
    res = [residual(images.load_image(p).pixels) for p in gen_train]
    pat = np.mean(res, axis=0)
    fp = FakeFP(name, pat.transpose(2, 0, 1).copy(), denoiser=denoiser)
    mu_gen = float(np.mean([rho(r, pat) for r in res]))
    mu_real = float(np.mean([rho(residual(images.load_image(p).pixels), pat) for p in real_train]))
    fp.meta = {"mu_gen": mu_gen, "mu_real": mu_real, "crop": S, "denoiser": {"id": denoiser},
               "train": {"generated": entries(gen_train), "real": entries(real_train)},
               "test": {"generated": entries(gen_test), "real": entries(real_test)}}
    return fp


def fake_correlate(calls):
    def correlate(fp, paths):
        calls.append((fp.name, list(paths)))
        pat = fp.pattern.transpose(1, 2, 0)
        return np.array([rho(residual(images.load_image(p).pixels), pat) for p in paths])
    return correlate


def fake_grid_correlate(fp, paths, period=lineage.DEFAULT_PERIOD):
    res = [residual(images.load_image(p).pixels).transpose(2, 0, 1) for p in paths]
    sign = 1.0 if fp.meta["mu_gen"] >= fp.meta["mu_real"] else -1.0
    return lineage.grid_rho(res, fp.pattern, period, sign)


def fake_is_generated(fp, r):
    r = np.asarray(r)
    return np.abs(r - fp.meta["mu_gen"]) < np.abs(r - fp.meta["mu_real"])


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage-bed")
    pats = patterns()
    real_train = write_set(root / "real_train", None, 8, 9000)
    real_test = write_set(root / "real_test", None, 10, 9500)
    fps, sets = [], {}
    for k, (name, pat) in enumerate(pats.items()):
        tr = write_set(root / name / "train", pat, 8, 1000 * (k + 1))
        te = write_set(root / name / "test", pat, 10, 1000 * (k + 1) + 500)
        sets[name] = (tr, te)
        fps.append(fit_fake(name, tr, real_train, te, real_test))
    return {"root": root, "fps": fps, "sets": sets, "real_train": real_train, "real_test": real_test}


def run_analyse(fps, calls=None, **kw):
    calls = [] if calls is None else calls
    paths = [f"{fp.name}.fpx.safetensors" for fp in fps]
    kw.setdefault("grid_correlate", lambda fp, ps: fake_grid_correlate(fp, ps, kw.get("period", lineage.DEFAULT_PERIOD)))
    return lineage.analyse(fps, paths, ["0" * 64] * len(fps), correlate=fake_correlate(calls),
                           is_generated=fake_is_generated, image_sha256=images.sha256_file, **kw)


def test_planted_families_recovered(testbed):
    res = run_analyse(testbed["fps"])
    assert res.clustering.families == [["parent", "child", "grandchild"], ["other"], ["stranger"]]
    n = len(res.names)
    # every fingerprint detects its own held-out images; unrelated pairs sit near chance
    assert all(res.accuracy[i, i] >= 0.9 for i in range(n))
    ip, io = res.names.index("parent"), res.names.index("other")
    assert res.accuracy[ip, io] < 0.7 and res.accuracy[io, ip] < 0.7
    assert res.relatedness[ip, res.names.index("child")] > 0.6
    # the evidence names both directions, in the documented format
    texts = [lk["text"] for lk in res.links]
    assert any(t.startswith("child ~ parent: ") and "cross-detection" in t for t in texts)
    # fingerprint correlation is high within the family, low across (shared image content keeps it above 0)
    ic = res.names.index("child")
    assert res.fp_correlation[ip, ic] > 0.6 and abs(res.fp_correlation[ip, io]) < 0.4


def test_matrix_uses_only_held_out_images(testbed, tmp_path):
    fps = testbed["fps"]
    calls = []
    # --images for "child" points at a folder that mixes parent's TRAINING images with child's test images
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in testbed["sets"]["parent"][0] + testbed["sets"]["child"][1]:
        (mixed / ("x" + Path(p).name if "parent" in p else Path(p).name)).write_bytes(Path(p).read_bytes())
    res = run_analyse(fps, calls, images={"child": str(mixed)})
    train_hashes = {fp.name: {e["sha256"] for e in fp.meta["train"]["generated"] + fp.meta["train"]["real"]}
                    for fp in fps}
    for name, paths in calls:  # no fingerprint ever saw one of its own training images
        assert not ({images.sha256_file(p) for p in paths} & train_hashes[name])
    ip, ic = res.names.index("parent"), res.names.index("child")
    assert res.n_excluded[ip, ic] == 8 and res.n_generated[ip, ic] == 10
    assert res.n_excluded[ic, ic] == 0 and res.n_generated[ic, ic] == 18
    assert res.test_sources["child"] == str(mixed) and res.test_sources["parent"] == "artifact"
    # default test split: exactly the artifact's recorded held-out images
    assert res.n_generated[ip, ip] == 10 and res.n_real[ip, ip] == 10


def test_clustering_deterministic_and_order_independent(testbed):
    fps = testbed["fps"]
    a = run_analyse(fps)
    b = run_analyse(fps)
    assert a.clustering.families == b.clustering.families
    assert np.array_equal(a.accuracy, b.accuracy, equal_nan=True)
    assert a.clustering.linkage == b.clustering.linkage
    rev = run_analyse(list(reversed(fps)))
    canon = lambda fams: sorted(sorted(f) for f in fams)
    assert canon(rev.clustering.families) == canon(a.clustering.families)


def test_cluster_threshold_and_linkage():
    names = ["a", "b", "c", "d"]
    acc = np.array([[1.0, 0.9, 0.55, 0.5],
                    [0.88, 1.0, 0.5, 0.52],
                    [0.5, 0.55, 1.0, 0.74],
                    [0.5, 0.5, 0.70, 1.0]])
    rel = lineage.relatedness(acc)
    assert np.allclose(rel, rel.T) and np.allclose(np.diag(rel), 1)
    assert rel[0, 1] == pytest.approx((0.89 - 0.5) / 0.5)
    assert rel[2, 3] == pytest.approx((0.72 - 0.5) / 0.5)
    # c-d mean accuracy 72% < 75%: apart at the default threshold, together at a looser one
    assert lineage.cluster(names, rel).families == [["a", "b"], ["c"], ["d"]]
    assert lineage.cluster(names, rel, threshold=0.6).families == [["a", "b"], ["c", "d"]]
    # average linkage does not chain: x~y strong, y~z strong, x~z at chance -> z stays out at 0.5
    acc3 = np.array([[1, 0.95, 0.5], [0.95, 1, 0.8], [0.5, 0.8, 1]], dtype=float)
    fams = lineage.cluster(["x", "y", "z"], lineage.relatedness(acc3)).families
    assert fams == [["x", "y"], ["z"]]
    # NaN cells count as chance
    assert lineage.relatedness(np.array([[1, np.nan], [np.nan, 1]]))[0, 1] == 0


def test_balanced_accuracy_and_auc_against_references():
    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(1, 1, 37), 1)   # rounding makes ties
    neg = np.round(rng.normal(0, 1, 23), 1)
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert lineage.auc(pos, neg) == pytest.approx(brute, abs=1e-12)
    g = np.array([1, 1, 1, 0], bool)
    r = np.array([0, 0, 1, 0, 0], bool)
    bal, tpr, tnr = lineage.balanced_accuracy(g, r)
    assert (tpr, tnr) == (0.75, 0.8) and bal == pytest.approx(0.775)
    assert np.isnan(lineage.balanced_accuracy(g[:0], r)[0])


def test_pattern_correlation_matches_pearson_and_finds_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 32, 32))
    b = 0.7 * a + 0.3 * rng.standard_normal((3, 32, 32))
    r0, s0 = lineage.pattern_correlation(a, b, max_shift=0)
    assert s0 == (0, 0)
    assert r0 == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-9)
    shifted = np.roll(b, (1, -2), axis=(1, 2))
    r1, s1 = lineage.pattern_correlation(a, shifted, max_shift=2)
    assert r1 == pytest.approx(r0, abs=1e-9)
    assert np.allclose(np.roll(shifted, (-s1[0], -s1[1]), axis=(1, 2)), b) or \
        np.allclose(np.roll(shifted, s1, axis=(1, 2)), b)
    # out of range shift: not found
    far = np.roll(b, (5, 0), axis=(1, 2))
    assert abs(lineage.pattern_correlation(a, far, max_shift=2)[0]) < 0.2
    # sign-flipped pattern still reported (|ρ| is what counts)
    assert lineage.pattern_correlation(a, -b, 0)[0] == pytest.approx(-r0)


def test_patternless_generator_is_unresolved_not_a_family(testbed, tmp_path):
    """A generator whose images carry no pattern gives a fingerprint that cannot detect its own images: it is
    listed as unresolved, kept out of the families, and does not change the others' families."""
    blank_tr = write_set(tmp_path / "blank" / "train", None, 8, 60000)
    blank_te = write_set(tmp_path / "blank" / "test", None, 30, 60500)
    blank = fit_fake("blank", blank_tr, testbed["real_train"], blank_te, testbed["real_test"])
    res = run_analyse(testbed["fps"] + [blank])
    assert res.clustering.unresolved == ["blank"]
    assert res.clustering.families == [["parent", "child", "grandchild"], ["other"], ["stranger"]]
    assert res.clustering.labels[res.names.index("blank")] == -1
    assert res.self_z[res.names.index("blank")] < lineage.MIN_SELF_Z
    assert all(res.self_z[i] >= lineage.MIN_SELF_Z for i in range(len(res.names)) if res.names[i] != "blank")
    assert any("unresolved" in w and "blank" in w for w in res.warnings)
    recs = lineage.to_records(res, {})
    summary = recs[-1]
    assert summary.decision["unresolved"] == ["blank"]
    blank_pairs = [r for r in recs[:-1] if "blank" in (r.details["fingerprint"], r.details["images_of"])]
    assert blank_pairs and not any(r.details["same_family"] for r in blank_pairs)
    png = tmp_path / "l.png"
    lineage.plot(res, str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cluster_unresolved_members_cannot_link_others():
    # c would chain a and b together (average linkage over {a, c} / {b, c}); unresolved, it is put at distance 1
    names = ["a", "b", "c"]
    rel = np.array([[1.0, 0.4, 0.9], [0.4, 1.0, 0.9], [0.9, 0.9, 1.0]])
    assert lineage.cluster(names, rel).families == [["a", "b", "c"]]
    cl = lineage.cluster(names, rel, unresolved=["c"])
    assert cl.families == [["a"], ["b"]] and cl.labels == [0, 1, -1] and cl.unresolved == ["c"]


def test_self_detection_z_against_references():
    from scipy.stats import mannwhitneyu, norm

    rng = np.random.default_rng(7)
    pos, neg = rng.normal(0.3, 1, 40), rng.normal(0, 1, 55)
    a = lineage.auc(pos, neg)
    z = lineage.self_detection_z(np.array([[a]]), np.array([[40]]), np.array([[55]]), "auc")[0]
    p = mannwhitneyu(pos, neg, alternative="greater", method="asymptotic", use_continuity=False).pvalue
    assert z == pytest.approx(norm.isf(p), rel=1e-6)
    # balanced accuracy: the null standard error matches a simulation of chance calls
    ng, nr = 37, 61
    sims = 0.5 * (rng.binomial(ng, 0.5, 200000) / ng + rng.binomial(nr, 0.5, 200000) / nr)
    z1 = lineage.self_detection_z(np.array([[0.5 + sims.std()]]), np.array([[ng]]), np.array([[nr]]))[0]
    assert z1 == pytest.approx(1.0, abs=0.01)
    assert np.isnan(lineage.self_detection_z(np.array([[0.9]]), np.array([[0]]), np.array([[5]]))[0])


def test_tile_mean_and_grid_rho_against_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 37, 45))
    p = 8
    ref = np.zeros((2, 3, p, p))
    ny, nx = 37 // p, 45 // p
    for ty in range(ny):
        for tx in range(nx):
            ref += x[:, :, ty * p:(ty + 1) * p, tx * p:(tx + 1) * p]
    ref /= ny * nx
    np.testing.assert_allclose(lineage.tile_mean(x, p), ref, atol=1e-12)
    # a pattern periodic with the period is its own tile; grid ρ is Pearson's r of the two tile means
    tile = rng.standard_normal((3, p, p))
    periodic = np.tile(tile, (1, 4, 4))
    np.testing.assert_allclose(lineage.tile_mean(periodic, p), tile, atol=1e-12)
    r = lineage.grid_rho(x[:, :, :32, :32], periodic, p, orientation=-1.0)
    for k in range(2):
        own = lineage.tile_mean(x[k, :, :32, :32], p)
        assert r[k] == pytest.approx(-np.corrcoef(own.ravel(), tile.ravel())[0, 1], abs=1e-9)
    with pytest.raises(UsageError):
        lineage.tile_mean(x, 64)


def test_grid_evidence_ignores_a_shared_aperiodic_component(tmp_path):
    """Two generators whose outputs share a strong non-periodic trait (what tells both from real photos) but
    have different grid traces: the whole-pattern cross-detection links them, the grid evidence does not —
    and it still links a child that inherits the parent's grid trace."""
    rng = np.random.default_rng(11)
    shared = rng.standard_normal((S, S, 3)).astype(np.float32) * 2.0    # aperiodic, strong
    ta, tb = planted(200), planted(201)
    pats = {"a": ta + shared, "b": tb + shared, "a_child": ta + 0.35 * planted(202)}
    real_train = write_set(tmp_path / "real_train", None, 8, 9000)
    real_test = write_set(tmp_path / "real_test", None, 12, 9500)
    fps = []
    for k, (name, pat) in enumerate(pats.items()):
        tr = write_set(tmp_path / name / "train", pat, 8, 20000 + 1000 * k)
        te = write_set(tmp_path / name / "test", pat, 12, 20500 + 1000 * k)
        fps.append(fit_fake(name, tr, real_train, te, real_test))
    whole = run_analyse(fps, metric="accuracy")
    grid = run_analyse(fps, metric="grid")
    ia, ib = whole.names.index("a"), whole.names.index("b")
    assert whole.relatedness[ia, ib] > 0.5                     # the shared trait links a and b
    assert any({"a", "b"} <= set(f) for f in whole.clustering.families)
    assert grid.clustering.families == [["a", "a_child"], ["b"]]
    assert grid.grid_correlation[ia, whole.names.index("a_child")] > 0.6
    assert abs(grid.grid_correlation[ia, ib]) < 0.3


def test_grid_component_drops_the_border_and_keeps_the_phase():
    rng = np.random.default_rng(5)
    tile = rng.standard_normal((3, 16, 16))
    x = np.tile(tile, (1, 8, 8))                     # 128 x 128, period 16
    x[:, :5, :] += 50.0                              # a border response, as a zero-padded denoiser makes
    x[:, :, -3:] -= 50.0
    np.testing.assert_allclose(lineage.grid_component(x, 16), tile, atol=1e-12)
    assert np.abs(lineage.tile_mean(x, 16) - tile).max() > 1.0
    small = x[:, :48, :48]                           # too small to spare a margin: whole image used
    np.testing.assert_allclose(lineage.grid_component(small, 16), lineage.tile_mean(small, 16))


# ----------------------------------------------------------------------------- --control format (issue 15 item 4)
def _with_trace(px: np.ndarray, pat: np.ndarray, amp: float = 0.04) -> np.ndarray:
    """What :func:`conftest.write_traced_set` does to a clean image (the "format" a control view imposes)."""
    return np.clip(px + amp * pat / np.abs(pat).max() * 2, 0, 1)


@pytest.fixture(scope="module")
def format_bed(tmp_path_factory):
    """Four generators served in one "format" that leaves its own fixed trace L (as a JPEG lattice does):
    fmt_a and fmt_b carry nothing else, shared_c and shared_d also carry one true shared pattern P; real photos
    are clean (lossless). ``view`` "L" re-saves a real photo in the generators' format."""
    root = tmp_path_factory.mktemp("lineage-format")
    fmt = planted(200)
    shared = planted(201)
    real_train = write_set(root / "real_train", None, 8, 9000)
    real_test = write_set(root / "real_test", None, 12, 9500)
    fps = []
    for k, (name, pat) in enumerate({"fmt_a": fmt, "fmt_b": fmt, "shared_c": fmt + 1.5 * shared,
                                     "shared_d": fmt + 1.5 * shared}.items()):
        tr = write_set(root / name / "train", pat, 8, 1000 * (k + 1))
        te = write_set(root / name / "test", pat, 12, 1000 * (k + 1) + 500)
        fps.append(fit_fake(name, tr, real_train, te, real_test))
    return {"fps": fps, "format": fmt}


def _control_correlate(fmt):
    def control_correlate(fp, paths, view):
        assert view == "L"
        pat = fp.pattern.transpose(1, 2, 0)
        res = [residual(_with_trace(images.load_image(p).pixels, fmt)) for p in paths]
        sign = 1.0 if fp.meta["mu_gen"] >= fp.meta["mu_real"] else -1.0
        return (np.array([rho(r, pat) for r in res]),
                lineage.grid_rho([r.transpose(2, 0, 1) for r in res], fp.pattern, lineage.DEFAULT_PERIOD, sign))
    return control_correlate


def test_format_control_unlinks_a_format_only_trace_and_keeps_a_shared_one(format_bed):
    fps, fmt = format_bed["fps"], format_bed["format"]
    plain = run_analyse(fps)
    # without the control, the format's own trace links everything served in it (the confound)
    assert plain.clustering.families == [["fmt_a", "fmt_b", "shared_c", "shared_d"]]
    views = {fp.name: "L" for fp in fps}
    for metric in lineage.METRICS:
        res = run_analyse(fps, metric=metric, control_views=views, control_correlate=_control_correlate(fmt))
        names = res.names
        a, b, c, d = (names.index(x) for x in ("fmt_a", "fmt_b", "shared_c", "shared_d"))
        basis = res.matrix(metric)
        # against photos re-saved in the same format the format-only fingerprints detect nothing...
        assert {"fmt_a", "fmt_b"} <= set(res.clustering.unresolved), (metric, res.clustering)
        assert not any({"fmt_a", "fmt_b"} <= set(f) for f in res.clustering.families)
        assert max(basis[a, b], basis[b, a]) < 0.75, (metric, basis)
        # ...while the true shared pattern still links its two generators, both ways
        assert ["shared_c", "shared_d"] in res.clustering.families, (metric, res.clustering)
        assert min(basis[c, d], basis[d, c]) > 0.9, (metric, basis)
        assert res.n_real[c, d] == plain.n_real[c, d] == 12


def test_format_control_columns_without_a_view_are_unchanged(format_bed):
    fps, fmt = format_bed["fps"], format_bed["format"]
    plain = run_analyse(fps)
    res = run_analyse(fps, control_views={"shared_c": "L", "fmt_a": None},
                      control_correlate=_control_correlate(fmt))
    j = res.names.index("shared_c")
    others = [k for k in range(len(res.names)) if k != j]
    np.testing.assert_array_equal(res.auc[:, others], plain.auc[:, others])
    np.testing.assert_array_equal(res.grid_auc[:, others], plain.grid_auc[:, others])
    assert not np.allclose(res.auc[:, j], plain.auc[:, j])
    with pytest.raises(UsageError, match="control_correlate"):
        run_analyse(fps, control_views={"shared_c": "L"})


def test_a_weak_family_link_is_unresolved_with_its_p_value():
    """Average linkage joins a pair whose mean AUC clears the cut even when one direction is at chance: the link
    is then reported unresolved (its p-value, the larger of the two directions', above LINK_ALPHA)."""
    from scipy.stats import norm

    names = ["a", "b", "c"]
    auc_m = np.array([[0.99, 0.99, 0.5], [0.55, 0.99, 0.5], [0.5, 0.5, 0.99]])
    ng = np.full((3, 3), 30)
    nr = np.full((3, 3), 30)
    rel, z_self, cl = lineage.families(names, auc_m, ng, nr, "auc", threshold=0.6)
    assert cl.families == [["a", "b"], ["c"]]
    z = lineage.chance_z(auc_m, ng, nr, "auc")
    se = np.sqrt((30 + 30 + 1) / (12 * 30 * 30))  # Mann-Whitney null SE
    assert np.allclose(z, (auc_m - 0.5) / se)
    assert np.allclose(np.diag(z), z_self)
    (lk,) = lineage.link_evidence(names, auc_m, None, cl, label="cross-detection AUC", z=z)
    assert lk["p_value"] == pytest.approx(norm.sf((0.55 - 0.5) / se))
    assert lk["supported"] is False and "unresolved link" in lk["text"]
    strong = auc_m.copy()
    strong[1, 0] = 0.95
    (lk2,) = lineage.link_evidence(names, strong, None, cl, label="cross-detection AUC",
                                   z=lineage.chance_z(strong, ng, nr, "auc"))
    assert lk2["supported"] is True and lk2["p_value"] == pytest.approx(norm.sf((0.95 - 0.5) / se))
    assert "unresolved" not in lk2["text"]
