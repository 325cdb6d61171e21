"""Whether a (reference, suspect) pair of ``fpx attribute`` lies inside the sizes its calibration covers.

A reference-anchored decision compares the suspect with its reference on the reference's grid: a suspect of
another size is resized to the reference's (``details.steps`` says so). The shipped calibration corpora pair
each photo with processings of the same frame — the photo's own size, or a small downscale (0.85–0.97, the
chains of issue 11) — so a suspect much smaller than its reference (upsampled to compare) or of another aspect
ratio (stretched to compare) is outside every calibrated condition: its features measure the resize as much as
the processing. :func:`check` says so in the record (``details.condition``; ``decision.within_conditions`` and
``decision.outside_conditions``); the label is left as the artifact decided it — the conformal gate usually
answers ``unknown`` for such pairs already, and the warning tells the analyst why the stated rates do not apply.
"""

from __future__ import annotations

from typing import Any

from fingerprint_cli.decision import mark_conditions

#: a suspect whose sides are this many times smaller than the reference's (it is upsampled to compare)
MAX_UPSAMPLE = 2.0
#: a relative change of the aspect ratio above this (the suspect is stretched to compare)
MAX_ASPECT_CHANGE = 0.05


def check(sizes: dict[str, Any] | None) -> dict[str, Any] | None:
    """``details.condition`` of one pair from its ``details.sizes`` ({"reference": [w, h], "suspect": [w, h]}):
    the linear ``scale`` (suspect over reference, the geometric mean of the two sides), the ``aspect_change``
    (relative), ``within`` and the ``warnings``; None when the sizes are not known."""
    try:
        (rw, rh), (sw, sh) = sizes["reference"], sizes["suspect"]  # type: ignore[index]
        rw, rh, sw, sh = float(rw), float(rh), float(sw), float(sh)
    except (KeyError, TypeError, ValueError):
        return None
    if min(rw, rh, sw, sh) <= 0:
        return None
    scale = ((sw / rw) * (sh / rh)) ** 0.5
    aspect = abs((sw / sh) / (rw / rh) - 1.0)
    warnings = []
    if scale * MAX_UPSAMPLE < 1.0:
        warnings.append(f"the suspect ({int(sw)}x{int(sh)}) is {1 / scale:.1f}x smaller than the reference "
                        f"({int(rw)}x{int(rh)}) and was upsampled to compare: outside the sizes the calibration "
                        "corpora cover (the reference's size or a small downscale)")
    if aspect > MAX_ASPECT_CHANGE:
        warnings.append(f"the suspect's aspect ratio differs from the reference's by {100 * aspect:.0f}% (it was "
                        "stretched to compare): no calibration corpus pairs frames of different shape")
    return {"scale": round(scale, 4), "aspect_change": round(aspect, 4), "within": not warnings,
            "warnings": warnings}


def apply(record: Any) -> None:
    """Put :func:`check`'s answer into an ``attribute`` record that has a decision (nothing otherwise)."""
    if not record.ok or not isinstance(record.decision, dict):
        return
    cond = check((record.details or {}).get("sizes"))
    if cond is None:
        return
    mark_conditions(record.decision, record.details, cond)
