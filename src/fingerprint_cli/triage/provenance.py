"""What the file says about itself: C2PA manifest, XMP DigitalSourceType and AI-provenance tags, EXIF, PNG
text chunks written by generation tools, JPEG quantisation tables.

Every reader returns a plain dict with a ``state``: ``absent`` (nothing there — never an error), ``present``
(or, for C2PA, ``trusted`` / ``valid`` / ``invalid``), or ``unreadable`` with a one-line ``reason``. None of
them raises on a bad file: a manifest that fails validation is evidence (``invalid``), not a crash. The
bytes come from the caller (read once, hashed by custody); Pillow-level parsing is
:func:`fingerprint_cli.images.probe` — nothing here opens an image itself.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fingerprint_cli.dif.condition import estimate_quality as nearest_ijg

IPTC_DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: IPTC Digital Source Type vocabulary term → what it says about the image's origin
DST_MEANING: dict[str, str] = {
    "trainedAlgorithmicMedia": "generated",
    "algorithmicMedia": "generated",
    "compositeWithTrainedAlgorithmicMedia": "ai-edited",
    "compositeSynthetic": "ai-edited",
    "algorithmicallyEnhanced": "edited",
    "digitalCapture": "captured",
    "computationalCapture": "captured",
    "negativeFilm": "captured",
    "positiveFilm": "captured",
    "print": "captured",
    "compositeCapture": "captured",
    "humanEdits": "captured",
    "minorHumanEdits": "captured",
    "digitalArt": "other",
    "digitalCreation": "other",
    "virtualRecording": "other",
    "dataDrivenMedia": "other",
    "screenCapture": "other",
    "composite": "other",
}

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "GIF": "image/gif",
        "HEIC": "image/heic", "HEIF": "image/heif", "AVIF": "image/avif"}

#: substrings of EXIF Software / XMP CreatorTool values that name an image generator
AI_SOFTWARE = ("dall-e", "dall·e", "dalle", "midjourney", "stable diffusion", "stablediffusion", "firefly",
               "imagen", "gemini", "gpt-image", "openai", "comfyui", "novelai", "invokeai", "fooocus",
               "automatic1111", "flux", "leonardo", "ideogram", "diffusers", "dreamstudio", "bing image creator")


def _one_line(x: Any, n: int = 200) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[:n - 1] + "…"


def dst_term(value: Any) -> str | None:
    """The vocabulary term of a DigitalSourceType value (a full IPTC URI or a bare term)."""
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip()
    v = v.removeprefix(IPTC_DST)
    return v.rstrip("/").rsplit("/", 1)[-1] or None


def dst_meaning(value: Any) -> str | None:
    term = dst_term(value)
    return DST_MEANING.get(term, "unrecognised") if term else None


# ---------------------------------------------------------------- C2PA
_CONTEXTS: dict[str, Any] = {}


def _context(c2pa, trust_anchors: str | None):
    """A c2pa Context that checks signers against ``trust_anchors`` (PEM), one per process and anchor set."""
    if not trust_anchors:
        return None
    ctx = _CONTEXTS.get(trust_anchors)
    if ctx is None:
        ctx = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_anchors}, "verify": {"verify_trust": True}})
        _CONTEXTS[trust_anchors] = ctx
    return ctx


def read_c2pa(data: bytes, fmt: str | None, trust_anchors: str | None = None) -> dict[str, Any]:
    """The active C2PA manifest through ``c2pa-python``: validation state, signer, claim generator, actions,
    digital source type and the validation failures.

    ``state``: ``absent`` (no manifest, or a format C2PA does not carry), ``trusted`` (signature, hashes and
    signer on the trust list all check), ``valid`` (signature and hashes check, signer not on a trust list),
    ``invalid`` (the manifest is there but fails validation — e.g. the pixels were edited after signing, or it
    cannot be parsed), ``not-checked`` (c2pa-python is not installed). ``trust_anchors``: the lab's trusted CA
    certificates (PEM text); without them no signer can be ``trusted``.
    """
    try:
        import c2pa
    except ImportError:  # pragma: no cover - c2pa-python is a dependency
        return {"state": "not-checked", "reason": "c2pa-python is not installed"}
    mime = MIME.get(fmt or "")
    if mime is None:
        return {"state": "absent", "reason": f"C2PA is not read from {fmt or 'unknown'} files"}
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=_context(c2pa, trust_anchors))
    except c2pa.C2paError.ManifestNotFound:
        return {"state": "absent"}
    except c2pa.C2paError as exc:
        msg = _one_line(exc)
        if "NotSupported" in msg or "unsupported" in msg.lower():
            return {"state": "absent", "reason": f"c2pa: {msg}"}
        return {"state": "invalid", "reason": f"manifest cannot be read: {msg}", "failures": [msg]}
    except Exception as exc:  # noqa: BLE001 - a hostile manifest must never crash the batch
        return {"state": "invalid", "reason": f"manifest cannot be read: {type(exc).__name__}: {_one_line(exc)}"}
    if reader is None:
        return {"state": "absent"}
    try:
        with reader:
            store = json.loads(reader.json())
    except Exception as exc:  # noqa: BLE001
        return {"state": "invalid", "reason": f"manifest cannot be read: {type(exc).__name__}: {_one_line(exc)}"}
    return summarise_manifest_store(store)


def summarise_manifest_store(store: dict[str, Any]) -> dict[str, Any]:
    """The fields triage reports from a c2pa manifest-store JSON."""
    raw_state = str(store.get("validation_state") or "")
    failures = _validation_failures(store)
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {}) or {}
    sig = active.get("signature_info") or {}
    actions = _manifest_actions(active)
    dsts = [a["digital_source_type"] for a in actions if a["digital_source_type"]]
    dst = dsts[0] if dsts else None
    return {
        "state": _validation_state(raw_state, failures),
        "validation_state": raw_state or None,
        "signer": sig.get("common_name") or sig.get("issuer"),
        "issuer": sig.get("issuer"),
        "signed_utc": sig.get("time"),
        "claim_generator": _claim_generator(active),
        "title": active.get("title"),
        "actions": actions[:50],
        "digital_source_type": dst,
        "meaning": dst_meaning(dst),
        "failures": [f for f in failures if f][:20],
        "manifests": len(store.get("manifests") or {}),
    }


def _validation_failures(store: dict[str, Any]) -> list[Any]:
    """The failure codes of the active manifest (``validation_results``; older SDKs: ``validation_status``)."""
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    if results:
        return [f.get("code") for f in results.get("failure", []) if isinstance(f, dict)]
    return [f.get("code") for f in store.get("validation_status") or [] if isinstance(f, dict)]


def _validation_state(raw_state: str, failures: list[Any]) -> str:
    """``trusted`` / ``valid`` / ``invalid`` from the SDK's state; older SDKs give no state, only failures (an
    untrusted signer alone still validates)."""
    state = {"trusted": "trusted", "valid": "valid", "invalid": "invalid"}.get(raw_state.lower())
    if state is not None:
        return state
    return "invalid" if any(c and c != "signingCredential.untrusted" for c in failures) else "valid"


def _claim_generator(active: dict[str, Any]) -> str | None:
    """The claim generator (C2PA 1.x string, or 2.x ``claim_generator_info`` names and versions)."""
    gen = active.get("claim_generator")
    if gen:
        return gen
    info = active.get("claim_generator_info") or []
    return ", ".join(f"{i.get('name')}{' ' + str(i['version']) if i.get('version') else ''}"
                     for i in info if isinstance(i, dict) and i.get("name")) or None


def _manifest_actions(active: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action of the manifest's ``c2pa.actions*`` assertions: action, digital source type, agent."""
    actions = []
    for a in active.get("assertions") or []:
        if not isinstance(a, dict) or not str(a.get("label", "")).startswith("c2pa.actions"):
            continue
        for act in (a.get("data") or {}).get("actions") or []:
            if isinstance(act, dict):
                actions.append(_action(act))
    return actions


