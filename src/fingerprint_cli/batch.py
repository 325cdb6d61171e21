"""Batch plumbing shared by every command: inputs and pairing, progress, resume, record sinks."""

from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from fingerprint_cli import atomic, images
from fingerprint_cli.errors import InputError, UsageError
from fingerprint_cli.records import FORMATS, Record, read_records, render

T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    reference: str
    suspect: str
    extra: tuple[tuple[str, str], ...] = ()  # further CSV columns (system, image_id, ...)

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)


# ---------------------------------------------------------------- inputs
def expand_paths(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[str]:
    """Files stay as they are; folders expand to the images inside them (sorted)."""
    out: list[str] = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            out.extend(str(x) for x in images.list_images(pp, recursive=recursive))
        else:
            out.append(str(p))
    return out


def pairs_from_args(reference: str, suspects: Sequence[str]) -> list[Pair]:
    return [Pair(reference, s) for s in expand_paths(suspects)]


def read_csv_rows(path: str | os.PathLike, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with the ``required`` columns; relative paths stay relative to the CSV."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", str(p))
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in cols]
            if missing:
                raise InputError(f"CSV lacks the column(s) {', '.join(missing)} (has: {', '.join(cols) or 'none'})",
                                 str(p))
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError("is not a UTF-8 CSV file", str(p)) from exc
    base = p.parent
    for row in rows:
        for key in ("reference", "suspect", "perturbed"):
            if row.get(key) and not Path(row[key]).is_absolute():
                row[key] = str(base / row[key])
    return rows


def pairs_from_csv(path: str | os.PathLike) -> list[Pair]:
    rows = read_csv_rows(path, ["reference", "suspect"])
    return [Pair(r["reference"], r["suspect"],
                 tuple((k, v) for k, v in r.items() if k not in ("reference", "suspect"))) for r in rows]


def pairs_from_dirs(ref_dir: str | os.PathLike, suspect_dir: str | os.PathLike) -> tuple[list[Pair], list[str]]:
    """Match suspects to references by file stem.

    A suspect matches the reference with the same stem, or — for several calls of one reference —
    the longest reference stem it starts with followed by ``_``, ``-`` or ``.`` (``cat.png`` ↔
    ``cat_flux_1.png``). Returns the pairs and the suspects with no reference.
    """
    refs = {p.stem: str(p) for p in images.list_images(ref_dir)}
    pairs, orphans = [], []
    for s in images.list_images(suspect_dir):
        ref = refs.get(s.stem)
        if ref is None:
            cands = [stem for stem in refs if len(s.stem) > len(stem) and s.stem.startswith(stem)
                     and s.stem[len(stem)] in "_-."]
            if cands:
                ref = refs[max(cands, key=len)]
        if ref is None:
            orphans.append(str(s))
        else:
            pairs.append(Pair(ref, str(s)))
    return pairs, orphans


# ---------------------------------------------------------------- progress
def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress_bar(total: int, label: str, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; draws a rich progress bar on stderr when it is a terminal."""
    if not progress_enabled(quiet) or total <= 0:
        yield lambda n=1, **kw: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task(label, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            prog.update(task, advance=n, info=info)

        yield advance


def warn(message: str, quiet: bool = False) -> None:
    """Warnings go to stderr, one line each."""
    if not quiet:
        print(f"fpx: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- output
class RecordSink:
    """Where records go.

    Without ``output``: jsonl records stream to stdout as they come; other formats are printed once
    at the end. With ``output``: each record is appended to ``OUTPUT.partial`` (a jsonl journal that
    survives an interruption), and at the end the whole output is written atomically in its format and
    the journal removed. ``resume=True`` keeps the records already in OUTPUT (and in a journal left by
    an interrupted run) and reports their keys in :attr:`done` so callers skip that work.
    """

    def __init__(self, output: str | None, fmt: str | None, resume: bool = False,
                 table_columns: list[str] | None = None, inputs: Sequence[str] = ()):
        self.output = Path(output) if output else None
        if fmt is None:
            fmt = _format_from_suffix(self.output) if self.output else None
        self.fmt = fmt or ("jsonl" if self.output else _stdout_default())
        if self.fmt not in FORMATS:
            raise UsageError(f"unknown format {self.fmt!r}; choose one of {', '.join(FORMATS)}")
        self.table_columns = table_columns
        self.records: list[Record] = []
        self.kept: list[Record] = []
        self.done: set[tuple] = set()
        if resume and self.output is None:
            raise UsageError("--resume needs --output FILE (the file whose records are kept)")
        if self.output is not None:
            atomic.refuse_overwrite_of_inputs(self.output, inputs)
            self.journal = self.output.with_name(self.output.name + ".partial")
            if resume:
                if self.output.exists():
                    if self.fmt == "csv" or self.fmt == "table":
                        raise UsageError("--resume reads the output back: use a .json or .jsonl output",
                                         str(self.output))
                    try:
                        self.kept = [r for r in read_records(self.output) if r.ok]
                    except (json.JSONDecodeError, KeyError, TypeError) as exc:
                        raise InputError(f"cannot read records back for --resume ({exc})", str(self.output))
                if self.journal.exists():
                    self.kept += [r for r in read_records(self.journal) if r.ok]
                seen: dict[tuple, Record] = {}
                for r in self.kept:
                    seen[r.key()] = r
                self.kept = list(seen.values())
                self.done = set(seen)
            if self.journal.exists() and not resume:
                self.journal.unlink()
            self._journal_f = open(self.journal, "a", encoding="utf-8")
        else:
            self.journal = None
            self._journal_f = None

    def add(self, record: Record) -> None:
        self.records.append(record)
        line = json.dumps(record.to_dict())
        if self._journal_f is not None:
            self._journal_f.write(line + "\n")
            self._journal_f.flush()
        elif self.fmt == "jsonl":
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        all_records = self.kept + self.records
        if self.output is not None:
            self._journal_f.close()
            atomic.write_text(self.output, render(all_records, self.fmt, self.table_columns))
            self.journal.unlink(missing_ok=True)
        elif self.fmt != "jsonl":
            sys.stdout.write(render(all_records, self.fmt, self.table_columns))
            sys.stdout.flush()

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if not r.ok)


def _stdout_default() -> str:
    return "table" if sys.stdout.isatty() else "jsonl"


def _format_from_suffix(path: Path | None) -> str | None:
    if path is None:
        return None
    return {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".txt": "table"}.get(path.suffix.lower())


def exit_code_for(records: Iterable[Record], batch: bool) -> int:
    """0 when all ok; for a single item its error's code; 3 when some items of a batch failed."""
    from fingerprint_cli.errors import EXIT_OK, EXIT_PARTIAL, EXIT_RUNTIME, EXIT_USAGE

    records = list(records)
    failed = [r for r in records if not r.ok]
    if not failed:
        return EXIT_OK
    if batch:
        return EXIT_PARTIAL
    kind = failed[0].error.get("type") if failed[0].error else "runtime"
    return EXIT_USAGE if kind in ("input", "usage") else EXIT_RUNTIME
