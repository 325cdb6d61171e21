"""One way to keep a named collection (features, encoders, embedders, denoisers, artifacts, ...).

A :class:`Registry` maps names to entries, keeps insertion order, refuses a duplicate name, and refuses an
unknown name with a :class:`~fingerprint_cli.errors.UsageError` that suggests the close ones (pyiqa's
``create_metric`` only asserts; fpx says what you may have meant). :func:`suggest` is that suggestion on
its own, for code that holds its choices elsewhere.
"""

from __future__ import annotations

import difflib
from typing import Generic, Iterable, Iterator, TypeVar

from fingerprint_cli.errors import UsageError

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the choices close to ``name`` (case-insensitive), else ``""``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        return ""
    names = [repr(lowered[c]) for c in close]
    return "; did you mean " + (" or ".join(names) if len(names) <= 2 else
                                ", ".join(names[:-1]) + " or " + names[-1]) + "?"


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in messages: "feature", "encoder", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}{suggest(name, self._entries)} "
                             f"(known: {', '.join(self._entries)})") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
