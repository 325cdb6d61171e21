"""Catch-all benign systems answered at band level (issue 11 round 4, ``local-offline-pixel-v5``)."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import thresholds
from fingerprint_cli.anchored.attribute import Decider
from fingerprint_cli.errors import ArtifactError, InputError
from test_openset_gate import _line_corpus


def _docs():
    X, y, g = _line_corpus()
    plain = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "drift"})
    marked = cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "drift"}, catch_all=("a",))
    return (thresholds.seal(cal.calibrate(plain, artifact_id="plain", B=20, nonconformity="robust-top3+knn")),
            thresholds.seal(cal.calibrate(marked, artifact_id="marked", B=20, nonconformity="robust-top3+knn")))


def test_a_catch_all_singleton_answers_its_band_and_names_no_system():
    plain, marked = _docs()
    assert "catch_all" not in plain["band_rule"]  # artifacts without catch-alls are unchanged
    assert marked["band_rule"]["catch_all"] == ["a"]
    on_a = {"f1": 0.8, "f2": 0.81}
    d0, _ = Decider(plain).decide(on_a)
    assert d0["prediction_set"] == ["a"] and d0["label"] == "a" and d0["system"] == "a"
    d, _ = Decider(marked).decide(on_a)
    assert d["prediction_set"] == ["a"]  # the same set and p-values: only the answer changes
    assert d["p_values"] == pytest.approx(d0["p_values"])
    assert d["label"] == "benign" and d["band"] == "benign" and d["system"] == "inconclusive"
    assert not d["inconclusive"] and not d["unknown"]  # as for several systems of one band: the band is decided
    assert any("catch-all" in w for w in d["why_inconclusive"])
    on_b = {"f1": 8.0, "f2": -8.0}  # a system that is not a catch-all is still named
    db, _ = Decider(marked).decide(on_b)
    assert db["prediction_set"] == ["b"] and db["label"] == "b" and db["system"] == "b"
    off = {"f1": 1.2, "f2": -1.2}  # outside everything: still unknown
    assert Decider(marked).decide(off)[0]["label"] == "unknown"


def test_catch_all_must_be_a_system_of_the_corpus_and_of_the_artifact():
    X, y, g = _line_corpus(20)
    with pytest.raises(ValueError, match="not in the corpus"):
        cal.calibrate(cal.Corpus(X, ["f1", "f2"], {}, y, g, bands={"a": "benign", "b": "drift"},
                                 catch_all=("zz",)), artifact_id="t", B=20)
    _, marked = _docs()
    doc = dict(marked)
    doc["band_rule"] = {**doc["band_rule"], "catch_all": ["a", "zz"]}
    with pytest.raises(ArtifactError, match="catch-all"):
        Decider(thresholds.seal({k: v for k, v in doc.items() if k != "sha256"}))


def test_corpus_catch_all_column_is_checked(tmp_path):
    rows = ["reference,suspect,system,image_id,band,catch_all",
            "r.png,s1.png,a,i1,benign,1", "r.png,s2.png,b,i1,drift,0", "r.png,s3.png,a,i2,benign,1"]
    ok = tmp_path / "ok.csv"
    ok.write_text("\n".join(rows) + "\n")
    got, bands = cal.read_corpus(ok)
    assert bands == {"a": "benign", "b": "drift"} and [r["catch_all"] for r in got] == ["1", "0", "1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows[:3] + ["r.png,s3.png,a,i2,benign,0"]) + "\n")
    with pytest.raises(InputError, match="line 4: system a is marked catch_all=1 elsewhere"):
        cal.read_corpus(bad)
    odd = tmp_path / "odd.csv"
    odd.write_text("\n".join(rows[:2] + ["r.png,s2.png,b,i1,drift,yes"]) + "\n")
    with pytest.raises(InputError, match="line 3: catch_all is 0, 1 or empty"):
        cal.read_corpus(odd)


def test_corpus_from_pairs_reads_the_marks():
    class Rec:
        def __init__(self, v):
            self.features = {"f": v}
            self.directions = {"f": "higher = more change"}

    keep = [({"system": "a", "image_id": "i1", "catch_all": "1"}, Rec(0.1)),
            ({"system": "b", "image_id": "i1", "catch_all": "0"}, Rec(0.2)),
            ({"system": "c", "image_id": "i2"}, Rec(0.3))]
    corp = cal.corpus_from_pairs(keep, ["f"], None, None)
    assert corp.catch_all == ("a",)
    np.testing.assert_allclose(corp.X[:, 0], [0.1, 0.2, 0.3])


CATCH_ALLS = {"blur_broad", "resample_rt", "rank_filter", "colour_cast", "sharpen_resave"}


def test_shipped_v5_marks_its_five_catch_alls_and_keeps_v4s_gate():
    """local-offline-pixel-v5: pinned; recipe v4 (21 systems, the five catch-alls marked); the gated robust top-3
    score; every system's leave-one-image-out coverage within a couple of points of 1 - alpha."""
    from test_openset_gate import check_shipped_gate

    doc = thresholds.find("local-offline-pixel-v5")
    assert thresholds.SHIPPED_PINS["local-offline-pixel-v5"] == doc["sha256"]
    assert len(doc["systems"]) == 21 and CATCH_ALLS <= set(doc["systems"])
    assert set(doc["band_rule"]["catch_all"]) == CATCH_ALLS
    assert all(doc["band_rule"]["bands"][c] == "benign" for c in CATCH_ALLS)
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate"
    dec = Decider(doc)
    assert dec.catch_all == CATCH_ALLS
    check_shipped_gate(dec)
    # v4 has no catch-all mark: its decisions are unchanged
    assert Decider(thresholds.find("local-offline-pixel-v4")).catch_all == frozenset()


