"""Pixel evidence for triage: generator fingerprints (the ``fpx detect`` library code) and, with an origin
index, origin retrieval followed by reference-anchored attribution.

A fingerprint calibrated by ``fpx dif-calibrate`` (``fp.conformal``: the shipped library among them) is called
exactly as ``fpx detect`` calls it: the conformal p-value over the calibration sets the image's condition may
belong to, ``generated`` only when p ≤ its stated FPR, and outside the conditions it was trained and calibrated
on the entry says so (``outside_calibration``). An older layout is read defensively: the FPR and the held-out real
images' scores in ``meta["calibration"]``; then every detection gets a conformal p-value
(1 + #{real scores ≥ s}) / (n + 1) and calls ``generated`` only when p ≤ FPR. A fingerprint without that
calibration is used with the paper's rule (ρ nearer μ_gen than μ_real) and every result from it says
``calibrated: false`` — triage never reports it as stronger than that (see :mod:`.verdict`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from fingerprint_cli import origin, parallel
from fingerprint_cli.anchored import attribute, thresholds
from fingerprint_cli.batch import Pair
from fingerprint_cli.dif import condition as dif_condition
from fingerprint_cli.errors import FpxError, InputError, UsageError

FP_SUFFIX = ".safetensors"


# ---------------------------------------------------------------- the fingerprint library
@dataclass
class Library:
    """The fingerprints one triage run uses: paths (plain strings, so work items stay picklable) and the
    files skipped while collecting them."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def shipped_dir() -> Path:
    """Where fpx's own fingerprint library lives inside the package (``fingerprint_cli/fingerprints``)."""
    return Path(__file__).resolve().parent.parent / "fingerprints"


def _dif() -> SimpleNamespace:
    """fpx's DIF modules (``dif.fingerprint``, ``dif.detect``, ``dif.residuals``), imported on first use: they
    import torch at their top, and ``fpx --help`` (which imports this module through ``cli/triage_cmd.py``)
    must not load torch (tests/test_import_cost.py)."""
    from fingerprint_cli.dif import detect, fingerprint, residuals

    return SimpleNamespace(Fingerprint=fingerprint.Fingerprint, detect=detect, residuals=residuals)


def _folder_fingerprints(folder: Path, lib: Library) -> None:
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not p.name.endswith(FP_SUFFIX):
            continue
        try:
            _dif().Fingerprint.load(p)
        except Exception as exc:  # noqa: BLE001 - a non-fingerprint file in a library folder is skipped
            lib.skipped.append(f"{p}: {exc}")
            continue
        lib.paths.append(str(p))


def _named_fingerprint(f: str | os.PathLike, lib: Library) -> None:
    """One ``-F`` argument: a fingerprint file (which must load) or a folder of them."""
    p = Path(f)
    if p.is_dir():
        _folder_fingerprints(p, lib)
        lib.sources.append(f"folder {p}")
    elif p.is_file():
        _dif().Fingerprint.load(p)  # InputError naming the file
        lib.paths.append(str(p))
        lib.sources.append(f"file {p}")
    else:
        raise InputError("no such fingerprint file or folder", str(p))


def _library_folder(library: str, lib: Library) -> None:
    """``--fingerprints shipped|DIR``: every fingerprint in the folder (at least one)."""
    folder = shipped_dir() if library == "shipped" else Path(library)
    if not folder.is_dir():
        if library == "shipped":
            raise UsageError("this fpx has no shipped fingerprint library (fingerprint_cli/fingerprints); "
                             "use -F FILE|DIR or --fingerprints DIR")
        raise InputError("--fingerprints: no such folder", str(folder))
    before = len(lib.paths)
    _folder_fingerprints(folder, lib)
    if len(lib.paths) == before:
        raise UsageError(f"--fingerprints {library}: no fingerprints in {folder}")
    lib.sources.append("shipped library" if library == "shipped" else f"folder {folder}")


