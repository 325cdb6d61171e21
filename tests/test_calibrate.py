"""Calibration statistics: LDA, leave-one-image-out, cluster bootstrap, η², bands (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fingerprint_cli.anchored import calibrate as cal


def synthetic(n_images=12, reps=3, seed=0, sep=3.0, image_sd=0.3):
    """Three systems with known means in 4-D, an image random effect, several reps per image."""
    rng = np.random.default_rng(seed)
    means = {"a": np.array([0, 0, 0, 0.0]), "b": np.array([sep, 0, 0, 0.0]), "c": np.array([0, sep, 1, 0.0])}
    X, y, g, dom = [], [], [], []
    for i in range(n_images):
        eff = rng.normal(0, image_sd, 4)
        for s, m in means.items():
            for _rep in range(reps):
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


# ---------------------------------------------------------------- scikit-learn LDA and conformal p-values (issue 11)
def test_lda_is_sklearns_and_stored_parameters_reproduce_it():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y, *_ = synthetic()
    m = cal.LDA.fit(X, y)  # shrinkage "auto" (Ledoit-Wolf)
    Z = m.standardise(X)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=[1 / 3] * 3).fit(Z, y)
    np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(Z), atol=1e-6)
    m2 = cal.LDA.from_json(m.to_json(), {"mean": m.mean.tolist(), "std": m.std.tolist()})
    np.testing.assert_allclose(m2.predict_proba(X), ref.predict_proba(Z), atol=1e-6)


def _brute_force_loo_p(Z, y, g, classes):
    """Independent reference: explicit loops, covariance from sklearn's ledoit_wolf function, np.linalg.solve."""
    from sklearn.covariance import ledoit_wolf

    n = len(y)
    A = np.zeros((n, len(classes)))
    for image in sorted(set(g)):
        tr = g != image
        for k, c in enumerate(classes):
            Zc = Z[tr & (y == c)]
            mu = Zc.mean(0)
            cov, _ = ledoit_wolf(Zc)
            cov = cov + 1e-9 * np.eye(Z.shape[1])
            for i in np.flatnonzero(~tr):
                diff = Z[i] - mu
                A[i, k] = diff @ np.linalg.solve(cov, diff)
    own = np.array([A[i, classes.index(y[i])] for i in range(n)])
    P = np.zeros_like(A)
    for i in range(n):
        for k, c in enumerate(classes):
            pool = [own[j] for j in range(n) if y[j] == c and g[j] != g[i]]
            P[i, k] = (1 + sum(a >= A[i, k] for a in pool)) / (1 + len(pool))
    return A, own, P


def test_conformal_loo_p_values_match_brute_force():
    X, y, g, *_ = synthetic(n_images=8, reps=3, seed=4)
    classes = ["a", "b", "c"]
    Z = (X - X.mean(0)) / X.std(0)
    A, own = cal.conformal_loo(Z, y, g, classes)
    P = cal.conformal_loo_p(A, own, y, g, classes)
    A_ref, own_ref, P_ref = _brute_force_loo_p(Z, y, g, classes)
    np.testing.assert_allclose(A, A_ref, rtol=1e-8)
    np.testing.assert_allclose(own, own_ref, rtol=1e-8)
    np.testing.assert_allclose(P, P_ref, atol=1e-12)


def test_conformal_p_values_of_new_points_match_crepes():
    """The Mondrian p-value against crepes' ConformalClassifier (non-smoothed), one Mondrian bin per system."""
    from crepes import ConformalClassifier

    X, y, g, *_ = synthetic(n_images=10, reps=3, seed=5)
    doc = cal.calibrate(cal.Corpus(X, ["f1", "f2", "f3", "f4"], {}, y, g, bands={"a": "x", "b": "y", "c": "y"}),
                        artifact_id="t", B=100)
    conf = cal.Conformal.from_json(doc["conformal"])
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    Xq = np.random.default_rng(9).normal(size=(25, 4)) * X.std(0) * 1.5 + X.mean(0)
    Zq = model.standardise(Xq)
    mine = conf.p_values(Zq)
    scores = conf.scores(Zq)
    cal_alphas = np.concatenate(conf.cal_scores)
    cal_bins = np.concatenate([[k] * len(s) for k, s in enumerate(conf.cal_scores)])
    cc = ConformalClassifier().fit(cal_alphas, bins=cal_bins)
    for k in range(3):
        ref = cc.predict_p(scores[:, [k]], bins=np.full(len(Zq), k), smoothing=False)
        np.testing.assert_allclose(mine[:, k], np.asarray(ref).ravel(), atol=1e-6)


