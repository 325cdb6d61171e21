"""One triage record per incoming file: custody, provenance metadata, generator evidence, verdict.

:func:`analyse` is the per-file work — a top-level function over a plain :class:`Item`, so it runs through
:func:`fingerprint_cli.parallel.imap` on joblib or dask.distributed workers. :class:`Triage` is the batch:
it enumerates inboxes (files by content, not by extension), hashes each file in the main process to skip
work already done (idempotent by sha256, resumable from the output and the custody log), dispatches the rest,
appends custody entries, adds origin evidence when an index is given, and writes the records and the
dashboard atomically. The inbox is only ever read.
"""

from __future__ import annotations

import base64
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from fingerprint_cli import atomic, images, parallel
from fingerprint_cli.anchored.score import base_provenance
from fingerprint_cli.dif.condition import MIN_WINDOW
from fingerprint_cli.errors import FpxError, InputError, UsageError
from fingerprint_cli.records import Record, read_records, render
from fingerprint_cli.triage import custody as custody_mod
from fingerprint_cli.triage import dashboard
from fingerprint_cli.triage import evidence as evidence_mod
from fingerprint_cli.triage import provenance as pv
from fingerprint_cli.triage import verdict as verdict_mod

COMMAND = "triage"
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
THUMB_SIDE = 96
STAGES = ("custody", "metadata", "decode", "fingerprints", "thumbnail")
METADATA_STAGES = ("custody", "metadata")
PIXEL_STAGES = ("decode", "fingerprints")

_NO_DECODER = {"HEIC": "HEIC/HEIF image: no decoder installed (pillow-heif is not part of fpx)",
               "HEIF": "HEIC/HEIF image: no decoder installed (pillow-heif is not part of fpx)",
               "AVIF": "AVIF image: no decoder installed in this Pillow",
               "JPEG-XL": "JPEG XL image: no decoder installed", "JPEG-2000": "JPEG 2000 image: not analysed",
               "PSD": "Photoshop document: not analysed", "PDF": "a PDF document, not an image",
               "ZIP": "a ZIP archive, not an image", "GZIP": "a gzip archive, not an image",
               "TEXT": "a text file, not an image", "MP4": "a video file, not an image",
               "MOV": "a video file, not an image", "CR3": "camera raw (CR3): not analysed",
               "ISO-BMFF": "an ISO media file, not an image"}


def max_bytes() -> int:
    v = os.environ.get("FPX_MAX_FILE_BYTES")
    return int(v) if v else DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Settings:
    """What every item of one run shares (plain data: picklable)."""

    fingerprints: tuple[str, ...] = ()
    thumbnails: bool = True
    c2pa_trust: str | None = None  # PEM text of the CA certificates whose C2PA signers the lab trusts


@dataclass(frozen=True)
class Item:
    path: str
    received_utc: str
    sha256: str | None
    settings: Settings


# ---------------------------------------------------------------- reading a file for custody
def read_for_custody(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes, refusing symlinks, non-regular files, empty and over-large files (InputError)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise InputError("no such file", path) from exc
    except OSError as exc:
        raise InputError(f"cannot stat file ({exc.strerror or exc})", path) from exc
    if stat.S_ISLNK(st.st_mode):
        raise InputError("is a symbolic link: not followed (custody covers files in the inbox itself)", path)
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a folder, not an image file", path)
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file (device, FIFO or socket): not read", path)
    if st.st_size == 0:
        raise InputError("is an empty file (0 bytes)", path)
    if st.st_size > max_bytes():
        raise InputError(f"is {st.st_size} bytes, over the {max_bytes()}-byte limit (FPX_MAX_FILE_BYTES)", path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes() + 1)
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path) from exc
    if len(data) > max_bytes():
        raise InputError(f"grew over the {max_bytes()}-byte limit while being read", path)
    return data, st


def _sha256_or_none(path: str) -> str | None:
    """The file's sha256, or None when it cannot be read for custody (:func:`analyse` then says why)."""
    try:
        data, _ = read_for_custody(path)
    except InputError:
        return None
    return images.sha256_bytes(data)


