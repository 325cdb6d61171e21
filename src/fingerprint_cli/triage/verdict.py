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
from typing import Any, Callable

from fingerprint_cli.triage.provenance import dst_term

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


@dataclass(frozen=True)
class Sources:
    """What the stages of one file produced, as the evidence collectors read it: the provenance readers'
    ``meta`` (:func:`fingerprint_cli.triage.core.metadata_of`), the fingerprints' ``generator`` dict
    (:func:`fingerprint_cli.triage.evidence.generator_evidence`), origin retrieval and attribution."""

    meta: dict[str, Any]
    generator: dict[str, Any] | None = None
    origin: dict[str, Any] | None = None
    attribution: dict[str, Any] | None = None

    def part(self, name: str) -> dict[str, Any]:
        """One metadata reader's dict (``{}`` when absent)."""
        return self.meta.get(name) or {}


def _c2pa_evidence(src: Sources) -> list[Evidence]:
    """A C2PA manifest: tier 1 / 2 when it validates (trusted / untrusted signer); when it fails validation,
    ``altered`` (tier 2) plus its claim as an unsigned declaration."""
    c = src.part("c2pa")
    state = c.get("state")
    if state in ("trusted", "valid"):
        return [_signed_manifest(c, state)]
    if state == "invalid":
        return _invalid_manifest(c)
    return []


def _signed_manifest(c: dict[str, Any], state: str) -> Evidence:
    """Evidence of a manifest whose signature and content hashes validate."""
    tier = 1 if state == "trusted" else 2
    strength = ("C2PA signature, content hashes and signer's trust all validate" if state == "trusted" else
                "C2PA signature and content hashes validate; the signer is not on a trust list")
    m = c.get("meaning")
    says = m if m in DIRECTIONS else "context"
    detail = (f"signed by {c.get('signer') or '?'} with {c.get('claim_generator') or '?'}; digital source type "
              f"{dst_term(c.get('digital_source_type')) or 'not stated'}")
    return Evidence("c2pa", says, tier, strength, detail, label=c.get("claim_generator"))


def _invalid_manifest(c: dict[str, Any]) -> list[Evidence]:
    """A manifest that fails validation: the file was altered; what it claims is unverified."""
    fails = ", ".join(c.get("failures") or []) or c.get("reason") or "validation failed"
    ev = [Evidence("c2pa", "altered", 2, "C2PA manifest present but fails validation",
                   f"the file was changed after signing, or the manifest is damaged or forged ({fails})")]
    m = c.get("meaning")
    if m in DIRECTIONS:
        ev.append(Evidence("c2pa-claim", m, UNSIGNED_CAPTURE_TIER if m == "captured" else 3,
                           "claim inside a manifest that fails validation (unverified)",
                           f"digital source type {dst_term(c.get('digital_source_type'))}",
                           label=c.get("claim_generator")))
    return ev


def _xmp_evidence(src: Sources) -> list[Evidence]:
    """XMP DigitalSourceType / AI-system tags: an unsigned declaration (a capture claim is weak context)."""
    x = src.part("xmp")
    if x.get("state") != "present":
        return []
    m = x.get("meaning")
    dst = f"DigitalSourceType {dst_term(x.get('digital_source_type'))}"
    if m == "captured":
        return [Evidence("xmp", m, UNSIGNED_CAPTURE_TIER, "unsigned XMP claim of a capture (cheap to add: never "
                         "decides alone)", dst)]
    if m in DIRECTIONS:
        return [Evidence("xmp", m, 3, "unsigned XMP declaration",
                         dst + (f", AI system {x['ai_system']}" if x.get("ai_system") else ""),
                         label=x.get("ai_system"))]
    if x.get("ai_system") or x.get("creator_tool_is_ai"):
        return [Evidence("xmp", "generated", 3, "unsigned XMP declaration",
                         f"AI system {x.get('ai_system') or x.get('creator_tool')}",
                         label=x.get("ai_system") or x.get("creator_tool"))]
    return []


