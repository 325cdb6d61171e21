"""One ``fpx triage`` invocation as a library call: :func:`run_job` makes the run (:func:`.core.make`), warns about
the fingerprint library on stderr, then triages the inbox once with a progress bar — or watches it
(:mod:`.watch`) — and returns a :class:`JobResult`. The CLI (``cli/triage_cmd.py``) parses options, calls this
and renders the result; scripts that want the records only call :func:`.core.run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from fingerprint_cli import batch
from fingerprint_cli.errors import UsageError
from fingerprint_cli.records import Record
from fingerprint_cli.triage import watch as watch_mod
from fingerprint_cli.triage.core import Triage, default_custody_log, list_inbox, make

#: seconds between reloads of the dashboard while watching
WATCH_REFRESH_SECONDS = 5


@dataclass
class JobResult:
    """What one run made: the :class:`Triage` (all records, the custody log), the records made in this run,
    and how many inbox files were skipped as already triaged (same path and sha256)."""

    triage: Triage
    new: list[Record] = field(default_factory=list)
    already_triaged: int = 0

    @property
    def exit_code(self) -> int:
        """0 all analysed; a single failed file's own code; 3 when some files of a batch failed."""
        return batch.exit_code_for(self.new, batch=len(self.new) > 1)


def run_job(inboxes: Sequence[str], *, fingerprints: Sequence[str] = (), library: str | None = None,
            output: str | None = None, custody_log: str | None = None, report: str | None = None,
            index: str | None = None, thresholds: str | None = None, jobs: int = 1, scheduler: str | None = None,
            c2pa_trust: str | None = None, watch: bool = False, settle: float = 2.0,
            quiet: bool = False) -> JobResult:
    """Triage ``inboxes`` as ``fpx triage`` does: the custody log defaults to ``OUTPUT.custody.jsonl``
    (:func:`.core.default_custody_log`); with ``watch`` keep watching the inbox folders until Ctrl-C
    (``output`` is required: it is how a restarted watcher resumes). Warnings and progress go to stderr
    (none with ``quiet``)."""
    if watch and output is None:
        raise UsageError("--watch needs --output FILE (it is how a restarted watcher resumes)")
    t = make(inboxes, fingerprints=fingerprints, library=library, output=output,
             custody_log=custody_log or default_custody_log(output), report=report, index=index,
             thresholds=thresholds, jobs=jobs, scheduler=scheduler,
             refresh_seconds=WATCH_REFRESH_SECONDS if watch else None, c2pa_trust=c2pa_trust)
    _warn_about_fingerprints(t, quiet)
    if watch:
        return JobResult(t, _watch(t, inboxes, settle, quiet))
    return _once(t, inboxes, quiet)


def _warn_about_fingerprints(t: Triage, quiet: bool) -> None:
    """The files of a fingerprint folder that were skipped, and a run without any fingerprint."""
    for s in t.skipped_fingerprints:
        batch.warn(f"not a fingerprint, skipped: {s}", quiet)
    if not t.settings.fingerprints:
        batch.warn("no fingerprints given (-F / --fingerprints): no generator evidence from pixels", quiet)


def _once(t: Triage, inboxes: Sequence[str | os.PathLike], quiet: bool) -> JobResult:
    """Every file of the inboxes, with a progress bar; records and dashboard written at the end."""
    paths = list_inbox(inboxes)
    if not paths:
        raise UsageError(f"no files in {', '.join(str(i) for i in inboxes)}")
    with batch.progress_bar(len(paths), "triage", quiet) as advance:
        new = t.process_and_write(paths, progress=lambda n: advance())
    return JobResult(t, new, max(0, len(list_inbox(inboxes)) - len(new)))


def _watch(t: Triage, inboxes: Sequence[str | os.PathLike], settle: float, quiet: bool) -> list[Record]:
    """Watch the inboxes until Ctrl-C; the records made meanwhile."""
    before = len(t.records)
    batch.warn(f"watching {', '.join(str(i) for i in inboxes)} (Ctrl-C to stop)", quiet)
    watch_mod.watch(t, inboxes, settle=settle, log=lambda m: batch.warn(m, quiet))
    return t.records[before:]
