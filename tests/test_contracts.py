"""The typed contracts (issue 16): Thresholds round-trips every artifact byte for byte and refuses broken ones;
Decision is exactly the record's decision dict; the record schema carries the Decision model."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from fingerprint_cli import schema
from fingerprint_cli.anchored import calibrate as cal
from fingerprint_cli.anchored import thresholds
from fingerprint_cli.anchored.attribute import Decider
from fingerprint_cli.anchored.thresholds import SHIPPED_PINS, Thresholds
from fingerprint_cli.decision import Decision
from fingerprint_cli.errors import ArtifactError, InputError
from fingerprint_cli.records import Record

SHIPPED = sorted((resources.files("fingerprint_cli") / "thresholds").iterdir(), key=lambda e: e.name)
SHIPPED = [e for e in SHIPPED if e.name.endswith(".json")]


def _corpus(n_images: int = 12, reps: int = 2, seed: int = 0) -> cal.Corpus:
    """Three well-separated Gaussian systems over images with an image effect (24 calls each: enough for a
    p-value below alpha 0.05, so `unknown` can happen)."""
    rng = np.random.default_rng(seed)
    mu = {"a": np.zeros(3), "b": np.array([4.0, 0, 0]), "c": np.array([0, 4.0, 2])}
    X, y, g = [], [], []
    for i in range(n_images):
        eff = rng.normal(0, 0.2, 3)
        for s, m in mu.items():
            for _ in range(reps):
                X.append(m + eff + rng.normal(size=3))
                y.append(s)
                g.append(f"img{i}")
    return cal.Corpus(np.array(X), ["f1", "f2", "f3"], {"f1": "higher = more change"}, np.array(y), np.array(g),
                      bands={"a": "tight", "b": "drift", "c": "drift"})


def _sha_of_canonical(doc: dict) -> str:
    """The seal recomputed here, independently of thresholds.canonical: sorted keys, compact, UTF-8."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- Thresholds
def test_every_shipped_artifact_is_pinned_and_loads():
    assert len(SHIPPED) == len(SHIPPED_PINS) >= 4
    assert sorted(t.id for t in thresholds.shipped()) == sorted(SHIPPED_PINS)


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_shipped_artifact_round_trips_to_identical_bytes_and_seal(entry):
    data = entry.read_bytes()
    t = Thresholds.from_json(data)
    assert t.to_json() == data  # byte-identical: key order, float repr, indentation, final newline
    assert t.sha256 == SHIPPED_PINS[t.id] == _sha_of_canonical(json.loads(data))
    assert thresholds.seal(t.to_dict())["sha256"] == t.sha256
    assert list(t.to_dict()) == list(json.loads(data))  # keys in file order
    assert dict(t) == json.loads(data)  # the compatible mapping is the document itself
    again = Thresholds.from_json(t.to_json())
    assert again == t and again.to_json() == data


def test_loaded_artifact_knows_its_path_outside_the_sealed_document(tmp_path):
    t = thresholds.find("local-offline-pixel-v3")
    assert t.path == "fingerprint_cli/thresholds/local-offline-pixel-v3.json" and t.user_path is None
    assert "_path" not in t.to_dict() and "path" not in t.to_dict()
    f = tmp_path / "copy.json"
    f.write_bytes(t.to_json())
    mine = thresholds.load(f)
    assert mine.path == str(f) and mine.user_path == str(f) and mine.to_json() == t.to_json()
    assert mine.summary()["path"] == str(f)
    # typed fields hold what the JSON says
    doc = json.loads(t.to_json())
    assert t.encoder is None and t.features == doc["features"]
    assert t.class_model.classes == doc["class_model"]["classes"]
    assert t.band_rule.bands == doc["band_rule"]["bands"] and t.inconclusive.alpha == doc["inconclusive"]["alpha"]
    assert t.standardisation.std == doc["standardisation"]["std"] and t.is_conformal
    assert t.loo["accuracy"] == doc["calibration"]["loo"]["accuracy"]
    assert (t.created, t.fpx_version) == (doc["created"], doc["fpx_version"])
    assert (t.class_model.space, t.class_model.fitted_by) == (doc["class_model"]["space"],
                                                              doc["class_model"]["fitted_by"])