def _png_text_evidence(src: Sources) -> list[Evidence]:
    """A generation tool's PNG text chunks."""
    t = src.part("png_text")
    if not t.get("generation_tool"):
        return []
    return [Evidence("png-text", "generated", 3, "unsigned generation-tool chunk",
                     f"{t['generation_tool']} chunk(s) {', '.join(t.get('keys') or [])}"
                     + (f"; model {t['model']}" if t.get("model") else ""),
                     label=t.get("model") or t.get("generation_tool"))]


def _exif_evidence(src: Sources) -> list[Evidence]:
    """EXIF Software naming a generator (tier 3), else camera tags (weak context)."""
    e = src.part("exif")
    if e.get("state") != "present":
        return []
    if e.get("software_is_ai"):
        return [Evidence("exif", "generated", 3, "unsigned EXIF Software tag", f"Software {e.get('software')}",
                         label=e.get("software"))]
    if e.get("make") or e.get("model"):
        return [Evidence("exif", "captured", 5, "EXIF camera tags (trivially copied or stripped)",
                         f"camera {e.get('make') or ''} {e.get('model') or ''}".strip()
                         + (f", taken {e['datetime_original']}" if e.get("datetime_original") else ""))]
    return []


def _jpeg_evidence(src: Sources) -> list[Evidence]:
    """JPEG quantisation and the double-compression hint: context without a direction."""
    j = src.part("jpeg")
    if j.get("state") != "present":
        return []
    dq = j.get("double_compression") or {}
    return [Evidence("jpeg", "context", 5, "file structure (no direction)",
                     f"JPEG quality ≈ {j.get('quality')} ({'IJG tables' if j.get('exact') else 'custom tables'})"
                     + ("; double-compression hint (an earlier, coarser JPEG compression)" if dq.get("hint")
                        else ""))]


def _fingerprint_evidence(src: Sources) -> list[Evidence]:
    """One item per fingerprint that says something: calibrated (tier 4, ``generated`` or ``no-match``),
    outside its calibration or uncalibrated (tier 5, ``generated`` only)."""
    ev: list[Evidence] = []
    for f in (src.generator or {}).get("fingerprints") or []:
        e = _one_fingerprint(f)
        if e is not None:
            ev.append(e)
    return ev


def _one_fingerprint(f: dict[str, Any]) -> Evidence | None:
    """The evidence of one fingerprint's entry in ``generator["fingerprints"]`` (None: it says nothing)."""
    name = f["name"]
    source = f"fingerprint:{name}"
    if f.get("calibrated") and f.get("outside_calibration"):
        if not f.get("generated"):
            return None
        return Evidence(source, "generated", 5,
                        f"outside its calibration ({f['outside_calibration']}): no stated error rate",
                        f"fingerprint {name}: score {f['score']:.2f}, p = {f['p_value']:.3g}", label=name)
    if f.get("calibrated"):
        if f.get("generated"):
            return Evidence(source, "generated", 4,
                            f"calibrated: p = {f['p_value']:.3g} ≤ stated FPR {f['fpr']:g} "
                            f"({f['n_real']} held-out real images)",
                            f"fingerprint {name}: score {f['score']:.2f}", label=name, error_rate=f["fpr"])
        return Evidence(source, "no-match", 4, f"calibrated: p = {f['p_value']:.3g} > stated FPR {f['fpr']:g}",
                        f"not detected as {name} at its stated false-positive rate; the miss rate is not calibrated "
                        "(absence of a known generator is not evidence that the image is real)",
                        label=name)
    if f.get("generated"):
        return Evidence(source, "generated", 5, "not calibrated (nearest-mean rule, no stated error rate)",
                        f"fingerprint {name}: score {f['score']:.2f}", label=name)
    return None


def _origin_found(origin: dict[str, Any]) -> Evidence:
    """The original found (tier 4) at the index's false-match rate — or, outside the conditions that rate was
    measured on (a suspect covering less of the reference than any calibration query), with no error rate."""
    detail = f"original found in the library: {origin.get('reference')} (similarity {_num(origin.get('similarity'))})"
    if origin.get("outside_calibration"):
        return Evidence("origin", "derived-from", 4, "origin retrieval outside its calibrated conditions (no stated "
                        "false-match rate)", f"{detail}; {origin['outside_calibration']}",
                        label=origin.get("reference"), error_rate=None)
    return Evidence("origin", "derived-from", 4, "origin retrieval at its calibrated false-match rate"
                    if origin.get("false_match_rate") is not None else "origin retrieval", detail,
                    label=origin.get("reference"), error_rate=origin.get("false_match_rate"))


