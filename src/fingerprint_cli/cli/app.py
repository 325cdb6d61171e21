"""Entry point of the ``fpx`` command."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys

import typer

from fingerprint_cli import __version__, cli
from fingerprint_cli.errors import EXIT_RUNTIME, FpxError

app = typer.Typer(
    name="fpx",
    help="fpx — forensic attribution of AI image-to-image processing (reference-anchored), Deep Image "
         "Fingerprints of generators and their lineage, origin retrieval in a reference library, and lab triage "
         "with the file's own provenance. Every decision states its error rate (or says it is not calibrated) "
         "and can abstain: unknown, inconclusive, not-detected, not-in-library. Results go to stdout; logs and "
         "progress to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Every module ``fingerprint_cli/cli/*_cmd.py`` defines ``register(app)`` and an integer ``ORDER``
# (its place in ``fpx --help``); adding a command is adding such a module.
def _command_modules() -> list:
    mods = [importlib.import_module(f"fingerprint_cli.cli.{m.name}") for m in pkgutil.iter_modules(cli.__path__)
            if m.name.endswith("_cmd")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _version(value: bool) -> None:
    if value:
        print(f"fpx {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """fpx command group."""


for _mod in _command_modules():
    _mod.register(app)


INTERRUPTED = ("fpx: interrupted (exit 130); with --output, the records so far are kept in OUTPUT.partial: "
               "run the same command with --resume to go on")


def _on_sigint(signum, frame) -> None:
    """Ctrl-C: one line on stderr, then the usual KeyboardInterrupt (typer turns it into exit 130)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C is not announced again
    print(INTERRUPTED, file=sys.stderr, flush=True)
    raise KeyboardInterrupt


def main() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        pass
    try:
        app()
    except FpxError as exc:  # errors raised outside a command's own handling
        print(f"fpx: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, exit 1, no traceback unless asked
        if os.environ.get("FPX_DEBUG"):
            raise
        print(f"fpx: error: unexpected failure: {type(exc).__name__}: {exc} (set FPX_DEBUG=1 for a traceback)",
              file=sys.stderr)
        sys.exit(EXIT_RUNTIME)
