"""The whole-feature-vector kNN gate of the conformal decisions (issue 11 round 3, ``robust-top3+knn``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import ood, thresholds
from test_calibrate import _gaussian_corpus as _corpus  # three systems in 4-D, non-spherical, an image effect


def test_knn_distance_matches_sklearn_and_a_brute_force_group_exclusion():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    P = rng.normal(size=(300, 6))
    Q = rng.normal(size=(40, 6)) * 1.5
    for k in (1, 5, 12):
        d, _ = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(P).kneighbors(Q)
        np.testing.assert_allclose(ood.knn_distance(Q, P, k, chunk=7), d.mean(1), rtol=1e-9, atol=1e-9)
    groups = np.array([f"g{i % 10}" for i in range(300)])
    qg = groups[:40]
    got = ood.knn_distance(P[:40], P, 5, qg, groups)
    for i in range(40):  # brute force: the 5 nearest points of another group
        other = P[groups != qg[i]]
        ref = np.sort(np.sqrt(((other - P[i]) ** 2).sum(1)))[:5].mean()
        assert got[i] == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError):
        ood.knn_distance(Q, P[:3], 4)


def test_combine_is_the_weighted_bonferroni_rule():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(500, 3))
    q = rng.uniform(size=500)
    a, w = 0.05, 0.2
    inset = ood.combine(p, q, w) >= a
    expect = (p >= (1 - w) * a) & (q[:, None] >= w * a)
    assert np.array_equal(inset, expect)
    assert ood.combine(p, q, w).max() <= 1.0


def test_gated_calibration_is_uniform_and_covers_new_images():
    X, y, g = _corpus(40, 3, seed=31)
    doc = cal.calibrate(cal.Corpus(X, ["f1", "f2", "f3", "f4"], {}, y, g, bands={"a": "x", "b": "y", "c": "y"}),
                        artifact_id="t", B=50, alpha=0.1, nonconformity="robust-top3+knn")
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate"
    rep = doc["calibration"]["conformal"]
    assert rep["score"] == "robust-top3+knn"
    for c, v in rep["per_system"].items():  # LOO coverage of the combined rule, per system
        assert v["coverage"] == pytest.approx(0.9, abs=0.06), c
    model = cal.LDA.from_json(doc["class_model"], doc["standardisation"])
    Z = model.standardise(X)
    gate, own = ood.UnionGate.fit(Z, g)
    p_gate = ood.loo_p_values(own, g)  # the gate's own LOO p-values: uniform on calibration data
    for q in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(p_gate <= q) == pytest.approx(q, abs=0.035)
    assert stats.kstest(p_gate, "uniform").pvalue > 0.01
    conf = cal.Conformal.from_json(doc["conformal"])
    assert conf.gate is not None and conf.score == "robust-top3+knn"
    np.testing.assert_allclose(conf.gate.cal_scores, gate.cal_scores, rtol=1e-6)
    Xn, yn, _ = _corpus(60, 3, seed=32)
    Pn = conf.p_values(model.standardise(Xn))
    cover = Pn[np.arange(len(yn)), [conf.classes.index(c) for c in yn]] >= 0.1
    assert cover.mean() == pytest.approx(0.9, abs=0.04)


def _line_corpus(n_images=60, seed=7):
    """System a lies on the line f2 = f1 (a strong correlation); system b is a blob far away."""
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for i in range(n_images):
        for _ in range(3):
            t = rng.normal()
            X.append([t, t + rng.normal(0, 0.05)])
            y.append("a")
            g.append(f"i{i}")
            X.append(rng.normal([8.0, -8.0], 0.5))
            y.append("b")
            g.append(f"i{i}")
    return np.array(X), np.array(y), np.array(g)


def test_gate_sends_a_call_off_every_calibrated_cloud_to_unknown():
    """(1.2, -1.2) is inside a's per-feature ranges (so the per-system score keeps a) but far from a's line and
    from b: the gate empties the set; calls on the line stay covered."""
    from fingerprint_cli.anchored.attribute import Decider

    X, y, g = _line_corpus()
    corpus = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "drift"})
    plain = Decider(thresholds.seal(cal.calibrate(corpus, artifact_id="plain", B=20, nonconformity="robust-top3")))
    doc = thresholds.seal(cal.calibrate(corpus, artifact_id="gated", B=20, nonconformity="robust-top3+knn"))
    gated = Decider(doc)
    off = {"f1": 1.2, "f2": -1.2}
    assert "a" in plain.decide(off)[0]["prediction_set"]
    d, _ = gated.decide(off)
    assert d["label"] == "unknown" and d["prediction_set"] == [] and d["unknown"]
    assert d["p_ood"] < 0.01 and any("outside the calibration corpus" in w for w in d["why_inconclusive"])
    assert "p_ood" not in plain.decide(off)[0]
    on = {"f1": 0.8, "f2": 0.81}
    assert gated.decide(on)[0]["prediction_set"] == ["a"]
    # the artifact round-trips: the stored gate gives the p-values the fitted one gives
    conf = cal.Conformal.from_json(doc["conformal"])
    z = gated.model.standardise(np.array([[1.2, -1.2], [0.8, 0.81]]))
    np.testing.assert_allclose(conf.p_values(z), gated.conformal.p_values(z))


def test_gate_json_is_checked():
    gate = ood.UnionGate(np.zeros((5, 2)), 3, np.arange(10.0), 0.2)
    doc = gate.to_json()
    assert ood.UnionGate.from_json(doc).k == 3
    for bad in ({**doc, "kind": "nope"}, {**doc, "k": 9}, {**doc, "weight": 1.5}, {**doc, "calibration_scores": []}):
        with pytest.raises(ValueError):
            ood.UnionGate.from_json(bad)


def test_shipped_v4_carries_the_gate_and_its_coverage_per_system():
    """local-offline-pixel-v4: pinned, gated, calibrated on the v3 recipe (18 systems with the two catch-alls);
    every system's leave-one-image-out coverage of the combined rule is within a couple of points of 1 - alpha."""
    from fingerprint_cli.anchored.attribute import Decider

    doc = thresholds.find("local-offline-pixel-v4")
    assert thresholds.SHIPPED_PINS["local-offline-pixel-v4"] == doc["sha256"]
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate"
    assert {"blur_broad", "resample_rt"} <= set(doc["systems"]) and len(doc["systems"]) == 18
    check_shipped_gate(Decider(doc))


