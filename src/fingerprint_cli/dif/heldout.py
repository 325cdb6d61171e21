"""A fingerprint's measured accuracy on held-out images: the one measurement the library scripts
(`scripts/build_fingerprint_library.py`, `restate_fingerprint_library.py`, `recalibrate_library.py`) write into
the library index's ``held_out`` entries.

Two rules say when an image counts as detected: ``"p-value"`` — its conformal p-value over the fingerprint's
as-distributed calibration set is at most the stated rate (the fingerprint alone); ``"detect"`` — ``fpx detect``'s
own decision (:func:`.detect.detect_one`: the image's condition picks the calibration sets, the largest p-value
over them decides)."""

from __future__ import annotations

from typing import Any, Sequence

from fingerprint_cli.dif import detect
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import ResidualCache

RULES = ("p-value", "detect")


def _detected_by_p(fp: Fingerprint, rho) -> float:
    return float((detect.p_values(fp, rho) <= fp.fpr).mean())


def _detected_by_detect(fp: Fingerprint, paths: Sequence[str], cache: ResidualCache | None) -> float:
    hits = sum(detect.detect_one([fp], p, cache=cache).decision["generated"] is True for p in paths)
    return hits / len(paths)


def measure(fp: Fingerprint, generated: Sequence[str], real: Sequence[str], *, cache: ResidualCache | None = None,
            rule: str = "p-value") -> dict[str, Any]:
    """TPR on ``generated``, FPR on ``real`` (both held out from fitting and calibration), their balanced
    accuracy and the AUC of the detection score, rounded to 4 places as the library index stores them.
    ``at`` says which rule counted an image as detected (see the module docstring)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    if not generated or not real:
        raise ValueError("held-out measurement needs generated and real images")
    rg = detect.correlations(fp, list(generated), cache=cache)
    rv = detect.correlations(fp, list(real), cache=cache)
    if rule == "p-value":
        tpr, fpr = _detected_by_p(fp, rg), _detected_by_p(fp, rv)
        at = f"p <= {fp.fpr}"
    else:
        tpr, fpr = _detected_by_detect(fp, generated, cache), _detected_by_detect(fp, real, cache)
        at = f"p <= {fp.fpr} (largest over the calibration sets a suspect may belong to)"
    return {"tpr": round(tpr, 4), "fpr": round(fpr, 4), "n_generated": len(rg), "n_real": len(rv),
            "balanced_accuracy": round((tpr + 1 - fpr) / 2, 4),
            "auc": round(detect.auc(detect.scores(fp, rg), detect.scores(fp, rv)), 4), "at": at}
