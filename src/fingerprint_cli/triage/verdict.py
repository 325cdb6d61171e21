"""From evidence to a verdict with reasons: ranked, never averaged.

Each piece of evidence is an :class:`Evidence` with what it ``says`` (``generated``, ``ai-edited``,
``captured``, or a non-directional finding), its ``tier`` (1 = strongest) and a ``strength`` stating why it
is that strong. Tiers:

1. a C2PA manifest that validates and whose signer is on a trust list;
2. a C2PA manifest that validates (signature and content hashes) with a signer not on a trust list;
3. declarations of AI generation or editing in the file that nobody signed: XMP DigitalSourceType / AI-system
   tags, a generation tool's PNG chunks, EXIF Software naming a generator, claims inside a C2PA manifest that
   fails validation (an unsigned claim of a *capture* is tier 5: it is what a forger would add, whereas
   nobody gains by falsely declaring an image AI-made);
4. a pixel statistic calibrated at a stated false-positive rate (conformal p-value ≤ FPR);
5. weak context: unsigned capture claims, EXIF camera make/model, pixel statistics without calibration, or
   calibrated on other
   conditions than the input's (another format, a JPEG quality outside the calibrated range).

The verdict follows the strongest tier that points anywhere; if that tier disagrees with itself the verdict
is ``disputed``. Tier 5 never decides on its own (``unknown``), so an uncalibrated detection is never
reported as stronger than its calibration. Every piece of evidence that points elsewhere than the verdict is
listed in ``disagreements``. Verdicts: ``generated``, ``ai-edited``, ``captured``, ``disputed``, ``unknown``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DIRECTIONS = ("generated", "ai-edited", "captured")
#: unsigned claims that an image is a capture are what a forger adds; unsigned AI declarations are rarely false
UNSIGNED_CAPTURE_TIER = 5
DECIDING_TIER = 4  # tiers 1..4 may decide; 5 is context only

TIER_NAMES = {1: "signed manifest, trusted signer", 2: "signed manifest, untrusted signer",
              3: "unsigned declaration in the file", 4: "calibrated pixel statistic", 5: "weak context"}


@dataclass
class Evidence:
    source: str              # c2pa | xmp | png-text | exif | jpeg | fingerprint:<name> | origin | attribution
    says: str                # generated | ai-edited | captured | altered | no-match | context ...
    tier: int
    strength: str
    detail: str
    label: str | None = None  # generator / tool / reference, when the evidence names one
    error_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(meta: dict[str, Any], generator: dict[str, Any] | None, origin: dict[str, Any] | None = None,
            attribution: dict[str, Any] | None = None) -> list[Evidence]:
    """Evidence items from the metadata readers' and the pixel stages' outputs, strongest first."""
    ev: list[Evidence] = []
    c = meta.get("c2pa") or {}
    state = c.get("state")
    if state in ("trusted", "valid"):
        tier = 1 if state == "trusted" else 2
        strength = ("C2PA signature, content hashes and signer's trust all validate" if state == "trusted" else
                    "C2PA signature and content hashes validate; the signer is not on a trust list")
        m = c.get("meaning")
        says = m if m in DIRECTIONS else "context"
        detail = (f"signed by {c.get('signer') or '?'} with {c.get('claim_generator') or '?'}; digital source type "
                  f"{_term(c.get('digital_source_type')) or 'not stated'}")
        ev.append(Evidence("c2pa", says, tier, strength, detail, label=c.get("claim_generator")))
    elif state == "invalid":
        fails = ", ".join(c.get("failures") or []) or c.get("reason") or "validation failed"
        ev.append(Evidence("c2pa", "altered", 2, "C2PA manifest present but fails validation",
                           f"the file was changed after signing, or the manifest is damaged or forged ({fails})"))
        m = c.get("meaning")
        if m in DIRECTIONS:
            ev.append(Evidence("c2pa-claim", m, UNSIGNED_CAPTURE_TIER if m == "captured" else 3,
                               "claim inside a manifest that fails validation (unverified)",
                               f"digital source type {_term(c.get('digital_source_type'))}",
                               label=c.get("claim_generator")))
    x = meta.get("xmp") or {}
    if x.get("state") == "present":
        m = x.get("meaning")
        if m == "captured":
            ev.append(Evidence("xmp", m, UNSIGNED_CAPTURE_TIER, "unsigned XMP claim of a capture (cheap to add: "
                               "never decides alone)", f"DigitalSourceType {_term(x.get('digital_source_type'))}"))
        elif m in DIRECTIONS:
            ev.append(Evidence("xmp", m, 3, "unsigned XMP declaration",
                               f"DigitalSourceType {_term(x.get('digital_source_type'))}"
                               + (f", AI system {x['ai_system']}" if x.get("ai_system") else ""),
                               label=x.get("ai_system")))
        elif x.get("ai_system") or x.get("creator_tool_is_ai"):
            ev.append(Evidence("xmp", "generated", 3, "unsigned XMP declaration",
                               f"AI system {x.get('ai_system') or x.get('creator_tool')}",
                               label=x.get("ai_system") or x.get("creator_tool")))
    t = meta.get("png_text") or {}
    if t.get("generation_tool"):
        ev.append(Evidence("png-text", "generated", 3, "unsigned generation-tool chunk",
                           f"{t['generation_tool']} chunk(s) {', '.join(t.get('keys') or [])}"
                           + (f"; model {t['model']}" if t.get("model") else ""),
                           label=t.get("model") or t.get("generation_tool")))
    e = meta.get("exif") or {}
    if e.get("state") == "present":
        if e.get("software_is_ai"):
            ev.append(Evidence("exif", "generated", 3, "unsigned EXIF Software tag", f"Software {e.get('software')}",
                               label=e.get("software")))
        elif e.get("make") or e.get("model"):
            ev.append(Evidence("exif", "captured", 5, "EXIF camera tags (trivially copied or stripped)",
                               f"camera {e.get('make') or ''} {e.get('model') or ''}".strip()
                               + (f", taken {e['datetime_original']}" if e.get("datetime_original") else "")))
    j = meta.get("jpeg") or {}
    if j.get("state") == "present":
        dq = j.get("double_compression") or {}
        ev.append(Evidence("jpeg", "context", 5, "file structure (no direction)",
                           f"JPEG quality ≈ {j.get('quality')} ({'IJG tables' if j.get('exact') else 'custom tables'})"
                           + ("; double-compression hint (an earlier, coarser JPEG compression)" if dq.get("hint")
                              else "")))
    if generator:
        for f in generator.get("fingerprints") or []:
            name = f["name"]
            if f.get("calibrated") and f.get("outside_calibration"):
                if f.get("generated"):
                    ev.append(Evidence(f"fingerprint:{name}", "generated", 5,
                                       f"outside its calibration ({f['outside_calibration']}): no stated error rate",
                                       f"fingerprint {name}: score {f['score']:.2f}, p = {f['p_value']:.3g}",
                                       label=name))
            elif f.get("calibrated"):
                if f.get("generated"):
                    ev.append(Evidence(f"fingerprint:{name}", "generated", 4,
                                       f"calibrated: p = {f['p_value']:.3g} ≤ stated FPR {f['fpr']:g} "
                                       f"({f['n_real']} held-out real images)",
                                       f"fingerprint {name}: score {f['score']:.2f}", label=name, error_rate=f["fpr"]))
                else:
                    ev.append(Evidence(f"fingerprint:{name}", "no-match", 4,
                                       f"calibrated: p = {f['p_value']:.3g} > stated FPR {f['fpr']:g}",
                                       f"not detected as {name} (absence of a known generator is not evidence of a "
                                       "camera)", label=name))
            elif f.get("generated"):
                ev.append(Evidence(f"fingerprint:{name}", "generated", 5,
                                   "not calibrated (nearest-mean rule, no stated error rate)",
                                   f"fingerprint {name}: score {f['score']:.2f}", label=name))
    if origin:
        st = origin.get("state")
        if st == "found":
            ev.append(Evidence("origin", "derived-from", 4, "origin retrieval at its calibrated false-match rate"
                               if origin.get("false_match_rate") is not None else "origin retrieval",
                               f"original found in the library: {origin.get('reference')} "
                               f"(similarity {_num(origin.get('similarity'))})", label=origin.get("reference"),
                               error_rate=origin.get("false_match_rate")))
        elif st:
            ev.append(Evidence("origin", "context", 5, "origin retrieval", f"origin: {st}"))
    if attribution and attribution.get("state") == "done":
        ev.append(Evidence("attribution", "ai-edited" if attribution.get("band") not in (None, "benign", "inconclusive")
                           else "context", 4 if attribution.get("band") not in (None, "inconclusive") else 5,
                           f"reference-anchored attribution ({attribution.get('thresholds')})",
                           f"band {attribution.get('band')}, system {attribution.get('system')}",
                           label=attribution.get("system")))
    ev.sort(key=lambda x: (x.tier, x.says not in DIRECTIONS))
    return ev


def _term(v: Any) -> str | None:
    from fingerprint_cli.triage.provenance import dst_term

    return dst_term(v)


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else str(v)


def decide(evidence: list[Evidence]) -> dict[str, Any]:
    """The verdict: the strongest deciding tier's direction, ``disputed`` when that tier disagrees with itself,
    ``unknown`` when nothing of tier ≤ 4 points anywhere. Disagreeing evidence is listed, not averaged."""
    directional = [e for e in evidence if e.says in DIRECTIONS]
    deciding = [e for e in directional if e.tier <= DECIDING_TIER]
    altered = [e for e in evidence if e.says == "altered"]
    if not deciding:
        why = ("only weak or uncalibrated evidence: " + "; ".join(f"{e.source} says {e.says}" for e in directional)
               if directional else "no evidence points either way (no provenance metadata, no calibrated detection)")
        return {"label": "unknown", "generator": None, "basis": None, "tier": None, "strength": None,
                "error_rate": None, "why": why, "disagreements": [], "integrity": _integrity(altered)}
    top = min(e.tier for e in deciding)
    best = [e for e in deciding if e.tier == top]
    says = sorted({e.says for e in best})
    if len(says) > 1:
        return {"label": "disputed", "generator": None, "basis": [e.source for e in best], "tier": top,
                "strength": TIER_NAMES[top], "error_rate": None,
                "why": "evidence of the same rank disagrees: " + "; ".join(f"{e.source} says {e.says}" for e in best),
                "disagreements": [e.to_dict() for e in best], "integrity": _integrity(altered)}
    label = says[0]
    names = [e.label for e in best if e.label]
    gen = None
    if label in ("generated", "ai-edited"):
        named = sorted(set(names))
        gen = named[0] if len(named) == 1 else (f"one of: {', '.join(named)}" if named else None)
    errs = [e.error_rate for e in best if e.error_rate is not None]
    disagree = [e.to_dict() for e in directional if e.says != label]
    why = f"{best[0].source} ({best[0].strength}): {best[0].detail}"
    if len(best) > 1:
        why += f" — and {len(best) - 1} more of the same rank agree"
    error_rate, error_note = None, None
    if errs and top == DECIDING_TIER:
        # any of m calibrated fingerprints may fire on a real image: Bonferroni bound m × FPR
        m = sum(1 for e in evidence if e.source.startswith("fingerprint:") and e.tier == DECIDING_TIER) or 1
        error_rate = min(1.0, m * max(errs))
        error_note = (f"false-positive rate on real images ≤ {error_rate:.3g} (each of {m} calibrated "
                      f"fingerprint(s) at FPR {max(errs):g}; Bonferroni bound)")
    return {"label": label, "generator": gen, "basis": [e.source for e in best], "tier": top,
            "strength": TIER_NAMES[top], "error_rate": error_rate, "error_note": error_note, "why": why,
            "disagreements": disagree, "integrity": _integrity(altered)}


def _integrity(altered: list[Evidence]) -> str | None:
    return altered[0].detail if altered else None
