"""Options and helpers every command shares: formats, outputs, exit codes, error printing."""

from __future__ import annotations

import sys

from enum import Enum

import typer

from fingerprint_cli import batch
from fingerprint_cli.errors import EXIT_RUNTIME, FpxError
from fingerprint_cli.records import FORMATS

# The three ways of naming (reference, suspect) pairs, shared by score and attribute.
ReferenceArg = typer.Argument(None, help="clean reference image")
SuspectsArg = typer.Argument(None, help="suspect image(s) or folders of them")
PairsOpt = typer.Option(None, "--pairs", help="CSV with columns reference,suspect (optional: perturbed)")
RefDirOpt = typer.Option(None, "--ref-dir", help="folder of references")
SuspectDirOpt = typer.Option(None, "--suspect-dir", help="folder of suspects, matched to references by file stem")

FormatOpt = typer.Option(None, "--format", "-f",
                         help="table | json | jsonl | csv (default: table on a terminal, jsonl when piped)")
# the same option as a closed set (type ``Optional[RecordFormat]``): a typo is refused by the parser, before any
# weights load
RecordFormat = Enum("RecordFormat", {f: f for f in FORMATS}, type=str)
RecordFormatOpt = typer.Option(None, "--format", "-f",
                               help="table | json | jsonl | csv (default: table on a terminal, jsonl when piped)")


def value(choice) -> str | None:
    """The string of an enum option (None stays None)."""
    return None if choice is None else choice.value
OutputOpt = typer.Option(None, "--output", "-o", help="write records to this file (atomically) instead of stdout")
ResumeOpt = typer.Option(False, "--resume", help="keep records already in --output and skip their items")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars or warnings on stderr")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda")
JobsOpt = typer.Option(1, "--jobs", "-j", min=1, help="parallel workers for CPU-bound pixel work")
EncoderBatchOpt = typer.Option(8, "--batch-size", min=1, help="images per encoder forward pass")
NoTokenCacheOpt = typer.Option(False, "--no-cache", help="do not read or write the on-disk token cache")
NoResidualCacheOpt = typer.Option(False, "--no-cache", help="do not read or write the on-disk residual cache")


def die(exc: FpxError | str, code: int | None = None) -> None:
    """Print a one-line error on stderr and exit with the error's code."""
    msg = str(exc)
    print(f"fpx: error: {msg}", file=sys.stderr)
    raise typer.Exit(code if code is not None else getattr(exc, "exit_code", EXIT_RUNTIME))


def print_failures(records, quiet: bool = False) -> None:
    """One stderr line per failed item of a batch (the record itself also goes to the output)."""
    batch.print_failures(records)


def finish(records) -> None:
    """End a batch command: one stderr line per failed item, then exit 0 / the item's code / 3
    (:attr:`fingerprint_cli.batch.Results.exit_code`)."""
    print_failures(records)
    raise typer.Exit(records.exit_code)

