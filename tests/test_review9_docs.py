"""Review 9: `fpx --help` and the README name every command that exists (and every subcommand of a group)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from fingerprint_cli.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, list[str]]:
    """{command: [its subcommands]} as the CLI registers them."""
    root = typer.main.get_command(app)
    return {name: sorted(getattr(cmd, "commands", {}) or {}) for name, cmd in root.commands.items()}


def test_help_lists_every_command_and_says_decisions_can_abstain():
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for name in _commands():
        assert re.search(rf"│ {re.escape(name)}\s", r.stdout), name
    assert "can abstain" in r.stdout and "origin" in r.stdout and "triage" in r.stdout


def test_readme_command_table_names_every_command_and_subcommand():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Commands"):text.index("### `fpx score`")]
    for name, subs in _commands().items():
        assert f"`fpx {name}" in table, f"README's command table does not name fpx {name}"
        for sub in subs:
            assert re.search(rf"fpx {name}[^\n]*\b{sub}\b", text), f"README does not name fpx {name} {sub}"