def collect(files: Sequence[str | os.PathLike] = (), library: str | None = None) -> Library:
    """Fingerprints from ``-F`` (files or folders) and ``--fingerprints shipped|DIR``.

    An explicitly named file that is not a fingerprint is a UsageError; files in a folder that are not
    fingerprints are skipped and listed in :attr:`Library.skipped`.
    """
    lib = Library()
    for f in files:
        _named_fingerprint(f, lib)
    if library:
        _library_folder(library, lib)
    lib.paths = list(dict.fromkeys(lib.paths))
    return lib


# loaded once per worker process
_LOADED: dict[str, Any] = {}


def _load(path: str):
    fp = _LOADED.get(path)
    if fp is None:
        fp = _dif().Fingerprint.load(path)
        _LOADED[path] = fp
    return fp


def fingerprint_info(paths: Sequence[str]) -> list[dict[str, Any]]:
    """What the records' provenance says of each fingerprint of the run (name, method, crop, calibration);
    fails early when a fingerprint's denoiser is missing or differs from the one it was fitted with."""
    info = []
    for p in paths:
        fp = _load(p)
        _dif().detect.denoiser_for(fp)
        calibrated, fpr, n_real = _stated_calibration(fp)
        info.append({"path": p, "name": fp.name, "method": fp.method, "crop": fp.crop, "calibrated": calibrated,
                     "fpr": fpr, "n_real": n_real})
    return info


def _has_conformal(fp) -> bool:
    """Whether the fingerprint carries the calibration ``fpx dif-calibrate`` writes (``fp.conformal``)."""
    return getattr(fp, "conformal", None) is not None and bool(getattr(fp, "calibrated", False))


def _stated_calibration(fp) -> tuple[bool, float | None, int | None]:
    """(calibrated, stated FPR, number of held-out real images) of a fingerprint, as its calls use them."""
    if _has_conformal(fp):
        return True, float(fp.fpr), len(fp.conformal.rho)
    cal = calibration_of(fp)
    return cal.calibrated, cal.fpr, cal.n_real


# ---------------------------------------------------------------- calibration, read defensively
@dataclass
class Calibration:
    calibrated: bool
    fpr: float | None = None
    n_real: int | None = None
    real_scores: np.ndarray | None = None
    where: str | None = None
    conditions: dict[str, Any] | None = None
    statistic: str = "score"  # what the stored real scores are: "score" (z, larger = more generated) or "rho"

    def outside(self, condition: dict[str, Any] | None) -> str | None:
        """Why an input of ``condition`` ({"format", "jpeg_quality"}) is outside the conditions the calibration
        images covered (``conditions = {"formats": [...], "jpeg_quality": [lo, hi]}``), or None."""
        c, x = self.conditions or {}, condition or {}
        fmts = [str(f).upper() for f in c.get("formats") or []]
        if fmts and x.get("format") and str(x["format"]).upper() not in fmts:
            return f"calibrated on {'/'.join(fmts)} images, this is {x['format']}"
        q, rng = x.get("jpeg_quality"), c.get("jpeg_quality")
        if q is not None and isinstance(rng, (list, tuple)) and len(rng) == 2 and not (rng[0] <= q <= rng[1]):
            return f"calibrated on JPEG quality {rng[0]}–{rng[1]}, this is ≈ {q}"
        return None

    def p_value(self, score: float) -> float | None:
        """Conformal p-value of ``score`` against the held-out real scores: (1 + #{≥ score}) / (n + 1)."""
        if self.real_scores is None or len(self.real_scores) == 0 or not np.isfinite(score):
            return None
        n = len(self.real_scores)
        return float((1 + int(np.sum(self.real_scores >= score))) / (n + 1))


def _first(meta: dict, *names):
    for n in names:
        v = meta.get(n)
        if v is not None:
            return v
    return None


@dataclass(frozen=True)
class _MetaFields:
    """The fingerprint metadata triage reads, in one place (the metadata is a plain dict today)."""

    calibration: dict[str, Any]  # meta["calibration"] when it is a dict, else {}
    fpr: Any                     # the stated FPR, raw
    scores: Any                  # the held-out real images' scores, raw
    mu_gen: Any
    mu_real: Any


