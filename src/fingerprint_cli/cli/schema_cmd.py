"""``fpx schema``: print the JSON Schema that every fpx result record validates against."""

from __future__ import annotations

import sys

import typer

from fingerprint_cli import schema

ORDER = 95


def schema_cmd() -> None:
    """Print the JSON Schema of fpx result records (draft 2020-12) to stdout."""
    sys.stdout.write(schema.dumps(schema.load()))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema_cmd)
