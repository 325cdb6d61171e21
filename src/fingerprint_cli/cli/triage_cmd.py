"""``fpx triage``: custody, provenance metadata and all evidence for a lab's incoming images; ``fpx triage
verify-log LOG`` checks a custody log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli.cli import common

ORDER = 80

TABLE_COLUMNS = ["decision.label", "decision.generator", "decision.strength", "details.custody.format"]


def _verify(args: list[str], head: Optional[str], fmt: Optional[str]) -> None:
    import json

    from fingerprint_cli.errors import FpxError, UsageError
    from fingerprint_cli.triage import custody

    try:
        if len(args) != 1:
            raise UsageError("usage: fpx triage verify-log LOG [--head HASH]")
        res = custody.verify_log(args[0], expect_head=head)
    except FpxError as exc:
        common.die(exc)
    if fmt == "json":
        print(json.dumps({"log": args[0], **res.to_dict()}, indent=2))
    else:
        state = "ok" if res.ok else "FAILED"
        print(f"{args[0]}: {state}: {res.entries} entries, head {res.head}")
        for p in res.problems:
            print(f"  {p}")
    if not res.ok:
        print(f"fpx: custody log {args[0]} fails verification: {len(res.problems)} problem(s)", file=sys.stderr)
    raise typer.Exit(0 if res.ok else 1)


def register(app: typer.Typer) -> None:
    @app.command("triage")
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
        fmt: Optional[str] = common.FormatOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Triage incoming images: sha256 and custody log, C2PA / XMP / EXIF / PNG-chunk / JPEG provenance,
        generator fingerprints, origin; a ranked verdict per image and a dashboard.

        Examples: fpx triage inbox/ -F fps/ -o triage.jsonl --report triage.html;
        fpx triage inbox/ --fingerprints shipped -o triage.jsonl --report triage.html --watch;
        fpx triage verify-log triage.custody.jsonl --head 3f2a…
        """
        if args and args[0] == "verify-log":
            _verify(args[1:], head, fmt)
        from fingerprint_cli import batch
        from fingerprint_cli.errors import FpxError, UsageError
        from fingerprint_cli.records import render
        from fingerprint_cli.triage import core

        try:
            if watch and output is None:
                raise UsageError("--watch needs --output FILE (it is how a restarted watcher resumes)")
            if head is not None:
                raise UsageError("--head belongs to `fpx triage verify-log LOG --head HASH`")
            if fmt is not None and fmt not in ("table", "json", "jsonl", "csv"):
                raise UsageError(f"unknown format {fmt!r}; choose one of table, json, jsonl, csv")
            log = str(custody_log) if custody_log else (
                str(output.with_name(output.name.rsplit(".", 1)[0] + ".custody.jsonl")) if output else None)
            t = core.make(args, fingerprints=[str(f) for f in fingerprints], library=library,
                          output=str(output) if output else None, custody_log=log,
                          report=str(report) if report else None, index=str(index) if index else None,
                          thresholds=thresholds, jobs=jobs, scheduler=scheduler, refresh_seconds=5 if watch else None,
                          c2pa_trust=str(c2pa_trust) if c2pa_trust else None)
            for s in t.skipped_fingerprints:
                batch.warn(f"not a fingerprint, skipped: {s}", quiet)
            if not t.settings.fingerprints:
                batch.warn("no fingerprints given (-F / --fingerprints): no generator evidence from pixels", quiet)
            before = len(t.records)
            if watch:
                from fingerprint_cli.triage import watch as watch_mod

                batch.warn(f"watching {', '.join(args)} (Ctrl-C to stop)", quiet)
                watch_mod.watch(t, args, settle=settle, log=lambda m: batch.warn(m, quiet))
                new = t.records[before:]
            else:
                paths = core.list_inbox(args)
                if not paths:
                    raise UsageError(f"no files in {', '.join(args)}")
                with batch.progress_bar(len(paths), "triage", quiet) as advance:
                    new = t.process_all(paths, progress=lambda n: advance())
                t.write()
        except FpxError as exc:
            common.die(exc)
        if output is None:
            sys.stdout.write(render(new, fmt or batch._stdout_default(), TABLE_COLUMNS))
        elif fmt is not None and fmt != "jsonl":
            sys.stdout.write(render(new, fmt, TABLE_COLUMNS))
        if t.log is not None:
            # always printed (also with --quiet): the head hash is what a later verify-log --head checks against
            print(f"fpx: custody log {t.log.path}: {t.log.next_seq} entries, head {t.log.head}", file=sys.stderr)
        skipped = len(core.list_inbox(args)) - len(new) if not watch else 0
        if skipped > 0:
            batch.warn(f"{skipped} file(s) already triaged (same path and sha256), skipped", quiet)
        common.print_failures(new, quiet)
        raise typer.Exit(batch.exit_code_for(new, batch=len(new) > 1))
