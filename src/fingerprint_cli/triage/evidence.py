"""Pixel evidence for triage: generator fingerprints (the ``fpx detect`` library code) and, with an origin
index, origin retrieval followed by reference-anchored attribution.

Calibration is read defensively: a fingerprint calibrated at a stated false-positive rate carries (in its
metadata) the FPR and the held-out real images' scores; then every detection gets a conformal p-value
(1 + #{real scores ≥ s}) / (n + 1) and calls ``generated`` only when p ≤ FPR. A fingerprint without that
calibration is used with the paper's rule (ρ nearer μ_gen than μ_real) and every result from it says
``calibrated: false`` — triage never reports it as stronger than that (see :mod:`.verdict`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fingerprint_cli.errors import InputError, UsageError

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


def _folder_fingerprints(folder: Path, lib: Library) -> None:
    from fingerprint_cli.dif.fingerprint import Fingerprint

    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not p.name.endswith(FP_SUFFIX):
            continue
        try:
            Fingerprint.load(p)
        except Exception as exc:  # noqa: BLE001 - a non-fingerprint file in a library folder is skipped
            lib.skipped.append(f"{p}: {exc}")
            continue
        lib.paths.append(str(p))


def collect(files: Sequence[str | os.PathLike] = (), library: str | None = None) -> Library:
    """Fingerprints from ``-F`` (files or folders) and ``--fingerprints shipped|DIR``.

    An explicitly named file that is not a fingerprint is a UsageError; files in a folder that are not
    fingerprints are skipped and listed in :attr:`Library.skipped`.
    """
    from fingerprint_cli.dif.fingerprint import Fingerprint

    lib = Library()
    for f in files:
        p = Path(f)
        if p.is_dir():
            _folder_fingerprints(p, lib)
            lib.sources.append(f"folder {p}")
        elif p.is_file():
            Fingerprint.load(p)  # InputError naming the file
            lib.paths.append(str(p))
            lib.sources.append(f"file {p}")
        else:
            raise InputError("no such fingerprint file or folder", str(p))
    if library:
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
    lib.paths = list(dict.fromkeys(lib.paths))
    return lib


# loaded once per worker process
_LOADED: dict[str, Any] = {}


def _load(path: str):
    from fingerprint_cli.dif.fingerprint import Fingerprint

    fp = _LOADED.get(path)
    if fp is None:
        fp = Fingerprint.load(path)
        _LOADED[path] = fp
    return fp


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


def calibration_of(fp) -> Calibration:
    """The fingerprint's calibration at a stated FPR, from whichever place its metadata keeps it
    (``meta["calibration"]`` {fpr, scores|real_scores, n} or top-level ``fpr`` / ``calibration_scores``)."""
    meta = fp.meta if isinstance(getattr(fp, "meta", None), dict) else {}
    cal = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    fpr = _first(cal, "fpr", "stated_fpr", "alpha") or _first(meta, "fpr", "stated_fpr")
    scores = _first(cal, "scores", "real_scores", "null_scores", "calibration_scores") or _first(
        meta, "calibration_scores", "real_scores")
    try:
        fpr = float(fpr) if fpr is not None else None
        arr = np.asarray(scores, dtype=np.float64).ravel() if scores is not None else None
    except (TypeError, ValueError):
        return Calibration(False)
    if fpr is None or arr is None or arr.size == 0 or not (0 < fpr < 1) or not np.all(np.isfinite(arr)):
        return Calibration(False, fpr=fpr)
    cond = cal.get("conditions") if isinstance(cal.get("conditions"), dict) else None
    stat = str(cal.get("statistic") or "score")
    if stat not in ("score", "rho"):
        return Calibration(False, fpr=fpr)
    return Calibration(True, fpr=fpr, n_real=int(arr.size), real_scores=arr,
                       where="meta.calibration" if cal else "meta", conditions=cond, statistic=stat)


# ---------------------------------------------------------------- detection on one decoded image
@contextlib.contextmanager
def _one_torch_thread():
    """Per-image tensors are small: torch's intra-op threads cost more than they bring (30x slower measured with
    2 threads on a loaded 2-core machine). Triage parallelises over files instead (``--jobs``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generator_evidence(pixels: np.ndarray, path: str, fingerprint_paths: Sequence[str],
                       condition: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every fingerprint's ρ, score, p-value and call on one decoded image (residual computed once per
    denoiser and crop). ``condition`` ({"format", "jpeg_quality"}) is checked against the conditions each
    calibration covered; outside them the entry says so (``outside_calibration``) and the verdict treats the
    detection as uncalibrated. Returns {"fingerprints": [...], "claimed_by": [...]}."""
    with _one_torch_thread():
        return _generator_evidence(pixels, path, fingerprint_paths, condition)


def _generator_evidence(pixels, path, fingerprint_paths, condition) -> dict[str, Any]:
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.residuals import centre_crop, to_batch

    per: list[dict[str, Any]] = []
    residuals: dict[tuple[str, int], np.ndarray] = {}
    for fpath in fingerprint_paths:
        fp = _load(fpath)
        den = detect.denoiser_for(fp)
        key = (den.sha256, fp.crop)
        if key not in residuals:
            crop = centre_crop(pixels, fp.crop, path, allow_smaller=True)
            residuals[key] = den.residual(to_batch(crop))[0].numpy().astype(np.float32)
        rho = float(detect.correlate_residuals(fp, [residuals[key]])[0])
        score = float(detect.scores(fp, np.array([rho]))[0])
        cal = calibration_of(fp)
        entry: dict[str, Any] = {"name": fp.name, "path": fpath, "method": fp.method, "rho": rho, "score": score,
                                 "calibrated": cal.calibrated}
        if cal.calibrated:
            if cal.statistic == "rho":  # raw ρ stored: orient both so that larger = more like the generator
                o = 1.0 if float(fp.meta["mu_gen"]) >= float(fp.meta["mu_real"]) else -1.0
                p = Calibration(True, cal.fpr, cal.n_real, o * cal.real_scores).p_value(o * rho)
            else:
                p = cal.p_value(score)
            entry.update(p_value=p, fpr=cal.fpr, n_real=cal.n_real, generated=bool(p is not None and p <= cal.fpr))
            why = cal.outside(condition)
            if why:
                entry["outside_calibration"] = why
            if 1.0 / (cal.n_real + 1) > cal.fpr:
                entry["note"] = (f"{cal.n_real} calibration images cannot reach p ≤ {cal.fpr:g}: this fingerprint "
                                 "never claims an image (calibrate on more real images)")
        else:
            entry.update(p_value=None, fpr=None, n_real=None,
                         generated=bool(detect.is_generated(fp, np.array([rho]))[0]),
                         note="not calibrated: the paper's nearest-mean rule, no stated error rate")
        per.append(entry)
    claimed = [e["name"] for e in per if e["generated"]]
    return {"fingerprints": per, "claimed_by": claimed}


# ---------------------------------------------------------------- origin (fpx origin), behind an import guard
def origin_module():
    """``fingerprint_cli.origin`` or a UsageError saying it is not part of this fpx."""
    try:
        from fingerprint_cli import origin  # type: ignore[attr-defined]
    except ImportError as exc:
        raise UsageError("--index needs `fpx origin` (fingerprint_cli.origin), which this fpx does not have") from exc
    for name in ("load_index", "query"):
        if not hasattr(origin, name):
            raise UsageError(f"--index: fingerprint_cli.origin has no {name}(); this fpx's origin module is "
                             "incompatible with triage")
    return origin


def origin_evidence(paths: Sequence[str], index: Any, k: int = 5) -> dict[str, dict[str, Any]]:
    """``origin.query(paths, index, k)`` → {path: {"decision", "reference", "similarity", "candidates"}}."""
    origin = origin_module()
    out: dict[str, dict[str, Any]] = {}
    if not paths:
        return out
    for rec in origin.query(list(paths), index, k):
        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
        inputs = d.get("inputs") or {}
        path = next((v.get("path") for v in inputs.values() if isinstance(v, dict) and v.get("path")), None)
        if path is None:
            continue
        if d.get("status") != "ok":
            out[str(path)] = {"state": "error", "reason": (d.get("error") or {}).get("message")}
            continue
        dec = d.get("decision") or {}
        cands = dec.get("candidates") or (d.get("details") or {}).get("candidates") or []
        label = dec.get("label") or dec.get("decision")
        top = cands[0] if cands else {}
        out[str(path)] = {"state": label or "unknown", "reference": top.get("path") if label == "found" else None,
                          "reference_sha256": top.get("sha256") if label == "found" else None,
                          "similarity": top.get("similarity"), "false_match_rate": dec.get("fmr") or dec.get("fpr"),
                          "candidates": cands[:k]}
    return out


def attribute_against(reference: str, suspect: str, thresholds_name: str | None) -> dict[str, Any]:
    """Reference-anchored attribution (``fpx attribute``, pixel features) of ``suspect`` against the reference
    origin retrieval found. Thresholds needing the DINOv2 encoder are not run here (the record says so)."""
    from fingerprint_cli.anchored import attribute, thresholds
    from fingerprint_cli.batch import Pair
    from fingerprint_cli.errors import FpxError

    try:
        doc = thresholds.find(thresholds_name) if thresholds_name else attribute.choose_default(False, None)[0]
        if doc.get("encoder") is not None:
            return {"state": "not-run", "reason": f"thresholds {doc['id']} need the DINOv2 encoder; run "
                                                  "`fpx attribute` on this pair"}
        decider = attribute.Decider(doc)
        scorer = attribute.make_scorer(decider.features, None, use_disk_cache=False)
        res = scorer.score([Pair(reference, suspect)])[0]
        if not res.record.ok:
            return {"state": "error", "reason": res.record.error["message"]}
        decision, reasons = decider.decide(res.record.features, 3, where=suspect)
    except FpxError as exc:
        return {"state": "error", "reason": str(exc)}
    return {"state": "done", "thresholds": doc["id"], "band": decision.get("band"),
            "system": decision.get("system"), "label": decision.get("label"), "p_system": decision.get("p_system"),
            "reasons": reasons[:3]}