# ---------------------------------------------------------------- the per-file work
def _thumb(pixels: np.ndarray, side: int = THUMB_SIDE) -> str:
    h, w = pixels.shape[:2]
    s = min(1.0, side / max(h, w))
    if s < 1.0:
        pixels = np.clip(images.resize(pixels, max(1, round(h * s)), max(1, round(w * s))), 0, 1)
    return "data:image/jpeg;base64," + base64.b64encode(images.encode(pixels, "JPEG", quality=80)).decode("ascii")


def metadata_of(data: bytes, path: str, fmt: str | None, probe: images.Probe,
                trust_anchors: str | None = None) -> dict[str, Any]:
    """Every provenance reader on one file's bytes; none of them raises."""
    luma = None
    if fmt == "JPEG" and probe.quantization:
        try:
            luma = images.jpeg_luma(data, path)
        except InputError:
            luma = None
    return {"c2pa": pv.read_c2pa(data, fmt, trust_anchors), "xmp": pv.read_xmp(probe.xmp, probe.xmp_error),
            "exif": pv.read_exif(probe.exif), "png_text": pv.read_png_text(probe.text, fmt),
            "jpeg": pv.read_jpeg(probe.quantization, fmt, luma)}


def analyse(item: Item) -> dict[str, Any]:
    """Triage one file: ``{"record": Record dict, "thumbnail": data URI or None}``. Never raises for a bad
    file: the record then has ``status: error`` and a one-line reason, with whatever custody facts were
    established."""
    t: dict[str, float] = {}
    path = item.path
    cust = custody_mod.Custody(path=path, sha256=None, size=None, format=None, received_utc=item.received_utc)
    meta: dict[str, Any] = {}
    generator = None
    thumb = None
    t0 = time.perf_counter()
    try:
        lst = os.lstat(path)
        if stat.S_ISREG(lst.st_mode):
            cust.size = int(lst.st_size)
    except OSError:
        pass
    try:
        data, _ = read_for_custody(path)
        cust.size = len(data)
        cust.sha256 = images.sha256_bytes(data)
        cust.format = custody_mod.sniff(data[:64])
        t["custody"] = time.perf_counter() - t0
        if item.sha256 and cust.sha256 != item.sha256:
            raise InputError("changed while being triaged (sha256 differs from the one first read)", path)
        if cust.format in _NO_DECODER:
            raise InputError(_NO_DECODER[cust.format], path)
        if cust.format is None:
            raise InputError("unknown file type (no image signature in its first bytes)", path)
        t1 = time.perf_counter()
        probe = images.probe(data, path)
        cust.width, cust.height = probe.width, probe.height
        meta = metadata_of(data, path, cust.format, probe, item.settings.c2pa_trust)
        t["metadata"] = time.perf_counter() - t1
        if probe.n_frames > 1:
            kind = "animated GIF" if cust.format == "GIF" else f"multi-frame {cust.format}"
            raise InputError(f"{kind} with {probe.n_frames} frames: triage analyses single still images", path)
        t2 = time.perf_counter()
        im = images.decode(data, path)
        t["decode"] = time.perf_counter() - t2
        if item.settings.fingerprints:
            t3 = time.perf_counter()
            generator = _fingerprint_stage(im.pixels, path, item.settings.fingerprints, cust.format, meta)
            t["fingerprints"] = time.perf_counter() - t3
        if item.settings.thumbnails:
            t4 = time.perf_counter()
            thumb = _thumb(im.pixels)
            t["thumbnail"] = time.perf_counter() - t4
        rec = build_record(cust, meta, generator, timings=t)
    except FpxError as exc:
        rec = error_record(cust, exc, meta, t)
    except Exception as exc:  # noqa: BLE001 - a runtime failure on one file: the batch goes on
        rec = error_record(cust, InputError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", path),
                           meta, t)
    return {"record": rec.to_dict(), "thumbnail": thumb}


def _fingerprint_stage(pixels, path: str, fingerprints: Sequence[str], fmt: str | None,
                       meta: dict[str, Any]) -> dict[str, Any]:
    """Every fingerprint's evidence on the decoded image; an image too small for any fingerprint window gets
    none (``not_run`` says why) instead of failing the record: its provenance evidence still counts."""
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_WINDOW:
        return {"fingerprints": [], "claimed_by": [],
                "not_run": f"image is {w}x{h}: under {MIN_WINDOW} px a side, too small for a "
                           "fingerprint window (no pixel evidence)"}
    cond = {"format": fmt, "jpeg_quality": (meta.get("jpeg") or {}).get("quality"), "width": w, "height": h,
            "short_side": min(h, w), "lossless": None if fmt is None else fmt != "JPEG"}
    return evidence_mod.generator_evidence(pixels, path, fingerprints, cond)