def _origin_evidence(src: Sources) -> list[Evidence]:
    """Origin retrieval: the original found in the library (tier 4), else its state as context."""
    origin = src.origin
    if not origin:
        return []
    st = origin.get("state")
    if st == "found":
        return [_origin_found(origin)]
    if st:
        return [Evidence("origin", "context", 5, "origin retrieval", f"origin: {st}")]
    return []


#: the bands of reference-anchored attribution that name AI image-to-image processing
AI_BANDS = ("tight", "drift")


def _attribution_evidence(src: Sources) -> list[Evidence]:
    """Reference-anchored attribution against the retrieved origin: ``ai-edited`` when its prediction set lies
    in an AI band (tier 4 with the artifact's conformal α as its error rate when calibrated, else tier 5);
    a benign band is calibrated context; ``unknown`` / ``inconclusive`` point nowhere (tier 5)."""
    attribution = src.attribution
    if not attribution or attribution.get("state") != "done":
        return []
    band = attribution.get("band")
    alpha = attribution.get("alpha")
    calibrated = bool(attribution.get("calibrated")) and isinstance(alpha, (int, float))
    abstained = band in (None, "unknown", "inconclusive")
    tier = 4 if calibrated and not abstained else 5
    strength = f"reference-anchored attribution ({attribution.get('thresholds')})"
    if calibrated:
        strength += (f": conformal prediction set at alpha {alpha:g} (a calibrated processing is left out of the "
                     "set with probability about alpha; calibrated on the artifact's corpus, not on this file's "
                     "conditions)")
    else:
        strength += ": not calibrated (no conformal p-values), no stated error rate"
    return [Evidence("attribution", "ai-edited" if band in AI_BANDS else "context", tier, strength,
                     f"band {band}, system {attribution.get('system')}", label=attribution.get("system"),
                     error_rate=float(alpha) if tier == 4 and band in AI_BANDS else None)]


#: the evidence collectors, one per kind of evidence, in the order their items are listed within a rank
COLLECTORS: tuple[Callable[[Sources], list[Evidence]], ...] = (
    _c2pa_evidence, _xmp_evidence, _png_text_evidence, _exif_evidence, _jpeg_evidence, _fingerprint_evidence,
    _origin_evidence, _attribution_evidence)


def collect(meta: dict[str, Any], generator: dict[str, Any] | None, origin: dict[str, Any] | None = None,
            attribution: dict[str, Any] | None = None) -> list[Evidence]:
    """Evidence items from the metadata readers' and the pixel stages' outputs, strongest first (every
    collector of :data:`COLLECTORS`; within a rank, directional items first, then in collector order)."""
    src = Sources(meta, generator, origin, attribution)
    ev = [e for collector in COLLECTORS for e in collector(src)]
    ev.sort(key=lambda x: (x.tier, x.says not in DIRECTIONS))
    return ev


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else str(v)


def _says(items: list[Evidence]) -> str:
    return "; ".join(f"{e.source} says {e.says}" for e in items)


def decide(evidence: list[Evidence]) -> dict[str, Any]:
    """The verdict: the strongest deciding tier's direction, ``disputed`` when that tier disagrees with itself,
    ``unknown`` when nothing of tier ≤ 4 points anywhere. Disagreeing evidence is listed, not averaged."""
    directional = [e for e in evidence if e.says in DIRECTIONS]
    deciding = [e for e in directional if e.tier <= DECIDING_TIER]
    integrity = _integrity([e for e in evidence if e.says == "altered"])
    if not deciding:
        return _unknown(directional, integrity)
    top = min(e.tier for e in deciding)
    best = [e for e in deciding if e.tier == top]
    if len({e.says for e in best}) > 1:
        return _disputed(best, top, integrity)
    return _agreed(evidence, directional, best, top, integrity)


