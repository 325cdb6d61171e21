"""Batch plumbing shared by every command: inputs and pairing, progress, resume, record sinks."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from fingerprint_cli import atomic, images
from fingerprint_cli.errors import EXIT_OK, EXIT_PARTIAL, EXIT_RUNTIME, EXIT_USAGE, InputError, UsageError
from fingerprint_cli.anchored.perturb import sidecar_path
from fingerprint_cli.records import FORMATS, Record, input_key, render

T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    reference: str
    suspect: str
    extra: tuple[tuple[str, str], ...] = ()  # further CSV columns (system, image_id, ...)

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)


# ---------------------------------------------------------------- inputs
def expand_paths(paths: Sequence[str | os.PathLike], recursive: bool = False, quiet: bool = True) -> list[str]:
    """Files stay as they are; folders expand to the images inside them (sorted). With ``quiet=False`` each
    folder's entries that are not read say so on stderr (:func:`say_left_out`)."""
    out: list[str] = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            found = images.list_images(pp, recursive=recursive)
            out.extend(str(x) for x in found)
            say_left_out(pp, recursive, quiet, listed=found)
        else:
            out.append(str(p))
    return out


def left_out(folder: str | os.PathLike, recursive: bool = False,
             listed: Iterable[Path] | None = None) -> list[str]:
    """The entries of ``folder`` that :func:`fingerprint_cli.images.list_images` does not list: files without an
    image suffix (an image named ``IMG_0001`` or ``photo.heic``), hidden files, and — not ``recursive`` —
    subfolders (written ``name/``); relative to ``folder``, sorted. ``listed``: that listing when the caller
    already has it (the folder is not listed again)."""
    d = Path(folder)
    listed = set(images.list_images(d, recursive=recursive) if listed is None else listed)
    out = []
    for p in sorted(d.rglob("*") if recursive else d.iterdir()):
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        if p in listed or (is_dir and recursive):
            continue
        if recursive and any(part.startswith(".") for part in p.relative_to(d).parts[:-1]):
            continue  # inside a hidden folder: the folder itself is named
        out.append(str(p.relative_to(d)) + ("/" if is_dir else ""))
    return out


def say_left_out(folder: str | os.PathLike, recursive: bool = False, quiet: bool = False,
                 listed: Iterable[Path] | None = None) -> None:
    """One stderr warning naming what a run does not read in ``folder`` (:func:`left_out`, ``listed`` passed on;
    nothing when it reads every entry): a folder handed to fpx is never thinned out silently."""
    if quiet:
        return
    skipped = left_out(folder, recursive, listed)
    if skipped:
        shown = ", ".join(skipped[:8]) + (f", ... ({len(skipped) - 8} more)" if len(skipped) > 8 else "")
        warn(f"{folder}: {len(skipped)} {'entry' if len(skipped) == 1 else 'entries'} not read (not an image by "
             f"its name, hidden{'' if recursive else ', or a subfolder'}): {shown}")


def run_inputs(files: Iterable[str | os.PathLike | None] = (), folders: Iterable[str | os.PathLike | None] = (),
               fingerprints: Iterable[str | os.PathLike] = ()) -> list[str]:
    """The full input set of a run, for :func:`fingerprint_cli.atomic.check_outputs`: the files; each folder and
    the images in it; each fingerprint file and every image its metadata records (train and test splits) —
    the images a run reaches through an artifact are inputs too."""
    out: list[str] = [str(f) for f in files if f is not None and str(f)]
    for d in folders:
        if d is None or not str(d):
            continue
        out.append(str(d))
        if Path(d).is_dir():
            try:
                out.extend(str(x) for x in images.list_images(d, recursive=True))
            except (InputError, OSError):
                pass
    for fp in fingerprints:
        out.append(str(fp))
        out.extend(recorded_images(fp))
    return out


