"""``fpx doctor``: versions, device, cache paths, installed artifacts, offline state
(:func:`fingerprint_cli.doctor.collect`)."""

from __future__ import annotations

import json
import sys

import typer

from fingerprint_cli import doctor as doctor_mod
from fingerprint_cli.cli.common import die
from fingerprint_cli.errors import FpxError

ORDER = 90


def doctor(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Check the installation: versions, device, cache paths, artifacts installed and verified, offline."""
    try:
        info = doctor_mod.collect()
    except FpxError as exc:  # e.g. FPX_HOME unusable in a way summary() cannot describe
        die(exc)
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if as_json else doctor_mod.text(info))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
