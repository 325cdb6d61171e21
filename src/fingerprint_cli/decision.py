"""The decision a record carries: one typed class for every command's answer (issue 16).

A :class:`Decision` names the label (a system, a band, ``unknown``, ``inconclusive``, ``not-in-library``, ...)
and, where the method has them, the band and system, the conformal p-value(s) with the prediction set at
``alpha``, posteriors, the abstention kind and the reasons for it, the number of calls it combines, and the
artifact that made it. :meth:`Decision.to_dict` is the record's ``decision`` object, keys in the order the
decision was built (command-specific keys live in ``extra`` and keep their place). The record JSON Schema's
``Decision`` definition is generated from this type (:func:`fingerprint_cli.schema.generate`); only ``label``
is required, so decisions other commands still build as dicts (detect, origin, triage) validate too.

Every decision passes :meth:`Decision.guarded` (:func:`fingerprint_cli.guard.guard_decision`): no label but
``unknown`` from a non-finite number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from fingerprint_cli import guard
from fingerprint_cli.jsonobject import JsonObject

#: The abstentions: no calibrated class fits (``unknown``), several fit (``inconclusive``), the origin is not in
#: the reference library (``not-in-library``).
ABSTENTIONS = ("unknown", "inconclusive", "not-in-library")
Abstention = Literal["unknown", "inconclusive", "not-in-library"]


@dataclass(kw_only=True, eq=False)
class Decision(JsonObject):
    """A calibrated statement, able to abstain (see the module docstring). Every field is optional but
    ``label``; a field not set is not in :meth:`to_dict`."""

    label: str
    band: str | None = None
    system: str | None = None
    inconclusive: bool | None = None
    unknown: bool | None = None
    p_value: float | None = None
    prediction_set: list[str] | None = None
    set_size: int | None = None
    alpha: float | None = None
    p_values: dict[str, float | None] | None = None
    p_system: float | None = None
    p_band: float | None = None
    p_ood: float | None = None  # gated artifacts (v4): the whole-corpus p-value (anchored.ood)
    band_probabilities: dict[str, float | None] | None = None
    top_k: list[dict[str, Any]] | None = None
    min_mahalanobis2: float | None = None
    why_inconclusive: list[str] | None = None
    why_unknown: str | None = None
    calls: int | None = None
    calibrated: bool | None = None
    conformal: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None
    chosen: str | None = None
    aggregate: str | None = None

    @property
    def abstention(self) -> Abstention | None:
        """Which abstention the label is (``unknown`` / ``inconclusive`` / ``not-in-library``), None for a call."""
        return self.label if self.label in ABSTENTIONS else None  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The record's ``decision`` object (a deep copy)."""
        return copy.deepcopy(self.to_obj())

    def guarded(self, numbers: Mapping[str, Any], labels: Iterable[str] = ("label",),
                probabilities: Iterable[str] = ()) -> Decision:
        """This decision, or — when any of ``numbers`` is NaN or infinite — its ``unknown`` form
        (:func:`fingerprint_cli.guard.guard_decision`: ``labels`` set to ``unknown``, ``probabilities`` to None,
        the reason in ``why_unknown``)."""
        if not guard.nonfinite(numbers):
            return self
        return Decision.from_obj(guard.guard_decision(self.to_dict(), numbers, labels, probabilities))


def mark_conditions(decision: dict[str, Any], details: dict[str, Any], cond: dict[str, Any]) -> None:
    """Put a condition check (``{"within": bool, "warnings": [...], ...}``) into a record: the whole check as
    ``details.condition``, ``decision.within_conditions``, and — outside the calibrated conditions — the warnings
    on one line as ``decision.outside_conditions``. One place for every command whose rates hold only inside
    the conditions its calibration covered (``fpx attribute`` pairs, ``fpx origin query`` answers)."""
    details["condition"] = cond
    decision["within_conditions"] = cond["within"]
    if cond["warnings"]:
        decision["outside_conditions"] = "; ".join(cond["warnings"])
