"""Thresholds artifacts: versioned JSON that ``fpx attribute`` trusts (schema, seal, load, checks).

An artifact is one JSON object (never a pickle) with ``schema: "fpx-thresholds/1"``, ``id``, ``version``,
``created``, ``fpx_version``, ``encoder`` (``null`` for pixel features only, else ``{id, weights_sha256,
resolution}``), ``features`` and ``directions``, ``standardisation`` (mean/std), ``class_model`` (LDA with a
shared covariance, parameters in JSON), ``band_rule``, ``inconclusive`` rule, optionally ``conformal`` (v2: Mondrian conformal p-values, see
:class:`fingerprint_cli.anchored.calibrate.Conformal`; an artifact without it still loads and its records say
"p-values: not calibrated") and ``calibration`` (corpus
description and sha256, images, calls, systems, leave-one-image-out accuracy with 95% CI, confusion
matrix, band purity, η², blind baseline). The ``sha256`` field seals the rest: it is the SHA-256 of the
canonical JSON (sorted keys, compact separators, UTF-8) of the object without ``sha256``. An artifact
whose seal does not match is refused, as is one whose encoder or resolution differs from what fpx would
compute.

Shipped artifacts live in the package (``fingerprint_cli/thresholds/*.json``) and are found with
:mod:`importlib.resources`.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from fingerprint_cli import atomic
from fingerprint_cli.errors import ArtifactError, InputError

SCHEMA = "fpx-thresholds/1"
REQUIRED = ("schema", "id", "version", "created", "fpx_version", "encoder", "features", "standardisation",
            "class_model", "band_rule", "inconclusive", "calibration", "sha256")


# Shipped ids pinned to their seal: an edited-and-resealed file can no longer carry a shipped id. A new shipped
# artifact (or a new version of one) gets its line here in the same commit as its file.
SHIPPED_PINS: dict[str, str] = {
    "local-offline-pixel-v1": "fafb39f0af607015fecf71ffeb7506e9a2e3ee2610dbf45dd96eb23e22964179",
    "local-offline-ssim-psnr-v1": "aa0cc8c484a81af68a473671f571e8a39dc53441fb4613c163acd2cf8553e1f0",
    "local-offline-pixel-v2": "a97acf9992782b603aafc9f2e9a71643f0710d9e6d9c45856c5200c9d12ed87e",
    "local-offline-pixel-v3": "4b230e5f274b112f739afcc7a29abfbbb3674315e0e4a2d2a4920123ee87c854",
    "local-offline-pixel-v4": "1bae5c9aa1c0c9754772658ab4905eef86cf36aca0d64bcc1a2ac6274643ab6f",
}


def canonical(doc: dict[str, Any]) -> bytes:
    """The sealed bytes: every key but ``sha256`` and the in-memory ``_``-prefixed ones (e.g. ``_path``)."""
    body = {k: v for k, v in doc.items() if k != "sha256" and not str(k).startswith("_")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with its ``sha256`` seal (re)computed."""
    out = {k: v for k, v in doc.items() if k != "sha256" and not str(k).startswith("_")}
    out["sha256"] = hashlib.sha256(canonical(out)).hexdigest()
    return out


def save(doc: dict[str, Any], path: str | os.PathLike, inputs=()) -> dict[str, Any]:
    """Seal and write an artifact atomically (never over one of ``inputs``)."""
    sealed = seal(doc)
    atomic.refuse_overwrite_of_inputs(path, inputs)
    atomic.write_text(path, json.dumps(sealed, indent=1, sort_keys=False, allow_nan=False) + "\n")
    return sealed