def test_shipped_v7_is_pinned_with_v5s_recipe_and_three_photo_sources():
    """local-offline-pixel-v7 (issue 11 rounds 6-7): pinned to round 6's frozen seal; v5's recipe (21 systems, the
    same five catch-alls, the gated robust top-3 score at w = 0.2) on 161 calibration photos."""
    from test_openset_gate import check_shipped_gate

    doc = thresholds.find("local-offline-pixel-v7")
    assert doc["sha256"].startswith("c88cde09") and thresholds.SHIPPED_PINS["local-offline-pixel-v7"] == doc["sha256"]
    assert len(doc["systems"]) == 21 and set(doc["band_rule"]["catch_all"]) == CATCH_ALLS
    assert doc["conformal"]["kind"] == "mondrian-robust-top3-loo-knn-gate"
    assert doc["conformal"]["gate"]["weight"] == 0.2
    assert doc["calibration"]["corpus"]["n_images"] == 161
    dec = Decider(doc)
    assert dec.catch_all == CATCH_ALLS
    check_shipped_gate(dec)


def _main_job(*extra):
    import json
    from pathlib import Path

    from test_attribute import run

    ex = Path(__file__).resolve().parents[1] / "examples"
    res = run(["attribute", str(ex / "ref.png"), str(ex / "suspect_jpeg.jpg"), str(ex / "suspect_blur.png"),
               "--format", "json", "--quiet", *extra])
    assert res.exit_code == 0, res.output
    return [r["decision"] for r in json.loads(res.stdout)]


def test_readme_main_job_named_v9_keeps_the_numbers_it_printed():
    """The README's main job with v9 named (the default of issue 11 rounds 10-11): both suspects inconclusive with
    the set sizes and p-values README printed then (sets across bands, so the guard names nothing)."""
    jpeg, blur, both = _main_job("-t", "local-offline-pixel-v9")
    assert {d["thresholds"]["id"] for d in (jpeg, blur, both)} == {"local-offline-pixel-v9"}
    assert [d["label"] for d in (jpeg, blur, both)] == ["inconclusive"] * 3
    assert [d["rule"] for d in (jpeg, blur, both)] == ["conformal-prediction-set"] * 3
    assert (jpeg["set_size"], blur["set_size"], both["set_size"]) == (4, 5, 7)
    assert jpeg["p_value"] == pytest.approx(0.7730, abs=1e-4) and blur["p_value"] == pytest.approx(0.2973, abs=1e-4)
    assert both["p_value"] == pytest.approx(0.2771, abs=1e-4)
    assert jpeg["prediction_set"] == ["jpeg_q85", "ffdnet_s5", "jpeg_q50", "ffdnet_s15"]
    assert blur["prediction_set"][:2] == ["ffdnet_s15", "resample_rt"] and "waifu2x_anime" in blur["prediction_set"]
    assert all(p >= 0.05 for d in (jpeg, blur) for p in (d["p_values"][s] for s in d["prediction_set"]))


def test_readme_main_job_is_answered_by_v10_with_the_printed_numbers():
    """The README's main job (default artifact, the example images): v10 (issue 11 round 12), both suspects
    inconclusive with the set sizes and p-values README prints (sets across bands, so the guard names nothing);
    neither is an exact copy."""
    jpeg, blur, both = _main_job()
    assert {d["thresholds"]["id"] for d in (jpeg, blur, both)} == {"local-offline-pixel-v10"}
    assert [d["label"] for d in (jpeg, blur, both)] == ["inconclusive"] * 3
    assert [d["rule"] for d in (jpeg, blur, both)] == ["conformal-prediction-set"] * 3
    assert (jpeg["set_size"], blur["set_size"], both["set_size"]) == (4, 6, 5)
    assert jpeg["p_value"] == pytest.approx(0.6949, abs=1e-4) and blur["p_value"] == pytest.approx(0.3180, abs=1e-4)
    assert both["p_value"] == pytest.approx(0.3061, abs=1e-4)
    assert jpeg["prediction_set"] == ["jpeg_q85", "jpeg_q50", "ffdnet_s5", "ffdnet_s15"]
    assert blur["prediction_set"][:2] == ["ffdnet_s15", "resample_rt"]
    assert all(p >= 0.05 for d in (jpeg, blur) for p in (d["p_values"][s] for s in d["prediction_set"]))
