"""bench/openset.py's round-6 pieces (issue 11): the photo sets (standard / tuning / fresh) and the per-system and
per-photo breakdown of the known-system misses, checked against a brute-force count."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fingerprint_cli import images
from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import thresholds
from fingerprint_cli.anchored.attribute import Decider
from test_calibrate import _gaussian_corpus

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def openset():
    sys.path.insert(0, str(BENCH))
    import openset as mod

    return mod


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        images.save_png(rng.random((8, 8, 3)).astype(np.float32), folder / f"p{i:03d}.png")
    return images.list_images(folder)


def test_photo_sets_are_disjoint_and_follow_the_written_positions(openset, tmp_path):
    from corpus_local import split_of

    listed = _photos(tmp_path / "val", 75)
    std = openset.select_set([tmp_path / "val"], "standard", 20)
    tun = openset.select_set([tmp_path / "val"], "tuning", None)
    fresh = openset.select_set([tmp_path / "val"], "fresh", None)
    evals = [p for p in listed if split_of(images.sha256_file(p)) == "eval"]
    assert std == evals[:20]  # the standard photos: the first 20 eval-split photos, as in rounds 2-5
    assert tun == [p for p in listed[:60] if p not in set(std)]
    assert fresh == listed[60:]
    assert not (set(std) & set(tun)) and not (set(std) & set(fresh)) and not (set(tun) & set(fresh))
    # a bench/photos.py split (its ../manifest.csv starts "split,file,source"): fresh in full, never tuning
    pp = _photos(tmp_path / "photos" / "eval", 5)
    (tmp_path / "photos" / "manifest.csv").write_text("split,file,source,original,sha256,width,height\n")
    assert openset.select_set([tmp_path / "photos" / "eval"], "fresh", None) == pp
    assert openset.select_set([tmp_path / "photos" / "eval"], "tuning", None) == []
    # another manifest (shared/data's) does not make a folder a photos.py split
    (tmp_path / "manifest.csv").write_text("path,generator\n")
    assert openset.select_set([tmp_path / "val"], "fresh", None) == listed[60:]


def test_misses_breakdown_matches_a_brute_force_count(openset):
    X, y, g = _gaussian_corpus(30, 2, seed=41)
    names = ["f1", "f2", "f3", "f4"]
    doc = thresholds.seal(cal.calibrate(cal.Corpus(X, names, {}, y, g, bands={"a": "x", "b": "y", "c": "y"}),
                                        artifact_id="t", B=20, alpha=0.1, nonconformity="robust-top3+knn"))
    dec = Decider(doc)
    Xn, yn, gn = _gaussian_corpus(12, 2, seed=42)
    Xn = Xn + np.where(np.arange(len(Xn))[:, None] % 5 == 0, 3.0, 0.0)  # some calls pushed off their cloud
    rows = [{"kind": "known", "truth": t, "truth_band": {"a": "x"}.get(t, "y"), "image_id": i, "processing": t}
            for t, i in zip(yn, gn)]
    feats = [dict(zip(names, x)) for x in Xn]
    out = openset.evaluate(rows, feats, dec)
    assert "held_out" not in out  # a run without held-out rows has no open-set block
    miss, unk = {}, {}
    for r, f in zip(rows, feats):
        d = dec.decide(f, top_k=3)[0]
        m = r["truth"] not in (d["prediction_set"] or [])
        for key, v in (("s", r["truth"]), ("p", r["image_id"])):
            miss[key, v] = miss.get((key, v), 0) + m
            unk[key, v] = unk.get((key, v), 0) + (m and d["label"] == "unknown")
    per_sys, per_photo = out["known_misses"]["per_system"], out["known_misses"]["per_photo"]
    assert sorted(per_sys) == ["a", "b", "c"] and len(per_photo) == 12
    for s, (n, missed, un) in per_sys.items():
        assert (n, missed, un) == (int((yn == s).sum()), miss["s", s], unk["s", s])
    for p, (n, missed, un) in per_photo.items():
        assert (n, missed, un) == (int((gn == p).sum()), miss["p", p], unk["p", p])
    assert sum(v[1] for v in per_sys.values()) > 0  # the pushed calls make some misses
    assert out["known"]["coverage"] == pytest.approx(1 - sum(v[1] for v in per_sys.values()) / len(rows))


def test_decided_block_matches_a_brute_force_count(openset):
    """Round 8's rule rows: decided = a band named, right = the named system (or, band only, the band) is true."""
    X, y, g = _gaussian_corpus(30, 2, seed=43)
    names = ["f1", "f2", "f3", "f4"]
    bands = {"a": "benign", "b": "tight", "c": "drift"}
    doc = thresholds.seal(cal.calibrate(cal.Corpus(X, names, {}, y, g, bands=bands), artifact_id="t", B=20,
                                        alpha=0.1, nonconformity="robust-top3+knn", disc="logistic"))
    dec = Decider(doc)
    Xn, yn, gn = _gaussian_corpus(12, 2, seed=44)
    Xn = Xn + np.where(np.arange(len(Xn))[:, None] % 4 == 0, 1.5, 0.0)
    rows = [{"kind": "known", "truth": t, "truth_band": bands[t], "image_id": i, "processing": t}
            for t, i in zip(yn, gn)]
    feats = [dict(zip(names, x)) for x in Xn]
    got = openset.evaluate(rows, feats, dec)["decided"]["known"]
    n_dec = n_right = n_ai = n_ai_dec = 0
    for r, f in zip(rows, feats):
        d = dec.decide(f, top_k=3)[0]
        decided = d["band"] in set(bands.values())
        right = d["system"] == r["truth"] if d["system"] in bands else d["band"] == r["truth_band"]
        n_dec += decided
        n_right += decided and right
        if r["truth_band"] in ("tight", "drift"):
            n_ai += 1
            n_ai_dec += decided
    assert got["n"] == len(rows) and got["n_decided"] == n_dec and got["n_ai"] == n_ai
    assert got["decided"] == pytest.approx(n_dec / len(rows))
    assert got["accuracy_decided"] == pytest.approx(n_right / n_dec)
    assert got["ai_decided"] == pytest.approx(n_ai_dec / n_ai)
    assert 0 < n_dec < len(rows)  # some calls decided, some not: the count is not trivial


