"""Integrity 8 (review-8 finding L3): ``fpx detect`` never answers ``real``.

No fingerprint calling an image generated at its stated false-positive rate is not evidence of a camera: the miss
rate is not calibrated, and a generator outside the library is never detected. The label is ``not-detected``
(``detected`` false, ``generated`` null, a note saying so); outside the calibrated conditions it abstains
(``unknown``) exactly as a claim there does; triage lists the non-detection as ``no-match`` pointing nowhere.
"""

from __future__ import annotations

import json

from conftest import natural_image
from test_review8_triage import calibrated_inbox
from fingerprint_cli import api, images
from fingerprint_cli.dif import detect
from fingerprint_cli.triage import core


def test_detect_says_not_detected_never_real_and_triage_agrees(tmp_path):
    cal_file, inbox = calibrated_inbox(tmp_path)
    recs = api.detect([cal_file], [inbox], quiet=True)
    assert len(recs) == 5
    missed = [r for r in recs if r.decision["label"] == detect.NOT_DETECTED]
    assert missed, [r.decision for r in recs]
    for r in recs:
        d = json.loads(json.dumps(r.to_dict()))["decision"]
        assert d["label"] != "real"
        if d["label"] == "not-detected":  # within the conditions: no claim either way, and the note says why
            assert d["detected"] is False and d["generated"] is None and d["within_conditions"] is True
            assert d["p_value"] > d["fpr"] == 0.05
            assert d["note"] == detect.NOT_DETECTED_NOTE and "not evidence that the image is real" in d["note"]
    tri = {r.inputs["image"]["path"]: r for r in core.run([inbox], fingerprints=[str(cal_file)])}
    for r in missed:
        t = tri[r.inputs["image"]["path"]]
        [e] = [e for e in t.reasons if e["source"] == "fingerprint:gen"]
        assert e["says"] == "no-match" and "miss rate is not calibrated" in e["detail"] + e["strength"]
        assert t.decision["label"] not in ("real", "captured")


def test_a_non_detection_outside_the_conditions_abstains_like_a_claim(tmp_path):
    cal_file, inbox = calibrated_inbox(tmp_path)
    big = tmp_path / "big.png"  # twice the training scale: outside the trained conditions
    images.save_png(natural_image(96, 96, seed=710), big)
    [r] = api.detect([cal_file], [big], quiet=True)
    d = r.decision
    assert d["within_conditions"] is False and d["p_value"] > 0.05
    assert d["label"] == "unknown" and d["generated"] is None and d["detected"] is None and "note" not in d
    assert d["abstained"] == "outside the calibrated conditions"
    assert d["call_outside_conditions"]["label"] == "not-detected" and d["call_outside_conditions"]["fingerprints"]
    assert not detect.claimed(d)


def test_a_non_detection_inside_some_fingerprints_conditions_stays_not_detected_for_those_only():
    """With several fingerprints, one outside its conditions does not void the others' non-detections: the label
    stays ``not-detected``, the record names which fingerprints it holds for and which it says nothing about; only
    when every fingerprint is outside does the answer become ``unknown``."""
    names = ["gen_a", "gen_b", "gen_c"]
    checks = [{"within": True}, {"within": False}, {"within": None}]
    d = detect._abstain_not_detected(detect.not_detected(), names, checks)
    assert d["label"] == detect.NOT_DETECTED and d["detected"] is False and d["generated"] is None
    assert d["not_detected_by"] == ["gen_a", "gen_c"] and d["outside_conditions"] == ["gen_b"]
    assert d["note"].startswith(detect.NOT_DETECTED_NOTE) and "says nothing about that generator" in d["note"]
    assert not detect.claimed(d)
    every = detect._abstain_not_detected(detect.not_detected(), names[:2], [{"within": False}] * 2)
    assert every["label"] == "unknown" and every["detected"] is None and "note" not in every
    assert every["call_outside_conditions"]["fingerprints"] == ["gen_a", "gen_b"]
    inside = detect._abstain_not_detected(detect.not_detected(), names[:1], [{"within": True}])
    assert inside == detect.not_detected()  # nothing outside: unchanged