def _meta_fields(fp) -> _MetaFields:
    """Every read of a fingerprint's metadata dict: the calibration from whichever place it is kept
    (``meta["calibration"]`` {fpr, scores|real_scores, n} or top-level ``fpr`` / ``calibration_scores``) and
    the class means μ_gen, μ_real."""
    meta = fp.meta if isinstance(getattr(fp, "meta", None), dict) else {}
    cal = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    fpr = _first(cal, "fpr", "stated_fpr", "alpha") or _first(meta, "fpr", "stated_fpr")
    scores = _first(cal, "scores", "real_scores", "null_scores", "calibration_scores") or _first(
        meta, "calibration_scores", "real_scores")
    return _MetaFields(cal, fpr, scores, meta.get("mu_gen"), meta.get("mu_real"))


def calibration_of(fp) -> Calibration:
    """The fingerprint's calibration at a stated FPR (:func:`_meta_fields`), checked: a finite, non-empty score
    list, 0 < FPR < 1 and a known statistic, else ``calibrated: False``."""
    m = _meta_fields(fp)
    try:
        fpr = float(m.fpr) if m.fpr is not None else None
        arr = np.asarray(m.scores, dtype=np.float64).ravel() if m.scores is not None else None
    except (TypeError, ValueError):
        return Calibration(False)
    if fpr is None or arr is None or arr.size == 0 or not (0 < fpr < 1) or not np.all(np.isfinite(arr)):
        return Calibration(False, fpr=fpr)
    cal = m.calibration
    stat = str(cal.get("statistic") or "score")
    if stat not in ("score", "rho"):
        return Calibration(False, fpr=fpr)
    cond = cal.get("conditions") if isinstance(cal.get("conditions"), dict) else None
    return Calibration(True, fpr=fpr, n_real=int(arr.size), real_scores=arr,
                       where="meta.calibration" if cal else "meta", conditions=cond, statistic=stat)


# ---------------------------------------------------------------- detection on one decoded image
def _one_torch_thread():
    """Per-image tensors are small: torch's intra-op threads cost more than they bring (30x slower measured with
    2 threads on a loaded 2-core machine). Triage parallelises over files instead (``--jobs``)."""
    import torch

    return parallel.threads_limited(torch.get_num_threads, torch.set_num_threads)