def check_shipped_gate(dec) -> None:
    """A shipped gated artifact (v4, v5): 3,000 stored points, k = 5, w = 0.2; every system's LOO coverage of the
    combined rule within 0.02 of 1 - alpha; an identical copy keeps identity in its set and passes the gate."""
    doc = dec.doc
    gate = dec.conformal.gate
    assert gate.points.shape == (3000, len(doc["features"])) and gate.k == 5 and gate.weight == 0.2
    rep = doc["calibration"]["conformal"]
    assert rep["score"] == "robust-top3+knn" and rep["alpha"] == 0.05
    for s, v in rep["per_system"].items():
        if s == "identity":  # every identity call is an exact copy: all scores tie, always covered
            assert v["coverage"] == 1.0
            continue
        assert abs(v["coverage"] - 0.95) <= 0.02, (s, v["coverage"])
    # an identical copy: identity is in the set and the gate does not fire
    d, _ = dec.decide(_neutral(doc["features"]))
    assert "identity" in d["prediction_set"] and d["p_ood"] > 0.05


def _neutral(names):
    from fingerprint_cli.anchored import features

    return {n: features.get(n).neutral for n in names}


def test_v4_is_opt_in_and_v10_is_the_default():
    """The round-3 shipping rule (better than v3 on both open-set rows of the round-3 test) was not met, so v4 is
    used only when named; v5 met the round-4 rule, v7 (with the exact identity rule) the round-7 one, v9 (round
    9's frozen v8 + decision guard) the round-10 one and v10 (v9 + af_period_2/3/4 on the whole corpus) the
    round-12 one: v10 is the default, v9, v7 and v5 still load."""
    from fingerprint_cli.anchored.attribute import OPT_IN_ONLY, choose_default

    doc, why = choose_default(False, None)
    assert doc["id"] == "local-offline-pixel-v10" and "conformal" in why
    assert "local-offline-pixel-v4" in OPT_IN_ONLY and "local-offline-pixel-v10" not in OPT_IN_ONLY
    assert thresholds.find("local-offline-pixel-v9")["id"] == "local-offline-pixel-v9"
    assert thresholds.find("local-offline-pixel-v7")["id"] == "local-offline-pixel-v7"
    assert thresholds.find("local-offline-pixel-v5")["id"] == "local-offline-pixel-v5"
    assert thresholds.find("local-offline-pixel-v4")["id"] == "local-offline-pixel-v4"


def test_shipped_v9_is_round9s_frozen_artifact_with_v7s_density_p_values():
    """local-offline-pixel-v9 is pinned to round 9's frozen seal, carries the guard chosen on development rows, and
    its density p-values are v7's exactly (v8 = v7 + a discriminative p-value; v9 = v8 + the guard): checked on the
    example images against v7's own p-values."""
    import json
    from pathlib import Path

    from test_attribute import run

    doc = thresholds.find("local-offline-pixel-v9")
    assert doc["sha256"].startswith("7914e120") and thresholds.SHIPPED_PINS["local-offline-pixel-v9"] == doc["sha256"]
    guard = doc["conformal"]["guard"]
    assert (guard["tau_band"], guard["tau_system"], guard["tau_gate"], guard["band_rule"]) == (0.2, 1.01, 0.02, "best")
    ex = Path(__file__).resolve().parents[1] / "examples"
    args = ["attribute", str(ex / "ref.png"), str(ex / "suspect_jpeg.jpg"), str(ex / "suspect_blur.png"),
            "--format", "json", "--quiet"]
    v9 = [r["decision"] for r in json.loads(run(args + ["-t", "local-offline-pixel-v9"]).stdout)][:2]
    v7 = [r["decision"] for r in json.loads(run(args + ["-t", "local-offline-pixel-v7"]).stdout)][:2]
    for a, b in zip(v9, v7):
        assert a["p_values_density"] == pytest.approx(b["p_values"], abs=1e-12)
        assert set(a["prediction_set"]) <= {s for s, p in b["p_values"].items() if p >= 0.05 / 2}


