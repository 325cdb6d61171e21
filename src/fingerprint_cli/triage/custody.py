"""Chain of custody: what arrived (sha256, size, format by content, dimensions, time received) and a
tamper-evident, append-only log of it.

The custody log is JSONL. Every entry is one JSON object on one line (keys sorted, no spaces) with
``seq`` (0, 1, 2, …), ``prev`` (the sha256 of the previous entry's line as stored, without its newline; 64
zeros for the first entry) and the custody facts. :func:`verify_log` recomputes the chain: an edited entry
breaks the ``prev`` of the next one, a removed or reordered entry breaks ``seq`` and ``prev``. Removing
entries from the *end* leaves a shorter chain that is still consistent — that can only be caught against
something kept elsewhere: every triage record carries its entry's sha256 (``details.custody.entry_sha256``),
and ``verify_log(…, expect_head=HASH)`` / ``fpx triage verify-log LOG --head HASH`` checks the last entry
against a head hash the analyst wrote down (it is printed at the end of each run).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fingerprint_cli.errors import InputError

GENESIS = "0" * 64
LOG_FORMAT = "fpx-custody-v1"

# magic bytes → format name (checked in order; the file's extension is never used)
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"\xff\x0a", "JPEG-XL"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG-XL"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG-2000"),
    (0, b"%PDF", "PDF"),
    (0, b"PK\x03\x04", "ZIP"),
    (0, b"8BPS", "PSD"),
    (0, b"\x1f\x8b", "GZIP"),
]
_FTYP = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"mif1": "HEIF",
         b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF", b"isom": "MP4", b"mp41": "MP4", b"mp42": "MP4",
         b"qt  ": "MOV", b"crx ": "CR3"}
#: formats fpx can analyse (Pillow decodes them); the others are recorded and refused with a reason


def sniff(head: bytes) -> str | None:
    """The file format from its first bytes (at least 32 of them), or None when unknown.

    Image formats by their magic numbers (PNG, JPEG, GIF, TIFF, BMP, WebP, HEIC/HEIF/AVIF by their ISO-BMFF
    ``ftyp`` brand, JPEG XL, JPEG 2000, PSD), a few containers an inbox may also hold (PDF, ZIP, GZIP, MP4),
    and ``TEXT`` for bytes that decode as UTF-8 without control characters.
    """
    if not head:
        return None
    for off, magic, name in _MAGIC:
        if head[off:off + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "ISO-BMFF")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the window is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "TEXT"
    return None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Custody:
    """The custody facts of one received file."""

    path: str
    sha256: str | None
    size: int | None
    format: str | None
    width: int | None = None
    height: int | None = None
    received_utc: str = field(default_factory=utc_now)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "format": self.format,
                "width": self.width, "height": self.height, "received_utc": self.received_utc, "note": self.note}


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sha(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


class CustodyLog:
    """An append-only custody log (see the module docstring). Opening it checks the chain it continues:
    an edited log is refused (InputError) rather than extended."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.head = GENESIS
        self.next_seq = 0
        self.known: set[tuple[str, str]] = set()  # (path, sha256) already logged
        if self.path.exists():
            result = verify_log(self.path)
            if not result.ok:
                raise InputError(f"custody log fails verification ({result.problems[0]}); refusing to append to "
                                 "it — start a new log and keep this one as evidence", str(self.path))
            self.head = result.head
            self.next_seq = result.entries
            self.known = result.known

    def append(self, custody: Custody, record_status: str = "ok") -> str:
        """Append one entry (written and fsynced before returning); returns its sha256."""
        entry = {"log": LOG_FORMAT, "seq": self.next_seq, "prev": self.head, "status": record_status,
                 "logged_utc": utc_now(), **custody.to_dict()}
        line = _line(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.head = _sha(line)
        self.next_seq += 1
        if custody.sha256:
            self.known.add((custody.path, custody.sha256))
        return self.head


@dataclass
class Verification:
    ok: bool
    entries: int
    head: str
    problems: list[str]
    known: set[tuple[str, str]] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "problems": self.problems}


def verify_log(path: str | os.PathLike, expect_head: str | None = None) -> Verification:
    """Recompute the chain of a custody log: every problem found (line numbers are 1-based).

    Detects an edited entry (the next entry's ``prev`` no longer matches, or the line is no longer the
    canonical serialisation of its own JSON), a removed or reordered entry (``seq`` out of order, ``prev``
    mismatch), an entry that is not JSON, and — with ``expect_head`` — entries removed from the end.
    """
    problems: list[str] = []
    lines = _log_lines(Path(path), problems)
    head, n = GENESIS, 0
    known: set[tuple[str, str]] = set()
    for i, line in enumerate(lines, 1):
        entry = _entry_of(line)
        if entry is None:
            problems.append(f"line {i}: not a JSON entry")
        else:
            problems.extend(_entry_problems(i, line, entry, n, head))
            if entry.get("path") and entry.get("sha256"):
                known.add((entry["path"], entry["sha256"]))
        head = _sha(line)
        n += 1
    if expect_head is not None and expect_head.lower() != head:
        problems.append(f"head is {head[:16]}…, expected {expect_head[:16]}… (entries removed from the end, or "
                        "another log)")
    return Verification(ok=not problems, entries=n, head=head, problems=problems, known=known)


def _log_lines(p: Path, problems: list[str]) -> list[str]:
    """The log's lines (InputError when it is missing or not UTF-8); a last line without its newline is a
    problem (the log was cut short)."""
    if not p.is_file():
        raise InputError("no such custody log", str(p))
    try:
        raw = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("custody log is not UTF-8 text", str(p)) from exc
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        problems.append(f"line {len(lines)}: last entry has no final newline (cut short?)")
    return lines


def _entry_of(line: str) -> dict[str, Any] | None:
    """The JSON object on one line, or None."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _entry_problems(i: int, line: str, entry: dict[str, Any], seq: int, prev: str) -> list[str]:
    """What is wrong with entry ``seq`` (line ``i``) given the hash ``prev`` of the line before it."""
    problems = []
    if entry.get("seq") != seq:
        problems.append(f"line {i}: seq {entry.get('seq')!r}, expected {seq} (an entry was removed, inserted or "
                        "moved)")
    if entry.get("prev") != prev:
        problems.append(f"line {i}: prev hash does not match the entry before it (an earlier entry was edited, "
                        "removed or moved)")
    if _line(entry) != line:
        problems.append(f"line {i}: not in canonical form (the entry was edited)")
    return problems