def test_freshly_calibrated_artifact_round_trips(tmp_path):
    doc = cal.calibrate(_corpus(), artifact_id="fresh-v1", B=100, description="unit test corpus")
    out = tmp_path / "fresh.json"
    saved = thresholds.save(doc, out)
    data = out.read_bytes()
    assert saved.path == str(out) and saved.to_json() == data
    loaded = Thresholds.from_json(out)
    assert loaded.to_json() == data and loaded.sha256 == _sha_of_canonical(json.loads(data))
    assert loaded == saved and loaded.to_dict() == thresholds.seal(doc)
    # a v1-style artifact (no conformal part) too, with a nested encoder pin
    v1 = cal.calibrate(_corpus(seed=1), artifact_id="fresh-v1-noconf", B=100, alpha=None,
                       encoder={"id": "dinov2-vitb14", "weights_sha256": "ab" * 32, "resolution": 56,
                                "verified": False})
    t1 = thresholds.save(v1, tmp_path / "v1.json")
    assert (tmp_path / "v1.json").read_bytes() == Thresholds.from_json(tmp_path / "v1.json").to_json()
    assert t1.encoder.resolution == 56 and t1.encoder.verified is False and t1.conformal is None
    assert t1.inconclusive.max_mahalanobis2 == v1["inconclusive"]["max_mahalanobis2"]


def test_artifact_is_read_only():
    t = thresholds.find("local-offline-ssim-psnr-v1")
    before = t.to_json()
    got = t["calibration"]
    got["loo"]["accuracy"] = -1.0  # a reader's copy
    d = t.to_dict()
    d["features"].append("x")
    assert t.to_json() == before
    with pytest.raises(TypeError):
        t.update(id="other")


def _resealed(edit) -> bytes:
    doc = thresholds.find("local-offline-ssim-psnr-v1").to_dict()
    doc["id"] = "my-edit-v1"
    edit(doc)
    return (json.dumps(thresholds.seal(doc), indent=1) + "\n").encode()