def test_round8_lists_are_new_and_fresh8_is_the_eval_split(openset, tmp_path):
    """TEST8 shares no processing with rounds 1-7's lists; its family-adjacent entries are flagged; fresh8 photos
    are the eval-split photos (never the calib split a calibration corpus uses)."""
    from corpus_local import split_of

    earlier = set().union(*(set(openset.SETS[k]) for k in ("dev", "test", "test3", "test4", "test6")))
    assert len(openset.TEST8) >= 10 and not set(openset.TEST8) & earlier
    nets = [k for k, (_, kind) in openset.TEST8.items() if kind == "network"]
    assert len(nets) >= 2 and set(nets) <= set(openset.FAMILY_ADJACENT)
    listed = _photos(tmp_path / "train", 30)
    got = openset.select_set([tmp_path / "train"], "fresh8", 5)
    assert got == [p for p in listed if split_of(images.sha256_file(p)) == "eval"][:5]


def _check_edits_run(openset, held: dict, seed: int) -> None:
    """Every non-network processing of ``held`` runs on a photo: same shape, float32 in [0, 1], changed; seeded ones
    are reproducible from their seed and differ across seeds."""
    px = np.clip(np.random.default_rng(seed).normal(0.5, 0.2, (32, 32, 3)), 0, 1).astype(np.float32)
    for name, (fn, kind) in held.items():
        if kind == "network":
            continue
        out = fn(px, 7) if name in openset.SEEDED else fn(px)
        assert out.shape == px.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1, name
        assert np.abs(out - px).mean() > 1e-4, name
        if name in openset.SEEDED:
            assert np.array_equal(out, fn(px, 7)) and not np.array_equal(out, fn(px, 8))

def test_round9_lists_are_new_and_fresh9_follows_fresh8(openset, tmp_path):
    """TEST9 shares no processing with rounds 1-8's lists and runs on a photo (right shape, changed, seeded ones
    reproducible); fresh9 is the eval split at positions 41-73 per folder, disjoint from fresh8."""
    from corpus_local import split_of

    earlier = set().union(*(set(openset.SETS[k]) for k in ("dev", "test", "test3", "test4", "test6", "test8")))
    assert len(openset.TEST9) >= 10 and not set(openset.TEST9) & earlier
    nets = [k for k, (_, kind) in openset.TEST9.items() if kind == "network"]
    assert len(nets) >= 2 and set(nets) <= set(openset.FAMILY_ADJACENT)
    _check_edits_run(openset, openset.TEST9, 3)
    listed = _photos(tmp_path / "train", 240)
    ev = [p for p in listed if split_of(images.sha256_file(p)) == "eval"]
    assert len(ev) > 45
    got = openset.select_set([tmp_path / "train"], "fresh9", None)
    assert got == ev[40:73] and not set(got) & set(openset.select_set([tmp_path / "train"], "fresh8", 40))