def _action(act: dict[str, Any]) -> dict[str, Any]:
    agent = act.get("softwareAgent")
    if isinstance(agent, dict):
        agent = agent.get("name")
    return {"action": act.get("action"), "digital_source_type": act.get("digitalSourceType"),
            "software_agent": agent}


# ---------------------------------------------------------------- XMP
_XMP_AI_KEYS = ("DigitalSourceType", "AISystemUsed", "AISystemVersionUsed", "AIPromptInformation",
                "AIPromptWriterName", "CreatorTool", "provenance")


def _walk(d: Any, found: dict[str, list[str]]) -> None:
    """Collect the values of the AI-provenance keys anywhere in Pillow's nested XMP dict."""
    if isinstance(d, dict):
        for k, v in d.items():
            if k in _XMP_AI_KEYS:
                for x in v if isinstance(v, list) else [v]:
                    _add_xmp_value(found, k, x)
            _walk(v, found)
    elif isinstance(d, list):
        for x in d:
            _walk(x, found)


def _add_xmp_value(found: dict[str, list[str]], key: str, x: Any) -> None:
    """One value of an AI-provenance key, unwrapped from rdf:resource / rdf:li / a language alternative."""
    if isinstance(x, dict):
        x = x.get("resource") or x.get("li") or x.get("text") or next(
            (y for y in x.values() if isinstance(y, str)), None)
    if isinstance(x, list):
        x = next((y for y in x if isinstance(y, str)), None)
    if isinstance(x, str) and x.strip():
        found.setdefault(key, []).append(_one_line(x, 500))


