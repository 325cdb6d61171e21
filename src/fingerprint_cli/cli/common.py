"""Options and helpers every command shares: formats, outputs, exit codes, error printing."""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

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



# ----------------------------------------------------------------------------- the pair commands' shared options
#: (name, type, typer parameter) of the options that name (reference, suspect) pairs: they open the command's
#: parameters, in this order
_PAIR_INPUTS = (("reference", Optional[str], ReferenceArg), ("suspects", List[str], SuspectsArg),
                ("pairs", Optional[Path], PairsOpt), ("ref_dir", Optional[Path], RefDirOpt),
                ("suspect_dir", Optional[Path], SuspectDirOpt))
#: the encoder, output and run options of a pair command: they close its parameters, in this order
_PAIR_RUN = (("batch_size", int, EncoderBatchOpt), ("no_cache", bool, NoTokenCacheOpt),
             ("fmt", Optional[RecordFormat], RecordFormatOpt), ("output", Optional[Path], OutputOpt),
             ("resume", bool, ResumeOpt), ("device", str, DeviceOpt), ("jobs", int, JobsOpt),
             ("quiet", bool, QuietOpt))


@dataclass(frozen=True)
class PairRun:
    """What the shared options of ``fpx score`` / ``fpx attribute`` say (:func:`pair_command`)."""

    reference: str | None
    suspects: list[str] | None
    pairs: Path | None
    ref_dir: Path | None
    suspect_dir: Path | None
    batch_size: int
    no_cache: bool
    fmt: Any
    output: Path | None
    resume: bool
    device: str
    jobs: int
    quiet: bool

    def api_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :func:`fingerprint_cli.api.score` and ``api.attribute`` take for them."""
        return {"reference": self.reference, "suspects": self.suspects or [], "pairs": self.pairs,
                "ref_dir": self.ref_dir, "suspect_dir": self.suspect_dir, "batch_size": self.batch_size,
                "use_cache": not self.no_cache, "device": self.device, "jobs": self.jobs, "output": self.output,
                "fmt": value(self.fmt), "resume": self.resume, "quiet": self.quiet, "stdout": True}


def pair_command(func: Callable[..., None]) -> Callable[..., None]:
    """A command over (reference, suspect) pairs: ``func(run: PairRun, **own_options)``. The command gets the
    shared options (:data:`_PAIR_INPUTS` first, its own options, then :data:`_PAIR_RUN`) and ``func`` receives
    them gathered in one :class:`PairRun`."""
    own = [q for q in inspect.signature(func, eval_str=True).parameters.values() if q.name != "run"]
    shared = [name for name, _, _ in _PAIR_INPUTS + _PAIR_RUN]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        run = PairRun(**{name: kwargs.pop(name) for name in shared})
        return func(run, **kwargs)

    def param(name: str, kind: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)

    params = ([param(*x) for x in _PAIR_INPUTS] + [q.replace(kind=inspect.Parameter.KEYWORD_ONLY) for q in own]
              + [param(*x) for x in _PAIR_RUN])
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {q.name: q.annotation for q in params}
    del command.__wrapped__  # typer reads the signature above, not func's
    return command