def generator_evidence(pixels: np.ndarray, path: str, fingerprint_paths: Sequence[str],
                       condition: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every fingerprint's ρ, score, p-value and call on one decoded image (residual computed once per
    denoiser and crop). ``condition`` ({"format", "jpeg_quality"}) is checked against the conditions each
    calibration covered; outside them the entry says so (``outside_calibration``) and the verdict treats the
    detection as uncalibrated. Returns {"fingerprints": [...], "claimed_by": [...]}."""
    with _one_torch_thread():
        return _generator_evidence(pixels, path, fingerprint_paths, condition)


def _generator_evidence(pixels, path, fingerprint_paths, condition) -> dict[str, Any]:
    residuals: dict[tuple[str, int], np.ndarray] = {}
    per = [_fingerprint_entry(_load(fpath), fpath, pixels, path, residuals, condition) for fpath in fingerprint_paths]
    claimed = [e["name"] for e in per if e["generated"]]
    return {"fingerprints": per, "claimed_by": claimed}


def _residual(fp, pixels: np.ndarray, path: str, cache: dict[tuple, np.ndarray], lossless: bool = False
              ) -> np.ndarray:
    """The image's residual under the fingerprint's denoiser and crop, computed once per (denoiser, crop, format
    matching): a ``format-matched`` fingerprint's lossless image is first re-encoded at its quality, as ``fpx
    detect`` does (:func:`fingerprint_cli.dif.residuals.compute_matched`), so its calibration holds here too."""
    dif = _dif()
    den = dif.detect.denoiser_for(fp)
    q = dif.detect.matched_quality(fp) if lossless else None
    key = (den.sha256, fp.crop, q)
    if key not in cache:
        px = pixels if q is None else dif_condition.Recompression(quality=q).apply(pixels, path)
        crop = dif.residuals.centre_crop(px, fp.crop, path, allow_smaller=True)
        cache[key] = den.residual(dif.residuals.to_batch(crop))[0].numpy().astype(np.float32)
    return cache[key]


def _fingerprint_entry(fp, fpath: str, pixels: np.ndarray, path: str, cache: dict, condition) -> dict[str, Any]:
    """One fingerprint's ρ, score and call on the image: at its calibrated FPR, or by the paper's rule."""
    detect = _dif().detect
    lossless = bool((condition or {}).get("lossless"))
    rho = float(detect.correlate_residuals(fp, [_residual(fp, pixels, path, cache, lossless)])[0])
    score = float(detect.scores(fp, np.array([rho]))[0])
    cal = calibration_of(fp)
    conformal = _has_conformal(fp)
    entry: dict[str, Any] = {"name": fp.name, "path": fpath, "method": fp.method, "rho": rho, "score": score,
                             "calibrated": conformal or cal.calibrated}
    if conformal:
        entry.update(_conformal_call(fp, rho, condition))
    elif cal.calibrated:
        entry.update(_calibrated_call(fp, cal, rho, score, condition))
    else:
        entry.update(p_value=None, fpr=None, n_real=None,
                     generated=bool(detect.is_generated(fp, np.array([rho]))[0]),
                     note="not calibrated: the paper's nearest-mean rule, no stated error rate")
    return entry


def _conformal_call(fp, rho: float, condition: dict[str, Any] | None) -> dict[str, Any]:
    """The call of a fingerprint calibrated by ``fpx dif-calibrate`` (``fp.conformal``), exactly as ``fpx detect``
    makes it (:func:`fingerprint_cli.dif.detect.judge` over the calibration sets the image's condition may belong
    to, :func:`fingerprint_cli.dif.condition.check`); an image outside the conditions the fingerprint was trained
    and calibrated on says why (``outside_calibration``: the verdict then gives its claim no error rate)."""
    check = dif_condition.check(condition or {}, fp.info, fp.crop)
    call = _dif().detect.judge(fp, rho, check.get("calibration_sets"))
    out: dict[str, Any] = {"p_value": call["p_value"], "fpr": call["fpr"], "n_real": len(fp.conformal.rho),
                           "generated": bool(call["generated"]), "rule": call["rule"]}
    if check["within"] is False:  # as detect's abstention (dif.detect.abstain_outside)
        out["outside_calibration"] = "; ".join(check["warnings"])
    return out


def _calibrated_call(fp, cal: Calibration, rho: float, score: float, condition) -> dict[str, Any]:
    """p-value, stated FPR and call of a calibrated fingerprint, and why the input is outside its calibration."""
    if cal.statistic == "rho":  # raw ρ stored: orient both so that larger = more like the generator
        m = _meta_fields(fp)
        o = 1.0 if float(m.mu_gen) >= float(m.mu_real) else -1.0
        p = Calibration(True, cal.fpr, cal.n_real, o * cal.real_scores).p_value(o * rho)
    else:
        p = cal.p_value(score)
    out: dict[str, Any] = {"p_value": p, "fpr": cal.fpr, "n_real": cal.n_real,
                           "generated": bool(p is not None and p <= cal.fpr)}
    why = cal.outside(condition)
    if why:
        out["outside_calibration"] = why
    if 1.0 / (cal.n_real + 1) > cal.fpr:
        out["note"] = (f"{cal.n_real} calibration images cannot reach p ≤ {cal.fpr:g}: this fingerprint "
                       "never claims an image (calibrate on more real images)")
    return out


# ---------------------------------------------------------------- origin (fpx origin) and attribution
def load_index(path: str) -> Any:
    """The origin library index (``fpx origin index``) triage queries."""
    return origin.load_index(path)


def origin_evidence(paths: Sequence[str], index: Any, k: int = 5) -> dict[str, dict[str, Any]]:
    """``origin.query(paths, index, k)`` → {path: {"decision", "reference", "similarity", "candidates"}}."""
    out: dict[str, dict[str, Any]] = {}
    if not paths:
        return out
    for rec in origin.query(list(paths), index, k):
        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
        path = _query_path(d)
        if path is not None:
            out[str(path)] = _origin_entry(d, k)
    return out


def _query_path(d: dict[str, Any]) -> str | None:
    """The suspect's path in an origin query record (its first input with a path)."""
    inputs = d.get("inputs") or {}
    return next((v.get("path") for v in inputs.values() if isinstance(v, dict) and v.get("path")), None)