def read_xmp(xmp: dict, xmp_error: str | None = None) -> dict[str, Any]:
    """DigitalSourceType and the other AI-provenance properties of an XMP packet (Pillow's ``getxmp``)."""
    if xmp_error:
        return {"state": "unreadable", "reason": f"XMP packet could not be parsed ({xmp_error})"}
    if not xmp:
        return {"state": "absent"}
    found: dict[str, list[str]] = {}
    _walk(xmp, found)
    dst = (found.get("DigitalSourceType") or [None])[0]
    tool = (found.get("CreatorTool") or [None])[0]
    out = {"state": "present", "digital_source_type": dst, "meaning": dst_meaning(dst),
           "ai_system": (found.get("AISystemUsed") or [None])[0],
           "ai_system_version": (found.get("AISystemVersionUsed") or [None])[0],
           "ai_prompt": (found.get("AIPromptInformation") or [None])[0],
           "creator_tool": tool,
           "creator_tool_is_ai": bool(tool and any(s in tool.lower() for s in AI_SOFTWARE)),
           "c2pa_reference": (found.get("provenance") or [None])[0]}
    return out


# ---------------------------------------------------------------- EXIF
def read_exif(exif: dict[str, Any]) -> dict[str, Any]:
    """Camera, software and dates from EXIF (IFD0 + Exif IFD)."""
    if not exif:
        return {"state": "absent"}

    def s(k):
        v = exif.get(k)
        return _one_line(v, 120) if isinstance(v, str) and v.strip() else None

    software = s("Software")
    return {"state": "present", "make": s("Make"), "model": s("Model"), "software": software,
            "software_is_ai": bool(software and any(x in software.lower() for x in AI_SOFTWARE)),
            "datetime_original": s("DateTimeOriginal"), "datetime": s("DateTime"),
            "datetime_digitized": s("DateTimeDigitized"), "lens": s("LensModel"),
            "artist": s("Artist"), "tags": len(exif)}


# ---------------------------------------------------------------- PNG text chunks of generation tools
_WEBUI_MODEL = re.compile(r"(?:^|,\s*)Model:\s*([^,\n]+)")
_WEBUI_HASH = re.compile(r"(?:^|,\s*)Model hash:\s*([0-9a-fA-F]+)")


def _comfy_models(prompt_json: str) -> list[str]:
    try:
        graph = json.loads(prompt_json)
    except (ValueError, TypeError):
        return []
    names = []
    nodes = graph.values() if isinstance(graph, dict) else []
    for node in nodes:
        if isinstance(node, dict):
            inputs = node.get("inputs") or {}
            for key in ("ckpt_name", "unet_name", "model_name"):
                if isinstance(inputs, dict) and isinstance(inputs.get(key), str):
                    names.append(inputs[key])
    return sorted(set(names))[:10]


