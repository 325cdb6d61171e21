"""The one guard every decision passes: no label but ``unknown`` can come from a non-finite number.

``NaN < t`` and ``NaN > t`` are both false, so a NaN posterior, correlation or distance slips through every
"is it below the threshold?" test and comes out as a confident label. :func:`guard_decision` looks at all the
numbers a decision was computed from and, if any is NaN or infinite, replaces every label field with
``unknown``, marks the decision inconclusive, drops its probabilities to ``None`` and says which numbers were
not finite. Call it last, on the finished decision dict, in every decision path (``attribute.Decider``,
``fpx detect``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

UNKNOWN = "unknown"


def _values(x: Any) -> Iterable[float]:
    if x is None:
        return
    if isinstance(x, Mapping):
        for v in x.values():
            yield from _values(v)
        return
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    if hasattr(x, "ravel") and hasattr(x, "dtype"):  # numpy array or scalar
        import numpy as np

        arr = np.asarray(x)
        if arr.dtype.kind in "fciu":
            if not bool(np.all(np.isfinite(arr))):
                yield float("nan")
            return
        x = arr.tolist()
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _values(v)
        return
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield float(x)


def nonfinite(numbers: Mapping[str, Any]) -> list[str]:
    """Names of the entries of ``numbers`` (scalars, sequences, arrays, nested mappings) holding a NaN or
    an infinity; ``None`` entries are ignored (a missing number is the caller's business)."""
    return [name for name, v in numbers.items() if any(not math.isfinite(f) for f in _values(v))]


def guard_decision(decision: dict[str, Any], numbers: Mapping[str, Any],
                   labels: Iterable[str] = ("label",), probabilities: Iterable[str] = ()) -> dict[str, Any]:
    """``decision`` unchanged when every number in ``numbers`` is finite; else every field in ``labels`` set to
    ``unknown``, the fields in ``probabilities`` to ``None``, ``inconclusive: True``, ``calibrated: False``
    where present, and the reason in ``why_inconclusive`` / ``why_unknown``."""
    bad = nonfinite(numbers)
    if not bad:
        return decision
    out = dict(decision)
    for k in labels:
        out[k] = UNKNOWN
    for k in probabilities:
        if k in out:
            out[k] = None
    if "generated" in out:
        out["generated"] = None
    out["inconclusive"] = True
    if "calibrated" in out:
        out["calibrated"] = False
    why = f"non-finite value(s) in {', '.join(bad)}: no decision can be made from them"
    if isinstance(out.get("why_inconclusive"), list):
        out["why_inconclusive"] = list(out["why_inconclusive"]) + [why]
    out["why_unknown"] = why
    return out

