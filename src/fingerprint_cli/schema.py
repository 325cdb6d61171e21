"""The JSON Schema of fpx result records, generated from the :class:`~fingerprint_cli.records.Record` type.

The shipped schema (``fingerprint_cli/schemas/record.schema.json``, printed by ``fpx schema``) is what labs
validate fpx output against. :func:`generate` rebuilds it from the dataclass with pydantic (a dev
dependency; the test suite checks the shipped file equals a fresh generation, so the two cannot drift)
and adds the contract the type alone cannot say: every key is present, ``status`` is ``ok`` or ``error``,
an error carries its ``type`` and ``message``, every input names its ``path``, and a decision — when there
is one — is a :class:`~fingerprint_cli.decision.Decision` (``$defs/Decision``, generated from that type): a
``label``, and the typed fields (band, system, p-values, prediction set, alpha, abstention flags and reasons)
where a command gives them; other keys are allowed (command-specific parts of a decision).
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

from fingerprint_cli.decision import Decision
from fingerprint_cli.jsonobject import JsonObject
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
    props["decision"]["anyOf"][0] = {"$ref": "#/$defs/Decision"}
    order = list(Record.__dataclass_fields__)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "$defs": {"Decision": object_schema(Decision)},
            "title": "fpx result record",
            "description": "One result of an fpx command (fingerprint_cli.records.Record): inputs with sha256, "
                           "features and their directions, an optional decision with reasons, an optional "
                           "error, details and provenance.",
            "type": "object", "properties": {k: props[k] for k in order}, "required": order,
            "additionalProperties": False,
            "allOf": [{"if": {"properties": {"status": {"const": "error"}}},
                       "then": {"properties": {"error": {"type": "object"}}}}]}


def object_schema(cls: type[JsonObject]) -> dict[str, Any]:
    """The JSON Schema of a :class:`~fingerprint_cli.jsonobject.JsonObject` type (needs pydantic): its typed
    fields, those without a default required, other keys allowed (they are kept in ``extra``)."""
    import pydantic

    fields = [f for f in dataclasses.fields(cls) if f.name in cls.names()]
    view = dataclasses.make_dataclass(cls.__name__, [
        (f.name, f.type) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        else (f.name, f.type, dataclasses.field(default=None)) for f in fields])
    view.__module__ = cls.__module__
    s = pydantic.TypeAdapter(view).json_schema()
    for p in s["properties"].values():
        p.pop("default", None)
    return {"title": cls.__name__, "description": " ".join((cls.__doc__ or "").split()), "type": "object",
            "properties": s["properties"], "required": s.get("required", []), "additionalProperties": True}


def load() -> dict[str, Any]:
    """The schema shipped with this installation."""
    return json.loads((resources.files("fingerprint_cli") / "schemas" / "record.schema.json").read_text("utf-8"))


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=False) + "\n"
