"""The named steps of ``fpx triage`` on their own: decide() on hand-built evidence, each evidence collector, each
PNG generation-tool parser on a crafted file, the C2PA / XMP / custody-log / origin helpers, and the thin CLI over
:func:`fingerprint_cli.triage.job.run_job`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import PngImagePlugin
from test_triage import run, save, u8

from fingerprint_cli import images
from fingerprint_cli.errors import UsageError
from fingerprint_cli.triage import core, custody, evidence, job, provenance, verdict
from fingerprint_cli.triage.verdict import Evidence, Sources


# ================================================================ decide() on hand-built evidence
def ev(source, says, tier, label=None, error_rate=None):
    return Evidence(source, says, tier, f"strength of {source}", f"detail of {source}", label=label,
                    error_rate=error_rate)


def test_decide_agreement_of_one_rank_names_every_generator_and_lists_weaker_disagreement():
    items = [ev("xmp", "generated", 3, label="Flux"), ev("png-text", "generated", 3, label="sdxl"),
             ev("exif", "captured", 5), ev("jpeg", "context", 5)]
    d = verdict.decide(items)
    assert d["label"] == "generated" and d["tier"] == 3 and d["strength"] == verdict.TIER_NAMES[3]
    assert d["generator"] == "one of: Flux, sdxl" and d["basis"] == ["xmp", "png-text"]
    assert d["why"] == "xmp (strength of xmp): detail of xmp — and 1 more of the same rank agree"
    assert d["error_rate"] is None  # an unsigned declaration has no stated error rate, and the verdict says so
    assert d["error_note"].startswith("no stated error rate: an unsigned declaration")
    assert [x["source"] for x in d["disagreements"]] == ["exif"]  # the weak capture claim is shown, not averaged
    assert d["integrity"] is None


def test_decide_agreement_at_the_calibrated_tier_carries_the_bonferroni_bound():
    items = [ev("fingerprint:a", "generated", 4, label="a", error_rate=0.05),
             ev("fingerprint:b", "generated", 4, label="a", error_rate=0.02),
             ev("fingerprint:c", "no-match", 4, label="c"), ev("origin", "derived-from", 4, error_rate=0.01)]
    d = verdict.decide(items)
    m = sum(1 for e in items if e.source.startswith("fingerprint:"))  # brute force: every calibrated fingerprint
    assert m == 3
    assert d["label"] == "generated" and d["generator"] == "a"
    assert d["error_rate"] == pytest.approx(min(1.0, m * 0.05))
    assert "each of 3 calibrated fingerprint(s) at FPR 0.05" in d["error_note"]
    many = [ev(f"fingerprint:{i}", "generated", 4, error_rate=0.2) for i in range(7)]
    assert verdict.decide(many)["error_rate"] == 1.0  # the bound is capped at 1


def test_decide_a_stronger_rank_wins_over_a_disagreeing_weaker_one():
    items = [ev("c2pa", "captured", 1, label="CameraCo"), ev("fingerprint:g", "generated", 4, error_rate=0.05)]
    d = verdict.decide(items)
    assert d["label"] == "captured" and d["tier"] == 1 and d["generator"] is None  # a capture names no generator
    assert d["error_rate"] is None
    assert [x["source"] for x in d["disagreements"]] == ["fingerprint:g"]


def test_decide_disagreement_within_the_strongest_rank_is_disputed():
    items = [ev("xmp", "ai-edited", 3), ev("png-text", "generated", 3), ev("fingerprint:g", "generated", 4)]
    d = verdict.decide(items)
    assert d["label"] == "disputed" and d["tier"] == 3 and d["basis"] == ["xmp", "png-text"]
    assert d["why"] == "evidence of the same rank disagrees: xmp says ai-edited; png-text says generated"
    assert [x["source"] for x in d["disagreements"]] == ["xmp", "png-text"]
    assert d["error_rate"] is None and d["error_note"].startswith("abstained") and d["generator"] is None


def test_decide_abstains_on_weak_or_no_evidence_and_reports_integrity():
    d = verdict.decide([ev("exif", "captured", 5), ev("fingerprint:g", "generated", 5), ev("jpeg", "context", 5)])
    assert d["label"] == "unknown" and d["tier"] is None and d["basis"] is None
    assert d["why"] == "only weak or uncalibrated evidence: exif says captured; fingerprint:g says generated"
    d = verdict.decide([ev("jpeg", "context", 5), ev("origin", "derived-from", 4)])
    assert d["label"] == "unknown" and d["why"].startswith("no evidence points either way")
    altered = Evidence("c2pa", "altered", 2, "fails validation", "changed after signing")
    d = verdict.decide([altered])
    assert d["label"] == "unknown" and d["integrity"] == "changed after signing"
    d = verdict.decide([altered, ev("xmp", "generated", 3)])
    assert d["label"] == "generated" and d["integrity"] == "changed after signing"


# ================================================================ one collector per kind of evidence
TRUSTED = {"state": "trusted", "meaning": "generated", "signer": "S", "claim_generator": "G",
           "digital_source_type": "trainedAlgorithmicMedia"}
COLLECTED = [
    (verdict._c2pa_evidence, Sources({"c2pa": TRUSTED}), [("c2pa", "generated", 1)]),
    (verdict._c2pa_evidence, Sources({"c2pa": {**TRUSTED, "state": "valid", "meaning": "other"}}),
     [("c2pa", "context", 2)]),
    (verdict._c2pa_evidence, Sources({"c2pa": {"state": "invalid", "meaning": "captured"}}),
     [("c2pa", "altered", 2), ("c2pa-claim", "captured", 5)]),
    (verdict._c2pa_evidence, Sources({"c2pa": {"state": "invalid", "meaning": "ai-edited"}}),
     [("c2pa", "altered", 2), ("c2pa-claim", "ai-edited", 3)]),
    (verdict._xmp_evidence, Sources({"xmp": {"state": "present", "meaning": "captured"}}), [("xmp", "captured", 5)]),
    (verdict._xmp_evidence, Sources({"xmp": {"state": "present", "meaning": "generated"}}),
     [("xmp", "generated", 3)]),
    (verdict._xmp_evidence, Sources({"xmp": {"state": "present", "meaning": None, "creator_tool_is_ai": True,
                                             "creator_tool": "ComfyUI"}}), [("xmp", "generated", 3)]),
    (verdict._xmp_evidence, Sources({"xmp": {"state": "present", "meaning": "other"}}), []),
    (verdict._png_text_evidence, Sources({"png_text": {"generation_tool": "comfyui", "keys": ["prompt"]}}),
     [("png-text", "generated", 3)]),
    (verdict._exif_evidence, Sources({"exif": {"state": "present", "software_is_ai": True}}),
     [("exif", "generated", 3)]),
    (verdict._exif_evidence, Sources({"exif": {"state": "present", "make": "Canon"}}), [("exif", "captured", 5)]),
    (verdict._exif_evidence, Sources({"exif": {"state": "present"}}), []),
    (verdict._jpeg_evidence, Sources({"jpeg": {"state": "present", "quality": 90}}), [("jpeg", "context", 5)]),
    (verdict._origin_evidence, Sources({}, origin={"state": "found", "reference": "r.png", "similarity": 0.9}),
     [("origin", "derived-from", 4)]),
    (verdict._origin_evidence, Sources({}, origin={"state": "not-in-library"}), [("origin", "context", 5)]),
    (verdict._attribution_evidence, Sources({}, attribution={"state": "done", "band": "tight", "system": "flux",
                                                             "calibrated": True, "alpha": 0.05}),
     [("attribution", "ai-edited", 4)]),
    # without conformal calibration an AI band is weak context: it never decides
    (verdict._attribution_evidence, Sources({}, attribution={"state": "done", "band": "tight", "system": "flux"}),
     [("attribution", "ai-edited", 5)]),
    (verdict._attribution_evidence, Sources({}, attribution={"state": "done", "band": "benign", "calibrated": True,
                                                             "alpha": 0.05}),
     [("attribution", "context", 4)]),
    # an abstaining attribution (no calibrated system fits) points nowhere — never "ai-edited"
    (verdict._attribution_evidence, Sources({}, attribution={"state": "done", "band": "unknown", "calibrated": True,
                                                             "alpha": 0.05}),
     [("attribution", "context", 5)]),
    (verdict._attribution_evidence, Sources({}, attribution={"state": "done", "band": "inconclusive"}),
     [("attribution", "context", 5)]),
    (verdict._attribution_evidence, Sources({}, attribution={"state": "error", "band": "tight"}), []),
]


@pytest.mark.parametrize(("collector", "src", "expected"), COLLECTED)
def test_each_collector_reads_its_own_kind(collector, src, expected):
    assert [(e.source, e.says, e.tier) for e in collector(src)] == expected


@pytest.mark.parametrize("collector", verdict.COLLECTORS)
def test_every_registered_collector_says_nothing_about_nothing(collector):
    assert collector(Sources({})) == []
    assert collector(Sources({k: {"state": "absent"} for k in ("c2pa", "xmp", "exif", "png_text", "jpeg")},
                             {"fingerprints": []}, None, None)) == []


FP = {"name": "g", "score": 4.2, "p_value": 0.01, "fpr": 0.05, "n_real": 99}


@pytest.mark.parametrize(("entry", "expected"), [
    ({**FP, "calibrated": True, "generated": True}, ("generated", 4, 0.05)),
    ({**FP, "calibrated": True, "generated": False, "p_value": 0.4}, ("no-match", 4, None)),
    ({**FP, "calibrated": True, "generated": True, "outside_calibration": "a JPEG"}, ("generated", 5, None)),
    ({**FP, "calibrated": True, "generated": False, "outside_calibration": "a JPEG"}, None),
    ({**FP, "calibrated": False, "generated": True, "p_value": None}, ("generated", 5, None)),
    ({**FP, "calibrated": False, "generated": False, "p_value": None}, None),
])
def test_one_fingerprint_is_never_stronger_than_its_calibration(entry, expected):
    e = verdict._one_fingerprint(entry)
    assert (None if e is None else (e.says, e.tier, e.error_rate)) == expected


def test_collect_orders_by_rank_then_direction_then_collector():
    meta = {"c2pa": {"state": "invalid", "meaning": None}, "jpeg": {"state": "present", "quality": 80},
            "exif": {"state": "present", "make": "Canon"}, "png_text": {"generation_tool": "sd-webui"}}
    got = [(e.source, e.tier) for e in verdict.collect(meta, {"fingerprints": [{**FP, "calibrated": False,
                                                                                "generated": True}]},
                                                         {"state": "not-in-library"})]
    assert got == [("c2pa", 2), ("png-text", 3), ("exif", 5), ("fingerprint:g", 5), ("jpeg", 5), ("origin", 5)]


# ================================================================ a parser per PNG generation tool
def _png_text(tmp_path, chunks: dict[str, str]) -> dict:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    p = save(u8(3), tmp_path / "x.png", "PNG", pnginfo=info)
    data = Path(p).read_bytes()
    return provenance.read_png_text(images.probe(data, str(p)).text, "PNG")


@pytest.mark.parametrize(("chunks", "tool", "model", "excerpt_start"), [
    ({"parameters": "a cat\nSteps: 20, Sampler: Euler, Model hash: 6ce0161689"}, "sd-webui", "hash 6ce0161689",
     "a cat"),
    ({"parameters": "Steps: 30, CFG scale: 5, Model: flux-dev"}, "sd-webui", "flux-dev", "Steps: 30"),
    ({"prompt": json.dumps({"3": {"inputs": {"unet_name": "flux1.sft"}}, "4": {"inputs": {"ckpt_name": "a.ckpt"}}})},
     "comfyui", "a.ckpt, flux1.sft", '{"3"'),
    ({"workflow": "{}"}, "comfyui", None, "{}"),
    ({"invokeai_metadata": '{"model": "x"}'}, "invokeai", None, '{"model"'),
    ({"Dream": "a dog -s 50"}, "invokeai", None, "a dog"),
    ({"Software": "NovelAI", "Comment": '{"steps": 28}'}, "novelai", None, '{"steps"'),
    ({"parameters": '{"prompt": "x", "version": "Fooocus v2"}'}, "fooocus", None, '{"prompt"'),
    ({"fooocus_scheme": "a1111"}, "fooocus", None, None),
    ({"Software": "Midjourney v6"}, "software: Midjourney v6", None, None),
    ({"Title": "holiday", "Software": "GIMP 2.10"}, None, None, None),
    # a `prompt` that is not ComfyUI's ends the search: the later parsers are not tried
    ({"prompt": "a photo of a cat", "Dream": "d"}, None, None, None),
])
def test_each_png_tool_parser_on_a_crafted_file(tmp_path, chunks, tool, model, excerpt_start):
    t = _png_text(tmp_path, chunks)
    assert t["state"] == "present" and t["keys"] == sorted(chunks)
    assert (t["generation_tool"], t["model"]) == (tool, model)
    assert (t["excerpt"] or "").startswith(excerpt_start or "") and (excerpt_start is not None) == bool(t["excerpt"])


def test_png_parsers_are_registered_in_order_and_decline_what_is_not_theirs():
    assert [p.__name__ for p in provenance.PNG_TOOL_PARSERS] == ["_sd_webui", "_comfyui", "_invokeai", "_novelai",
                                                                 "_fooocus"]
    for parser in provenance.PNG_TOOL_PARSERS:
        assert parser({"Title": "holiday"}) is None
    assert provenance._comfyui({"prompt": "not json"}) == provenance._Tool(None)  # claims the chunk, names no tool


# ================================================================ C2PA summary and XMP values, step by step
def test_c2pa_validation_state_with_and_without_the_sdk_state():
    assert provenance._validation_state("Trusted", ["anything"]) == "trusted"
    assert provenance._validation_state("", ["signingCredential.untrusted"]) == "valid"  # untrusted signer only
    assert provenance._validation_state("", [None, "assertion.dataHash.mismatch"]) == "invalid"
    assert provenance._validation_state("odd", []) == "valid"
    store = {"validation_status": [{"code": "a"}, 3], "validation_results": {"activeManifest": {}}}
    assert provenance._validation_failures(store) == ["a"]  # older SDKs: validation_status
    store["validation_results"] = {"activeManifest": {"failure": [{"code": "b"}, "x"]}}
    assert provenance._validation_failures(store) == ["b"]


def test_c2pa_claim_generator_and_actions():
    assert provenance._claim_generator({"claim_generator": "cam/1"}) == "cam/1"
    info = {"claim_generator_info": [{"name": "fpx", "version": 2}, {"name": "lib"}, "junk", {"version": "3"}]}
    assert provenance._claim_generator(info) == "fpx 2, lib"
    assert provenance._claim_generator({}) is None
    active = {"assertions": [
        {"label": "c2pa.actions.v2", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": "trainedAlgorithmicMedia",
             "softwareAgent": {"name": "Gen"}}, "junk", {"action": "c2pa.edited", "softwareAgent": "Editor"}]}},
        {"label": "stds.exif", "data": {"actions": [{"action": "ignored"}]}}, "junk"]}
    assert provenance._manifest_actions(active) == [
        {"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia", "software_agent": "Gen"},
        {"action": "c2pa.edited", "digital_source_type": None, "software_agent": "Editor"}]
    s = provenance.summarise_manifest_store({"active_manifest": "m", "manifests": {"m": active}})
    assert s["digital_source_type"] == "trainedAlgorithmicMedia" and s["meaning"] == "generated"
    assert s["state"] == "valid" and s["validation_state"] is None and s["manifests"] == 1


def test_xmp_values_are_unwrapped_from_rdf_structures():
    found: dict[str, list[str]] = {}
    xmp = {"xmpmeta": {"RDF": {"Description": [
        {"DigitalSourceType": {"resource": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}},
        {"AISystemUsed": {"li": "Flux"}, "CreatorTool": [{"text": "ComfyUI"}, "  "],
         "other": {"CreatorTool": [{"li": ["GIMP", "2.10"]}, 3]}, "provenance": 7}]}}}
    provenance._walk(xmp, found)
    assert found == {"DigitalSourceType": ["http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"],
                     "AISystemUsed": ["Flux"], "CreatorTool": ["ComfyUI", "GIMP"]}


# ================================================================ custody-log verification, step by step
def test_custody_entry_problems_each_kind():
    entry = {"seq": 3, "prev": "a" * 64}
    line = custody._line(entry)
    assert custody._entry_problems(4, line, entry, 3, "a" * 64) == []
    got = custody._entry_problems(4, line + " ", entry, 2, "b" * 64)
    assert [p.split(": ", 1)[1].split(" ")[0] for p in got] == ["seq", "prev", "not"]
    assert custody._entry_of("[1, 2]") is None and custody._entry_of("{") is None
    assert custody._entry_of('{"a": 1}') == {"a": 1}


def test_custody_log_lines_and_a_cut_last_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"a":1}\n{"b":2}')
    problems: list[str] = []
    assert custody._log_lines(p, problems) == ['{"a":1}', '{"b":2}']
    assert problems == ["line 2: last entry has no final newline (cut short?)"]
    with pytest.raises(custody.InputError, match="no such custody log"):
        custody._log_lines(tmp_path / "none.jsonl", [])


def test_a_calibrated_attribution_verdict_states_alpha_as_its_error_rate():
    src = Sources({}, attribution={"state": "done", "band": "drift", "system": "sdxl", "calibrated": True,
                                   "alpha": 0.05, "thresholds": "local-offline-pixel-v5"})
    (e,) = verdict._attribution_evidence(src)
    assert e.error_rate == 0.05 and "alpha 0.05" in e.strength
    d = verdict.decide([e])
    assert d["label"] == "ai-edited" and d["tier"] == 4 and d["error_rate"] == 0.05
    assert "conformal alpha" in d["error_note"]
    unknown = verdict.decide(verdict._attribution_evidence(
        Sources({}, attribution={"state": "done", "band": "unknown", "calibrated": True, "alpha": 0.05})))
    assert unknown["label"] == "unknown" and unknown["error_rate"] is None
    assert unknown["error_note"].startswith("abstained")


@pytest.mark.parametrize("tier", [1, 2])
def test_a_signed_verdict_says_why_it_has_no_statistical_error_rate(tier):
    d = verdict.decide([ev("c2pa", "generated", tier, label="Gen")])
    assert d["error_rate"] is None and d["error_note"] == verdict.NO_RATE[tier]


# ================================================================ origin query records → origin evidence
def test_origin_entry_reads_the_decision_fpx_origin_query_writes():
    """The keys of a real `fpx origin query` record: decision.false_match_rate and decision.origin."""
    cands = [{"rank": 1, "path": "/a.png", "sha256": "sa", "similarity": 0.95},
             {"rank": 2, "path": "/b.png", "sha256": "sb", "similarity": 0.7}]
    rec = {"status": "ok", "decision": {"label": "found", "origin": {"path": "/b.png", "sha256": "sb",
                                                                      "similarity": 0.7, "passed": "local"},
                                        "false_match_rate": 0.01},
           "details": {"candidates": cands}}
    e = evidence._origin_entry(rec, 5)
    assert e["reference"] == "/b.png" and e["reference_sha256"] == "sb" and e["similarity"] == 0.7
    assert e["false_match_rate"] == 0.01
    (o,) = verdict._origin_evidence(Sources({}, origin=e))
    assert o.error_rate == 0.01 and "calibrated false-match rate" in o.strength


def test_origin_entry_from_query_records():
    cands = [{"path": f"/r{i}.png", "sha256": f"s{i}", "similarity": 0.9 - i / 10} for i in range(6)]
    found = evidence._origin_entry({"status": "ok", "decision": {"label": "found", "fmr": 0.01,
                                                                 "candidates": cands}}, 3)
    assert found == {"state": "found", "reference": "/r0.png", "reference_sha256": "s0", "similarity": 0.9,
                     "false_match_rate": 0.01, "candidates": cands[:3]}
    other = evidence._origin_entry({"status": "ok", "decision": {"decision": "not-in-library", "fpr": 0.02},
                                    "details": {"candidates": cands[:1]}}, 5)
    assert other["state"] == "not-in-library" and other["reference"] is None and other["similarity"] == 0.9
    assert other["false_match_rate"] == 0.02
    assert evidence._origin_entry({"status": "ok"}, 5)["state"] == "unknown"
    assert evidence._origin_entry({"status": "error", "error": {"message": "bad"}}, 5) == {"state": "error",
                                                                                           "reason": "bad"}
    assert evidence._query_path({"inputs": {"x": "y", "suspect": {"path": "/s.png"}}}) == "/s.png"
    assert evidence._query_path({"inputs": {"image": {}}}) is None


# ================================================================ the job behind the CLI
def test_default_custody_log_sits_next_to_the_records():
    assert core.default_custody_log("out/t.jsonl") == str(Path("out/t.custody.jsonl"))
    assert core.default_custody_log("out/records") == str(Path("out/records.custody.jsonl"))
    assert core.default_custody_log(None) is None


def test_run_job_once_then_again_skips_what_it_triaged(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        save(u8(40 + i), inbox / f"f{i}.png", "PNG")
    out = tmp_path / "out" / "t.jsonl"
    with pytest.raises(UsageError, match="--watch needs --output"):
        job.run_job([str(inbox)], watch=True, quiet=True)
    first = job.run_job([str(inbox)], output=str(out), quiet=True)
    assert len(first.new) == 3 and first.already_triaged == 0 and first.exit_code == 0
    assert first.triage.log.path == tmp_path / "out" / "t.custody.jsonl"  # the default custody log
    again = job.run_job([str(inbox)], output=str(out), quiet=True)
    assert again.new == [] and again.already_triaged == 3 and len(again.triage.records) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no files in"):
        job.run_job([str(tmp_path / "empty")], quiet=True)


def test_cli_passes_options_to_run_job_and_renders_its_result(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    save(u8(50), inbox / "a.png", "PNG")
    seen = {}
    real = job.run_job

    def spy(inboxes, **kw):
        seen.update(kw, inboxes=inboxes)
        return real(inboxes, **kw)

    monkeypatch.setattr(job, "run_job", spy)
    r = run(["triage", inbox, "-o", tmp_path / "t.jsonl", "-f", "json", "--settle", "0.5", "-j", "1", "-q"])
    assert r.exit_code == 0, r.output
    assert seen["inboxes"] == [str(inbox)] and seen["output"] == str(tmp_path / "t.jsonl")
    assert seen["custody_log"] is None  # the library, not the CLI, names the default custody log
    assert seen["settle"] == 0.5 and seen["quiet"] is True and seen["watch"] is False
    assert json.loads(r.stdout)[0]["inputs"]["image"]["path"] == str(inbox / "a.png")
    assert "t.custody.jsonl: 1 entries, head" in r.stderr


def test_cli_refuses_a_format_typo_before_any_work(tmp_path, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("run_job must not be called")

    monkeypatch.setattr(job, "run_job", boom)
    save(u8(51), tmp_path / "a.png", "PNG")
    r = run(["triage", tmp_path / "a.png", "-f", "jsno"])
    assert r.exit_code == 2 and "jsno" in r.stderr


def test_importing_the_triage_command_loads_no_torch():
    code = ("import sys, fingerprint_cli.cli.triage_cmd, fingerprint_cli.triage.job; "
            "print(sorted(m for m in ('torch', 'timm', 'scipy', 'sklearn', 'faiss', 'diffusers', 'c2pa', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_triage_attribution_answers_an_exact_copy_exactly(tmp_path):
    """Triage's attribution uses the same exact-copy rule as `fpx attribute`: a suspect pixel-identical to the
    retrieved reference is `identity` by rule `exact-copy`; a one-pixel change goes to the statistics."""
    from conftest import natural_image

    from fingerprint_cli import images
    from fingerprint_cli.triage import evidence as ev

    px = natural_image(96, 96, seed=11)
    ref, same, edited = tmp_path / "ref.png", tmp_path / "same.png", tmp_path / "edited.png"
    images.save_png(px, ref)
    images.save_png(px, same)
    other = px.copy()
    other[5, 5] = 1.0 - other[5, 5]
    images.save_png(other, edited)
    exact = ev.attribute_against(str(ref), str(same), None)
    assert exact["state"] == "done" and exact["system"] == "identity" and exact["rule"] == "exact-copy"
    stat = ev.attribute_against(str(ref), str(edited), None)
    assert stat["state"] == "done" and stat["rule"] != "exact-copy"