def _features(meta: dict[str, Any], generator: dict[str, Any] | None) -> tuple[dict, dict]:
    feats: dict[str, Any] = {}
    dirs: dict[str, str] = {}
    j = meta.get("jpeg") or {}
    if j.get("state") == "present":
        feats["jpeg_quality"] = j.get("quality")
        dirs["jpeg_quality"] = "higher = finer quantisation (IJG-equivalent)"
        dq = (j.get("double_compression") or {}).get("score")
        if dq is not None:
            feats["double_compression"] = dq
            dirs["double_compression"] = "higher = more sign of an earlier, coarser JPEG compression"
    for f in (generator or {}).get("fingerprints") or []:
        feats[f"score.{f['name']}"] = f["score"]
        dirs[f"score.{f['name']}"] = "higher = more like the generator (z vs real images)"
        if f.get("p_value") is not None:
            feats[f"p.{f['name']}"] = f["p_value"]
            dirs[f"p.{f['name']}"] = "lower = less like a real image (conformal p-value)"
    return feats, dirs


def build_record(cust: custody_mod.Custody, meta: dict[str, Any], generator: dict[str, Any] | None,
                 origin: dict[str, Any] | None = None, attribution: dict[str, Any] | None = None,
                 timings: dict[str, float] | None = None) -> Record:
    ev = verdict_mod.collect(meta, generator, origin, attribution)
    decision = verdict_mod.decide(ev)
    feats, dirs = _features(meta, generator)
    details = {"custody": cust.to_dict(), "metadata": meta, "generator": generator, "origin": origin,
               "attribution": attribution, "timings": {k: round(v, 6) for k, v in (timings or {}).items()}}
    return Record(COMMAND, {"image": {"path": cust.path, "sha256": cust.sha256}}, features=feats, directions=dirs,
                  decision=decision, reasons=[e.to_dict() for e in ev], details=details)


def error_record(cust: custody_mod.Custody, exc: BaseException, meta: dict[str, Any] | None = None,
                 timings: dict[str, float] | None = None) -> Record:
    return Record(COMMAND, {"image": {"path": cust.path, "sha256": cust.sha256}}, status="error",
                  error={"type": getattr(exc, "kind", "runtime"), "message": str(exc)},
                  details={"custody": cust.to_dict(), "metadata": meta or {},
                           "timings": {k: round(v, 6) for k, v in (timings or {}).items()}})


# ---------------------------------------------------------------- enumerating inboxes
def list_inbox(inboxes: Sequence[str | os.PathLike], recursive: bool = True) -> list[str]:
    """Every file under the inboxes (any extension: formats are detected by content), sorted; hidden files
    and in-progress downloads (``.part``, ``.crdownload``, ``.tmp``) are left for later. Symlinks are listed
    (and refused by :func:`analyse`), never followed."""
    out: list[str] = []
    for inbox in inboxes:
        p = Path(inbox)
        if p.is_symlink() or p.is_file():
            out.append(str(p))
            continue
        if not p.is_dir():
            raise InputError("no such file or folder", str(p))
        walker = os.walk(p, followlinks=False) if recursive else [(str(p), [], os.listdir(p))]
        for root, dirs, files in walker:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or name.endswith((".part", ".crdownload", ".tmp", ".partial")):
                    continue
                out.append(str(Path(root) / name))
    return sorted(dict.fromkeys(out))


def refuse_outputs_in_inbox(outputs: Iterable[str | os.PathLike | None], inboxes: Sequence[str | os.PathLike]) -> None:
    """The inbox is never written to: refuse any output inside an inbox folder (or naming an inbox file)."""
    roots = [Path(i).resolve() for i in inboxes]
    for o in outputs:
        if o is None:
            continue
        out = Path(o).resolve()
        for r in roots:
            if out == r or (r.is_dir() and r in out.parents):
                raise UsageError(f"refusing to write {o} inside the inbox {r}: the inbox is never written to", str(o))


