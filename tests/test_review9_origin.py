"""Review 9: a ``found`` answer of ``fpx origin query`` says when the suspect lies outside the conditions the
index's false-match rate was measured on — a suspect covering less of its found reference than any calibration
query (a tight crop, about a ninth of the frame) — and triage then quotes no error rate for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_origin_local import _crop, _textured, textured_refs
from typer.testing import CliRunner

from fingerprint_cli import images, origin
from fingerprint_cli.cli.app import app
from fingerprint_cli.origin import conditions as C
from fingerprint_cli.origin import local as L
from fingerprint_cli.triage import verdict

FMR = 0.1


def test_the_calibrated_minimum_is_the_smallest_calibration_query():
    # the local test's built-in crops go down to 0.5 x 0.5 of the frame; the global transforms to 0.85 x 0.85
    assert C.calibrated_min_coverage({}, L.DEFAULT, "local") == pytest.approx(0.25)
    assert C.calibrated_min_coverage({}, L.DEFAULT, "similarity") == pytest.approx(0.85 ** 2)
    assert C.calibrated_min_coverage({}, None, "local") == pytest.approx(0.85 ** 2)  # no local features
    with_overlays = C.calibrated_min_coverage({}, L.OVERLAYS, "local")
    assert with_overlays == pytest.approx(min(0.25, min(v[0] for v in L.OVERLAY_TRANSFORMS.values()) ** 2))


@pytest.mark.parametrize("frac", [1 / 3, 0.5, 0.8])
def test_coverage_matches_the_crop_that_made_the_suspect(frac):
    ref = _textured(240, 330, seed=4242)
    h, w = round(240 * frac), round(330 * frac)
    q = _crop(ref, (240 - h) // 3, (330 - w) // 2, h, w)
    for flip in (False, True):
        qq = np.ascontiguousarray(q[:, ::-1]) if flip else q
        cov = C.coverage(L.extract_views(qq), L.extract_reference(ref), (w, h), (330, 240))
        assert cov == pytest.approx(frac * frac, rel=0.1)  # the crop's true share of the reference's area


def test_coverage_is_none_without_a_plausible_map():
    a, b = _textured(160, 220, 1), _textured(160, 220, 2)
    assert C.coverage(L.extract_views(a), L.extract_reference(b), (220, 160), (220, 160)) is None


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("r9o")
    refs = textured_refs(d, 12, 7100, 240, 330)
    idx, _ = origin.build_index([str(refs)], str(d / "lib.fpxindex"), n_calibration=12, false_match_rate=FMR)
    src = images.load_image(refs / "r04.png").pixels
    images.save_png(_crop(src, 80, 110, 80, 110), d / "ninth.png")  # 1/3 x 1/3 of the frame
    images.save_png(_crop(src, 30, 40, 175, 240), d / "large.png")  # ~0.73 x 0.73
    return d, refs, idx


def test_a_ninth_of_the_frame_is_found_with_a_warning_and_a_large_crop_without(lib):
    d, refs, idx = lib
    assert idx.calibration.get("local_threshold") is not None  # the local test is calibrated here
    small, large = origin.query([str(d / "ninth.png"), str(d / "large.png")], idx, k=3)
    for rec in (small, large):
        assert rec.decision["label"] == "found" and rec.decision["origin"]["path"] == str(refs / "r04.png")
    cs, cl = small.details["condition"], large.details["condition"]
    if small.decision["origin"]["passed"] == "local":
        assert cs["calibrated_min_coverage"] == pytest.approx(0.25)
    assert cs["coverage"] == pytest.approx(1 / 9, rel=0.15) and cs["within"] is False
    assert small.decision["within_conditions"] is False
    assert "11% of the found reference's area" in small.decision["outside_conditions"]
    assert "not measured at this size" in small.decision["outside_conditions"]
    assert cl["within"] in (True, None) and "outside_conditions" not in large.decision
    if cl["within"] is None:  # the similarity decided: no map, and the record says why
        assert "similarity decided" in cl["why_not_estimated"]


def test_not_in_library_carries_no_condition(lib):
    d, _, idx = lib
    images.save_png(_textured(200, 260, seed=7999), d / "absent.png")
    rec = origin.query([str(d / "absent.png")], idx, k=3)[0]
    assert rec.decision["label"] == "not-in-library"
    assert "condition" not in rec.details and "within_conditions" not in rec.decision


def test_cli_warns_once_per_suspect_outside_the_conditions(lib):
    d, _, _ = lib
    r = CliRunner().invoke(app, ["origin", "query", str(d / "ninth.png"), str(d / "large.png"),
                                 "-i", str(d / "lib.fpxindex"), "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["decision"]["within_conditions"] for x in lines][0] is False
    warned = [x for x in r.stderr.splitlines() if "outside the index's calibrated conditions" in x]
    assert len(warned) == 1 and "ninth.png" in warned[0]


def test_attribute_index_names_the_condition_of_the_retrieval(lib):
    d, refs, idx = lib
    found, rest = origin.find_references([str(d / "ninth.png")], idx)
    assert not rest and found[0][1] == str(refs / "r04.png")
    info = found[0][2]
    assert info["within_conditions"] is False and "not measured" in info["outside_conditions"]


def test_triage_quotes_no_error_rate_outside_the_conditions():
    base = {"state": "found", "reference": "lib/a.png", "similarity": 0.3, "false_match_rate": 0.01}
    inside = verdict._origin_found(base)
    outside = verdict._origin_found({**base, "outside_calibration": "the suspect covers about 11% ..."})
    assert inside.error_rate == 0.01 and "calibrated false-match rate" in inside.strength
    assert outside.error_rate is None and "outside its calibrated conditions" in outside.strength
    assert "11%" in outside.detail and outside.tier == inside.tier == 4


def test_index_summary_states_the_rate_the_index_reached_not_only_the_requested_one(tmp_path):
    refs = textured_refs(tmp_path, 6, 7300, 120, 160)
    out = tmp_path / "small.fpxindex"
    r = CliRunner().invoke(app, ["origin", "index", str(refs), "-o", str(out), "--calibration-refs", "6",
                                 "--no-local", "--records", str(tmp_path / "recs.jsonl")])
    assert r.exit_code == 0, r.output
    stated = origin.load_index(out).calibration["false_match_rate"]
    assert stated > 0.01  # 30 impostor scores cannot reach 1%
    summary = [x for x in r.stderr.splitlines() if x.startswith("fpx: warning: index ")][0]
    assert f"at false-match rate {stated:.4g} (requested 0.01" in summary


@pytest.mark.parametrize("argv", [["origin", "query", "{empty}", "-i", "{index}"],
                                  ["attribute", "{empty}", "--index", "{index}"]])
def test_an_empty_folder_is_a_usage_error_not_a_silent_success(lib, tmp_path, argv):
    d, _, _ = lib
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(empty=empty, index=d / "lib.fpxindex") for a in argv]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert f"no images found in {empty}: nothing to do" in r.stderr and r.stdout.strip() == ""


def test_triage_keeps_the_query_records_condition_only_for_a_found_answer():
    from fingerprint_cli.triage import evidence

    dec = {"label": "found", "false_match_rate": 0.01, "outside_conditions": "covers about 11% ...",
           "origin": {"path": "lib/a.png", "sha256": "ab", "similarity": 0.2}}
    e = evidence._origin_entry({"status": "ok", "decision": dec, "details": {"candidates": []}}, 5)
    assert e["outside_calibration"] == "covers about 11% ..." and e["reference"] == "lib/a.png"
    assert verdict._origin_found(e).error_rate is None
    inside = evidence._origin_entry({"status": "ok", "decision": {**dec, "outside_conditions": None}}, 5)
    assert "outside_calibration" not in inside and verdict._origin_found(inside).error_rate == 0.01
    absent = evidence._origin_entry({"status": "ok", "decision": {"label": "not-in-library",
                                                                   "outside_conditions": "x"}}, 5)
    assert "outside_calibration" not in absent and absent["reference"] is None
