"""Discriminative conformal p-values cross-fitted by photo (issue 11 round 8, ``fpx calibrate --discriminative``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import discriminative as disc
from fingerprint_cli.anchored import thresholds
from fingerprint_cli.anchored.attribute import Decider
from fingerprint_cli.errors import ArtifactError
from test_calibrate import _gaussian_corpus as _corpus  # three systems in 4-D, non-spherical, an image effect

FEATS = ["f1", "f2", "f3", "f4"]
CLASSES = ["a", "b", "c"]
BANDS = {"a": "x", "b": "y", "c": "y"}


@pytest.mark.parametrize("kind", ["lda", "qda", "logistic"])
def test_stored_posteriors_match_scikit_learn(kind):
    """The numpy evaluation of the stored parameters gives scikit-learn's own log-posteriors."""
    X, y, _ = _corpus(30, 2, seed=41)
    Z = (X - X.mean(0)) / X.std(0)
    model = disc._sklearn_model(kind, 3).fit(Z, y)
    Q = np.random.default_rng(0).normal(0, 2, (50, 4))
    want = model.predict_log_proba(Q)[:, [list(model.classes_).index(c) for c in CLASSES]]
    got = disc.log_posteriors(kind, disc.fit_params(kind, Z, y, CLASSES), Q)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unknown discriminative"):
        disc.log_posteriors("svm", {}, Q)


def test_cross_fitted_scores_are_a_brute_force_refit_without_each_fold():
    """Tiny corpus: every call's scores equal those of a scikit-learn model fitted by hand on the calls of the
    photos outside its fold; all calls of a photo share a fold; every fold holds out at least one photo."""
    from sklearn.linear_model import LogisticRegression

    X, y, g = _corpus(7, 2, seed=42)
    Z = (X - X.mean(0)) / X.std(0)
    fold = disc.photo_folds(g, folds=3, seed=5)
    assert all(len(set(fold[g == p])) == 1 for p in set(g))
    assert sorted(set(fold)) == [0, 1, 2]
    A, own = disc.cross_fitted_scores("logistic", Z, y, g, CLASSES, folds=3, seed=5)
    for i in range(len(y)):
        train = fold != fold[i]
        assert g[i] not in set(g[train])  # the model never saw the call's photo
        m = LogisticRegression(C=disc.LOGISTIC_C, max_iter=2000).fit(Z[train], y[train])
        ref = -m.predict_log_proba(Z[i:i + 1])[0][[list(m.classes_).index(c) for c in CLASSES]]
        np.testing.assert_allclose(A[i], ref, rtol=1e-4, atol=1e-4)
        assert own[i] == A[i, CLASSES.index(y[i])]
    # calibration p-value of a call: brute-force rank among the other photos' own-class scores
    P = disc.calibration_p_values(A, own, y, g, CLASSES)
    for i in (0, 5, 17):
        for k, c in enumerate(CLASSES):
            cal_ = own[(y == c) & (g != g[i])]
            assert P[i, k] == pytest.approx((1 + (cal_ >= A[i, k] - 1e-6 * (1 + abs(A[i, k]))).sum()) / (1 + len(cal_)))
    with pytest.raises(ValueError, match="two photos"):
        disc.photo_folds(["only"] * 4)