def _gaussian_corpus(n_images, reps, seed):
    """Three systems, non-spherical class covariances, an image effect."""
    rng = np.random.default_rng(seed)
    A = {"a": np.diag([1, 1, 1, 1.0]), "b": np.array([[1, .8, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, .5]]),
         "c": np.diag([.5, 2, 1, 1.0])}
    mu = {"a": np.zeros(4), "b": np.array([4, 0, 0, 0.0]), "c": np.array([0, 4, 2, 0.0])}
    X, y, g = [], [], []
    for i in range(n_images):
        eff = rng.normal(0, 0.2, 4)
        for s, a in A.items():
            for _ in range(reps):
                X.append(mu[s] + eff + a @ rng.normal(size=4))
                y.append(s)
                g.append(f"img{seed}_{i}")
    return np.array(X), np.array(y), np.array(g)


def test_conformal_p_uniform_on_calibration_and_coverage_per_system():
    X, y, g = _gaussian_corpus(40, 3, seed=1)
    doc = cal.calibrate(cal.Corpus(X, ["f1", "f2", "f3", "f4"], {}, y, g, bands={"a": "x", "b": "y", "c": "y"}),
                        artifact_id="t", B=100, alpha=0.1)
    Z = cal.LDA.from_json(doc["class_model"], doc["standardisation"]).standardise(X)
    A, own = cal.conformal_loo(Z, y, g, ["a", "b", "c"])
    P = cal.conformal_loo_p(A, own, y, g, ["a", "b", "c"])
    p_true = P[np.arange(len(y)), [["a", "b", "c"].index(c) for c in y]]
    for q in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(p_true <= q) == pytest.approx(q, abs=0.035)
    assert stats.kstest(p_true, "uniform").pvalue > 0.01
    rep = doc["calibration"]["conformal"]
    assert rep["alpha"] == 0.1
    for c, v in rep["per_system"].items():
        assert v["coverage"] == pytest.approx(0.9, abs=0.06), c
    # ... and a fresh sample of images from the same systems is covered at 1 - alpha
    Xn, yn, _ = _gaussian_corpus(60, 3, seed=2)
    conf = cal.Conformal.from_json(doc["conformal"])
    Pn = conf.p_values(cal.LDA.from_json(doc["class_model"], doc["standardisation"]).standardise(Xn))
    cover = Pn[np.arange(len(yn)), [conf.classes.index(c) for c in yn]] >= 0.1
    assert cover.mean() == pytest.approx(0.9, abs=0.04)


def test_calibration_calls_never_score_themselves():
    """An image that is a far outlier of its system gets a small LOO p-value: it was not in its own model."""
    X, y, g = _gaussian_corpus(30, 3, seed=3)
    X[(g == g[0]) & (y == "a")] += 30.0
    Z = (X - X.mean(0)) / X.std(0)
    A, own = cal.conformal_loo(Z, y, g, ["a", "b", "c"])
    P = cal.conformal_loo_p(A, own, y, g, ["a", "b", "c"])
    out = (g == g[0]) & (y == "a")
    assert P[out, 0].max() <= 1 / 30  # ranked above every other image's score
    # fitted on all data instead, the outlier calls would sit inside their own class model
    means, precs = cal.Conformal.fit_class_models(Z, y, ["a", "b", "c"])
    assert cal.Conformal.mahalanobis2(Z[out], means, precs)[:, 0].max() < A[out, 0].min()