def test_round10_list_is_new_and_fresh10_takes_every_photo(openset, tmp_path):
    """TEST10 shares no processing with rounds 1-9's lists nor a calibration system, runs on a photo (right shape,
    in range, changed), flags its networks; fresh10 is every photo of the folders given, in order."""
    from corpus_local import BANDS_V4

    earlier = set().union(*(set(v) for k, v in openset.SETS.items() if k != "test10"))
    assert len(openset.TEST10) >= 12 and not set(openset.TEST10) & (earlier | set(BANDS_V4))
    nets = [k for k, (_, kind) in openset.TEST10.items() if kind == "network"]
    assert len(nets) >= 2 and set(nets) <= set(openset.FAMILY_ADJACENT)
    _check_edits_run(openset, openset.TEST10, 4)
    a, b = _photos(tmp_path / "a", 3), _photos(tmp_path / "b", 2)
    assert openset.select_set([tmp_path / "a", tmp_path / "b"], "fresh10", None) == a + b
    assert openset.select_set([tmp_path / "a", tmp_path / "b"], "fresh10", 4) == (a + b)[:4]

def test_round11_list_is_new_and_flags_its_networks(openset):
    """TEST11 shares no processing with rounds 1-10's lists nor a calibration system, has >= 12 entries of which >= 3
    networks (all flagged family-adjacent), and its edits run on a photo (right shape, in range, changed; seeded
    ones reproducible)."""
    from corpus_local import BANDS_V4

    earlier = set().union(*(set(v) for k, v in openset.SETS.items() if k != "test11"))
    assert len(openset.TEST11) >= 12 and not set(openset.TEST11) & (earlier | set(BANDS_V4))
    nets = [k for k, (_, kind) in openset.TEST11.items() if kind == "network"]
    assert len(nets) >= 3 and set(nets) <= set(openset.FAMILY_ADJACENT)
    _check_edits_run(openset, openset.TEST11, 5)


def test_round12_list_is_new_benign_heavy_and_flags_its_networks(openset):
    """TEST12 shares no processing with rounds 1-11's lists nor a calibration system, has >= 10 entries, more benign
    than network, >= 2 networks (all flagged family-adjacent), and its edits run on a photo (right shape, in range,
    changed; seeded ones reproducible)."""
    from corpus_local import BANDS_V4

    earlier = set().union(*(set(v) for k, v in openset.SETS.items() if k != "test12"))
    assert len(openset.TEST12) >= 10 and not set(openset.TEST12) & (earlier | set(BANDS_V4))
    nets = [k for k, (_, kind) in openset.TEST12.items() if kind == "network"]
    assert 2 <= len(nets) < len(openset.TEST12) - len(nets) and set(nets) <= set(openset.FAMILY_ADJACENT)
    _check_edits_run(openset, openset.TEST12, 6)
    px = np.random.default_rng(1).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    out = openset.box_x2_bilinear_rt(px)
    assert np.allclose(out[::2, ::2].mean(), px.mean(), atol=0.05) and not np.allclose(out, px)


def test_fresh9_plus_10_is_fresh9_of_the_first_folder_then_every_photo_of_the_others(openset, tmp_path):
    a, b = _photos(tmp_path / "train", 60), _photos(tmp_path / "b", 3)
    got = openset.select_set([tmp_path / "train", tmp_path / "b"], "fresh9+10", 33)
    assert got == openset.select_set([tmp_path / "train"], "fresh9", 33) + b
    assert set(got) <= set(a) | set(b)


