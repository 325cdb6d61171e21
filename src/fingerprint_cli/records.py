"""Result records — the public API of fpx — and their output formats.

Every command returns a list of :class:`Record`. A record carries ``schema_version``, the command,
``status`` (``ok`` or ``error``), the inputs with their sha256, the features with the direction
each one grows in, an optional decision with its reasons, an optional error, provenance and a free
``details`` mapping for command-specific extras. Formats: ``table`` (a rich table on stderr-free
stdout), ``json`` (one array), ``jsonl`` (one record per line), ``csv`` (flattened columns).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fingerprint_cli.errors import UsageError

SCHEMA_VERSION = 1
FORMATS = ("table", "json", "jsonl", "csv")


@dataclass
class Record:
    command: str
    inputs: dict[str, dict[str, Any]]
    features: dict[str, float | None] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: dict[str, str] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple:
        """The item's path identity: the command and its input paths."""
        return input_key(self.command, **{k: v.get("path") for k, v in self.inputs.items()})

    def content_key(self) -> tuple:
        """Identity used by ``--resume``: the command, and each input's role, path and sha256."""
        return (self.command,) + tuple(sorted((str(k), str(v.get("path")),
                                               v.get("sha256") if v.get("path") is not None else None)
                                              for k, v in self.inputs.items()))

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-safe data: every string valid Unicode (:func:`json_text`), an input path that is
        not valid UTF-8 also as ``path_bytes`` (hex of its bytes), NaN/inf as None."""
        d = asdict(self)
        order = ["schema_version", "command", "status", "inputs", "features", "directions", "decision",
                 "reasons", "error", "details", "provenance"]
        d["inputs"] = {k: _with_path_bytes(v) for k, v in d["inputs"].items()}
        return {k: json_safe(d[k]) for k in order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        """A record read back (:meth:`to_dict`'s form): an input with ``path_bytes`` gets its path back as the
        operating system spells it, so ``--resume`` recognises the file."""
        fields = {k: d[k] for k in ("command", "inputs", "features", "directions", "decision", "reasons",
                                    "provenance", "details", "status", "error", "schema_version") if k in d}
        if isinstance(fields.get("inputs"), dict):
            fields["inputs"] = {k: _path_from_bytes(v) for k, v in fields["inputs"].items()}
        return cls(**fields)

    @classmethod
    def failure(cls, command: str, inputs: dict[str, dict[str, Any]], exc: BaseException,
                provenance: dict[str, Any] | None = None) -> "Record":
        kind = getattr(exc, "kind", "runtime")
        return cls(command=command, inputs=inputs, status="error",
                   error={"type": kind, "message": str(exc)}, provenance=provenance or {})


def input_key(command: str, **paths: Any) -> tuple:
    """The ``--resume`` identity of an item, from its command and input paths (role=path)."""
    return (command,) + tuple(sorted((role, str(path)) for role, path in paths.items()))


def json_text(text: str) -> str:
    """``text`` as valid Unicode for strict JSON readers (jq, jsonschema, UTF-8 decoders).

    A file name that is not valid UTF-8 reaches Python as a str with lone surrogates (``os.fsdecode``'s
    ``surrogateescape``: byte 0xE9 becomes U+DCE9), which a JSON writer emits as an unpaired ``\\udce9`` and a
    UTF-8 writer refuses. Each undecodable byte is written as the four characters ``\\xNN`` instead (Python's
    and GNU ``ls``'s usual escape: ``caf\\xe9.png``), readable and stable; any other lone surrogate as
    ``\\uDXXX``. Valid text is returned unchanged. The escaped form is for display: a record keeps the exact
    bytes of an input path in ``path_bytes`` (:meth:`Record.to_dict`).
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    return "".join(_escape_surrogate(c) if "\ud800" <= c <= "\udfff" else c for c in text)


def _escape_surrogate(c: str) -> str:
    """One lone surrogate as text: ``\\xNN`` for an undecodable byte (U+DC80..U+DCFF), else ``\\uDXXX``."""
    o = ord(c)
    return f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}"


def _with_path_bytes(entry: Any) -> Any:
    """An input entry, with ``path_bytes`` (hex of the path's bytes) when its path is not valid UTF-8."""
    path = entry.get("path") if isinstance(entry, dict) else None
    if isinstance(path, str) and json_text(path) != path:
        return {**entry, "path_bytes": _path_bytes(path).hex()}
    return entry


def _path_bytes(path: str) -> bytes:
    """The bytes of a path as the operating system holds them (a surrogate no byte maps to: its UTF-8 form)."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogatepass")


def _path_from_bytes(entry: Any) -> Any:
    """An input entry read back: its path as the operating system spells it when ``path_bytes`` says so."""
    if isinstance(entry, dict) and isinstance(entry.get("path_bytes"), str):
        try:
            return {**entry, "path": os.fsdecode(bytes.fromhex(entry["path_bytes"]))}
        except ValueError:
            return entry
    return entry


def json_safe(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars to Python, NaN/inf to None, text valid Unicode (:func:`json_text`)."""
    if isinstance(value, str):
        return json_text(value)
    if isinstance(value, dict):
        return {json_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def default_format(stream: TextIO | None = None) -> str:
    stream = stream or sys.stdout
    return "table" if hasattr(stream, "isatty") and stream.isatty() else "jsonl"


def render(records: list[Record], fmt: str, table_columns: list[str] | None = None) -> str:
    """Render records as text in one of :data:`FORMATS`."""
    dicts = [r.to_dict() for r in records]
    if fmt == "json":
        return json.dumps(dicts, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(d) + "\n" for d in dicts)
    if fmt == "csv":
        rows = [flatten({k: v for k, v in d.items() if k not in ("directions", "provenance")}) for d in dicts]
        cols = _ordered_union(rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "table":
        return _table(dicts, table_columns)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def resolve_format(fmt: str | None) -> str:
    """``fmt`` checked against :data:`FORMATS` (UsageError "unknown format" otherwise); None → the default
    for stdout (:func:`default_format`)."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt or default_format()


def render_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> str:
    """Render plain rows (not records: ``fpx models`` lists) as json, jsonl, csv (the first row's keys, else
    ``columns``) or a table of ``columns``."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table()
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["-" if r.get(c) is None else escape(str(r.get(c))) for c in columns])
    buf = io.StringIO()
    Console(file=buf, width=160).print(t)
    return buf.getvalue()


def _fmt_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt_cell(x) for x in v)
    return str(v)


def _ordered_union(keys_per_item) -> list[str]:
    """Every key of every item, in first-seen order."""
    out: list[str] = []
    for keys in keys_per_item:
        out.extend(k for k in keys if k not in out)
    return out


def _table_columns(flat: list[dict[str, Any]], columns: list[str] | None) -> list[str]:
    """The value columns of a table: ``columns`` (default: every ``features.*`` key), kept where some row has it."""
    if columns is None:
        columns = [c for c in _ordered_union(flat) if c.startswith("features.")]
    return [c for c in columns if any(c in f for f in flat)]


def _table_row(d: dict[str, Any], f: dict[str, Any], input_keys: list[str], columns: list[str]) -> list[str]:
    """One table row: the input file names, the status (or the error message), the value cells."""
    cells = [Path(str(d["inputs"].get(k, {}).get("path", "-"))).name for k in input_keys]
    cells.append(d["status"] if d["status"] == "ok" else f"error: {d['error']['message']}")
    cells.extend(_fmt_cell(f.get(c)) for c in columns)
    return cells


def _console_width() -> int:
    """The terminal's width on a terminal (at least 100), else 160."""
    return max(100, os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else 160)


def _table(dicts: list[dict[str, Any]], columns: list[str] | None) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    flat = [flatten(d) for d in dicts]
    columns = _table_columns(flat, columns)
    input_keys = _ordered_union(d["inputs"] for d in dicts)
    table = Table(show_lines=False)
    # every cell is escaped: file names and messages are user-supplied and must not be read as rich markup
    for k in input_keys:
        table.add_column(escape(k), overflow="fold")
    table.add_column("status")
    for c in columns:
        table.add_column(escape(c.split(".", 1)[-1] if c.startswith("features.") else c))
    for d, f in zip(dicts, flat):
        table.add_row(*[escape(str(c)) for c in _table_row(d, f, input_keys, columns)])
    buf = io.StringIO()
    Console(file=buf, width=_console_width()).print(table)
    return buf.getvalue()


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read records back from a json or jsonl file (for --resume and for other commands)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return [Record.from_dict(d) for d in json.loads(text)]
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                out.append(Record.from_dict(json.loads(line)))
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
    return out
