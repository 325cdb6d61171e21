"""Whether a ``found`` answer of ``fpx origin query`` lies inside the conditions its false-match rate was measured on.

An index states one false-match rate for ``found`` (:func:`fingerprint_cli.origin.index.calibrate`), measured on
its own calibration queries: built-in transforms of its calibration references. The smallest of those queries
covers a known share of its reference's area — the global tests' (``similarity``, ``verify``, ``distinct``) a
centre crop of 0.85 × 0.85 of the frame (:data:`fingerprint_cli.origin.index.CALIB_TRANSFORMS`), the local
test's crops down to 0.5 × 0.5 (:data:`fingerprint_cli.origin.local.CALIB_TRANSFORMS`, and the overlay crops when
the index calibrated on them). A suspect that covers less of the reference it was found in — a tight crop,
a ninth of the frame — is outside what the rate was measured on: nothing says the rate is wrong there, nothing
says it holds. :func:`check` estimates the suspect's coverage of its found reference from the local stage's
RANSAC affine map (the suspect's frame mapped into the reference's, intersected with it, over the reference's
area; both frames at :data:`fingerprint_cli.origin.local.SIDE` px on the long side) and says so in the record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fingerprint_cli import batch, images
from fingerprint_cli.decision import mark_conditions
from fingerprint_cli.errors import FpxError
from fingerprint_cli.origin import index as index_mod
from fingerprint_cli.origin import local as local_mod

#: the calibration queries' smallest share of their reference's area, for each test of a rule
_GLOBAL_MIN = min(float(name.split("_")[1]) ** 2 if name.startswith("crop_") else 1.0
                  for name in index_mod.CALIB_TRANSFORMS)
#: relative slack on the estimated coverage (the map is fitted on keypoints): a 0.5 × 0.5 crop estimated at 24%
#: is still the calibrated 25%
TOLERANCE = 0.9


def calibrated_min_coverage(calibration: dict[str, Any], settings: local_mod.Settings | None, passed: str | None
                            ) -> float:
    """The smallest share of its reference's area that the calibration queries of test ``passed`` covered (the
    test that made the answer ``found``): the local test's built-in crops for ``local``, the global transforms'
    centre crop otherwise."""
    if passed == "local" and settings is not None:
        fracs = [local_mod.CALIB_TRANSFORMS[n][0] if n in local_mod.CALIB_TRANSFORMS
                 else local_mod.OVERLAY_TRANSFORMS[n][0] for n in local_mod.calib_names(settings)]
        return float(min(fracs) ** 2)
    return float(_GLOBAL_MIN)


def _frame(width: int, height: int) -> tuple[float, float]:
    """(width, height) of an image's frame at :data:`~fingerprint_cli.origin.local.SIDE` px on the long side."""
    s = local_mod.SIDE / max(width, height)
    return width * s, height * s


def coverage(views: list[local_mod.Features], ref: local_mod.Features, suspect_size: tuple[int, int],
             ref_size: tuple[int, int]) -> float | None:
    """The share of the reference's area the suspect covers at the RANSAC affine map of its view with the most
    inliers (:func:`fingerprint_cli.origin.local.fit`): its frame's corners mapped into the reference's frame,
    the convex intersection with that frame over the frame's area, in [0, 1]. Sizes are (width, height).
    None without a plausible map."""
    import cv2

    fits = [local_mod.fit(v, ref) for v in views]
    usable = [(len(np.unique(qi)), i) for i, (qi, _, A) in enumerate(fits) if A is not None]
    if not usable:
        return None
    A = np.asarray(fits[max(usable)[1]][2], np.float64)
    sw, sh = _frame(*suspect_size)
    rw, rh = _frame(*ref_size)
    corners = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float64)
    mapped = corners @ A[:, :2].T + A[:, 2]
    (ax, ay), (bx, by) = mapped[1] - mapped[0], mapped[2] - mapped[1]
    if ax * by - ay * bx < 0:  # a mirrored view's map flips the corners' orientation
        mapped = mapped[::-1]
    frame = np.array([[0, 0], [rw, 0], [rw, rh], [0, rh]], np.float32)
    area, _ = cv2.intersectConvexConvex(mapped.astype(np.float32), frame)
    return float(np.clip(area / (rw * rh), 0.0, 1.0))


