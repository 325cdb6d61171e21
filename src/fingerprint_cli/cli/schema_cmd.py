"""``fpx schema``: print the JSON Schema that every fpx result record validates against."""

from __future__ import annotations

import sys

ORDER = 95


def register(app) -> None:
    @app.command("schema")
    def schema_cmd() -> None:
        """Print the JSON Schema of fpx result records (draft 2020-12) to stdout."""
        from fingerprint_cli import schema

        sys.stdout.write(schema.dumps(schema.load()))