def recorded_images(fingerprint: str | os.PathLike) -> list[str]:
    """Paths of the images a fingerprint artifact's metadata records (its train and test splits); [] when the
    file cannot be read (loading it later reports why)."""
    try:
        from safetensors import safe_open

        images.check_file(fingerprint, max_bytes=1 << 34)
        with safe_open(str(fingerprint), framework="pt") as f:
            md = f.metadata() or {}
        meta = json.loads(md.get("meta", "{}"))
    except Exception:  # noqa: BLE001 - unreadable here is reported by the loader
        return []
    out: list[str] = []
    if not isinstance(meta, dict):
        return out
    for split in ("train", "test"):
        block = meta.get(split)
        if not isinstance(block, dict):
            continue
        for role in block.values():
            for item in role if isinstance(role, list) else []:
                p = item.get("path") if isinstance(item, dict) else item if isinstance(item, str) else None
                if p:
                    out.append(str(p))
    return out


def pairs_from_args(reference: str, suspects: Sequence[str], quiet: bool = True) -> list[Pair]:
    return [Pair(reference, s) for s in expand_paths(suspects, quiet=quiet)]


_PATH_COLUMNS = ("reference", "suspect", "perturbed")


def _csv_dict_rows(p: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a UTF-8 CSV (keys and values stripped); InputError when a ``required`` column is missing."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in cols]
            if missing:
                raise InputError(f"CSV lacks the column(s) {', '.join(missing)} (has: {', '.join(cols) or 'none'})",
                                 str(p))
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError("is not a UTF-8 CSV file", str(p)) from exc


def read_csv_rows(path: str | os.PathLike, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with the ``required`` columns; relative paths stay relative to the CSV."""
    p = Path(path)
    images.check_file(p, "CSV file", max_bytes=1 << 30)  # a FIFO, a device or a folder is refused unread
    rows = _csv_dict_rows(p, required)
    for row in rows:
        for key in _PATH_COLUMNS:
            if row.get(key) and not Path(row[key]).is_absolute():
                row[key] = str(p.parent / row[key])
    return rows


def pairs_from_csv(path: str | os.PathLike) -> list[Pair]:
    rows = read_csv_rows(path, ["reference", "suspect"])
    return [Pair(r["reference"], r["suspect"],
                 tuple((k, v) for k, v in r.items() if k not in ("reference", "suspect"))) for r in rows]


def pairs_from_dirs(ref_dir: str | os.PathLike, suspect_dir: str | os.PathLike,
                    quiet: bool = True) -> tuple[list[Pair], list[str]]:
    """Match suspects to references by file stem.

    A suspect matches the reference with the same stem, or — for several calls of one reference —
    the longest reference stem it starts with followed by ``_``, ``-`` or ``.`` (``cat.png`` ↔
    ``cat_flux_1.png``). Returns the pairs and the suspects with no reference. ``quiet=False``: what is not read
    in either folder says so on stderr (:func:`say_left_out`).
    """
    refs = {p.stem: str(p) for p in images.list_images(ref_dir)}
    for d in (ref_dir, suspect_dir):
        say_left_out(d, quiet=quiet)
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


def print_failures(records: Iterable[Record]) -> None:
    """One stderr line per failed item of a batch (the record itself also goes to the output)."""
    for r in records:
        if not r.ok:
            print(f"fpx: failed: {r.error['message']}", file=sys.stderr)


def warn(message: str, quiet: bool = False) -> None:
    """Warnings go to stderr, one line each."""
    if not quiet:
        print(f"fpx: warning: {message}", file=sys.stderr)


_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A warning printed once per process for ``key`` (e.g. an optional cache that cannot be used)."""
    if key not in _WARNED:
        _WARNED.add(key)
        warn(message)


def cache_unusable(what: str, exc: BaseException) -> None:
    """The one warning for an optional on-disk cache that cannot be written: the run goes on without it."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    warn_once(f"cache:{what}", f"the {what} cache cannot be used ({reason}); going on without it (set FPX_HOME to "
                               "a writable folder, or pass --no-cache)")


# ---------------------------------------------------------------- output
class ResumeIndex:
    """What ``--resume`` may skip: the kept records' content keys (command, role, path, sha256), as a multiset.

    ``key in index`` takes a path key (:func:`fingerprint_cli.records.input_key`), hashes the files it names
    and is true when a kept record has the same command, paths *and* content — a file replaced since the
    first run is done again. Each hit uses up one kept record, so two identical rows of a pairs CSV stay two
    items (and two records).
    """

    def __init__(self, records: Sequence[Record] = ()):
        self.counts: Counter = Counter(r.content_key() for r in records)
        self._sha: dict[str, str | None] = {}

    def _hash(self, path: str) -> str | None:
        if path not in self._sha:
            try:
                self._sha[path] = images.sha256_file(path)
            except (InputError, OSError):
                self._sha[path] = None
        return self._sha[path]

    def __contains__(self, key: tuple) -> bool:
        if not self.counts:
            return False
        command, roles = key[0], key[1:]
        ck = (command,) + tuple((role, path, self._hash(path) if path not in (None, "None") else None)
                                for role, path in roles)
        if self.counts.get(ck, 0) > 0:
            self.counts[ck] -= 1
            return True
        return False

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return len(self) > 0


class RecordSink:
    """Where records go.

    Without ``output``: jsonl records stream to stdout as they come; other formats are printed once
    at the end. With ``output``: each record is appended to ``OUTPUT.partial`` (a jsonl journal that
    survives an interruption), and at the end the whole output is written atomically in its format and
    the journal removed. ``resume=True`` keeps the records already in OUTPUT (and in a journal left by
    an interrupted run); :attr:`done` (a :class:`ResumeIndex`) says which items to skip — by command,
    input paths and input sha256. An output that cannot be read back as records, or that holds records of
    another ``command``, is refused (UsageError, exit 2) and left untouched.

    The output and its journal are checked before any work (:func:`fingerprint_cli.atomic.check_outputs`):
    not one of ``inputs``, not a folder, in a writable folder.
    """

    def __init__(self, output: str | None, fmt: str | None, resume: bool = False,
                 table_columns: list[str] | None = None, inputs: Sequence[str] = (), command: str | None = None):
        self.output = Path(output) if output else None
        self.fmt = _choose_format(fmt, self.output)
        self.table_columns = table_columns
        self.command = command
        self.records: list[Record] = []
        self.kept: list[Record] = []
        self.done = ResumeIndex()
        if resume and self.output is None:
            raise UsageError("--resume needs --output FILE (the file whose records are kept)")
        self.journal = None
        if self.output is not None:
            self._open_output(inputs, resume)
        self._journal_f = None  # opened at the first record: a run refused before any work leaves no file

    def _open_output(self, inputs: Sequence[str], resume: bool) -> None:
        """Check the output and its journal; with ``resume``, keep the records already there."""
        self.journal = self.output.with_name(self.output.name + ".partial")
        atomic.check_outputs({"--output": self.output, "--output journal": self.journal}, inputs)
        if resume:
            self.kept = self._kept_records()
            self.done = ResumeIndex(self.kept)
        elif self.journal.exists():
            self.journal.unlink()

    def _kept_records(self) -> list[Record]:
        """The ok records of the output and of a journal an interrupted run left; refuses another command's."""
        kept: list[Record] = []
        if self.output.exists():
            if self.fmt == "csv" or self.fmt == "table":
                raise UsageError("--resume reads the output back: use a .json or .jsonl output", str(self.output))
            kept = [r for r in _read_back(self.output, strict=True) if r.ok]
        if self.journal.exists():
            kept += [r for r in _read_back(self.journal, strict=False) if r.ok]
        other = sorted({r.command for r in kept if self.command and r.command != self.command})
        if other:
            raise UsageError(f"--resume: the output holds {', '.join(other)} records, not {self.command} ones; "
                             "name another --output", str(self.output))
        return kept

    def add(self, record: Record) -> None:
        self.records.append(record)
        line = json.dumps(record.to_dict())
        if self.journal is not None and self._journal_f is None:
            try:
                self._journal_f = open(self.journal, "a", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write the journal ({exc.strerror or exc})", str(self.journal)) from exc
        if self._journal_f is not None:
            self._journal_f.write(line + "\n")
            self._journal_f.flush()
        elif self.fmt == "jsonl":
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        all_records = self.kept + self.records
        if self.output is not None:
            if self._journal_f is not None:
                self._journal_f.close()
            atomic.write_text(self.output, render(all_records, self.fmt, self.table_columns))
            self.journal.unlink(missing_ok=True)
        elif self.fmt != "jsonl":
            sys.stdout.write(render(all_records, self.fmt, self.table_columns))
            sys.stdout.flush()

    def abandon(self) -> None:
        """Close the journal without writing the output (a run refused after the sink was opened): an empty
        journal is removed, one with records is kept for ``--resume``."""
        if self._journal_f is not None:
            self._journal_f.close()
            self._journal_f = None
            if self.journal is not None and self.journal.exists() and self.journal.stat().st_size == 0:
                self.journal.unlink()

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if not r.ok)


def _read_back(path: Path, strict: bool) -> list[Record]:
    """Records of an earlier output (``strict``: every line must be a record) or journal (the last line may
    be cut short by an interruption). UsageError naming the file otherwise."""
    try:
        images.check_file(path, "records file", max_bytes=1 << 34)
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("--resume: cannot read it back as records (not UTF-8 text); name another --output",
                         str(path)) from exc
    except OSError as exc:
        raise UsageError(f"--resume: cannot read it ({exc.strerror or exc})", str(path)) from exc
    stripped = text.strip()
    if not stripped:
        return []

    def parse(d) -> Record:
        if not isinstance(d, dict) or not isinstance(d.get("command"), str) or not isinstance(d.get("inputs"), dict):
            raise ValueError("not an fpx record")
        return Record.from_dict(d)

    try:
        if stripped.startswith("["):
            items = json.loads(stripped)
            if not isinstance(items, list):
                raise ValueError("not a list of records")
            return [parse(d) for d in items]
        lines = [ln for ln in text.splitlines() if ln.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(parse(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError):
                if not strict and i == len(lines) - 1:
                    continue  # the line an interrupted run was writing
                raise
        return out
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise UsageError(f"--resume: cannot read it back as fpx records ({str(exc).splitlines()[0][:80]}); nothing "
                         "was written — name another --output or remove it", str(path)) from exc


def _choose_format(fmt: str | None, output: Path | None) -> str:
    """The format asked for, else the output's suffix, else jsonl into a file / the stdout default."""
    if fmt is None:
        fmt = _format_from_suffix(output) if output else None
    fmt = fmt or ("jsonl" if output else _stdout_default())
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _stdout_default() -> str:
    return "table" if sys.stdout.isatty() else "jsonl"


def _format_from_suffix(path: Path | None) -> str | None:
    if path is None:
        return None
    return {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".txt": "table"}.get(path.suffix.lower())


def exit_code_for(records: Iterable[Record], batch: bool) -> int:
    """0 when all ok; for a single item its error's code; 3 when some items of a batch failed."""
    records = list(records)
    failed = [r for r in records if not r.ok]
    if not failed:
        return EXIT_OK
    if batch:
        return EXIT_PARTIAL
    kind = failed[0].error.get("type") if failed[0].error else "runtime"
    return EXIT_USAGE if kind in ("input", "usage") else EXIT_RUNTIME


# ---------------------------------------------------------------- (reference, suspect) runs
class Results(list):
    """The records of a batch run (a plain list of :class:`~fingerprint_cli.records.Record`), with ``items``: how
    many items the run was given, those ``--resume`` skipped included (a run of one item exits with that item's
    own error code, a batch with 3)."""

    def __init__(self, records: Iterable[Record] = (), items: int = 0, batch: bool | None = None):
        super().__init__(records)
        self.items = items
        self.batch = items > 1 if batch is None else batch  # perturb: a folder of one image is a batch too

    @property
    def exit_code(self) -> int:
        return exit_code_for(self, batch=self.batch)


def resolve_pairs(reference: str | None, suspects: Sequence[str], pairs_csv: str | os.PathLike | None,
                  ref_dir: str | os.PathLike | None,
                  suspect_dir: str | os.PathLike | None, quiet: bool = True) -> tuple[list[Pair], list[str]]:
    """Turn the three ways of naming pairs (REF SUSPECT..., a pairs CSV, two folders matched by stem) into
    (pairs, orphan suspects). Exactly one way must be used (UsageError otherwise). ``quiet=False``: what a
    folder holds that is not read says so on stderr (:func:`say_left_out`)."""
    ways = sum([bool(reference), pairs_csv is not None, ref_dir is not None or suspect_dir is not None])
    if ways != 1:
        raise UsageError("name pairs one way: REF SUSPECT [SUSPECT ...], --pairs FILE.csv, "
                         "or --ref-dir DIR --suspect-dir DIR")
    if reference:
        return _pairs_from_reference(reference, suspects, quiet), []
    if pairs_csv is not None:
        plist = pairs_from_csv(pairs_csv)
        if not plist:
            raise InputError("has no rows (only a header?): nothing to do", str(pairs_csv))
        return plist, []
    if ref_dir is None or suspect_dir is None:
        raise UsageError("--ref-dir and --suspect-dir go together")
    plist, orphans = pairs_from_dirs(ref_dir, suspect_dir, quiet)
    if not plist and not orphans:
        raise UsageError(f"no images found in {suspect_dir}: nothing to do")
    return plist, orphans


def _pairs_from_reference(reference: str, suspects: Sequence[str], quiet: bool = True) -> list[Pair]:
    if not suspects:
        raise UsageError("give at least one SUSPECT after the reference")
    plist = pairs_from_args(reference, suspects, quiet)
    if not plist:
        raise UsageError(f"no images found in {', '.join(map(str, suspects))}: nothing to do")
    return plist


def pair_run_inputs(reference: str | None, suspects: Sequence[str], pairs_csv, ref_dir, suspect_dir,
                    plist: Sequence[Pair], perturbed: str | os.PathLike | None = None) -> list[str]:
    """Everything a score/attribute run reads (files, folders, protected copies and their sidecars), for the
    up-front output check (:func:`fingerprint_cli.atomic.check_outputs`)."""
    given = [reference, pairs_csv] + [s for s in suspects if not Path(s).is_dir()]
    prot = [str(perturbed)] if perturbed is not None else []
    prot += [p.get("perturbed") for p in plist if p.get("perturbed")]
    files = given + [p.reference for p in plist] + [p.suspect for p in plist] + prot + \
        [sidecar_path(p) for p in prot]
    folders = [s for s in suspects if Path(s).is_dir()] + [ref_dir, suspect_dir]
    return run_inputs(files, folders)


def orphan_records(command: str, orphans: Sequence[str], provenance: dict) -> list[Record]:
    """One error record per suspect of ``--suspect-dir`` that no reference matches."""
    return [Record.failure(command, {"reference": {"path": None, "sha256": None},
                                     "suspect": {"path": o, "sha256": None}},
                           InputError("no reference in --ref-dir has a matching file stem", o), provenance)
            for o in orphans]


def pending_pairs(command: str, plist: Sequence[Pair], done: ResumeIndex, output,
                  quiet: bool) -> list[Pair]:
    """The pairs ``--resume`` has not done yet (a warning says how many were skipped)."""
    todo = [p for p in plist if input_key(command, reference=p.reference, suspect=p.suspect) not in done]
    if len(todo) < len(plist):
        warn(f"--resume: {len(plist) - len(todo)} pair(s) already in {output}, skipped", quiet)
    return todo


class MemorySink:
    """A sink that only keeps the records (the Python API's default: nothing is printed or written)."""

    output = None

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.done = ResumeIndex()

    def add(self, record: Record) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


def open_sink(output: str | os.PathLike | None, fmt: str | None, resume: bool, stdout: bool,
              table_columns: list[str] | None, inputs: Sequence[str], command: str):
    """Where a run's records go: ``output`` (atomically, resumable), stdout when ``stdout`` (the CLI), else
    only memory (:class:`MemorySink`)."""
    if output is None and not stdout:
        if resume:
            raise UsageError("--resume needs --output FILE (the file whose records are kept)")
        return MemorySink()
    return RecordSink(str(output) if output else None, fmt, resume, table_columns, inputs, command=command)