def _ref_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a reference file from its header; None when it can no longer be read."""
    try:
        h = images.header(path)
    except (FpxError, OSError):
        return None
    return int(h["width"]), int(h["height"])


def check(idx: Any, row: dict[str, Any], decision: dict[str, Any], top: int | None = None) -> dict[str, Any] | None:
    """The record's ``details.condition`` for a ``found`` answer (None for any other): the suspect's estimated
    coverage of the found reference, the calibration's smallest, ``within`` (at least :data:`TOLERANCE` of it;
    None when not estimated) and the warnings. ``idx`` is the :class:`~fingerprint_cli.origin.index.OriginIndex`,
    ``row`` the suspect's query row (its ``size`` and, when the local stage ran, ``local_views``), ``decision``
    the record's decision block, ``top`` the found reference's row in ``idx.refs`` when the caller knows it (else
    it is looked up by path and sha256)."""
    origin = decision.get("origin") if decision.get("label") == "found" else None
    if not isinstance(origin, dict):
        return None
    passed = origin.get("passed")
    settings = idx.local.settings if idx.local is not None else None
    least = calibrated_min_coverage(idx.calibration, settings, passed)
    out: dict[str, Any] = {"coverage": None, "calibrated_min_coverage": round(least, 4), "within": None,
                           "warnings": []}
    top = _row_of(idx, origin, top)
    why = _not_estimated(idx, row, top)
    if why:
        out["why_not_estimated"] = why
        return out
    ref_size = _ref_size(origin["path"])
    cov = None if ref_size is None else coverage(row["local_views"], idx.local.features(top), tuple(row["size"]),
                                                 ref_size)
    if cov is None:
        out["why_not_estimated"] = ("the found reference can no longer be read" if ref_size is None
                                    else "no plausible map between the suspect and the found reference")
        return out
    out["coverage"] = round(cov, 4)
    out["within"] = cov >= TOLERANCE * least
    if not out["within"]:
        out["warnings"].append(
            f"the suspect covers about {100 * cov:.0f}% of the found reference's area; the index's false-match "
            f"rate was measured on calibration queries covering at least {100 * least:.0f}% (its built-in "
            f"{'local crops' if passed == 'local' else 'transforms'}): the stated rate is not measured at this size")
    return out


def apply(idx: Any, row: dict[str, Any], decision: dict[str, Any], details: dict[str, Any],
          top: int | None = None) -> None:
    """Put :func:`check`'s answer into a query record: ``details.condition``, ``decision.within_conditions``
    and, outside them, ``decision.outside_conditions`` (the warnings, one line). Nothing for an answer other
    than ``found``."""
    cond = check(idx, row, decision, top)
    if cond is None:
        return
    mark_conditions(decision, details, cond)


def _row_of(idx: Any, origin: dict[str, Any], top: int | None) -> int | None:
    """The row of the found reference in ``idx.refs``: ``top`` when it names it, else the row with its path and
    sha256; None when there is none."""
    def same(i: int) -> bool:
        r = idx.refs[i]
        return r["sha256"] == origin.get("sha256") and r["path"] == origin.get("path")

    if top is not None and 0 <= top < len(idx.refs) and same(top):
        return top
    return next((i for i in range(len(idx.refs)) if same(i)), None)


def _not_estimated(idx: Any, row: dict[str, Any], top: int | None) -> str | None:
    """Why the coverage cannot be estimated for this answer (None when it can)."""
    if idx.local is None:
        return "the index has no local features (its rows are whole-frame embeddings)"
    views = row.get("local_views")
    if not isinstance(views, list):
        return "the local stage did not run: the similarity decided (a whole-frame match)"
    if top is None:
        return "the found reference is not in the index's reference list"
    return None


def say_outside(records: list[Any], quiet: bool = False) -> None:
    """One stderr warning per ``found`` record outside the index's calibrated conditions (its
    ``decision.outside_conditions``), naming the suspect."""
    for r in records:
        d = r.decision if isinstance(r.decision, dict) else {}
        if r.ok and d.get("outside_conditions"):
            path = (r.inputs.get("suspect") or {}).get("path")
            batch.warn(f"{path}: found, but outside the index's calibrated conditions: {d['outside_conditions']}",
                       quiet)