def test_decider_unknown_when_the_set_is_empty_and_alpha_override():
    from fingerprint_cli.anchored.attribute import Decider, check_alpha
    from fingerprint_cli.errors import UsageError

    X, y, g = _gaussian_corpus(30, 3, seed=4)
    feats = ["f1", "f2", "f3", "f4"]
    from fingerprint_cli.anchored import thresholds

    doc = thresholds.seal(cal.calibrate(cal.Corpus(X, feats, {}, y, g, bands={"a": "benign", "b": "drift",
                                                                             "c": "drift"}),
                                        artifact_id="t", B=100))
    dec = Decider(doc)
    assert dec.alpha == 0.05
    far, _ = dec.decide(dict(zip(feats, [40.0, -40.0, 40.0, 40.0])))
    assert far["label"] == "unknown" and far["system"] == "unknown" and far["unknown"] and not far["inconclusive"]
    assert far["prediction_set"] == [] and max(far["p_values"].values()) < 0.05
    assert "no calibrated system fits" in far["why_inconclusive"][0]
    near, _ = dec.decide(dict(zip(feats, [-1.0, -1.0, -1.0, 0.0])))  # near system a, far from b and c
    assert near["prediction_set"] == ["a"] and near["label"] == "a" and near["band"] == "benign"
    # between b and c (one band): the band is decided, the system is not
    mid, _ = Decider(doc, alpha=0.01).decide(dict(zip(feats, [2.0, 2.0, 1.0, 0.0])))
    if len(mid["prediction_set"]) > 1 and set(mid["prediction_set"]) <= {"b", "c"}:
        assert mid["system"] == "inconclusive" and mid["band"] == "drift" and mid["label"] == "drift"
    # a larger alpha never grows the set
    for x in ([0.5, 0.5, 0.2, 0.1], [3.0, 1.0, 0.5, 0.0], [1.0, 3.0, 1.0, 0.5]):
        f = dict(zip(feats, x))
        s05 = set(Decider(doc, 0.05).decide(f)[0]["prediction_set"])
        s20 = set(Decider(doc, 0.2).decide(f)[0]["prediction_set"])
        assert s20 <= s05
    for bad in (0, -0.1, 0.51, 1.0, float("nan")):
        with pytest.raises(UsageError):
            check_alpha(bad)
    assert check_alpha(0.5) == 0.5


def test_aggregate_combines_p_values_by_bonferroni():
    from fingerprint_cli.anchored import thresholds
    from fingerprint_cli.anchored.attribute import Decider

    X, y, g = _gaussian_corpus(30, 3, seed=6)
    feats = ["f1", "f2", "f3", "f4"]
    doc = thresholds.seal(cal.calibrate(cal.Corpus(X, feats, {}, y, g, bands={"a": "benign", "b": "drift",
                                                                             "c": "drift"}),
                                        artifact_id="t", B=100))
    dec = Decider(doc)
    calls = [dict(zip(feats, x)) for x in ([0.3, -0.2, 0.1, 0.0], [-0.5, 0.4, -0.3, 0.2], [4.0, 0.5, 0.0, 0.1])]
    each = np.array([[dec.decide(c)[0]["p_values"][s] for s in dec.model.classes] for c in calls])
    agg = dec.aggregate(calls)
    np.testing.assert_allclose([agg["p_values"][s] for s in dec.model.classes],
                               np.minimum(1.0, 3 * each.min(0)))
    assert agg["calls"] == 3 and "Bonferroni" in agg["aggregate"]
    assert set(agg["prediction_set"]) <= {s for s, p in agg["p_values"].items() if p >= 0.05}


