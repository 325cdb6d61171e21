"""The decision guard (issue 11 round 9, :mod:`fingerprint_cli.anchored.naming`): sets and p-values untouched, only
what is named changes; stored in the artifact; ``fpx calibrate --guard`` / ``--regard``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import naming, thresholds
from fingerprint_cli.anchored.attribute import Decider
from test_calibrate_discriminative import _far_blob_corpus

BANDS = {"a": "benign", "b": "tight", "c": "drift", "d": "drift"}


def _reference(call, members, dens, p_ood, g):
    """The guard's rule written out from the set (an independent statement of the module docstring)."""
    system, band, label, _ = call
    if band in ("unknown", "inconclusive"):
        return system, band
    ps = [dens[c] for c in members]
    support = min(ps) if g.band_rule == "all" else max(ps)
    if support < g.tau_band or (p_ood is not None and p_ood < g.tau_gate):
        return "inconclusive", "inconclusive"
    if system != "inconclusive" and dens[system] < g.tau_system:
        return "inconclusive", band
    return system, band


def _random_call(rng):
    """A prediction set over four systems and the (system, band, label) a Decider gives it (no catch-alls)."""
    members = [c for c in "abcd" if rng.random() < 0.4]
    dens = {c: float(rng.choice([rng.uniform(0, 1), rng.uniform(0, 0.1)])) for c in "abcd"}
    bands_in = {BANDS[c] for c in members}
    if not members:
        call = ("unknown", "unknown", "unknown", [])
    elif len(members) == 1:
        call = (members[0], BANDS[members[0]], members[0], [])
    elif len(bands_in) == 1:
        b = bands_in.pop()
        call = ("inconclusive", b, b, ["several"])
    else:
        call = ("inconclusive", "inconclusive", "inconclusive", ["several bands"])
    return call, members, dens, (None if rng.random() < 0.2 else float(rng.uniform(0, 0.2)))


@pytest.mark.parametrize("rule", naming.BAND_RULES)
def test_apply_matches_the_rule_written_out(rule):
    rng = np.random.default_rng(11)
    for _ in range(3000):
        g = naming.Guard(float(rng.choice([0, 0.05, 0.2, 0.5])), float(rng.choice([0, 0.1, 0.5, naming.NEVER])),
                         float(rng.choice([0, 0.02, 0.1])), rule)
        call, members, dens, p_ood = _random_call(rng)
        got = g.apply(call, members, dens, p_ood)
        assert got[:2] == _reference(call, members, dens, p_ood, g)
        if got[:2] != call[:2]:  # every stop says which level stopped it
            assert any(w.startswith("decision guard:") for w in got[3])
        # the label is the named system, else the named band, else inconclusive / unknown
        assert got[2] == (got[0] if got[0] != "inconclusive" else got[1])


def test_zero_guard_changes_nothing_and_never_names_no_system():
    rng = np.random.default_rng(12)
    zero, never = naming.Guard(), naming.Guard(tau_system=naming.NEVER)
    for _ in range(500):
        call, members, dens, p_ood = _random_call(rng)
        assert zero.apply(call, members, dens, p_ood)[:3] == call[:3]
        s, b, _, _ = never.apply(call, members, dens, p_ood)
        assert s in ("inconclusive", "unknown") and b == call[1]  # a system is stopped, its band stays


@pytest.mark.parametrize("bad", [dict(band_rule="some"), dict(tau_band=-0.1), dict(tau_system=2.0)])
def test_bad_guards_are_refused(bad):
    with pytest.raises(ValueError):
        naming.Guard(**bad)


@pytest.mark.parametrize("spec", ["tau_band", "tau_band=x", "colour=1", "tau_band=0.1,band_rule=maybe"])
def test_parse_refuses_malformed_specs(spec):
    with pytest.raises(ValueError):
        naming.parse(spec)


def test_parse_round_trips():
    g = naming.parse("tau_band=0.2, tau_system=1.01,tau_gate=0.02,band_rule=best")
    assert g == naming.Guard(0.2, 1.01, 0.02, "best") == naming.Guard.from_json(g.to_json())


def _artifacts(tmp_path, guard):
    X, y, g = _far_blob_corpus()
    corpus = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "tight", "c": "drift"})
    doc = cal.calibrate(corpus, artifact_id="plain", B=20, alpha=0.1, nonconformity="robust-top3+knn",
                        disc="logistic")
    plain = thresholds.save(doc, tmp_path / "plain.json")
    guarded = thresholds.save({**naming.with_guard(plain.to_dict(), guard), "id": "guarded"},
                              tmp_path / "guarded.json")
    return plain, guarded