def test_discriminative_p_values_are_uniform_on_calibration_and_combined_covers_new_photos():
    """Exchangeable synthetic classes: the cross-fitted calibration p-values of the true class are uniform, and on
    new photos the combined p-value (Bonferroni with the density one) covers at >= 1 - alpha per system."""
    X, y, g = _corpus(60, 3, seed=43)
    corpus = cal.Corpus(X, FEATS, {}, y, g, bands=BANDS)
    doc = cal.calibrate(corpus, artifact_id="d", B=20, alpha=0.1, nonconformity="robust-top3+knn", disc="logistic")
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate+discriminative"
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    Z = model.standardise(X)
    A, own = disc.cross_fitted_scores("logistic", Z, y, g, CLASSES)
    P = disc.calibration_p_values(A, own, y, g, CLASSES)
    p_true = P[np.arange(len(y)), [CLASSES.index(c) for c in y]]
    for q in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(p_true <= q) == pytest.approx(q, abs=0.035)
    assert stats.kstest(p_true, "uniform").pvalue > 0.01
    rep = doc["calibration"]["conformal"]
    for c, v in rep["per_system"].items():  # cross-fitted coverage of the combined rule, per system
        assert v["coverage"] >= 0.9 - 0.03, c
    assert rep["discriminative"]["kind"] == "logistic" and rep["discriminative"]["folds"] == disc.FOLDS
    conf = cal.Conformal.from_json(doc["conformal"])
    Xn, yn, _ = _corpus(80, 3, seed=44)
    Pn = conf.p_values(model.standardise(Xn))
    for c in CLASSES:
        m = yn == c
        assert (Pn[m, CLASSES.index(c)] >= 0.1).mean() >= 0.9 - 0.03, c
    # and the discriminative part sharpens the sets: smaller than the density part alone, on the same calls
    dens = conf.density_p_values(model.standardise(Xn))[0]
    assert (Pn >= 0.1).sum(1).mean() < (dens >= 0.1).sum(1).mean()


def test_combined_p_value_is_the_bonferroni_rule_and_the_report_uses_it():
    """The stored calibration coverage is the rule min(1, 2 min(p_density, p_disc)) >= alpha written out."""
    X, y, g = _corpus(30, 3, seed=45)
    doc = cal.calibrate(cal.Corpus(X, FEATS, {}, y, g, bands=BANDS), artifact_id="d", B=20, alpha=0.1,
                        nonconformity="robust-top3", disc="lda")
    Z = cal.LDA.from_json(doc["class_model"], doc["standardisation"]).standardise(X)
    A, own = cal.conformal_loo(Z, y, g, CLASSES, score="robust-top3")
    P_dens = cal.conformal_loo_p(A, own, y, g, CLASSES)
    Ad, ownd = disc.cross_fitted_scores("lda", Z, y, g, CLASSES)
    P_disc = disc.calibration_p_values(Ad, ownd, y, g, CLASSES)
    idx = np.array([CLASSES.index(c) for c in y])
    inset = (P_dens[np.arange(len(y)), idx] >= 0.05) & (P_disc[np.arange(len(y)), idx] >= 0.05)
    for c in CLASSES:
        assert doc["calibration"]["conformal"]["per_system"][c]["coverage"] == pytest.approx(inset[y == c].mean())
    p = np.random.default_rng(2).uniform(size=(200, 3))
    q = np.random.default_rng(3).uniform(size=(200, 3))
    assert np.array_equal(disc.combine(p, q) >= 0.1, (p >= 0.05) & (q >= 0.05))
    with pytest.raises(ValueError, match="robust-top3"):
        cal.calibrate(cal.Corpus(X, FEATS, {}, y, g, bands=BANDS), artifact_id="m", B=20, alpha=0.1,
                      nonconformity="mahalanobis", disc="lda")


def _far_blob_corpus(n_images=40, seed=9):
    """Two overlapping systems a, b and a distant c, in 2-D."""
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for i in range(n_images):
        for s, mu in (("a", [0.0, 0.0]), ("b", [1.0, 0.0]), ("c", [8.0, 8.0])):
            for _ in range(3):
                X.append(rng.normal(mu, 0.6))
                y.append(s)
                g.append(f"p{i}")
    return np.array(X), np.array(y), np.array(g)


