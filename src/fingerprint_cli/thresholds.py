"""Thresholds artifacts: versioned JSON that ``fpx attribute`` trusts (schema, seal, load, checks).

An artifact is one JSON object (never a pickle) with ``schema: "fpx-thresholds/1"``, ``id``, ``version``,
``created``, ``fpx_version``, ``encoder`` (``null`` for pixel features only, else ``{id, weights_sha256,
resolution}``), ``features`` and ``directions``, ``standardisation`` (mean/std), ``class_model`` (LDA with a
shared covariance, parameters in JSON), ``band_rule``, ``inconclusive`` rule, optionally ``conformal`` (v2: Mondrian conformal p-values, see
:class:`fingerprint_cli.calibrate.Conformal`; an artifact without it still loads and its records say
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


def canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with its ``sha256`` seal (re)computed."""
    out = {k: v for k, v in doc.items() if k != "sha256"}
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
    cm = doc["class_model"]
    k, d = len(cm.get("classes", [])), len(doc["features"])
    if k < 2 or len(cm.get("means", [])) != k or any(len(m) != d for m in cm["means"]) \
            or len(cm.get("covariance", [])) != d:
        raise ArtifactError("thresholds artifact has an inconsistent class model", where)
    return doc


def load(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError("no such thresholds file", str(p))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"thresholds file is not valid JSON ({exc.__class__.__name__})", str(p)) from exc
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