@dataclass(frozen=True)
class _Tool:
    """What one generation tool's parser found in a PNG's text chunks."""

    tool: str | None
    model: str | None = None
    excerpt: str | None = None


_SD_WEBUI_MARKS = ("Steps:", "Sampler:", "CFG scale")


def _sd_webui(text: dict[str, str]) -> _Tool | None:
    """SD WebUI / A1111 / Forge: a ``parameters`` chunk with the sampler settings (``Model:`` / ``Model hash:``)."""
    params = text.get("parameters")
    if not params or not any(m in params for m in _SD_WEBUI_MARKS):
        return None
    m = _WEBUI_MODEL.search(params)
    h = _WEBUI_HASH.search(params)
    return _Tool("sd-webui", m.group(1).strip() if m else (f"hash {h.group(1)}" if h else None), params)


def _comfyui(text: dict[str, str]) -> _Tool | None:
    """ComfyUI: a ``prompt`` (the node graph as JSON, whose loader nodes name the checkpoints) or ``workflow``.
    A ``prompt`` that is not ComfyUI's still ends the search (``_Tool(None)``): no later parser is tried."""
    if "prompt" not in text and "workflow" not in text:
        return None
    models = _comfy_models(text.get("prompt", ""))
    if models or "workflow" in text or text.get("prompt", "").lstrip().startswith("{"):
        return _Tool("comfyui", ", ".join(models) or None, text.get("prompt") or text.get("workflow"))
    return _Tool(None)


def _invokeai(text: dict[str, str]) -> _Tool | None:
    """InvokeAI: ``invokeai_metadata``, ``sd-metadata`` or ``Dream`` chunks."""
    if not any(k in text for k in ("invokeai_metadata", "sd-metadata", "Dream")):
        return None
    return _Tool("invokeai", None, text.get("invokeai_metadata") or text.get("sd-metadata") or text.get("Dream"))


def _novelai(text: dict[str, str]) -> _Tool | None:
    """NovelAI: ``Software`` NovelAI, the prompt in ``Comment`` / ``Description``."""
    if not text.get("Software", "").lower().startswith("novelai"):
        return None
    return _Tool("novelai", None, text.get("Comment") or text.get("Description"))


def _fooocus(text: dict[str, str]) -> _Tool | None:
    """Fooocus: ``fooocus_scheme``, or JSON ``parameters`` naming fooocus."""
    params = text.get("parameters")
    if "fooocus_scheme" in text or (params and params.lstrip().startswith("{") and "fooocus" in params.lower()):
        return _Tool("fooocus", None, params)
    return None


#: one parser per generation tool, tried in this order; the first that recognises its chunks decides
PNG_TOOL_PARSERS: tuple[Callable[[dict[str, str]], _Tool | None], ...] = (
    _sd_webui, _comfyui, _invokeai, _novelai, _fooocus)


def _generation_tool(text: dict[str, str]) -> _Tool:
    """The first parser's finding; else a ``Software`` chunk naming a generator; else no tool."""
    found = next((t for t in (p(text) for p in PNG_TOOL_PARSERS) if t is not None), _Tool(None))
    software = text.get("Software")
    if found.tool is None and software and any(x in software.lower() for x in AI_SOFTWARE):
        return _Tool(f"software: {_one_line(software, 60)}", found.model, found.excerpt)
    return found


def read_png_text(text: dict[str, str], fmt: str | None) -> dict[str, Any]:
    """Generation-tool chunks: SD WebUI/A1111/Forge ``parameters``, ComfyUI ``prompt``/``workflow``, InvokeAI,
    NovelAI, Fooocus (:data:`PNG_TOOL_PARSERS`); other text keys are listed."""
    if fmt != "PNG":
        return {"state": "absent", "reason": "not a PNG"}
    keys = sorted(k for k in text if k != "XML:com.adobe.xmp")
    if not keys:
        return {"state": "absent"}
    t = _generation_tool(text)
    return {"state": "present", "keys": keys[:30], "generation_tool": t.tool, "model": t.model,
            "excerpt": _one_line(t.excerpt, 300) if t.excerpt else None}


