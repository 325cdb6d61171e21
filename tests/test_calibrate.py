"""Calibration statistics: LDA, leave-one-image-out, cluster bootstrap, η², bands (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fingerprint_cli import calibrate as cal


def synthetic(n_images=12, reps=3, seed=0, sep=3.0, image_sd=0.3):
    """Three systems with known means in 4-D, an image random effect, several reps per image."""
    rng = np.random.default_rng(seed)
    means = {"a": np.array([0, 0, 0, 0.0]), "b": np.array([sep, 0, 0, 0.0]), "c": np.array([0, sep, 1, 0.0])}
    X, y, g, dom = [], [], [], []
    for i in range(n_images):
        eff = rng.normal(0, image_sd, 4)
        for s, m in means.items():
            for r in range(reps):
                X.append(m + eff + rng.normal(0, 1, 4))
                y.append(s)
                g.append(f"img{i}")
                dom.append("d0" if i % 2 else "d1")
    return np.array(X) * np.array([1, 10, 0.1, 5]) + 3, np.array(y), np.array(g), np.array(dom), means


def test_lda_posteriors_match_gaussian_densities():
    X, y, *_ = synthetic()
    m = cal.LDA.fit(X, y, shrinkage=0.0)
    Z = m.standardise(X[:5])
    dens = np.stack([stats.multivariate_normal(m.means[k], m.cov).pdf(Z) for k in range(3)], 1)
    ref = dens / dens.sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict_proba(X[:5]), ref, rtol=1e-6, atol=1e-10)
    # JSON round trip keeps the model exactly enough
    m2 = cal.LDA.from_json(m.to_json(), {"mean": m.mean.tolist(), "std": m.std.tolist()})
    np.testing.assert_allclose(m2.predict_proba(X), m.predict_proba(X), atol=1e-8)


def test_calibration_recovers_known_class_structure():
    X, y, g, dom, means = synthetic(n_images=16, sep=4.0)
    corpus = cal.Corpus(X=X, features=["f1", "f2", "f3", "f4"], directions={}, systems=y, images=g, domains=dom,
                        bands={"a": "tight", "b": "drift", "c": "drift"})
    doc = cal.calibrate(corpus, artifact_id="syn", B=300)
    loo = doc["calibration"]["loo"]
    assert loo["accuracy"] > 0.9
    conf = np.array(loo["confusion"])
    assert (conf.diagonal() >= 0.85 * conf.sum(1)).all()
    # the fitted class means, back in feature units, are near the generating ones
    cm = doc["class_model"]
    sd, mu = np.array(doc["standardisation"]["std"]), np.array(doc["standardisation"]["mean"])
    fitted = np.array(cm["means"]) * sd + mu
    for k, s in enumerate(cm["classes"]):
        truth = means[s] * np.array([1, 10, 0.1, 5]) + 3
        assert np.all(np.abs(fitted[k] - truth) < 0.6 * np.array([1, 10, 0.1, 5]))
    eta = doc["calibration"]["eta_squared"]
    assert eta["system"] > 0.3 and eta["domain"] < 0.05
    assert doc["calibration"]["band_loo"]["accuracy"] > 0.9


def test_loo_holds_out_every_call_of_an_image_together():
    X, y, g, *_ = synthetic(n_images=7)
    seen = []

    def on_fold(image, train):
        assert not np.any(g[train] == image)  # nothing of the held-out image in its training fold
        assert len(train) == np.sum(g != image)  # and everything else is
        seen.append(image)

    p = cal.leave_one_image_out(X, y, g, ["a", "b", "c"], on_fold=on_fold)
    assert sorted(seen) == sorted(set(g))
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_loo_cannot_memorise_an_image():
    """Each image has its own label and its own (repeated) features: a 1-NN that saw the image would be
    perfect; held out properly it can only be at chance."""
    rng = np.random.default_rng(3)
    n, reps = 60, 3
    labels = rng.choice(["a", "b"], n)
    feats = rng.normal(size=(n, 5))
    X = np.repeat(feats, reps, 0)
    y = np.repeat(labels, reps)
    g = np.repeat([f"i{i}" for i in range(n)], reps)

    class NN:
        classes = ["a", "b"]

        def __init__(self, Xt, yt):
            self.Xt, self.yt = Xt, yt

        def predict_proba(self, Xq):
            d = ((Xq[:, None, :] - self.Xt[None]) ** 2).sum(-1)
            nearest = self.yt[d.argmin(1)]
            return np.stack([(nearest == "a"), (nearest == "b")], 1).astype(float)

    p = cal.leave_one_image_out(X, y, g, ["a", "b"], fit=NN)
    acc = np.mean(np.array(["a", "b"])[p.argmax(1)] == y)
    assert 0.3 < acc < 0.7
    # the same learner without holding out is perfect (so the test can fail)
    leak = NN(X, y).predict_proba(X)
    assert np.mean(np.array(["a", "b"])[leak.argmax(1)] == y) == 1.0


def test_cluster_bootstrap_ci_covers_true_accuracy():
    """Simulation: per-image accuracies vary (clustered calls); the 95% CI covers the true mean ~95%."""
    rng = np.random.default_rng(11)
    true_p, n_img, calls, sims = 0.7, 40, 6, 200
    cover = 0
    widths = []
    for s in range(sims):
        p_i = rng.beta(true_p * 4, (1 - true_p) * 4, n_img)  # strong image effect, mean 0.7
        correct = (rng.random((n_img, calls)) < p_i[:, None]).ravel()
        groups = np.repeat(np.arange(n_img), calls).astype(str)
        acc, lo, hi = cal.cluster_bootstrap_ci(correct, groups, B=400, seed=s)
        cover += lo <= true_p <= hi
        widths.append(hi - lo)
    assert 0.88 <= cover / sims <= 0.99
    # resampling calls as if independent would be too narrow under this clustering
    naive = 2 * 1.96 * np.sqrt(true_p * (1 - true_p) / (n_img * calls))
    assert np.mean(widths) > 1.3 * naive


def test_eta_squared_matches_one_way_anova():
    X, y, *_ = synthetic()
    pooled, per = cal.eta_squared(X, y)
    for j in range(X.shape[1]):
        groups = [X[y == c, j] for c in sorted(set(y))]
        F, _ = stats.f_oneway(*groups)
        k, n = len(groups), len(y)
        ref = F * (k - 1) / (F * (k - 1) + (n - k))
        assert per[j] == pytest.approx(ref, rel=1e-9)
    assert min(per) <= pooled <= max(per)


def test_confusion_and_derived_bands():
    assert cal.confusion(["a", "b", "b"], ["a", "a", "b"], ["a", "b"]) == [[1, 0], [1, 1]]
    rng = np.random.default_rng(0)
    # ssim-like feature (lower = more change): two systems close to the reference, one far
    y = np.repeat(["edit1", "edit2", "regen"], 20)
    ssim = np.concatenate([rng.normal(0.95, 0.01, 20), rng.normal(0.93, 0.01, 20), rng.normal(0.6, 0.05, 20)])
    bands, why = cal.derive_bands(ssim[:, None], y, ["ssim_clean"], {"ssim_clean": "lower = more change"})
    assert bands == {"edit1": "tight", "edit2": "tight", "regen": "drift"}
    assert "largest gap" in why


def test_calibrate_rejects_degenerate_corpora():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="two systems"):
        cal.calibrate(cal.Corpus(X, ["a", "b"], {}, np.array(["s"] * 4), np.array(["i", "i", "j", "j"])),
                      artifact_id="x", B=100)
    with pytest.raises(ValueError, match="two image_ids"):
        cal.calibrate(cal.Corpus(X + np.arange(4)[:, None], ["a", "b"], {}, np.array(["s", "t"] * 2),
                                 np.array(["i"] * 4)), artifact_id="x", B=100)
