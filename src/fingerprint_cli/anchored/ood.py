"""Whole-feature-vector out-of-distribution gate for the conformal decisions (issue 11 round 3).

The per-system conformal score (``robust-top3``, :class:`~fingerprint_cli.anchored.calibrate.Conformal`) looks at
each feature against one system's calibrated range. A processing that no system was calibrated on can still sit
inside one system's marginal ranges while its *whole* feature vector lies where no calibration call ever fell
(round 2: a bicubic x4 round trip inside ``realesrgan_x4plus``'s ranges). This gate scores that directly:

* **score** — the mean Euclidean distance of a call's standardised feature vector to its ``k`` nearest
  calibration calls of *any* system (``points``: the calibration calls, or a seeded subsample of them);
* **calibration** — leave-one-image-out: each calibration call is scored against the stored points of the
  *other* images, so no image is ever its own neighbour;
* **p-value** — ``p_ood = (1 + #{LOO calibration scores >= score}) / (1 + n)``, a conformal p-value against the
  calibration corpus as a whole (marginal over its systems, not per system).

:func:`combine` merges it with the per-system p-values by a weighted Bonferroni rule,
``p_k = min(1, p_system_k / (1 - w), p_ood / w)``: system k stays in the prediction set at level alpha only when
its own p-value is >= (1 - w) alpha *and* the call is not an outlier of the whole corpus at w alpha, so a known
system is left out with probability at most (1 - w) alpha + w alpha = alpha (union bound) — marginally over the
corpus' systems, because the gate is calibrated on the corpus as a whole: a system whose calls are spread thinly is
gated more often than a dense one, which is why ``fpx calibrate`` reports the LOO coverage per system.

The brute-force nearest neighbours (numpy, chunked) are checked against scikit-learn's ``NearestNeighbors`` in
the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

KIND = "union-knn-loo"
DEFAULT_WEIGHT = 0.2  # the gate's Bonferroni weight w of v4-v6 (``fpx calibrate --gate-weight``)
DECIMALS = 4  # stored points are rounded to this many decimals (standardised units) before the LOO scores
TIE_TOL = 1e-6  # scores closer than this (relative to 1 + |score|) are ties (stored scores have 7 digits)


def knn_distance(Q: np.ndarray, points: np.ndarray, k: int, q_groups: Sequence[str] | None = None,
                 p_groups: Sequence[str] | None = None, chunk: int = 512) -> np.ndarray:
    """(n,) mean Euclidean distance of each row of ``Q`` to its ``k`` nearest rows of ``points``.

    With ``q_groups`` / ``p_groups`` a point of the query's own group (image) is never a neighbour."""
    Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
    P = np.asarray(points, dtype=np.float64)
    if not 1 <= k <= len(P):
        raise ValueError(f"k must be in [1, {len(P)}], not {k}")
    qg = None if q_groups is None else np.asarray(q_groups)
    pg = None if p_groups is None else np.asarray(p_groups)
    p2 = np.einsum("ij,ij->i", P, P)
    out = np.empty(len(Q))
    for s in range(0, len(Q), chunk):
        q = Q[s:s + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + p2[None, :] - 2.0 * (q @ P.T)
        if qg is not None:
            d2[qg[s:s + chunk][:, None] == pg[None, :]] = np.inf
        part = np.partition(d2, k - 1, axis=1)[:, :k]
        out[s:s + chunk] = np.sqrt(np.maximum(part, 0.0)).mean(1)
    return out


def p_from_scores(a: np.ndarray, cal: np.ndarray) -> np.ndarray:
    """``(1 + #{cal >= a}) / (1 + len(cal))`` for each entry of ``a`` (``cal`` sorted ascending); scores within
    ``TIE_TOL * (1 + |a|)`` are ties (an identical copy scores ~1e-7 against stored points, its calibration
    twins 0)."""
    a = np.asarray(a, dtype=np.float64)
    ge = len(cal) - np.searchsorted(cal, a - TIE_TOL * (1.0 + np.abs(a)), side="left")
    return (1.0 + ge) / (1.0 + len(cal))


def combine(p_system: np.ndarray, p_ood: np.ndarray, weight: float) -> np.ndarray:
    """Weighted Bonferroni: ``min(1, p_system / (1 - weight), p_ood / weight)``; ``p_ood`` broadcasts over the
    systems (shape (n,) against (n, K))."""
    p_ood = np.asarray(p_ood, dtype=np.float64)
    if np.ndim(p_system) == 2 and p_ood.ndim == 1:
        p_ood = p_ood[:, None]
    return np.minimum(1.0, np.minimum(np.asarray(p_system) / (1.0 - weight), p_ood / weight))


@dataclass
class UnionGate:
    """The gate's parameters: stored standardised calibration ``points`` (m, d), ``k``, the sorted LOO
    calibration scores ``cal_scores`` (n,) and the Bonferroni ``weight`` w of the gate (see the module
    docstring)."""

    points: np.ndarray
    k: int
    cal_scores: np.ndarray
    weight: float = DEFAULT_WEIGHT

    @classmethod
    def fit(cls, Z: np.ndarray, groups: Sequence[str], k: int = 5, weight: float = DEFAULT_WEIGHT,
            max_points: int | None = 3000, seed: int = 0) -> tuple[UnionGate, np.ndarray]:
        """The gate of the calibration calls ``Z`` (standardised) with their images ``groups``; also returns the
        (n,) LOO scores of the calls (for the LOO p-values of :func:`loo_p_values`)."""
        Z = np.asarray(Z, dtype=np.float64)
        g = np.asarray(groups)
        if not 0.0 < weight < 1.0:
            raise ValueError(f"gate weight must be in (0, 1), not {weight}")
        sel = np.arange(len(Z))
        if max_points is not None and len(Z) > max_points:
            sel = np.sort(np.random.default_rng(seed).choice(len(Z), max_points, replace=False))
        pts = np.round(Z[sel], DECIMALS)  # exactly what the artifact stores
        own = knn_distance(Z, pts, k, g, g[sel])
        return cls(pts, int(k), np.sort(own), float(weight)), own

    def p_values(self, Z: np.ndarray) -> np.ndarray:
        """(n,) p_ood of standardised rows."""
        return p_from_scores(knn_distance(Z, self.points, self.k), self.cal_scores)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "k": self.k, "weight": self.weight,
                "points": np.round(self.points, DECIMALS).tolist(),
                "calibration_scores": [float(f"{v:.7g}") for v in self.cal_scores],
                "score": f"mean Euclidean distance to the {self.k} nearest stored calibration calls of any system "
                         "(standardised features)",
                "p_value": "(1 + #{LOO calibration scores >= score}) / (1 + n), against the whole corpus",
                "combination": f"p_system_k = min(1, p_k / (1 - {self.weight:g}), p_ood / {self.weight:g}) "
                               "(weighted Bonferroni)"}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UnionGate:
        if doc.get("kind") != KIND:
            raise ValueError(f"unknown gate kind {doc.get('kind')!r}")
        pts = np.asarray(doc["points"], dtype=np.float64)
        cal = np.sort(np.asarray(doc["calibration_scores"], dtype=np.float64))
        k, w = int(doc["k"]), float(doc["weight"])
        if pts.ndim != 2 or not 1 <= k <= len(pts) or len(cal) < 1 or not 0.0 < w < 1.0:
            raise ValueError("inconsistent gate (points, k, weight or calibration scores)")
        return cls(pts, k, cal, w)


def loo_p_values(own: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """(n,) LOO p_ood of the calibration calls: each call's score ranked among the other images' LOO scores."""
    own = np.asarray(own, dtype=np.float64)
    g = np.asarray(groups)
    out = np.empty(len(own))
    for image in sorted(set(g.tolist())):
        rows = g == image
        out[rows] = p_from_scores(own[rows], np.sort(own[~rows]))
    return out
