"""Round 8 (issue 11): the artifacts shipped before the discriminative p-values (v1 to v7, ssim-psnr-v1) decide
exactly as they did — every decision's canonical JSON (labels, p-values, prediction set, posteriors, reasons
text) is byte-identical to the one the pre-round-8 code (commit 32b663f) gave for the same feature vectors.

The vectors are derived from each artifact itself (:func:`golden_vectors`: every class mean, a seeded jitter of
every third one, a few far points); ``tests/data/attribute_decisions_r7.json`` holds, per artifact, its sha256 and
per call the label, the prediction set and the sha256 of the decision's canonical JSON (the ``thresholds`` summary
left out: it names the file's path). Regenerate with ``bench/r8_golden.py`` under the old code only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fingerprint_cli.anchored import attribute, thresholds

GOLDEN = Path(__file__).parent / "data" / "attribute_decisions_r7.json"
ARTIFACTS = ("local-offline-pixel-v1", "local-offline-ssim-psnr-v1", "local-offline-pixel-v2",
             "local-offline-pixel-v3", "local-offline-pixel-v4", "local-offline-pixel-v5", "local-offline-pixel-v7")


def golden_vectors(doc) -> list[dict[str, float]]:
    """Feature vectors of ``doc``: each class mean (raw units), a seeded jitter of every third, four far points."""
    mean = np.asarray(doc.standardisation.mean, float)
    std = np.asarray(doc.standardisation.std, float)
    cm = np.asarray(doc.class_model.means, float)
    rng = np.random.default_rng(8)
    zs = []
    for k in range(len(cm)):
        jit = cm[k] + rng.normal(0, 0.7, cm.shape[1])
        zs += [cm[k], jit] if k % 3 == 0 else [cm[k]]
    zs += [rng.normal(0, 3, cm.shape[1]) for _ in range(4)]
    return [dict(zip(doc.features, (z * std + mean).tolist())) for z in zs]


def decision_digests(name: str) -> dict:
    """{sha256 of the artifact, calls: [label, prediction set, sha256 of the decision's canonical JSON]}."""
    doc = thresholds.find(name)
    dec = attribute.Decider(doc)
    calls = []
    for i, f in enumerate(golden_vectors(doc)):
        d = dec.decide(f, top_k=3, exact={"identical": i == 0})[0].to_dict()
        d.pop("thresholds")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        calls.append([d["label"], d.get("prediction_set"), hashlib.sha256(blob).hexdigest()])
    return {"sha256": doc.sha256, "calls": calls}


@pytest.mark.parametrize("name", ARTIFACTS)
def test_pre_round8_artifacts_decide_byte_identically(name):
    want = json.loads(GOLDEN.read_text())[name]
    got = decision_digests(name)
    assert got["sha256"] == want["sha256"]
    assert [c[:2] for c in got["calls"]] == [c[:2] for c in want["calls"]]  # labels and sets first (readable)
    assert got["calls"] == want["calls"]


def test_golden_vectors_reach_several_answers():
    """The vectors are not all one answer: the comparison above covers systems, bands, unknown and exact copies."""
    want = json.loads(GOLDEN.read_text())
    labels = {c[0] for v in want.values() for c in v["calls"]}
    assert {"identity", "unknown", "inconclusive"} <= labels
    assert len(labels) >= 8
