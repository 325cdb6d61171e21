"""``fpx models``: list, pull, import, verify and locate the versioned artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fingerprint_cli.cli import common

ORDER = 80


def _emit(rows: list[dict], fmt: Optional[str], columns: list[str]) -> None:
    from fingerprint_cli.errors import UsageError
    from fingerprint_cli.records import FORMATS, default_format

    if fmt is not None and fmt not in FORMATS:
        common.die(UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}"))
    fmt = fmt or ("table" if default_format() == "table" else "jsonl")
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "jsonl":
        for r in rows:
            print(json.dumps(r))
    elif fmt == "csv":
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        t = Table()
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["-" if r.get(c) is None else escape(str(r.get(c))) for c in columns])
        Console(width=160).print(t)


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="List, pull, import, verify and locate model artifacts (weights).",
                         no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    def list_(fmt: Optional[str] = common.FormatOpt) -> None:
        """Every registered artifact, whether it is installed, and whether its hash matches the pin."""
        from fingerprint_cli import artifacts

        _emit(artifacts.summary(), fmt, ["name", "version", "kind", "installed", "verified", "how", "licence"])

    @models.command("pull")
    def pull(name: str = typer.Argument(..., help="artifact name, e.g. dinov2-vitb14"),
             quiet: bool = common.QuietOpt) -> None:
        """Download an artifact from its pinned source, with progress, and verify its sha256."""
        from fingerprint_cli import artifacts, batch
        from fingerprint_cli.errors import FpxError

        try:
            spec = artifacts.resolve(name)
            state = {"bar": None}
            if batch.progress_enabled(quiet):
                def progress(done: int, total: int) -> None:
                    print(f"\r{spec.name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
            else:
                progress = None
            inst = artifacts.pull(spec.name, progress=progress)
            if progress:
                print(file=sys.stderr)
            del state
        except FpxError as exc:
            common.die(exc)
        print(json.dumps({"name": inst.spec.name, "path": str(inst.path), "sha256": inst.sha256,
                          "verified": inst.verified}))

    @models.command("import")
    def import_(file: Path = typer.Argument(..., help="a safetensors file brought in by hand"),
                name: str = typer.Option(..., "--name", help="which artifact this file is, e.g. dinov2-vitb14"),
                force: bool = typer.Option(False, "--force",
                                           help="install even if the sha256 differs from the pin "
                                                "(records then say verified: false)")) -> None:
        """Install a weights file brought in by hand (air-gapped labs). The file is copied, never moved."""
        from fingerprint_cli import artifacts
        from fingerprint_cli.errors import FpxError

        try:
            inst = artifacts.install_file(file, name, force=force)
        except FpxError as exc:
            common.die(exc)
        if not inst.verified:
            print(f"fpx: warning: {file}: sha256 differs from the pin; installed as unverified "
                  f"(every record will say verified: false)", file=sys.stderr)
        print(json.dumps({"name": inst.spec.name, "path": str(inst.path), "sha256": inst.sha256,
                          "verified": inst.verified}))

    @models.command("verify")
    def verify(name: Optional[str] = typer.Argument(None, help="one artifact (default: all installed)"),
               fmt: Optional[str] = common.FormatOpt) -> None:
        """Re-hash installed artifacts. Exit 1 when a file changed since install or does not match its pin."""
        from fingerprint_cli import artifacts
        from fingerprint_cli.errors import FpxError

        from fingerprint_cli.errors import UsageError
        from fingerprint_cli.records import FORMATS

        try:
            if fmt is not None and fmt not in FORMATS:
                raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
            names = [artifacts.resolve(name).name] if name else [r["name"] for r in artifacts.summary()
                                                                  if r["installed"] or r.get("problem")]
        except FpxError as exc:
            common.die(exc)
        rows = [artifacts.verify(n) for n in names]
        _emit(rows, fmt, ["name", "installed", "intact", "verified", "how", "path"])
        bad = [r for r in rows if not (r["intact"] and r["verified"])]
        for r in bad:
            why = r["problem"] if r.get("problem") else "not installed" if not r["installed"] else (
                "file changed since it was installed" if not r["intact"] else "sha256 differs from the pin")
            print(f"fpx: {r['name']}: {why}", file=sys.stderr)
        raise typer.Exit(1 if bad else 0)

    @models.command("path")
    def path(name: Optional[str] = typer.Argument(None, help="artifact name (default: the cache folder)")) -> None:
        """Print where fpx keeps artifacts (FPX_HOME, else the user cache dir), or one artifact's file."""
        from fingerprint_cli import artifacts
        from fingerprint_cli.errors import FpxError

        if name is None:
            print(artifacts.home())
            return
        try:
            spec = artifacts.resolve(name)
            inst = artifacts.installed(spec.name)
        except FpxError as exc:
            common.die(exc)
        print(inst.path if inst else artifacts.artifact_dir(spec) / spec.filename)
