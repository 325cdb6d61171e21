"""``fpx doctor``: versions, device, cache paths, installed artifacts, offline state."""

from __future__ import annotations

import json
import platform

import typer

ORDER = 90


def collect() -> dict:
    import numpy
    import torch

    from fingerprint_cli import __version__, artifacts

    info = {"fpx": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "cuda_available": torch.cuda.is_available(),
            "device_auto": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
            "fpx_home": str(artifacts.home()), "offline": artifacts.offline(),
            "cache_problem": artifacts.cache_problem(),
            "artifacts": artifacts.summary()}
    from importlib import metadata

    for dist in ("timm", "safetensors", "scipy", "scikit-image", "pillow", "typer", "rich", "joblib",
                 "matplotlib"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    return info


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
        """Check the installation: versions, device, cache paths, artifacts installed and verified, offline."""
        from fingerprint_cli.cli.common import die
        from fingerprint_cli.errors import FpxError

        try:
            info = collect()
        except FpxError as exc:  # e.g. FPX_HOME unusable in a way summary() cannot describe
            die(exc)
        if as_json:
            print(json.dumps(info, indent=2))
            return
        for k, v in info.items():
            if k != "artifacts":
                print(f"{k:16} {v}")
        print("artifacts:")
        for a in info["artifacts"]:
            state = ("not installed" if not a["installed"] else
                     f"installed ({a['how']}), {'verified' if a['verified'] else 'UNVERIFIED'}: {a['path']}")
            if a.get("problem"):
                state = f"BROKEN: {a['problem']}" if not a["installed"] else f"{state}; PROBLEM: {a['problem']}"
            print(f"  {a['name']:16} {state}")
        if info.get("cache_problem"):
            print(f"cache: UNUSABLE ({info['cache_problem']}): caches are skipped; set FPX_HOME to a writable folder")
        missing = [a["name"] for a in info["artifacts"] if not a["installed"]]
        if missing:
            print(f"hint: fpx models pull NAME (online) or fpx models import FILE --name NAME (offline) "
                  f"for: {', '.join(missing)}")
