"""The shipped fingerprint library: versioned, sealed fingerprint artifacts inside the package.

``index.json`` lists each shipped fingerprint: ``id`` (``<generator>-<method>-v<version>``), ``name`` (the
generator), ``version``, ``file`` (beside this module), ``sha256`` of the file (the pin: a shipped id can only
name these exact bytes, so an edited-and-resealed file cannot keep it), the training set (description,
counts, manifest hash = sha256 of the sorted image sha256s), denoiser, crop, method, storage dtype, the
calibration (stated false-positive rate, n, set) and the held-out measurement (true-positive rate on held-out
generated images, false-positive rate on held-out real images, both at the stated threshold, with their
sets). ``scripts/build_fingerprint_library.py`` fits, calibrates and installs entries; ``fpx detect`` without
``-F`` uses the whole library; ``fpx models list`` shows it. The images themselves never enter the package.

This module reads only JSON; the fingerprint files are read by :class:`fingerprint_cli.dif.fingerprint.
Fingerprint` through :mod:`fingerprint_cli.artifacts`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fingerprint_cli import atomic

LIBRARY_DIR = Path(__file__).resolve().parent
INDEX_NAME = "index.json"
INDEX_FORMAT = "fpx-fingerprint-library"


def index(directory: Path | None = None) -> list[dict[str, Any]]:
    """The library's entries (empty when no index is shipped). Raises ValueError on a malformed index."""
    f = (directory or LIBRARY_DIR) / INDEX_NAME
    if not f.is_file():
        return []
    data = json.loads(f.read_text(encoding="utf-8"))
    if data.get("format") != INDEX_FORMAT or not isinstance(data.get("fingerprints"), list):
        raise ValueError(f"{f}: not an fpx fingerprint library index")
    for e in data["fingerprints"]:
        for k in ("id", "name", "version", "file", "sha256"):
            if not isinstance(e.get(k), str) or not e[k]:
                raise ValueError(f"{f}: an entry lacks {k!r}")
    return list(data["fingerprints"])


def write_index(entries: list[dict[str, Any]], directory: Path | None = None) -> Path:
    """Write the index atomically (entries sorted by id)."""
    f = (directory or LIBRARY_DIR) / INDEX_NAME
    body = {"format": INDEX_FORMAT, "format_version": "1",
            "fingerprints": sorted(entries, key=lambda e: e["id"])}
    atomic.write_text(f, json.dumps(body, indent=2, sort_keys=True) + "\n")
    return f


def describe_coverage(conditions: dict[str, Any] | None) -> str:
    """The suspect conditions a fingerprint was trained for, in words, from its training conditions
    (``meta["conditions"]`` / an index entry's ``conditions``: ``lossless``, ``jpeg_quality`` [lo, hi],
    ``scale`` [lo, hi]), e.g. ``lossless + JPEG q70–95, scale 1``; ``not stated`` without them. What
    :mod:`fingerprint_cli.dif.route` routes suspects by."""
    if not conditions:
        return "not stated"
    q = conditions.get("jpeg_quality")
    parts = (["lossless"] if conditions.get("lossless", True) else []) + ([f"JPEG q{q[0]}–{q[1]}"] if q else [])
    lo, hi = conditions.get("scale") or (1.0, 1.0)
    return f"{' + '.join(parts) or 'nothing'}, scale {lo:g}" + ("" if lo == hi else f"–{hi:g}")


def members_text(entries: list[dict[str, Any]], entry: dict[str, Any]) -> str:
    """How ``fpx models list`` states a library entry's routing: its profile and coverage, and the other members
    of the same generator's fingerprint (same ``name``) that ``fpx detect`` routes between."""
    others = [e["id"] for e in entries if e["name"] == entry["name"] and e["id"] != entry["id"]]
    text = f"profile {entry.get('profile') or 'plain'}, covers {describe_coverage(entry.get('conditions'))}"
    return text + (f"; routed with {', '.join(others)} (member of {entry['name']})" if others else "")
