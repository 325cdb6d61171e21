"""The shipped record schema: current with the Record type, and strict enough to catch a broken record."""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

from fingerprint_cli import schema
from fingerprint_cli.cli.app import app
from fingerprint_cli.records import Record


def test_shipped_schema_is_what_the_type_generates():
    assert schema.load() == schema.generate()


def test_fpx_schema_prints_it():
    res = CliRunner().invoke(app, ["schema"])
    assert res.exit_code == 0 and json.loads(res.stdout) == schema.load()


GOOD = Record("score", {"reference": {"path": "a.png", "sha256": "00"}}, features={"x": 1.0},
              decision={"label": "unknown"}).to_dict()


@pytest.mark.parametrize("breakage", [
    lambda d: d.update(status="fine"),
    lambda d: d.update(decision={"p": 1.0}),
    lambda d: d.update(error={"message": "no type"}),
    lambda d: d["inputs"]["reference"].pop("path"),
    lambda d: d.pop("provenance"),
    lambda d: d.update(extra=1),
    lambda d: d.update(features={"x": "high"}),
    lambda d: d.update(schema_version=99),
])
def test_schema_refuses_broken_records(breakage):
    v = jsonschema.Draft202012Validator(schema.load())
    assert not list(v.iter_errors(GOOD))
    bad = json.loads(json.dumps(GOOD))
    breakage(bad)
    assert list(v.iter_errors(bad))