# ---------------------------------------------------------------- the batch
@dataclass
class Triage:
    """A triage run: inboxes → records (+ custody log, + dashboard). See :func:`run` for the one-call API."""

    settings: Settings = field(default_factory=Settings)
    output: str | None = None
    custody_log: str | None = None
    report: str | None = None
    index: Any = None
    index_k: int = 5
    thresholds: str | None = None
    jobs: int = 1
    scheduler: str | None = None
    refresh_seconds: int | None = None
    on_record: Callable[[Record], None] | None = None
    records: list[Record] = field(default_factory=list)
    thumbs: dict[str, str] = field(default_factory=dict)
    fingerprint_info: list[dict[str, Any]] = field(default_factory=list)
    skipped_fingerprints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = custody_mod.CustodyLog(self.custody_log) if self.custody_log else None
        self.done: dict[str, Record] = {}  # sha256 → first record analysed
        self.seen: set[tuple[str, str]] = set()  # (path, sha256) with a record
        if self.output and Path(self.output).exists():
            try:
                kept = read_records(self.output)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"cannot read earlier records back ({type(exc).__name__}: {exc})",
                                 self.output) from exc
            for r in kept:
                if r.command != COMMAND:
                    raise InputError(f"holds {r.command!r} records, not triage records: refusing to extend it",
                                     self.output)
                self._keep(r)
        self.provenance = base_provenance(None, None)
        self.provenance["fingerprints"] = self.fingerprint_info

    def _keep(self, r: Record) -> None:
        sha = r.inputs["image"].get("sha256")
        path = r.inputs["image"].get("path")
        # a file that failed before and is retried: its new record replaces the old error record
        old = next((i for i, x in enumerate(self.records) if not x.ok and x.inputs["image"].get("path") == path),
                   None)
        if old is not None:
            del self.records[old]
        self.records.append(r)
        if sha and r.ok:
            self.done.setdefault(sha, r)
            self.seen.add((r.inputs["image"]["path"], sha))

    def process(self, paths: Sequence[str], progress: Callable[[int], None] | None = None) -> list[Record]:
        """Triage ``paths`` (files); returns the new records (files already triaged are skipped)."""
        items, dupes = self._plan(paths)
        new = self._analyse(items, progress)
        if self.index is not None:
            self._add_origin(new)
        for rec in new:
            rec.provenance = self.provenance
            self._commit(rec)
        for cust, first in dupes:
            rec = self._duplicate(cust, first, new)
            self._commit(rec)
            new.append(rec)
        return new

    def _plan(self, paths: Sequence[str]) -> tuple[list[Item], list[tuple[custody_mod.Custody, str]]]:
        """Hash each file once, in order: the work items to analyse, and the files whose bytes are already
        analysed (earlier, or earlier in this batch) with the path of the first one. A file triaged before
        under the same path and sha256 is left out (resume / watch)."""
        items: list[Item] = []
        dupes: list[tuple[custody_mod.Custody, str]] = []
        for p in paths:
            received = custody_mod.utc_now()
            sha = _sha256_or_none(p)
            if sha and (p, sha) in self.seen:
                continue  # this very file was triaged before (resume / watch)
            first = self._first_with(sha, items)
            if first is not None:
                dupes.append((custody_mod.Custody(p, sha, None, None, received_utc=received), first))
                continue
            items.append(Item(p, received, sha, self.settings))
        return items, dupes

    def _first_with(self, sha: str | None, items: Sequence[Item]) -> str | None:
        """The path of the first file with these bytes: triaged before, else earlier in ``items``."""
        if not sha:
            return None
        if sha in self.done:
            return self.done[sha].inputs["image"]["path"]
        return next((it.path for it in items if it.sha256 == sha), None)

    def _analyse(self, items: Sequence[Item], progress: Callable[[int], None] | None) -> list[Record]:
        """:func:`analyse` over the items (joblib / dask workers), records in input order, thumbnails kept; a
        worker that died still gives an error record."""
        outs = sorted(parallel.imap(analyse, items, jobs=self.jobs, scheduler=self.scheduler, progress=progress),
                      key=lambda x: x[0])  # records (and custody entries) in input order, whoever finished first
        new: list[Record] = []
        for _, out in outs:
            if not out.ok:  # analyse never raises; a worker that died still gives a record
                continue
            rec = Record.from_dict(out.value["record"])
            if out.value.get("thumbnail") and rec.inputs["image"].get("sha256"):
                self.thumbs[rec.inputs["image"]["sha256"]] = out.value["thumbnail"]
            new.append(rec)
        got = {r.inputs["image"]["path"] for r in new}
        for it in items:
            if it.path not in got:
                new.append(error_record(custody_mod.Custody(it.path, it.sha256, None, None, it.received_utc),
                                        InputError("the worker processing this file failed", it.path)))
        return new

    def _duplicate(self, cust: custody_mod.Custody, first: str, new: Sequence[Record]) -> Record:
        """The record of a file with the same bytes as ``first``: a copy of that record under this file's path
        and receipt time (an error record when ``first`` failed)."""
        src = self.done.get(cust.sha256) or next(
            (r for r in new if r.inputs["image"].get("sha256") == cust.sha256), None)
        if src is None or not src.ok:
            why = f": {src.error['message']}" if src is not None and src.error else ""
            rec = error_record(cust, InputError(f"same bytes as {first}, which failed{why}", cust.path))
        else:
            rec = Record.from_dict(src.to_dict())
        rec.inputs = {"image": {"path": cust.path, "sha256": cust.sha256}}
        rec.details = {**rec.details, "custody": {**rec.details["custody"], "path": cust.path,
                                                  "received_utc": cust.received_utc},
                       "duplicate_of": first}
        return rec

    def _commit(self, rec: Record) -> None:
        """Log a new record in the custody log, keep it, and hand it to ``on_record``."""
        self._log(rec)
        self._keep(rec)
        if self.on_record:
            self.on_record(rec)

    def process_all(self, paths: Sequence[str], progress: Callable[[int], None] | None = None,
                    chunk: int | None = None) -> list[Record]:
        """:meth:`process` in chunks, writing records, custody entries and the dashboard after each chunk, so
        an interrupted batch keeps what it finished (a rerun resumes from there)."""
        chunk = chunk or (64 if self.scheduler is None else 1024)
        new: list[Record] = []
        done = 0
        for i in range(0, len(paths), chunk):
            part = list(paths[i:i + chunk])
            new += self.process(part, progress=(lambda n, d=done: progress(d + n)) if progress else None)
            done += len(part)
            if i + chunk < len(paths):
                self.write(final=False)
        return new

    def process_and_write(self, paths: Sequence[str], progress: Callable[[int], None] | None = None) -> list[Record]:
        """:meth:`process_all`, then the final :meth:`write`; returns the new records."""
        new = self.process_all(paths, progress=progress)
        self.write()
        return new

    def _add_origin(self, new: list[Record]) -> None:
        ok = [r for r in new if r.ok]
        found = evidence_mod.origin_evidence([r.inputs["image"]["path"] for r in ok], self.index, self.index_k)
        for i, r in enumerate(new):
            if not r.ok:
                continue
            o = found.get(r.inputs["image"]["path"])
            att = None
            if o and o.get("state") == "found" and o.get("reference"):
                att = evidence_mod.attribute_against(o["reference"], r.inputs["image"]["path"], self.thresholds)
            d = r.details
            cust = custody_mod.Custody(**{k: d["custody"][k] for k in ("path", "sha256", "size", "format", "width",
                                                                         "height", "received_utc", "note")})
            new[i] = build_record(cust, d["metadata"], d.get("generator"), o, att, d.get("timings"))

    def _log(self, rec: Record) -> None:
        if self.log is None:
            return
        c = rec.details.get("custody") or {}
        cust = custody_mod.Custody(**{k: c.get(k) for k in ("path", "sha256", "size", "format", "width", "height",
                                                             "received_utc", "note")})
        if rec.details.get("duplicate_of"):
            cust.note = f"duplicate of {rec.details['duplicate_of']}"
        if not rec.ok:
            cust.note = rec.error["message"]
        rec.details["custody"]["entry_sha256"] = self.log.append(cust, rec.status)
        rec.details["custody"]["log"] = str(self.log.path)

    def _thumbs_for_kept(self) -> None:
        """Thumbnails of records kept from an earlier run, when the file is still there with the same sha256."""
        for r in self.records:
            sha = r.inputs["image"].get("sha256")
            if not r.ok or not sha or sha in self.thumbs:
                continue
            try:
                data, _ = read_for_custody(r.inputs["image"]["path"])
                if images.sha256_bytes(data) == sha:
                    self.thumbs[sha] = _thumb(images.decode(data, r.inputs["image"]["path"]).pixels)
                else:
                    self.thumbs[sha] = ""
            except FpxError:
                self.thumbs[sha] = ""

    def write(self, final: bool = True) -> None:
        """Write the records (JSONL) and the dashboard atomically."""
        if self.output:
            atomic.write_text(self.output, render(self.records, "jsonl"))
        if self.report and self.settings.thumbnails:
            self._thumbs_for_kept()
        if self.report:
            dashboard.write(self.report, self.records, self.thumbs,
                            refresh_seconds=None if final else self.refresh_seconds,
                            custody_head=self.log.head if self.log else None)


