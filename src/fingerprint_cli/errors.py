"""Error types and the exit codes they map to.

Exit codes (see DESIGN.md): 0 ok, 1 runtime failure, 2 usage or unreadable input,
3 some items of a batch failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class FpxError(Exception):
    """Base class: a failure with a one-line message meant for the user."""

    exit_code = EXIT_RUNTIME
    kind = "runtime"

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:  # one line, naming the file when there is one
        msg = " ".join(self.message.split())
        if self.path and self.path not in msg:
            return f"{shown_path(self.path)}: {msg}"
        return msg


def shown_path(path: str) -> str:
    """A path as it is printed in one-line messages: control characters (a newline in a file name) escaped."""
    path = str(path)
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in path)


class InputError(FpxError):
    """An input file is missing, unreadable, or not what it should be."""

    exit_code = EXIT_USAGE
    kind = "input"


class UsageError(FpxError):
    """Arguments that do not make sense together."""

    exit_code = EXIT_USAGE
    kind = "usage"


class ArtifactError(FpxError):
    """A model, fingerprint or thresholds artifact is missing, unverified or incompatible."""

    exit_code = EXIT_RUNTIME
    kind = "artifact"
