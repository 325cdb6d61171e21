"""The JSON Schema of fpx result records, generated from the :class:`~fingerprint_cli.records.Record` type.

The shipped schema (``fingerprint_cli/schemas/record.schema.json``, printed by ``fpx schema``) is what labs
validate fpx output against. :func:`generate` rebuilds it from the dataclass with pydantic (a dev
dependency; the test suite checks the shipped file equals a fresh generation, so the two cannot drift)
and adds the contract the type alone cannot say: every key is present, ``status`` is ``ok`` or ``error``,
an error carries its ``type`` and ``message``, every input names its ``path``, and a decision — when there
is one — has a ``label``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from fingerprint_cli.records import SCHEMA_VERSION, Record

SCHEMA_ID = f"https://fpx.invalid/schemas/record-{SCHEMA_VERSION}.json"


def generate() -> dict[str, Any]:
    """The record schema from the Record dataclass (needs pydantic)."""
    import pydantic

    s = pydantic.TypeAdapter(Record).json_schema()
    props = s["properties"]
    for p in props.values():
        p.pop("default", None)
    props["schema_version"] = {"const": SCHEMA_VERSION, "title": "Schema Version", "type": "integer"}
    props["status"] = {"enum": ["ok", "error"], "title": "Status", "type": "string"}
    props["inputs"]["additionalProperties"] = {"type": "object", "required": ["path"],
                                               "properties": {"path": {"type": ["string", "null"]},
                                                              "sha256": {"type": ["string", "null"]}},
                                               "additionalProperties": True}
    props["error"]["anyOf"][0] = {"type": "object", "required": ["type", "message"],
                                  "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                                  "additionalProperties": {"type": "string"}}
    props["decision"]["anyOf"][0] = {"type": "object", "required": ["label"],
                                     "properties": {"label": {"type": "string"}}, "additionalProperties": True}
    order = list(Record.__dataclass_fields__)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "fpx result record",
            "description": "One result of an fpx command (fingerprint_cli.records.Record): inputs with sha256, "
                           "features and their directions, an optional decision with reasons, an optional "
                           "error, details and provenance.",
            "type": "object", "properties": {k: props[k] for k in order}, "required": order,
            "additionalProperties": False,
            "allOf": [{"if": {"properties": {"status": {"const": "error"}}},
                       "then": {"properties": {"error": {"type": "object"}}}}]}


def load() -> dict[str, Any]:
    """The schema shipped with this installation."""
    return json.loads((resources.files("fingerprint_cli") / "schemas" / "record.schema.json").read_text("utf-8"))


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=False) + "\n"