def test_guard_choice_rule_and_tie_break():
    """bench/guard_choice.py picks the most decisive point meeting both constraints, ties to larger levels."""
    sys.path.insert(0, str(BENCH))
    import guard_choice as gc

    def pt(tb, ts, tg, rule, conf, ben, ai):
        return {"tau_band": tb, "tau_system": ts, "tau_gate": tg, "band_rule": rule, "confident": conf,
                "benign_ai": ben, "ai_decided": ai}
    table = [pt(0, 0, 0, "all", 0.1, 0.0, 0.5), pt(0.1, 0, 0, "all", 0.02, 0.005, 0.3),
             pt(0.1, 0.5, 0, "best", 0.01, 0.005, 0.3), pt(0.1, 0.5, 0, "all", 0.01, 0.005, 0.3),
             pt(0.2, 0.9, 0, "all", 0.0, 0.02, 0.4), pt(0.05, 0.9, 0.1, "all", 0.0, 0.0, 0.2)]
    assert gc.choose(table) == table[3]
    assert gc.choose([table[0], table[4]]) is None


def test_feature_choice_rule_needs_coverage_and_accuracy_and_ties_to_fewer_features():
    """bench/feature_choice.py: the largest mean named-band rate among candidates meeting coverage and accuracy."""
    sys.path.insert(0, str(BENCH))
    import feature_choice as fc

    def cand(name, k, cov, cmin, ai, chain):
        return {"name": name, "k": k, "coverage": cov, "coverage_min": cmin, "ai": ai, "chain": chain}
    t = [cand("a", 20, 0.96, 0.93, (0.20, 0.99), (0.30, 0.99)), cand("b", 28, 0.96, 0.93, (0.30, 0.99), (0.20, 0.99)),
         cand("c", 22, 0.96, 0.93, (0.25, 0.99), (0.25, 0.99)), cand("d", 23, 0.93, 0.93, (0.9, 1.0), (0.9, 1.0)),
         cand("e", 23, 0.96, 0.93, (0.9, 0.90), (0.9, 1.0))]
    assert fc.choose(t)["name"] == "a"  # a, b, c tie at 0.25: fewest features
    assert fc.choose(t[3:]) is None  # d misses coverage, e the accuracy


def test_artifact_corpus_period_only_matches_the_family_and_reuse_skips_computed_pairs(tmp_path, monkeypatch):
    """bench/artifact_corpus.py: ``--only period`` gives the family's own af_period values for a stored pair, and a
    part run copies reused pairs' values (limited to the group) without recomputing them."""
    import json

    sys.path.insert(0, str(BENCH))
    import artifact_corpus as ac

    rng = np.random.default_rng(3)
    ref = np.clip(rng.normal(0.5, 0.2, (48, 48, 3)), 0, 1).astype(np.float32)
    sus = np.repeat(np.repeat(ref[::2, ::2], 2, 0), 2, 1)  # a x2 nearest round trip: a period-2 trace
    images.save_png(ref, tmp_path / "r.png")
    images.save_png(sus, tmp_path / "s.png")
    full = ac.features_of(str(tmp_path / "r.png"), str(tmp_path / "s.png"))
    only = ac.features_of(str(tmp_path / "r.png"), str(tmp_path / "s.png"), only="period")
    assert set(only) == {"af_period_2", "af_period_3", "af_period_4"} and all(only[k] == full[k] for k in only)
    assert only["af_period_2"] > only["af_period_3"]

    recs = [{"status": "ok", "inputs": {"reference": {"path": str(tmp_path / "r.png")},
                                        "suspect": {"path": p}}} for p in (str(tmp_path / "s.png"), "reused.png")]
    old = tmp_path / "old.part0of1"
    old.write_text(json.dumps({"k": 1, "f": {"af_period_2": 9.0, "af_halluc_0": 1.0}}) + "\n")
    reuse = ac.reused(recs, [old], "period")
    assert reuse == {(str(tmp_path / "r.png"), "reused.png"): {"af_period_2": 9.0}}
    real = ac.features_of
    monkeypatch.setattr(ac, "features_of", lambda r, s, only="": real(r, s, only) if s != "reused.png" else 1 / 0)
    ac.run_part(recs, 0, 1, tmp_path / "new.part0of1", "period", reuse)
    got = [json.loads(x) for x in (tmp_path / "new.part0of1").read_text().splitlines()]
    assert got == [{"k": 0, "f": only}, {"k": 1, "f": {"af_period_2": 9.0}}]


def test_two_artifacts_with_one_id_are_refused_before_any_evaluation(openset):
    """Results are keyed by artifact id, so two files carrying one id would lose one of them: refused."""
    with pytest.raises(SystemExit, match="share an id"):
        openset._evaluate_all([], [], [{"id": "a"}, {"id": "b"}, {"id": "a"}], None, set())