# ---------------------------------------------------------------- JPEG quantisation
def estimate_quality(tables: dict[int, list[int]]) -> dict[str, Any]:
    """The IJG quality whose scaled standard tables are closest to the file's — one estimator for fpx
    (:func:`fingerprint_cli.dif.condition.estimate_quality`, which ``fpx detect`` uses too). ``exact`` when
    they match exactly (an IJG-compatible encoder at that quality); a large ``mismatch`` (mean |difference|
    per table entry) means custom tables (cameras, Photoshop, some services), where the quality is only a rough
    equivalent."""
    est = nearest_ijg(tables)
    if est is None:
        return {"quality": None, "exact": False, "mismatch": None}
    return {"quality": est["quality"], "exact": est["exact"], "mismatch": est["table_error"]}


#: the orthonormal 8-point DCT-II matrix (JPEG's forward DCT is _DCT8 @ block @ _DCT8.T)
_DCT8 = np.array([[np.sqrt((1 if k == 0 else 2) / 8) * np.cos((2 * n + 1) * k * np.pi / 16) for n in range(8)]
                  for k in range(8)])

#: low-frequency AC positions (natural order) used by the double-compression hint: zigzag 1..9
_DQ_POSITIONS = (1, 8, 16, 9, 2, 3, 10, 17, 24)
DQ_THRESHOLD = 0.5


def double_compression_score(luma: np.ndarray, luma_table: list[int]) -> float | None:
    """How far the histograms of the file's quantised low-frequency DCT coefficients are from a smooth
    (singly quantised) shape: mean |log(h_k / mean(h_{k-1}, h_{k+1}))| over the populated bins k = 1..12 of
    the nine lowest AC frequencies.

    A JPEG re-saved at another quality leaves periodic empty or doubled bins in these histograms (double
    quantisation: Lukáš & Fridrich 2003; Popescu & Farid 2004); a once-compressed file's histograms fall off
    smoothly and score near 0. None when the image has too few blocks.
    """
    q = np.asarray(luma_table, dtype=np.float64)
    h, w = (luma.shape[0] // 8) * 8, (luma.shape[1] // 8) * 8
    if h < 64 or w < 64 or q.size != 64:
        return None
    # at most the central 64×64 blocks (512×512 px): enough counts, bounded cost on large photos
    bh, bw = min(h // 8, 64), min(w // 8, 64)
    y0, x0 = ((h // 8 - bh) // 2) * 8, ((w // 8 - bw) // 2) * 8
    blocks = (luma[y0:y0 + bh * 8, x0:x0 + bw * 8] - 128.0).reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3)
    coef = (_DCT8 @ blocks.reshape(-1, 8, 8) @ _DCT8.T).reshape(-1, 64)  # the JPEG 8×8 DCT-II (orthonormal)
    terms = []
    for pos in _DQ_POSITIONS:
        k = np.abs(np.rint(coef[:, pos] / q[pos])).astype(np.int64)
        hist = np.bincount(k, minlength=14)[:14].astype(np.float64)
        for b in range(1, 13):
            nb = (hist[b - 1] + hist[b + 1]) / 2
            if nb >= 20:  # only bins with enough neighbours to tell a gap from noise
                terms.append(abs(np.log((hist[b] + 1.0) / (nb + 1.0))))
    return float(np.mean(terms)) if len(terms) >= 6 else None


def read_jpeg(tables: dict[int, list[int]], fmt: str | None, luma: np.ndarray | None) -> dict[str, Any]:
    """Quantisation tables, the estimated IJG quality and the double-compression hint (not calibrated)."""
    if fmt != "JPEG":
        return {"state": "absent", "reason": "not a JPEG"}
    if not tables:
        return {"state": "unreadable", "reason": "JPEG without quantisation tables"}
    est = estimate_quality(tables)
    score = double_compression_score(luma, tables[0]) if luma is not None and 0 in tables else None
    return {"state": "present", **est, "tables": len(tables),
            "luma_table": tables.get(0), "double_compression": {
                "score": None if score is None else round(score, 4),
                "hint": None if score is None else bool(score > DQ_THRESHOLD),
                "threshold": DQ_THRESHOLD,
                "calibrated": False,
                "note": "a hint: high scores suggest the file was JPEG-compressed before at another quality"}}