def test_shipped_v10_is_v9s_recipe_plus_the_period_features_on_the_whole_corpus():
    """local-offline-pixel-v10 (issue 11 round 12) is pinned to its seal, keeps v9's guard, decision options and
    features with af_period_2/3/4 added, and was calibrated on all 161 photos of v9's corpus."""
    v9, v10 = thresholds.find("local-offline-pixel-v9"), thresholds.find("local-offline-pixel-v10")
    assert v10["sha256"].startswith("e376b3da") and thresholds.SHIPPED_PINS["local-offline-pixel-v10"] == v10["sha256"]
    assert v10["features"] == v9["features"] + ["af_period_2", "af_period_3", "af_period_4"]
    assert v10["conformal"]["guard"] == v9["conformal"]["guard"]
    for k in ("kind", "alpha"):
        assert v10["conformal"].get(k) == v9["conformal"].get(k), k
    assert v10["conformal"]["discriminative"]["kind"] == v9["conformal"]["discriminative"]["kind"] == "logistic"
    assert v10["conformal"]["gate"]["weight"] == v9["conformal"]["gate"]["weight"] == 0.2
    assert v10["calibration"]["corpus"]["n_images"] == v9["calibration"]["corpus"]["n_images"] == 161
    assert v10["systems"] == v9["systems"]


def test_gate_weight_is_stored_and_its_loo_coverage_is_the_brute_force_combination():
    """``gate_weight`` (``fpx calibrate --gate-weight``, round 6): the artifact stores it, its LOO coverage per
    system is the weighted Bonferroni rule applied by hand to the LOO p-values, and decisions of the artifact
    equal those of the default-weight artifact with only its gate weight changed (what a weight sweep relies on)."""
    from fingerprint_cli.anchored.attribute import Decider

    X, y, g = _corpus(40, 3, seed=33)
    classes = ["a", "b", "c"]
    corpus = cal.Corpus(X, ["f1", "f2", "f3", "f4"], {}, y, g, bands={"a": "x", "b": "y", "c": "y"})
    docs = {w: thresholds.seal(cal.calibrate(corpus, artifact_id=f"w{w}", B=20, alpha=0.1,
                                             nonconformity="robust-top3+knn", gate_weight=w)) for w in (0.05, 0.2)}
    model = cal.LDA.from_json(docs[0.05]["class_model"], docs[0.05]["standardisation"])
    Z = model.standardise(X)
    A, own = cal.conformal_loo(Z, y, g, classes, score="robust-top3+knn")
    P = cal.conformal_loo_p(A, own, y, g, classes)
    _, gown = ood.UnionGate.fit(Z, g)
    q = ood.loo_p_values(gown, g)
    idx = np.array([classes.index(c) for c in y])
    for w, doc in docs.items():
        assert doc["conformal"]["gate"]["weight"] == w
        p_true = P[np.arange(len(y)), idx]
        inset = np.minimum(p_true / (1 - w), q / w) >= 0.1  # the rule written out (same float arithmetic)
        for c in classes:
            got = doc["calibration"]["conformal"]["per_system"][c]["coverage"]
            assert got == pytest.approx(inset[y == c].mean(), abs=1e-9), (w, c)
    # the two weights are different rules on these calls (the gate alone rejects more calls at w = 0.2)
    assert (q < 0.2 * 0.1).sum() > (q < 0.05 * 0.1).sum()
    edited = {k: v for k, v in docs[0.2].items() if k != "sha256"}
    edited["conformal"] = {**edited["conformal"], "gate": {**edited["conformal"]["gate"], "weight": 0.05}}
    edited = thresholds.seal(edited)
    a, b = Decider(docs[0.05]), Decider(edited)
    rng = np.random.default_rng(5)
    for x in X[rng.choice(len(X), 40, replace=False)] + rng.normal(0, 1.5, (40, 4)):
        f = dict(zip(["f1", "f2", "f3", "f4"], x))
        assert a.decide(f)[0]["prediction_set"] == b.decide(f)[0]["prediction_set"]
    with pytest.raises(ValueError, match="gate weight"):
        cal.calibrate(corpus, artifact_id="bad", B=20, nonconformity="robust-top3+knn", gate_weight=1.0)


@pytest.mark.parametrize("bad", ["0", "1", "-0.2", "1.5"])
def test_gate_weight_outside_the_open_interval_is_a_usage_error(tmp_path, bad):
    """``fpx calibrate --gate-weight`` outside (0, 1): exit 2 naming the option, before any pair is scored."""
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    corpus = tmp_path / "corpus.csv"
    corpus.write_text("reference,suspect,system,image_id\n")
    res = CliRunner().invoke(app, ["calibrate", str(corpus), "-o", str(tmp_path / "x.json"), "--nonconformity",
                                   "robust-top3+knn", "--gate-weight", bad, "--quiet"])
    assert res.exit_code == 2 and "--gate-weight" in res.output
    assert not (tmp_path / "x.json").exists()
