"""``fpx models``: list, pull, import, verify and locate the versioned artifacts (the library calls are in
:mod:`fingerprint_cli.artifacts`: ``summary``, ``pull``, ``install_file``, ``verify_installed``, ``location``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from fingerprint_cli import artifacts, batch
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError
from fingerprint_cli.records import render_rows, resolve_format

ORDER = 80

LIST_COLUMNS = ["name", "version", "kind", "installed", "verified", "how", "licence", "routing"]
VERIFY_COLUMNS = ["name", "installed", "intact", "verified", "how", "path"]

NameArg = typer.Argument(..., help="artifact name, e.g. dinov2-vitb14")


def _format(fmt: Optional[str]) -> str:
    """The checked output format (an unknown one is a usage error, before anything is read)."""
    try:
        return resolve_format(fmt)
    except FpxError as exc:
        common.die(exc)


def _download_progress(name: str, quiet: bool) -> Optional[Callable[[int, int], None]]:
    """A stderr progress line for a download, or None when progress is off."""
    if not batch.progress_enabled(quiet):
        return None

    def progress(done: int, total: int) -> None:
        print(f"\r{name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
    return progress


def list_(fmt: Optional[str] = common.FormatOpt) -> None:
    """Every registered artifact, whether it is installed, and whether its hash matches the pin."""
    sys.stdout.write(render_rows(artifacts.summary(), _format(fmt), LIST_COLUMNS))


def pull(name: str = NameArg, quiet: bool = common.QuietOpt) -> None:
    """Download an artifact from its pinned source, with progress, and verify its sha256."""
    try:
        spec = artifacts.resolve(name)
        progress = _download_progress(spec.name, quiet)
        inst = artifacts.pull(spec.name, progress=progress)
    except FpxError as exc:
        common.die(exc)
    if progress:
        print(file=sys.stderr)
    print(json.dumps(inst.summary()))


def import_(file: Path = typer.Argument(..., help="a safetensors file brought in by hand"),
            name: str = typer.Option(..., "--name", help="which artifact this file is, e.g. dinov2-vitb14"),
            force: bool = typer.Option(False, "--force",
                                       help="install even if the sha256 differs from the pin "
                                            "(records then say verified: false)")) -> None:
    """Install a weights file brought in by hand (air-gapped labs). The file is copied, never moved."""
    try:
        inst = artifacts.install_file(file, name, force=force)
    except FpxError as exc:
        common.die(exc)
    if not inst.verified:
        print(f"fpx: warning: {file}: sha256 differs from the pin; installed as unverified "
              f"(every record will say verified: false)", file=sys.stderr)
    print(json.dumps(inst.summary()))


def verify(name: Optional[str] = typer.Argument(None, help="one artifact (default: all installed)"),
           fmt: Optional[str] = common.FormatOpt) -> None:
    """Re-hash installed artifacts. Exit 1 when a file changed since install or does not match its pin."""
    fmt = _format(fmt)
    try:
        rows = artifacts.verify_installed(name)
    except FpxError as exc:
        common.die(exc)
    sys.stdout.write(render_rows(rows, fmt, VERIFY_COLUMNS))
    bad = [(r["name"], artifacts.verify_failure(r)) for r in rows if artifacts.verify_failure(r)]
    for art, why in bad:
        print(f"fpx: {art}: {why}", file=sys.stderr)
    raise typer.Exit(1 if bad else 0)


def path(name: Optional[str] = typer.Argument(None, help="artifact name (default: the cache folder)")) -> None:
    """Print where fpx keeps artifacts (FPX_HOME, else the user cache dir), or one artifact's file."""
    try:
        print(artifacts.location(name))
    except FpxError as exc:
        common.die(exc)


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="List, pull, import, verify and locate model artifacts (weights).",
                         no_args_is_help=True)
    app.add_typer(models, name="models")
    models.command("list")(list_)
    models.command("pull")(pull)
    models.command("import")(import_)
    models.command("verify")(verify)
    models.command("path")(path)