def _unknown(directional: list[Evidence], integrity: str | None) -> dict[str, Any]:
    """Nothing of a deciding tier points anywhere: ``unknown``, saying what weak evidence there was."""
    why = ("only weak or uncalibrated evidence: " + _says(directional) if directional else
           "no evidence points either way (no provenance metadata, no calibrated detection)")
    return {"label": "unknown", "generator": None, "basis": None, "tier": None, "strength": None,
            "error_rate": None, "error_note": "abstained: no evidence of a deciding rank, so no error rate applies",
            "why": why, "disagreements": [], "integrity": integrity}


def _disputed(best: list[Evidence], top: int, integrity: str | None) -> dict[str, Any]:
    """The strongest deciding tier disagrees with itself: ``disputed``, listing that tier's items."""
    return {"label": "disputed", "generator": None, "basis": [e.source for e in best], "tier": top,
            "strength": TIER_NAMES[top], "error_rate": None,
            "error_note": "abstained: evidence of the same rank disagrees, so no error rate applies",
            "why": "evidence of the same rank disagrees: " + _says(best),
            "disagreements": [e.to_dict() for e in best], "integrity": integrity}


def _agreed(evidence: list[Evidence], directional: list[Evidence], best: list[Evidence], top: int,
            integrity: str | None) -> dict[str, Any]:
    """The strongest deciding tier agrees: its direction, the generator it names, its error bound."""
    label = best[0].says
    why = f"{best[0].source} ({best[0].strength}): {best[0].detail}"
    if len(best) > 1:
        why += f" — and {len(best) - 1} more of the same rank agree"
    error_rate, error_note = _error_bound(evidence, best, top)
    return {"label": label, "generator": _generator_named(best, label), "basis": [e.source for e in best],
            "tier": top, "strength": TIER_NAMES[top], "error_rate": error_rate, "error_note": error_note,
            "why": why, "disagreements": [e.to_dict() for e in directional if e.says != label],
            "integrity": integrity}


def _generator_named(best: list[Evidence], label: str) -> str | None:
    """The generator / tool the deciding evidence names (``one of: …`` when it names several)."""
    if label not in ("generated", "ai-edited"):
        return None
    named = sorted({e.label for e in best if e.label})
    if len(named) == 1:
        return named[0]
    return f"one of: {', '.join(named)}" if named else None


def _error_bound(evidence: list[Evidence], best: list[Evidence], top: int) -> tuple[float | None, str | None]:
    """(error rate, note) of a verdict: for calibrated fingerprints (tier 4) any of m may fire on a real image,
    so the Bonferroni bound m × FPR; for calibrated attribution its conformal α; for tiers 1–3 no rate, and the
    note says why (:data:`NO_RATE`)."""
    errs = [e.error_rate for e in best if e.error_rate is not None]
    if top != DECIDING_TIER:
        return None, NO_RATE[top]
    if not errs:
        return None, "no stated error rate: the calibrated evidence of this rank carries none"
    if all(e.source == "attribution" for e in best if e.error_rate is not None):
        return max(errs), (f"a calibrated benign processing is put in an AI band with probability ≤ "
                           f"{max(errs):g} (the attribution artifact's conformal alpha; not measured on "
                           "processings outside its corpus)")
    m = sum(1 for e in evidence if e.source.startswith("fingerprint:") and e.tier == DECIDING_TIER) or 1
    error_rate = min(1.0, m * max(errs))
    return error_rate, (f"false-positive rate on real images ≤ {error_rate:.3g} (each of {m} calibrated "
                        f"fingerprint(s) at FPR {max(errs):g}; Bonferroni bound)")


#: why a verdict of a non-statistical tier has no error rate (the verdict's ``error_note``)
NO_RATE = {1: "no statistical error rate: a valid signature from a trusted signer (wrong only if the signer's "
              "key or trust list is compromised)",
           2: "no statistical error rate: a valid signature, but the signer is not on a trust list (anyone can "
              "sign)",
           3: "no stated error rate: an unsigned declaration in the file (not calibrated; anyone can write one)"}


def _integrity(altered: list[Evidence]) -> str | None:
    return altered[0].detail if altered else None
