"""What ``fpx doctor`` reports: versions, device, cache paths, installed artifacts, offline state."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy

from fingerprint_cli import __version__, artifacts

DISTRIBUTIONS = ("timm", "safetensors", "scipy", "scikit-image", "pillow", "typer", "rich", "joblib", "matplotlib")


def collect() -> dict[str, Any]:
    """The installation as fpx sees it: fpx, Python, platform, torch and numpy versions, CUDA, the cache folder
    (``fpx_home``, ``offline``, ``cache_problem``), every artifact (:func:`fingerprint_cli.artifacts.summary`)
    and the version of each of :data:`DISTRIBUTIONS` (None when not installed). Loads torch."""
    import torch

    info: dict[str, Any] = {
        "fpx": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device_auto": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "fpx_home": str(artifacts.home()), "offline": artifacts.offline(),
        "cache_problem": artifacts.cache_problem(),
        "artifacts": artifacts.summary()}
    for dist in DISTRIBUTIONS:
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    return info


def artifact_state(a: dict[str, Any]) -> str:
    """One artifact row of :func:`collect` in words ("not installed", "installed (pull), verified: PATH", ...)."""
    state = ("not installed" if not a["installed"] else
             f"installed ({a['how']}), {'verified' if a['verified'] else 'UNVERIFIED'}: {a['path']}")
    if a.get("problem"):
        state = f"BROKEN: {a['problem']}" if not a["installed"] else f"{state}; PROBLEM: {a['problem']}"
    return state


def text(info: dict[str, Any]) -> str:
    """:func:`collect`'s report for a person: one line per fact, one per artifact, then the hints."""
    lines = [f"{k:16} {v}" for k, v in info.items() if k != "artifacts"]
    lines.append("artifacts:")
    lines += [f"  {a['name']:16} {artifact_state(a)}" for a in info["artifacts"]]
    if info.get("cache_problem"):
        lines.append(f"cache: UNUSABLE ({info['cache_problem']}): caches are skipped; set FPX_HOME to a writable "
                     "folder")
    missing = [a["name"] for a in info["artifacts"] if not a["installed"]]
    if missing:
        lines.append(f"hint: fpx models pull NAME (online) or fpx models import FILE --name NAME (offline) "
                     f"for: {', '.join(missing)}")
    return "".join(line + "\n" for line in lines)