def test_the_guard_keeps_sets_and_p_values_and_stops_only_weak_names(tmp_path):
    guard = naming.Guard(tau_band=0.3, tau_system=0.5, tau_gate=0.0, band_rule="all")
    plain, guarded = _artifacts(tmp_path, guard)
    d0, d1 = Decider(plain), Decider(guarded)
    assert d0.conformal.guard is None and d1.conformal.guard == guard
    rng = np.random.default_rng(5)
    pts = np.concatenate([rng.normal([0.5, 0], 1.0, (150, 2)), rng.normal([8, 8], 1.5, (80, 2))])
    changed = 0
    for f1, f2 in pts:
        a, _ = d0.decide({"f1": f1, "f2": f2})
        b, _ = d1.decide({"f1": f1, "f2": f2})
        assert a["prediction_set"] == b["prediction_set"] and a["p_values"] == b["p_values"]
        assert a["p_values_density"] == b["p_values_density"]
        call = (a["system"], a["band"], a["label"], [])
        assert (b["system"], b["band"]) == _reference(call, a["prediction_set"], a["p_values_density"],
                                                      a.get("p_ood"), guard)
        changed += (a["label"] != b["label"])
        assert b["conformal"]["guard"]["tau_system"] == 0.5 and "guard" not in a["conformal"]
    assert changed > 0  # the test points reach the guard


def test_exact_copies_stay_identity_under_a_never_guard(tmp_path):
    _, guarded = _artifacts(tmp_path, naming.Guard(tau_band=0.9, tau_system=naming.NEVER))
    d, _ = Decider(guarded).decide({"f1": 0.0, "f2": 0.0}, exact={"identical": True})
    assert d["label"] == "identity" and d["rule"] == "exact-copy"


def test_aggregate_guards_with_bonferroni_density_p_values(tmp_path):
    guard = naming.Guard(tau_band=0.0, tau_system=0.5)
    plain, guarded = _artifacts(tmp_path, guard)
    d0, d1 = Decider(plain), Decider(guarded)
    feats = [{"f1": 8.0 + dx, "f2": 8.0} for dx in (-0.5, 0.0, 0.4)]
    a, b = d0.aggregate(feats), d1.aggregate(feats)
    assert a["prediction_set"] == b["prediction_set"]
    dens = [d0.conformal.density_p_values(d0.model.standardise(d0.vector(f)))[0][0] for f in feats]
    bonf = np.minimum(1.0, 3 * np.min(dens, 0))
    p_c = float(bonf[d0.model.classes.index("c")])
    if a["label"] == "c":
        assert b["label"] == ("c" if p_c >= 0.5 else "drift")


def test_with_guard_none_gives_back_the_unguarded_conformal_part(tmp_path):
    plain, guarded = _artifacts(tmp_path, naming.Guard(0.1, 0.2))
    back = naming.with_guard(guarded.to_dict(), None)
    assert back["conformal"] == {k: v for k, v in plain.to_dict()["conformal"].items()}
    assert "guard" not in back["calibration"]["conformal"]
    with pytest.raises(ValueError, match="conformal"):
        naming.with_guard({**plain.to_dict(), "conformal": None}, naming.Guard())


def test_cli_regard_rewrites_only_the_guard(tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    plain, _ = _artifacts(tmp_path, naming.Guard())
    src_bytes = (tmp_path / "plain.json").read_bytes()
    out = tmp_path / "v9.json"
    res = CliRunner().invoke(app, ["calibrate", "--regard", str(tmp_path / "plain.json"), "--guard",
                                   "tau_band=0.2,tau_system=1.01,tau_gate=0.02,band_rule=best", "-o", str(out),
                                   "--id", "t-v9", "--version", "9", "--quiet", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plain.json").read_bytes() == src_bytes
    new = thresholds.Thresholds.from_json(out)
    assert new.id == "t-v9" and str(new.version) == "9"
    assert new.conformal["guard"]["band_rule"] == "best" and new.conformal["guard"]["tau_gate"] == 0.02
    assert new.calibration["conformal"]["guard"]["rewritten_from"].startswith(plain.id)
    old = {k: v for k, v in plain.to_dict().items() if k not in ("id", "version", "sha256", "conformal", "calibration")}
    assert {k: v for k, v in new.to_dict().items() if k in old} == old
    assert {k: v for k, v in new.conformal.items() if k != "guard"} == plain.conformal
    assert json.loads(res.stdout)["guard"]["tau_band"] == 0.2


@pytest.mark.parametrize("args,msg", [(["--guard", "tau_band=oops"], "--guard"),
                                      (["--guard", "band_rule=median"], "band_rule"),
                                      ([], "not both")])
def test_cli_refuses_bad_guard_or_corpus_plus_regard(tmp_path, args, msg):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    _artifacts(tmp_path, naming.Guard())
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("reference,suspect,system,image_id\n")
    lead = [str(corpus), "--regard", str(tmp_path / "plain.json")] if not args else \
        ["--regard", str(tmp_path / "plain.json")]
    res = CliRunner().invoke(app, ["calibrate", *lead, "-o", str(tmp_path / "x.json"), "--quiet", *args])
    assert res.exit_code == 2 and msg in res.output
    assert not (tmp_path / "x.json").exists()
