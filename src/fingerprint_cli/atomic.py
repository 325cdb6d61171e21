"""Atomic file writes: outputs appear whole or not at all, and never replace an input."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from fingerprint_cli.errors import UsageError
from fingerprint_cli.records import json_text


def refuse_overwrite_of_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise UsageError when ``output`` names the same file as one of ``inputs`` (the last-moment check;
    :func:`check_outputs` is the up-front one)."""
    out = Path(output)
    for inp in inputs:
        p = Path(inp)
        if _same(out, p):
            raise UsageError(f"refusing to write over the input {p}; choose another output path", str(out))


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


IMAGE_LIKE = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")


def check_output_file(path: str | os.PathLike, label: str = "output", create_parent: bool = True) -> Path:
    """Validate an output file path before any work: not a folder, its parent a writable folder (created
    when missing and ``create_parent``). Returns the path. Raises UsageError naming it."""
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or (p.exists() and p.is_dir()):
        raise UsageError(f"{label} is a folder; name a file", str(p))
    if p.exists() and not p.is_file():
        raise UsageError(f"{label} exists and is not a regular file; refusing to replace it", str(p))
    parent = p.parent if str(p.parent) else Path(".")
    _check_folder(parent, f"folder of {label}", create_parent, str(p))
    return p


def check_output_folder(path: str | os.PathLike, label: str = "output folder", create: bool = True) -> Path:
    """Validate an output folder before any work: a writable folder (created when missing and ``create``)."""
    p = Path(path)
    _check_folder(p, label, create, str(p))
    return p


def _check_folder(d: Path, label: str, create: bool, name: str) -> None:
    if d.exists() and not d.is_dir():
        raise UsageError(f"{label} {d} is not a folder", name)
    if not d.exists():
        if not create:
            raise UsageError(f"{label} {d} does not exist", name)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {label} {d} ({exc.strerror or exc})", name) from exc
    if not os.access(d, os.W_OK | os.X_OK):
        raise UsageError(f"{label} {d} is not writable", name)


def _resolved(p: Path) -> Path:
    """``p`` resolved; a link loop compares by its absolute spelling."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def _ident(p: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``p`` names (links followed), None when it does not exist."""
    try:
        st = os.stat(p)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


@dataclass
class _Inputs:
    """What a run reads, indexed for the output checks: files by resolved path and by (device, inode), folders
    by resolved path (each mapped to the path as the user gave it)."""

    files: dict[Path, Path] = field(default_factory=dict)
    ids: dict[tuple, Path] = field(default_factory=dict)
    dirs: dict[Path, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, inputs: Iterable[str | os.PathLike]) -> "_Inputs":
        out = cls()
        for i in inputs:
            if i is None or not str(i):
                continue
            ip = Path(i)
            try:
                is_dir = ip.is_dir()
            except OSError:
                is_dir = False
            (out.dirs if is_dir else out.files)[_resolved(ip)] = ip
            key = _ident(ip)
            if key is not None and not is_dir:
                out.ids[key] = ip
        return out


def _check_output_against_inputs(p: Path, label: str, ins: _Inputs) -> None:
    """Refuse an output file that is an input, an input folder, or an image-like file inside an input folder."""
    rp = _resolved(p)
    hit = ins.files.get(rp) or ins.ids.get(_ident(p) or ())
    if hit is not None:
        raise UsageError(f"{label}: refusing to write over the input {hit}; choose another output path", str(p))
    if rp in ins.dirs:
        raise UsageError(f"{label} names the input folder {ins.dirs[rp]}", str(p))
    if p.suffix.lower() in IMAGE_LIKE and rp.parent in ins.dirs:
        raise UsageError(f"{label} is inside the input folder {ins.dirs[rp.parent]}, whose images this run "
                         "reads; write it elsewhere", str(p))


def check_outputs(files: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike], *,
                  folders: dict[str, str | os.PathLike | None] | None = None, create: bool = True) -> None:
    """The one check of a run's outputs against its inputs, done before any work starts.

    ``files``: label (e.g. ``"--output"``) → output file or None; ``folders``: label → output folder or None;
    ``inputs``: everything the run reads — files, and folders (see :func:`fingerprint_cli.batch.run_inputs`).
    Refused (UsageError naming the path): an output file that is one of the inputs (same path or same file
    through a link), an output that is an input folder, an image-like output file inside an input folder (the
    next run would read it), two outputs naming one file, an output folder that is an input folder, and any
    output whose folder is missing and cannot be created, is not a folder or is not writable.
    """
    ins = _Inputs.of(inputs)
    seen: dict[Path, str] = {}
    for label, f in files.items():
        if f is None:
            continue
        p = check_output_file(f, label, create)
        _check_output_against_inputs(p, label, ins)
        rp = _resolved(p)
        if rp in seen:
            raise UsageError(f"{label} and {seen[rp]} name the same file", str(p))
        seen[rp] = label
    for label, d in (folders or {}).items():
        if d is None:
            continue
        dp = check_output_folder(d, label, create)
        if _resolved(dp) in ins.dirs:
            raise UsageError(f"{label} is an input folder (its images are read by this run); choose "
                             "another folder", str(dp))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix or ".tmp",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8, atomically; a file name's undecodable bytes in it (lone surrogates) are written as
    ``\\xNN`` (:func:`fingerprint_cli.records.json_text`), never a failed write or invalid UTF-8."""
    write_bytes(target, json_text(text).encode("utf-8"))