def _origin_entry(d: dict[str, Any], k: int) -> dict[str, Any]:
    """One origin query record as triage keeps it: state, the reference found, similarity, false-match rate."""
    if d.get("status") != "ok":
        return {"state": "error", "reason": (d.get("error") or {}).get("message")}
    dec = d.get("decision") or {}
    cands = dec.get("candidates") or (d.get("details") or {}).get("candidates") or []
    label = dec.get("label") or dec.get("decision")
    top = cands[0] if cands else {}
    found = label == "found"
    out = {"state": label or "unknown", **_found_reference(dec, top, found),
           "false_match_rate": _first(dec, "false_match_rate", "fmr", "fpr"), "candidates": cands[:k]}
    if found and dec.get("outside_conditions"):
        out["outside_calibration"] = dec["outside_conditions"]
    return out


def _found_reference(dec: dict[str, Any], top: dict[str, Any], found: bool) -> dict[str, Any]:
    """The reference, its sha256 and similarity of an origin answer: the original ``fpx origin query`` names
    when found (it may be a candidate other than the first: the local stage), else none and the top similarity."""
    if not found:
        return {"reference": None, "reference_sha256": None, "similarity": top.get("similarity")}
    hit = dec.get("origin") if isinstance(dec.get("origin"), dict) else top
    return {"reference": hit.get("path"), "reference_sha256": hit.get("sha256"), "similarity": hit.get("similarity")}


def _thresholds_doc(thresholds_name: str | None) -> tuple[thresholds.Thresholds, str, bool]:
    """The thresholds artifact (named, else fpx's default without the encoder), its id, and whether it needs
    the DINOv2 encoder."""
    doc = thresholds.find(thresholds_name) if thresholds_name else attribute.choose_default(False, None)[0]
    return doc, doc.id, doc.encoder is not None


def attribute_against(reference: str, suspect: str, thresholds_name: str | None) -> dict[str, Any]:
    """Reference-anchored attribution (``fpx attribute``, pixel features) of ``suspect`` against the reference
    origin retrieval found. Thresholds needing the DINOv2 encoder are not run here (the record says so)."""
    try:
        doc, doc_id, needs_encoder = _thresholds_doc(thresholds_name)
        if needs_encoder:
            return {"state": "not-run", "reason": f"thresholds {doc_id} need the DINOv2 encoder; run "
                                                  "`fpx attribute` on this pair"}
        decider = attribute.Decider(doc)
        scorer = attribute.make_scorer(decider.features, None, use_disk_cache=False)
        res = scorer.score([Pair(reference, suspect)])[0]
        if not res.record.ok:
            return {"state": "error", "reason": res.record.error["message"]}
        decision, reasons = decider.decide(res.record.features, 3, where=suspect,
                                           exact=(res.record.details or {}).get("exact_copy"))
    except FpxError as exc:
        return {"state": "error", "reason": str(exc)}
    return {"state": "done", "thresholds": doc_id, "band": decision.band, "system": decision.system,
            "label": decision.label, "p_system": decision.p_system, "calibrated": bool(decision.calibrated),
            "alpha": decision.alpha, "prediction_set": decision.prediction_set, "rule": decision.to_dict().get("rule"),
            "reasons": reasons[:3]}