def run(inboxes: Sequence[str | os.PathLike], *, fingerprints: Sequence[str] = (), library: str | None = None,
        output: str | None = None, custody_log: str | None = None, report: str | None = None,
        index: str | None = None, thresholds: str | None = None, jobs: int = 1, scheduler: str | None = None,
        c2pa_trust: str | None = None, progress: Callable[[int], None] | None = None) -> list[Record]:
    """Triage files and folders in one call (the Python API of ``fpx triage``); returns every record (earlier
    ones kept in ``output`` included)."""
    t = make(inboxes, fingerprints=fingerprints, library=library, output=output, custody_log=custody_log,
             report=report, index=index, thresholds=thresholds, jobs=jobs, scheduler=scheduler,
             c2pa_trust=c2pa_trust)
    t.process_and_write(list_inbox(inboxes), progress=progress)
    return t.records


def make(inboxes: Sequence[str | os.PathLike], *, fingerprints: Sequence[str] = (), library: str | None = None,
         output: str | None = None, custody_log: str | None = None, report: str | None = None,
         index: str | None = None, thresholds: str | None = None, jobs: int = 1, scheduler: str | None = None,
         refresh_seconds: int | None = None, thumbnails: bool = True, c2pa_trust: str | None = None) -> Triage:
    """A :class:`Triage` with its fingerprint library and origin index loaded and its outputs checked.
    ``c2pa_trust``: a PEM file of trusted CA certificates (else ``$FPX_C2PA_TRUST_ANCHORS``, else none)."""
    check_outputs([output, custody_log, report], inboxes)
    lib = evidence_mod.collect(fingerprints, library)
    info = evidence_mod.fingerprint_info(lib.paths)
    idx = evidence_mod.load_index(index) if index else None
    trust = read_trust_anchors(c2pa_trust or os.environ.get("FPX_C2PA_TRUST_ANCHORS"))
    return Triage(Settings(tuple(lib.paths), thumbnails, trust), output=output, custody_log=custody_log,
                  report=report, index=idx, thresholds=thresholds, jobs=jobs, scheduler=scheduler,
                  refresh_seconds=refresh_seconds, fingerprint_info=info, skipped_fingerprints=lib.skipped)


def check_outputs(outputs: Sequence[str | None], inboxes: Sequence[str | os.PathLike]) -> None:
    """The outputs (``-o``, ``--custody-log``, ``--report``) are outside the inboxes and name different files."""
    refuse_outputs_in_inbox(outputs, inboxes)
    outs = [o for o in outputs if o]
    if len({Path(o).resolve() for o in outs}) < len(outs):
        raise UsageError("-o, --custody-log and --report must name different files")


def read_trust_anchors(trust_file: str | None) -> str | None:
    """The PEM text of the lab's trusted C2PA CA certificates (None without a file)."""
    if not trust_file:
        return None
    try:
        trust = Path(trust_file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the C2PA trust anchors ({exc})", str(trust_file)) from exc
    if "-----BEGIN CERTIFICATE-----" not in trust:
        raise InputError("C2PA trust anchors: not a PEM certificate file", str(trust_file))
    return trust


def default_custody_log(output: str | os.PathLike | None) -> str | None:
    """The custody log next to the records: ``OUTPUT`` without its suffix + ``.custody.jsonl``."""
    if not output:
        return None
    out = Path(output)
    return str(out.with_name(out.name.rsplit(".", 1)[0] + ".custody.jsonl"))
