"""Typed JSON objects that round-trip exactly: the base of fpx's contracts (:class:`~fingerprint_cli.decision.
Decision`, :class:`~fingerprint_cli.anchored.thresholds.Thresholds` and its parts).

A :class:`JsonObject` is a dataclass whose fields are the keys code reads. Keys the type does not name are kept
in ``extra`` and the key order in ``order``, so :meth:`JsonObject.to_obj` gives back exactly the object
:meth:`JsonObject.from_obj` read — a sealed document does not change by one byte on its way through memory, and
a record's keys keep their order. It is also a read-only mapping over that object (``obj["label"]``,
``obj.get(...)``, ``dict(obj)``) for callers that still read dicts.

Two ways to write the typed fields back: by default every typed field is a key (a :class:`~fingerprint_cli.
decision.Decision` always has all its keys, null or not); a ``SPARSE`` type (the fingerprint metadata of
:mod:`fingerprint_cli.dif.meta`, set field by field as a fit goes on) writes a typed field only when it holds a
value or when the source held it, explicit null included — so a key absent from a sealed file stays absent and
an explicit null stays null. Either way ``from_obj(d).to_obj() == d``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

_META = ("extra", "order", "path")


@dataclass(kw_only=True, eq=False)
class JsonObject(Mapping):
    """An ordered JSON object with typed fields (see the module docstring). ``NESTED`` maps a field to the
    :class:`JsonObject` type its JSON object is read as."""

    NESTED: ClassVar[dict[str, type[JsonObject]]] = {}
    SPARSE: ClassVar[bool] = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    order: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def names(cls) -> list[str]:
        """The typed fields (those that are keys of the JSON object), in declared order."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in _META]

    @classmethod
    def from_obj(cls, obj: Any, what: str = "object"):
        """The typed form of the JSON object ``obj`` (a TypeError naming ``what`` when it is not an object)."""
        if not isinstance(obj, Mapping):
            raise TypeError(f"{what} is not a JSON object")
        names = set(cls.names())
        kw = {k: cls._typed(k, v, what) for k, v in obj.items() if k in names}
        return cls(**kw, extra={k: v for k, v in obj.items() if k not in names}, order=tuple(obj))

    @classmethod
    def make(cls, **values: Any):
        """Build one in code: the keys are ``values``' keys, in the order given (unknown ones go to ``extra``)."""
        return cls.from_obj(values)

    @classmethod
    def _typed(cls, key: str, value: Any, what: str) -> Any:
        sub = cls.NESTED.get(key)
        return value if sub is None or value is None else sub.from_obj(value, f"{what}.{key}")

    def to_obj(self) -> dict[str, Any]:
        """The JSON object (a fresh dict), keys in the order they were read or given (see the module docstring
        for which typed fields a ``SPARSE`` type writes)."""
        names = set(self.names())
        out: dict[str, Any] = {}
        for k in self._keys():
            v = getattr(self, k) if k in names else self.extra[k]
            out[k] = v.to_obj() if isinstance(v, JsonObject) else v
        return out

    def _keys(self) -> list[str]:
        names = self.names()
        if not self.SPARSE:
            return list(self.order or tuple(names) + tuple(self.extra))
        keys = list(self.order)
        keys += [k for k in names if k not in self.order and getattr(self, k) is not None]
        return keys + [k for k in self.extra if k not in self.order]

    def update(self, **values: Any) -> None:
        """Set keys (typed fields or extras); a key not there yet is appended, as a dict would."""
        names = set(self.names())
        for k, v in values.items():
            if k in names:
                setattr(self, k, self._typed(k, v, k))
            else:
                self.extra[k] = v
            if k not in self.order:
                self.order = self.order + (k,)

    # ---------------------------------------------------------------- the read-only mapping
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self.to_obj()[key])  # a copy: editing what a reader got never edits the object

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_obj())

    def __len__(self) -> int:
        return len(self.to_obj())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self.to_obj() == dict(other)