def test_saved_artifact_round_trips_and_decides_unknown_far_away(tmp_path):
    """save -> load gives the same p-values; a far call has an empty set (unknown); the record lists both parts and
    says which systems the discriminative test alone left out."""
    X, y, g = _far_blob_corpus()
    corpus = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "tight", "c": "drift"})
    doc = cal.calibrate(corpus, artifact_id="rt", B=20, alpha=0.05, nonconformity="robust-top3+knn", disc="qda")
    saved = thresholds.save(doc, tmp_path / "rt.json")
    loaded = thresholds.Thresholds.from_json(tmp_path / "rt.json")
    assert loaded.sha256 == saved.sha256
    fresh = cal.Conformal.from_json(doc["conformal"])
    again = cal.Conformal.from_json(loaded.conformal)
    Q = np.random.default_rng(1).normal(0, 4, (30, 2))
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    np.testing.assert_allclose(again.p_values(model.standardise(Q)), fresh.p_values(model.standardise(Q)))
    dec = Decider(loaded)
    far, _ = dec.decide({"f1": -30.0, "f2": 30.0})
    assert far["label"] == "unknown" and far["prediction_set"] == [] and far["unknown"]
    assert far["conformal"]["discriminative"] == "qda"
    near, _ = dec.decide({"f1": 8.0, "f2": 8.0})
    assert near["prediction_set"] == ["c"] and near["label"] == "c"
    assert set(near["p_values_density"]) == set(near["p_values_discriminative"]) == {"a", "b", "c"}
    for c in "abc":  # the listed combined p-value is the rule applied to the listed parts
        assert near["p_values"][c] == pytest.approx(min(1.0, 2 * min(near["p_values_density"][c],
                                                                     near["p_values_discriminative"][c])))
    # a call deep inside a, where b's density test still fits: the discriminative test alone removes b
    inside, _ = dec.decide({"f1": -1.2, "f2": 0.0})
    if "b" not in inside["prediction_set"] and inside["p_values_density"]["b"] >= 0.025:
        assert any("left out by the discriminative test" in w and "b" in w for w in inside["why_inconclusive"])


def test_an_inconsistent_or_unknown_discriminative_part_is_refused(tmp_path):
    X, y, g = _far_blob_corpus(20)
    corpus = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "tight", "c": "drift"})
    doc = cal.calibrate(corpus, artifact_id="bad", B=20, alpha=0.05, nonconformity="robust-top3", disc="logistic")
    part = doc["conformal"]["discriminative"]
    for broken in ({**part, "kind": "svm"}, {**part, "params": {**part["params"], "coef": [[1.0, 2.0]]}},
                   {**part, "classes": ["a", "b", "z"]}):
        edited = json.loads(json.dumps(doc))
        edited["conformal"]["discriminative"] = broken
        with pytest.raises(ArtifactError):
            Decider(thresholds.seal(edited))


def test_discriminative_none_leaves_the_artifact_as_before():
    """``disc="none"`` (the default) writes exactly the artifact calibrate wrote before round 8 (no new key)."""
    X, y, g = _corpus(15, 2, seed=46)
    corpus = cal.Corpus(X, FEATS, {}, y, g, bands=BANDS)
    a = cal.calibrate(corpus, artifact_id="n", B=20, alpha=0.1, nonconformity="robust-top3+knn")
    b = cal.calibrate(corpus, artifact_id="n", B=20, alpha=0.1, nonconformity="robust-top3+knn", disc="none")
    for d in (a, b):
        d.pop("created")
    assert a == b
    assert "discriminative" not in a["conformal"] and "discriminative" not in a["calibration"]["conformal"]
    assert a["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate"


@pytest.mark.parametrize("args,msg", [(["--discriminative", "svm"], "--discriminative"),
                                      (["--discriminative", "lda", "--nonconformity", "mahalanobis"], "robust-top3"),
                                      (["--discriminative", "lda", "--no-conformal"], "robust-top3")])
def test_cli_refuses_a_bad_discriminative_choice_before_scoring(tmp_path, args, msg):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    corpus = tmp_path / "corpus.csv"
    corpus.write_text("reference,suspect,system,image_id\n")
    res = CliRunner().invoke(app, ["calibrate", str(corpus), "-o", str(tmp_path / "x.json"), "--quiet", *args])
    assert res.exit_code == 2 and msg in res.output
    assert not (tmp_path / "x.json").exists()
