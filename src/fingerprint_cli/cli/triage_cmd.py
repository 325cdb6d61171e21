"""``fpx triage``: custody, provenance metadata and all evidence for a lab's incoming images; ``fpx triage
verify-log LOG`` checks a custody log. Options → :func:`fingerprint_cli.triage.job.run_job` /
:func:`fingerprint_cli.triage.custody.verify_log` → rendering."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli import batch
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError, UsageError
from fingerprint_cli.records import render
from fingerprint_cli.triage import custody, job

ORDER = 80

TABLE_COLUMNS = ["decision.label", "decision.generator", "decision.strength", "details.custody.format"]


def _verify(args: list[str], head: Optional[str], fmt: Optional[str]) -> None:
    """``fpx triage verify-log LOG [--head HASH]``: exit 0 intact, 1 tampered, 2 unreadable."""
    try:
        if len(args) != 1:
            raise UsageError("usage: fpx triage verify-log LOG [--head HASH]")
        res = custody.verify_log(args[0], expect_head=head)
    except FpxError as exc:
        common.die(exc)
    if fmt == "json":
        print(json.dumps({"log": args[0], **res.to_dict()}, indent=2))
    else:
        print(f"{args[0]}: {'ok' if res.ok else 'FAILED'}: {res.entries} entries, head {res.head}")
        for p in res.problems:
            print(f"  {p}")
    if not res.ok:
        print(f"fpx: custody log {args[0]} fails verification: {len(res.problems)} problem(s)", file=sys.stderr)
    raise typer.Exit(0 if res.ok else 1)


def _show(result: job.JobResult, output: Optional[Path], fmt: Optional[str], quiet: bool) -> None:
    """The new records on stdout (without -o, or with -f other than jsonl), the custody head and the skipped
    files on stderr."""
    if output is None:
        sys.stdout.write(render(result.new, fmt or batch._stdout_default(), TABLE_COLUMNS))
    elif fmt is not None and fmt != "jsonl":
        sys.stdout.write(render(result.new, fmt, TABLE_COLUMNS))
    log = result.triage.log
    if log is not None:
        # always printed (also with --quiet): the head hash is what a later verify-log --head checks against
        print(f"fpx: custody log {log.path}: {log.next_seq} entries, head {log.head}", file=sys.stderr)
    if result.already_triaged > 0:
        batch.warn(f"{result.already_triaged} file(s) already triaged (same path and sha256), skipped", quiet)
    common.print_failures(result.new, quiet)


def _opt(p: Optional[Path]) -> Optional[str]:
    return str(p) if p else None


def triage_cmd(
    args: List[str] = typer.Argument(..., help="INBOX files/folders (or: verify-log LOG)"),
    fingerprints: List[Path] = typer.Option([], "--fingerprint", "-F",
                                            help="a fingerprint file or a folder of them (repeatable)"),
    library: Optional[str] = typer.Option(None, "--fingerprints",
                                          help="shipped (fpx's own library) or a folder of fingerprints"),
    index: Optional[Path] = typer.Option(None, "--index", help="origin library (LIB.fpxindex, `fpx origin`)"),
    thresholds: Optional[str] = typer.Option(None, "--thresholds", "-t",
                                             help="thresholds for attribution against a retrieved origin"),
    output: Optional[Path] = common.OutputOpt,
    report: Optional[Path] = typer.Option(None, "--report", help="dashboard HTML to write (self-contained)"),
    custody_log: Optional[Path] = typer.Option(None, "--custody-log",
                                               help="append-only custody log (default: OUTPUT.custody.jsonl)"),
    c2pa_trust: Optional[Path] = typer.Option(None, "--c2pa-trust",
                                              help="PEM file of the CA certificates whose C2PA signers the lab "
                                                   "trusts (else $FPX_C2PA_TRUST_ANCHORS)"),
    watch: bool = typer.Option(False, "--watch", help="keep watching the inbox folders; Ctrl-C to stop"),
    settle: float = typer.Option(2.0, "--settle", min=0.0, help="--watch: seconds a file's size must stay "
                                                                "unchanged before it is taken"),
    head: Optional[str] = typer.Option(None, "--head", help="verify-log: the head hash written down earlier"),
    jobs: int = common.JobsOpt,
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="dask.distributed: local or a scheduler ADDRESS"),
    fmt: Optional[common.RecordFormat] = common.RecordFormatOpt,
    quiet: bool = common.QuietOpt,
) -> None:
    """Triage incoming images: sha256 and custody log, C2PA / XMP / EXIF / PNG-chunk / JPEG provenance,
    generator fingerprints, origin; a ranked verdict per image and a dashboard.

    Examples: fpx triage inbox/ -F fps/ -o triage.jsonl --report triage.html;
    fpx triage inbox/ --fingerprints shipped -o triage.jsonl --report triage.html --watch;
    fpx triage verify-log triage.custody.jsonl --head 3f2a…
    """
    if args and args[0] == "verify-log":
        _verify(args[1:], head, common.value(fmt))
    try:
        if head is not None:
            raise UsageError("--head belongs to `fpx triage verify-log LOG --head HASH`")
        result = job.run_job(args, fingerprints=[str(f) for f in fingerprints], library=library,
                             output=_opt(output), custody_log=_opt(custody_log), report=_opt(report),
                             index=_opt(index), thresholds=thresholds, jobs=jobs, scheduler=scheduler,
                             c2pa_trust=_opt(c2pa_trust), watch=watch, settle=settle, quiet=quiet)
    except FpxError as exc:
        common.die(exc)
    _show(result, output, common.value(fmt), quiet)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command("triage")(triage_cmd)