def validate(doc: Any, where: str) -> dict[str, Any]:
    """Check the schema and the seal; raise :class:`ArtifactError` naming ``where`` otherwise."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ArtifactError(f"is not an fpx thresholds artifact (expected schema {SCHEMA!r})", where)
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ArtifactError(f"thresholds artifact lacks {', '.join(missing)}", where)
    try:
        digest = hashlib.sha256(canonical(doc)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"thresholds artifact is not canonical JSON ({exc})", where) from exc
    if digest != doc["sha256"]:
        raise ArtifactError(f"thresholds artifact has been modified: its content hashes to {digest[:16]}…, "
                            f"not its recorded sha256 {str(doc['sha256'])[:16]}…; refusing it", where)
    pin = SHIPPED_PINS.get(str(doc.get("id")))
    if pin is not None and doc["sha256"] != pin:
        raise ArtifactError(f"carries the id {doc['id']!r} of a shipped thresholds artifact but not its content "
                            f"(sha256 {str(doc['sha256'])[:16]}…, shipped {pin[:16]}…): it was edited and "
                            "resealed; refusing it (give an edited artifact its own id)", where)
    cm = doc["class_model"]
    k, d = len(cm.get("classes", [])), len(doc["features"])
    if k < 2 or len(cm.get("means", [])) != k or any(len(m) != d for m in cm["means"]) \
            or len(cm.get("covariance", [])) != d:
        raise ArtifactError("thresholds artifact has an inconsistent class model", where)
    check_numbers(doc, where)
    return doc


def check_numbers(doc: dict[str, Any], where: str) -> None:
    """Refuse a class model that cannot give a meaningful posterior: non-finite or non-positive scales,
    non-finite means, a covariance that is not symmetric positive definite, repeated classes, bad priors or an
    inconclusive rule outside its range."""
    import numpy as np

    def arr(x, name, shape):
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ArtifactError(f"thresholds artifact: {name} is not numeric", where) from None
        if a.shape != shape:
            raise ArtifactError(f"thresholds artifact: {name} has shape {a.shape}, not {shape}", where)
        if not np.all(np.isfinite(a)):
            raise ArtifactError(f"thresholds artifact: {name} holds non-finite values (NaN or infinite)", where)
        return a

    cm, st = doc["class_model"], doc["standardisation"]
    classes = cm.get("classes", [])
    k, d = len(classes), len(doc["features"])
    if len(set(map(str, classes))) != k:
        raise ArtifactError("thresholds artifact names a class twice", where)
    if len(set(doc["features"])) != d:
        raise ArtifactError("thresholds artifact names a feature twice", where)
    if not isinstance(st, dict):
        raise ArtifactError("thresholds artifact: standardisation is not an object", where)
    arr(st.get("mean"), "standardisation mean", (d,))
    std = arr(st.get("std"), "standardisation std", (d,))
    if np.any(std <= 0):
        bad = [f for f, v in zip(doc["features"], std) if v <= 0]
        raise ArtifactError(f"thresholds artifact: standardisation std is not positive for {', '.join(bad)} "
                            "(a zero scale makes every z-score infinite)", where)
    means = arr(cm.get("means"), "class means", (k, d))
    cov = arr(cm.get("covariance"), "covariance", (d, d))
    if not np.allclose(cov, cov.T, rtol=1e-6, atol=1e-9):
        raise ArtifactError("thresholds artifact: covariance is not symmetric", where)
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ArtifactError("thresholds artifact: covariance is not positive definite", where) from None
    priors = arr(cm.get("priors"), "priors", (k,))
    if np.any(priors <= 0) or abs(float(priors.sum()) - 1.0) > 1e-4:
        raise ArtifactError("thresholds artifact: priors must be positive and sum to 1", where)
    if k >= 2 and np.allclose(means, means[:1], atol=1e-12):
        raise ArtifactError("thresholds artifact: every class has the same mean (no class can be told apart)",
                            where)
    rule = doc["inconclusive"]
    if doc.get("conformal"):  # a prediction-set rule: alpha in (0, 0.5]; the conformal part is checked on use
        try:
            a = float(rule["alpha"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError("thresholds artifact: prediction-set rule lacks a numeric alpha", where) from None
        if not 0.0 < a <= 0.5:
            raise ArtifactError(f"thresholds artifact: alpha {a:g} is not in (0, 0.5]", where)
        return
    try:
        mtp, bmp = float(rule["min_top_posterior"]), float(rule["band_min_posterior"])
        mm2 = float(rule["max_mahalanobis2"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError("thresholds artifact: inconclusive rule lacks numeric min_top_posterior, "
                            "band_min_posterior and max_mahalanobis2", where) from None
    if not (0.0 <= mtp <= 1.0 and 0.0 <= bmp <= 1.0 and np.isfinite(mm2) and mm2 > 0):
        raise ArtifactError("thresholds artifact: inconclusive rule out of range (posteriors in [0, 1], "
                            "max_mahalanobis2 finite and > 0)", where)


def load(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    from fingerprint_cli.images import read_checked

    data = read_checked(p, "thresholds file", max_bytes=64 << 20)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"thresholds file is not valid JSON ({exc.__class__.__name__})", str(p)) from exc
    if isinstance(doc, dict):  # in-memory keys are never read from a file
        doc = {k: v for k, v in doc.items() if not str(k).startswith("_")}
    doc = validate(doc, str(p))
    doc["_path"] = str(p)
    return doc


def shipped() -> list[dict[str, Any]]:
    """Every valid artifact shipped in the package, sorted by id."""
    out = []
    root = resources.files("fingerprint_cli") / "thresholds"
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            try:
                doc = validate(json.loads(entry.read_text(encoding="utf-8")), f"(shipped) {entry.name}")
            except (ArtifactError, json.JSONDecodeError):
                continue
            doc["_path"] = f"fingerprint_cli/thresholds/{entry.name}"
            out.append(doc)
    return out


def find(name: str) -> dict[str, Any]:
    """An artifact by file path, or by the id of a shipped one."""
    if Path(name).is_file() or name.endswith(".json"):
        return load(name)
    docs = shipped()
    for d in docs:
        if d["id"] == name:
            return d
    import difflib

    ids = [d["id"] for d in docs]
    close = difflib.get_close_matches(name, ids, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InputError(f"no thresholds file and no shipped artifact with this id{hint} "
                     f"(shipped: {', '.join(ids) or 'none'})", name)


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What a record says about the artifact that made its decision."""
    cal = doc.get("calibration", {})
    loo = cal.get("loo", {})
    return {"id": doc["id"], "version": doc["version"], "sha256": doc["sha256"], "path": doc.get("_path"),
            "encoder": doc["encoder"], "features": doc["features"],
            "loo_accuracy": loo.get("accuracy"), "loo_ci95": loo.get("ci95"),
            "band_loo_accuracy": cal.get("band_loo", {}).get("accuracy"),
            "corpus": cal.get("corpus", {}).get("description"), "note": doc.get("description"),
            "p_values": (f"conformal, alpha {doc['conformal'].get('alpha')}" if doc.get("conformal")
                         else "not calibrated")}


def check_encoder(doc: dict[str, Any], encoder) -> None:
    """Refuse the artifact when its encoder (weights sha256, resolution) differs from ``encoder``."""
    want = doc["encoder"]
    where = doc.get("_path") or doc["id"]
    if want is None:
        if encoder is not None:
            raise ArtifactError("thresholds were calibrated on pixel features only (encoder: null) but an "
                                "encoder was requested", where)
        return
    if encoder is None:
        raise ArtifactError(f"thresholds need the {want.get('id')} encoder features, and no encoder is loaded",
                            where)
    prov = encoder.provenance()
    if prov.get("weights_sha256") != want.get("weights_sha256"):
        raise ArtifactError(f"thresholds were calibrated with encoder weights sha256 "
                            f"{str(want.get('weights_sha256'))[:16]}…, but the installed {prov.get('encoder')} "
                            f"weights are {str(prov.get('weights_sha256'))[:16]}…; refusing to mix them", where)
    if int(prov.get("resolution")) != int(want.get("resolution")):
        raise ArtifactError(f"thresholds were calibrated at resolution {want.get('resolution')}, not "
                            f"{prov.get('resolution')}; refusing to mix them", where)
