"""Watch mode: triage files as they arrive in the inbox folders (``watchdog``).

A file is taken only once its size and modification time have stayed the same for ``settle`` seconds (a
copy in progress is left alone). Work is idempotent by sha256: a file already triaged (in the output, or
earlier in this session) is not analysed again, so a restarted watcher resumes where it stopped. After each
batch the records and the dashboard (which reloads itself every few seconds while watching) are rewritten
atomically; Ctrl-C (or ``stop``) finishes the batch in hand, writes, and returns.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from fingerprint_cli.triage.core import Triage, list_inbox


class _Pending:
    """Paths seen by the observer, with the (size, mtime) last seen and since when it has been stable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[tuple[int, int] | None, float]] = {}

    def add(self, path: str) -> None:
        name = os.path.basename(path)
        if name.startswith(".") or name.endswith((".part", ".crdownload", ".tmp", ".partial")):
            return
        with self.lock:
            self.items[path] = (None, time.monotonic())

    def ready(self, settle: float) -> list[str]:
        now = time.monotonic()
        out = []
        with self.lock:
            for p, (sig, since) in list(self.items.items()):
                try:
                    st = os.lstat(p)
                    cur = (st.st_size, st.st_mtime_ns)
                except FileNotFoundError:
                    del self.items[p]  # moved away or deleted before it settled
                    continue
                except OSError:
                    cur = None
                if cur != sig:
                    self.items[p] = (cur, now)
                elif now - since >= settle:
                    out.append(p)
                    del self.items[p]
        return sorted(out)


class _Handler(FileSystemEventHandler):
    """Every file created, modified or moved into a watched folder goes to ``pending``."""

    def __init__(self, pending: _Pending) -> None:
        super().__init__()
        self.pending = pending

    def on_created(self, event):
        if not event.is_directory:
            self.pending.add(event.src_path)

    def on_modified(self, event):
        if not event.is_directory:
            self.pending.add(event.src_path)

    def on_moved(self, event):
        if not event.is_directory:
            self.pending.add(event.dest_path)


def watch(triage: Triage, inboxes: Sequence[str | os.PathLike], *, settle: float = 2.0, poll: float = 0.5,
          stop: threading.Event | None = None, polling_observer: bool = False,
          on_batch: Callable[[list], None] | None = None, log: Callable[[str], None] | None = None) -> int:
    """Watch ``inboxes`` until ``stop`` is set or Ctrl-C; returns the number of records made. Files already
    present when it starts are triaged first (those already in the output are skipped)."""
    pending = _Pending()
    stop = stop or threading.Event()
    observer = PollingObserver(timeout=poll) if polling_observer else Observer()
    for f in (str(p) for p in inboxes if Path(p).is_dir()):
        observer.schedule(_Handler(pending), f, recursive=True)
    observer.start()
    made = 0
    try:
        for p in list_inbox(inboxes):
            pending.add(p)
        triage.write(final=False)
        while not stop.is_set():
            new = _take_ready(triage, pending, settle, log)
            if new is not None:
                made += len(new)
                if on_batch:
                    on_batch(new)
            stop.wait(poll)
    except KeyboardInterrupt:
        if log:
            log("interrupted: writing what was triaged")
    finally:
        observer.stop()
        observer.join(timeout=5)
        triage.write(final=True)
    return made


def _take_ready(triage: Triage, pending: _Pending, settle: float, log: Callable[[str], None] | None) -> list | None:
    """Triage the files that have settled and rewrite records and dashboard: the new records (None when no file
    was ready)."""
    ready = pending.ready(settle)
    if not ready:
        return None
    new = triage.process(ready)
    triage.write(final=False)
    if log and new:
        log(f"triaged {len(new)} file(s); {len(triage.records)} in total")
    return new