@pytest.mark.parametrize("case, message", [
    ("flipped", "has been modified"),
    ("not-json", "not valid JSON"),
    ("list", "not an fpx thresholds artifact"),
    ("missing-key", "lacks calibration"),
    ("class-model-list", "malformed"),
    ("band-rule-string", "malformed"),
    ("one-class", "inconsistent class model"),
    ("zero-std", "std is not positive"),
    ("bad-alpha", "alpha 0.9 is not in"),
    ("resealed-shipped", "edited and resealed"),
])
def test_broken_artifact_refused_loudly(case, message):
    good = thresholds.find("local-offline-ssim-psnr-v1").to_json()
    data = {
        "flipped": lambda: good.replace(b'"ssim_clean"', b'"ssim_clear"', 1),
        "not-json": lambda: good[: len(good) // 2],
        "list": lambda: b"[1, 2]",
        "missing-key": lambda: _resealed(lambda d: d.pop("calibration")),
        "class-model-list": lambda: _resealed(lambda d: d.update(class_model=[1, 2])),
        "band-rule-string": lambda: _resealed(lambda d: d.update(band_rule="tight")),
        "one-class": lambda: _resealed(lambda d: d["class_model"].update(classes=["a"])),
        "zero-std": lambda: _resealed(lambda d: d["standardisation"]["std"].__setitem__(0, 0.0)),
        "bad-alpha": lambda: _resealed(lambda d: d.update(conformal={"kind": "x"}, inconclusive={"alpha": 0.9})),
        "resealed-shipped": lambda: (json.dumps(thresholds.seal(
            {**json.loads(good), "description": "edited"}), indent=1) + "\n").encode(),
    }[case]()
    with pytest.raises(ArtifactError, match=message):
        Thresholds.from_json(data)


def test_shipped_refuses_a_corrupted_shipped_artifact(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "thresholds").mkdir(parents=True)
    for e in SHIPPED:
        (pkg / "thresholds" / e.name).write_bytes(e.read_bytes())
    victim = pkg / "thresholds" / "local-offline-pixel-v2.json"
    victim.write_bytes(victim.read_bytes().replace(b'"alpha": 0.05', b'"alpha": 0.06', 1))
    monkeypatch.setattr(thresholds.resources, "files", lambda _name: pkg)
    with pytest.raises(ArtifactError, match="local-offline-pixel-v2.json.*modified|modified.*"):
        thresholds.shipped()
    with pytest.raises(ArtifactError):
        thresholds.find("local-offline-pixel-v3")  # a corrupted installation fails every lookup, loudly


def test_unknown_shipped_id_suggests_the_close_one():
    with pytest.raises(InputError, match="did you mean 'local-offline-pixel-v3'"):
        thresholds.find("local-ofline-pixel-v3")


# ---------------------------------------------------------------- Decision
CONFORMAL_KEYS = ["band", "system", "label", "inconclusive", "unknown", "p_value", "prediction_set", "set_size",
                  "alpha", "p_values", "p_system", "p_band", "band_probabilities", "top_k", "why_inconclusive",
                  "calls", "calibrated", "conformal", "thresholds", "rule"]  # rule: which rule decided (round 7)
V1_KEYS = ["band", "system", "label", "inconclusive", "p_system", "p_band", "band_probabilities", "top_k",
           "min_mahalanobis2", "why_inconclusive", "calls", "calibrated", "thresholds", "p_values",
           "prediction_set", "set_size", "alpha", "p_value", "conformal", "rule"]


@pytest.fixture(scope="module")
def deciders():
    conf = Decider(thresholds.seal(cal.calibrate(_corpus(), artifact_id="t-conf", B=100)))
    v1 = Decider(thresholds.seal(cal.calibrate(_corpus(), artifact_id="t-v1", B=100, alpha=None)))
    return conf, v1


def test_decision_dict_is_the_record_decision_in_its_key_order(deciders):
    conf, v1 = deciders
    for dec, keys in ((conf, CONFORMAL_KEYS), (v1, V1_KEYS)):
        d, reasons = dec.decide({"f1": 0.1, "f2": -0.2, "f3": 0.0})
        assert isinstance(d, Decision) and list(d.to_dict()) == keys
        assert d.label == d.to_dict()["label"] and d.top_k[0]["system"] == "a" and d.calls == 1
        assert "a" in (d.prediction_set if d.prediction_set is not None else ["a"]) and d.label != "unknown"
        assert Decision.from_obj(d.to_dict()).to_dict() == d.to_dict()
        assert d.band_probabilities == d.to_dict()["band_probabilities"] and d.why_inconclusive is not None
        assert d.min_mahalanobis2 == d.to_dict().get("min_mahalanobis2")  # v1 only; None (absent) otherwise
        assert [r["feature"] for r in reasons] and reasons[0]["direction"] in ("higher = more change", "")
    d, _ = conf.decide({"f1": 40.0, "f2": -40.0, "f3": 40.0})
    assert d.label == "unknown" and d.abstention == "unknown" and d.prediction_set == [] and d.unknown
    assert d["p_value"] == d.p_value < 0.05  # the compatible mapping reads the same fields


def test_non_finite_features_give_unknown_through_the_guard(deciders):
    conf, v1 = deciders
    for dec in (conf, v1):
        d, _ = dec.decide({"f1": math.nan, "f2": 0.0, "f3": 0.0})
        assert d.label == d.band == d.system == "unknown" and d.inconclusive and d.why_unknown
        assert d.p_system is None and d.calibrated is False
        assert list(d.to_dict())[-1] == "why_unknown" or "why_unknown" in d.to_dict()
    d, _ = conf.decide({"f1": math.nan, "f2": 0.0, "f3": 0.0})
    assert d.prediction_set == [] and d.set_size == 0 and d.unknown is True and d.p_value is None


def test_decision_update_keeps_order_and_extras():
    d = Decision.make(label="found", fmr=0.01, candidates=[{"path": "r.png"}])
    d.update(chosen="default", fmr=0.02)
    assert d.chosen == "default" and d.extra["fmr"] == 0.02
    assert d.to_dict() == {"label": "found", "fmr": 0.02, "candidates": [{"path": "r.png"}], "chosen": "default"}
    assert list(d.to_dict()) == ["label", "fmr", "candidates", "chosen"] and d.abstention is None
    assert Decision.make(label="not-in-library").abstention == "not-in-library"


# ---------------------------------------------------------------- the schema
def test_schema_carries_the_decision_model(deciders):
    s = schema.load()
    dec_schema = s["$defs"]["Decision"]
    assert s["properties"]["decision"]["anyOf"][0] == {"$ref": "#/$defs/Decision"}
    assert dec_schema["required"] == ["label"] and dec_schema["additionalProperties"] is True
    assert {"label", "band", "system", "p_value", "p_values", "prediction_set", "alpha", "why_inconclusive",
            "why_unknown"} <= set(dec_schema["properties"])
    v = jsonschema.Draft202012Validator(s)
    conf, _ = deciders
    d, reasons = conf.decide({"f1": 0.1, "f2": -0.2, "f3": 0.0})
    rec = Record("attribute", {"reference": {"path": "r.png", "sha256": "0"}}, decision=d.to_dict(),
                 reasons=reasons).to_dict()
    assert not list(v.iter_errors(rec))
    for bad in ({"prediction_set": "a"}, {"set_size": "one"}, {"p_values": {"a": "high"}}, {"label": None}):
        broken = json.loads(json.dumps(rec))
        broken["decision"].update(bad)
        assert list(v.iter_errors(broken)), bad
    other = json.loads(json.dumps(rec))
    other["decision"] = {"label": "real", "generated": False, "score": 0.1}  # another command's decision
    assert not list(v.iter_errors(other))


def test_decision_schema_is_generated_from_the_type():
    from dataclasses import fields

    names = [f.name for f in fields(Decision) if f.name not in ("extra", "order")]
    assert list(schema.generate()["$defs"]["Decision"]["properties"]) == names
    assert Path(schema.__file__).parent.joinpath("schemas", "record.schema.json").read_text() == \
        schema.dumps(schema.generate())