# ---------------------------------------------------------------- robust top-3 nonconformity (issue 11, round 2)
def _brute_force_robust_loo(Z, y, g, classes, top=3, floor=0.05):
    """Reference: scipy's normal-consistent MAD, one (image, class) at a time, plain Python ranks."""
    n = len(y)
    A = np.zeros((n, len(classes)))
    for i in range(n):
        for k, c in enumerate(classes):
            Zc = Z[(y == c) & (g != g[i])]
            med = np.median(Zc, axis=0)
            scale = stats.median_abs_deviation(Zc, axis=0, scale="normal") + floor
            a = sorted(np.abs(Z[i] - med) / scale)
            A[i, k] = np.mean(a[-top:])
    own = np.array([A[i, classes.index(y[i])] for i in range(n)])
    return A, own


def test_robust_top3_loo_scores_match_a_brute_force_reference():
    X, y, g, *_ = synthetic(n_images=7, reps=3, seed=11)
    classes = ["a", "b", "c"]
    Z = (X - X.mean(0)) / X.std(0)
    A, own = cal.conformal_loo(Z, y, g, classes, score="robust-top3")
    A_ref, own_ref = _brute_force_robust_loo(Z, y, g, classes)
    np.testing.assert_allclose(A, A_ref, rtol=1e-4)  # 1.4826 vs 1/Phi^-1(3/4) = 1.482602...
    np.testing.assert_allclose(own, own_ref, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown nonconformity"):
        cal.conformal_loo(Z, y, g, classes, score="nope")


def test_robust_top3_p_uniform_on_calibration_and_coverage_on_new_images():
    X, y, g = _gaussian_corpus(40, 3, seed=21)
    classes = ["a", "b", "c"]
    doc = cal.calibrate(cal.Corpus(X, ["f1", "f2", "f3", "f4"], {}, y, g, bands={"a": "x", "b": "y", "c": "y"}),
                        artifact_id="t", B=100, alpha=0.1, nonconformity="robust-top3")
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo" and doc["calibration"]["conformal"]["score"] == \
        "robust-top3"
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    Z = model.standardise(X)
    A, own = cal.conformal_loo(Z, y, g, classes, score="robust-top3")
    P = cal.conformal_loo_p(A, own, y, g, classes)
    p_true = P[np.arange(len(y)), [classes.index(c) for c in y]]
    for q in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(p_true <= q) == pytest.approx(q, abs=0.035)
    assert stats.kstest(p_true, "uniform").pvalue > 0.01
    conf = cal.Conformal.from_json(doc["conformal"])
    np.testing.assert_allclose(np.concatenate(conf.cal_scores), np.concatenate([np.sort(own[y == c]) for c in classes]),
                               rtol=1e-6)
    Xn, yn, _ = _gaussian_corpus(60, 3, seed=22)
    Pn = conf.p_values(model.standardise(Xn))
    cover = Pn[np.arange(len(yn)), [conf.classes.index(c) for c in yn]] >= 0.1
    assert cover.mean() == pytest.approx(0.9, abs=0.04)


def test_robust_top3_flags_one_feature_out_of_range():
    """12 independent features: new calls of system a are covered at 1 - alpha; the same calls with ONE feature
    6 sd outside a's range (a parameter the system was never calibrated on) are nonconforming for a."""
    rng = np.random.default_rng(5)
    d, n_img = 12, 200  # conformal coverage given one calibration set varies by ~sqrt(a(1-a)/n)
    X = np.concatenate([rng.normal(0, 1, (n_img, d)), rng.normal(3, 1, (n_img, d))])
    y = np.array(["a"] * n_img + ["b"] * n_img)
    g = np.array([f"i{i}" for i in range(n_img)] * 2)
    doc = cal.calibrate(cal.Corpus(X, [f"f{i}" for i in range(d)], {}, y, g, bands={"a": "x", "b": "y"}),
                        artifact_id="t", B=50, nonconformity="robust-top3")
    conf = cal.Conformal.from_json(doc["conformal"])
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    q = rng.normal(0, 1, (400, d))
    p_in = conf.p_values(model.standardise(q))[:, 0]
    q[:, 3] -= 6.0
    p_out = conf.p_values(model.standardise(q))[:, 0]
    assert np.mean(p_in >= 0.05) == pytest.approx(0.95, abs=0.035)
    assert np.mean(p_out < 0.05) > 0.9
