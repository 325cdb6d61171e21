"""Pure numerics of `fpx lineage`: cross-detection measures, grid components, relatedness, clustering.

Numpy arrays in, numbers out; no files, no fingerprints (see :mod:`fingerprint_cli.lineage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fingerprint_cli.errors import UsageError

#: Cut height on the distance 1 − relatedness. 0.5 ⇔ mean cross-detection accuracy of 75%: halfway between
#: chance (50%) and perfect; with 30 test images per class the 95% binomial interval around 75% is about
#: ±11 points, so a link at the threshold is well clear of chance, while the child of a parent keeps most of
#: the parent's accuracy (DIF §4.4 reports > 90% cross-detection for fine-tunes, ~50–60% for unrelated models).
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_SHIFT = 2
#: A fingerprint whose self-detection (the diagonal) is not above chance at this one-sided z (≈ 1% level)
#: carries no usable pattern: it cannot say whether another generator is related, so it is reported as
#: "unresolved" instead of being called a family of its own (a singleton would read as "unrelated").
MIN_SELF_Z = 2.33
#: What relatedness is built from: the paper's cross-detection accuracy (each fingerprint's own μ_gen/μ_real
#: rule), or the threshold-free AUC (does ρ separate j's images from real at all, whatever i's calibration).
METRICS = ("grid", "accuracy", "auc")
#: What each cell's real (negative) images are: ``none`` — the real photos as they are; ``format`` — for the
#: column of generator j, the same photos re-saved in j's own format (JPEG at the quality j's images carry,
#: unchanged when j's images are lossless), so that fingerprint i's "detection" of j's images cannot come from
#: j's images differing from the photos in format only (a format-matched control: a link must beat it).
CONTROLS = ("none", "format")
DEFAULT_METRIC = "grid"
METRIC_LABELS = {"grid": "grid cross-detection AUC", "accuracy": "cross-detection",
                 "auc": "cross-detection AUC"}
#: Grid period for the "grid" evidence: the fingerprint and each residual are averaged over PERIOD×PERIOD
#: tiles, keeping only their components periodic on that lattice — periods 1, 2, 4, 8 and 16, the traces of
#: ×2/×4 upsamplers, pixel (un)shuffles and f8/f16 autoencoder decoders. What is left is position-locked to
#: the generator's output grid, while image content (not periodic) averages away over the tiles.
DEFAULT_PERIOD = 16
#: Pixels dropped at each side before tiling (rounded up to whole periods, so the phase is kept): the
#: denoiser's zero-padded border response is the same in every image and strongest on clean, smooth ones —
#: left in, it would put a fixed "grid" into every smoothing network's residuals.
GRID_MARGIN = 16


# ----------------------------------------------------------------------------- pure numerics
def balanced_accuracy(gen_called: np.ndarray, real_called: np.ndarray) -> tuple[float, float, float]:
    """(balanced accuracy, TPR, TNR) from the boolean "generated" calls on generated and on real images."""
    g = np.asarray(gen_called, dtype=bool)
    r = np.asarray(real_called, dtype=bool)
    if g.size == 0 or r.size == 0:
        return float("nan"), float("nan"), float("nan")
    tpr = float(g.mean())
    tnr = float(1.0 - r.mean())
    return 0.5 * (tpr + tnr), tpr, tnr


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve of scores ``pos`` (positives) vs ``neg`` (Mann–Whitney U / (n_p·n_n), ties ½)."""
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def pattern_correlation(a: np.ndarray, b: np.ndarray, max_shift: int = DEFAULT_MAX_SHIFT) -> tuple[float, tuple[int, int]]:
    """Best signed correlation of two fingerprint patterns over small cyclic shifts.

    ``a``, ``b``: arrays (C, H, W) of the same shape. Both are standardised over all their elements;
    ρ(dy, dx) = mean(a · roll(b, (dy, dx))) for |dy|, |dx| ≤ ``max_shift`` (computed for all shifts at once
    by FFT circular cross-correlation, summed over channels). Returns (ρ at the shift of largest |ρ|,
    (dy, dx)). At shift (0, 0) ρ equals the Pearson correlation of the flattened patterns.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"fingerprint patterns differ in shape {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    a, b = _standardise(a), _standardise(b)
    # xc[dy, dx] = sum_{c,y,x} a[c,y,x] * b[c, y-dy, x-dx]  (= a · roll(b, (dy, dx)))
    fa = np.fft.rfft2(a)
    fb = np.fft.rfft2(b)
    xc = np.fft.irfft2((fa * np.conj(fb)).sum(axis=0), s=a.shape[-2:]) / a.size
    h, w = a.shape[-2:]
    s = max(0, int(max_shift))
    best, best_shift = float(xc[0, 0]), (0, 0)   # no shift wins ties: deterministic
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            v = float(xc[dy % h, dx % w])
            if abs(v) > abs(best) + 1e-12:
                best, best_shift = v, (dy, dx)
    return best, best_shift


def tile_mean(x: np.ndarray, period: int) -> np.ndarray:
    """Average of (…, C, H, W) over its period×period tiles (anchored at the top-left; a remainder of fewer
    than ``period`` rows/columns is dropped): (…, C, period, period). The component of ``x`` that is periodic
    with this period in both directions, one tile of it."""
    x = np.asarray(x, dtype=np.float64)
    h, w = x.shape[-2:]
    p = int(period)
    if p < 1 or h < p or w < p:
        raise UsageError(f"grid period {p} does not fit a {w}x{h} fingerprint (use --period between 1 and "
                         f"{min(h, w)})")
    hh, ww = h // p * p, w // p * p
    x = x[..., :hh, :ww]
    return x.reshape(*x.shape[:-2], hh // p, p, ww // p, p).mean(axis=(-4, -2))


def grid_component(x: np.ndarray, period: int, margin: int = GRID_MARGIN) -> np.ndarray:
    """:func:`tile_mean` of the interior of (…, C, H, W): ``margin`` rounded up to whole periods is dropped at
    every side first, unless fewer than 4 whole tiles per side would remain (then the whole image is used)."""
    x = np.asarray(x, dtype=np.float64)
    p = max(1, int(period))
    m = -(-int(margin) // p) * p
    h, w = x.shape[-2:]
    if m and h - 2 * m >= 4 * p and w - 2 * m >= 4 * p:
        x = x[..., m:h - m, m:w - m]
    return tile_mean(x, p)


def grid_rho(residuals: Any, pattern: np.ndarray, period: int, orientation: float = 1.0) -> np.ndarray:
    """Correlation of each residual's grid component with the pattern's, one value per residual.

    ``residuals``: (N, C, H, W) or a list of (C, h, w); ``pattern``: (C, H, W). Both are reduced by
    :func:`grid_component` and standardised; ρ_grid = mean of the product (Pearson over the C·period²
    values), times ``orientation`` (+1 / −1 so that the fingerprint's generated side is high).
    """
    t = _standardise(grid_component(pattern, period))
    out = []
    for r in residuals:
        g = grid_component(np.asarray(r, dtype=np.float64), period)
        out.append(float((_standardise(g) * t).mean()) * orientation)
    return np.asarray(out, dtype=np.float64)


def chance_z(basis: np.ndarray, n_generated: np.ndarray, n_real: np.ndarray,
             metric: str = "accuracy") -> np.ndarray:
    """z of every cell of ``basis`` against chance (0.5), from the cell's image counts.

    Null standard errors: balanced accuracy ½·sqrt(¼/n_gen + ¼/n_real) (two independent proportions at ½);
    AUC sqrt((n_gen + n_real + 1) / (12·n_gen·n_real)) (Mann–Whitney under H0). NaN where a count is 0.
    """
    b = np.asarray(basis, dtype=np.float64)
    ng = np.asarray(n_generated, dtype=np.float64)
    nr = np.asarray(n_real, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("auc", "grid"):
            se = np.sqrt((ng + nr + 1) / (12 * ng * nr))
        else:
            se = 0.5 * np.sqrt(0.25 / ng + 0.25 / nr)
        z = (b - 0.5) / se
    z = np.array(z, dtype=np.float64)
    z[(ng == 0) | (nr == 0) | ~np.isfinite(b)] = np.nan
    return z


def self_detection_z(basis: np.ndarray, n_generated: np.ndarray, n_real: np.ndarray,
                     metric: str = "accuracy") -> np.ndarray:
    """z of each fingerprint's self-detection (diagonal of ``basis``) against chance (0.5): the diagonal of
    :func:`chance_z`."""
    return np.diag(chance_z(basis, n_generated, n_real, metric)).copy()


def one_sided_p(z: float) -> float:
    """P(Z ≥ z) for a standard normal Z (NaN stays NaN)."""
    return float("nan") if not np.isfinite(z) else 0.5 * math.erfc(z / math.sqrt(2.0))


def families(names: Sequence[str], basis: np.ndarray, n_generated: np.ndarray, n_real: np.ndarray,
             metric: str, threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray, "Clustering"]:
    """(relatedness, self-detection z, clustering) from one cross-detection matrix (``basis``, of ``metric``):
    fingerprints whose z is below :data:`MIN_SELF_Z` (or undefined) are unresolved."""
    names = list(names)
    z = self_detection_z(basis, n_generated, n_real, metric)
    unresolved = [x for k, x in enumerate(names) if not (np.isfinite(z[k]) and z[k] >= MIN_SELF_Z)]
    rel = relatedness(basis)
    return rel, z, cluster(names, rel, threshold, unresolved)


def relatedness(accuracy: np.ndarray) -> np.ndarray:
    """Symmetric relatedness in [0, 1] from a cross-detection accuracy matrix (chance 0.5 → 0, 1.0 → 1).

    NaN cells (no test images) count as chance. The diagonal is set to 1.
    """
    a = np.asarray(accuracy, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.5)
    sym = 0.5 * (a + a.T)
    r = np.clip((sym - 0.5) / 0.5, 0.0, 1.0)
    np.fill_diagonal(r, 1.0)
    return r


@dataclass
class Clustering:
    families: list[list[str]]
    linkage: list[list[float]]          # scipy linkage matrix rows (a, b, height, size); empty for n < 2
    labels: list[int]                   # family index of each name, in the input order
    threshold: float
    unresolved: list[str] = field(default_factory=list)   # left out: self-detection not above chance


def cluster(names: Sequence[str], relatedness_matrix: np.ndarray,
            threshold: float = DEFAULT_THRESHOLD, unresolved: Sequence[str] = ()) -> Clustering:
    """Average-linkage clustering on distance 1 − relatedness, cut at ``threshold``.

    Names in ``unresolved`` are placed at distance 1 from everyone (so they cannot pull others together or
    apart), left out of ``families`` and given label −1.
    Deterministic: the result depends only on the matrix and the order of ``names``; families are listed
    by their first member's position in ``names`` and each family keeps that order.
    """
    names = list(names)
    n = len(names)
    unres = [x for x in names if x in set(unresolved)]
    if unres:
        return _cluster_leaving_out(names, relatedness_matrix, threshold, unres)
    if n == 0:
        return Clustering([], [], [], threshold)
    if n == 1:
        return Clustering([[names[0]]], [], [0], threshold)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    d = 1.0 - np.asarray(relatedness_matrix, dtype=np.float64)
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    d = np.clip(d, 0.0, 1.0)
    z = linkage(squareform(d, checks=False), method="average")
    labels = _labels_by_first_appearance(fcluster(z, t=threshold, criterion="distance"))
    families = [[names[i] for i in range(n) if labels[i] == k] for k in range(max(labels) + 1)]
    return Clustering(families, [[float(x) for x in row] for row in z], labels, threshold)


def _cluster_leaving_out(names: list[str], relatedness_matrix: np.ndarray, threshold: float,
                         unres: list[str]) -> Clustering:
    """:func:`cluster` with the ``unres`` names at relatedness 0 to everyone, then taken out of the families."""
    rel = np.array(relatedness_matrix, dtype=np.float64, copy=True)
    idx = [names.index(x) for x in unres]
    rel[idx, :] = 0.0
    rel[:, idx] = 0.0
    np.fill_diagonal(rel, 1.0)
    full = cluster(names, rel, threshold)
    keep = [[x for x in fam if x not in unres] for fam in full.families]
    keep = [f for f in keep if f]
    labels = [-1 if x in unres else next(k for k, f in enumerate(keep) if x in f) for x in names]
    return Clustering(keep, full.linkage, labels, threshold, unres)


def _labels_by_first_appearance(raw: Sequence[int]) -> list[int]:
    """Relabel cluster ids 0, 1, ... by first appearance, so labels do not depend on scipy's numbering."""
    order: dict[int, int] = {}
    labels = []
    for lab in raw:
        order.setdefault(int(lab), len(order))
        labels.append(order[int(lab)])
    return labels


#: A family link is *supported* when both directions of its cross-detection are above chance at this one-sided
#: level (an intersection–union test: the link's p-value is the larger of the two directions' p-values, valid at
#: this level without correction); otherwise the link is reported as unresolved.
LINK_ALPHA = 0.01


def link_evidence(names: Sequence[str], accuracy: np.ndarray, fp_corr: np.ndarray | None,
                  clustering: Clustering, label: str = "cross-detection",
                  corr_label: str = "fingerprint correlation", z: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One entry per pair of fingerprints in the same family: the two cross-detection accuracies.

    ``"B ~ A: 93% / 91% cross-detection"`` reads: A's fingerprint detects B's images at 93% balanced
    accuracy, B's detects A's at 91%. With ``z`` (:func:`chance_z` of the same matrix) each entry also carries
    ``p_value`` — the larger one-sided p-value of the two directions against chance — and ``supported``
    (``p_value`` ≤ :data:`LINK_ALPHA`); an unsupported link's text says so.
    """
    names = list(names)
    out = []
    for fam in clustering.families:
        idx = [names.index(x) for x in fam]
        for p in range(len(idx)):
            for q in range(p + 1, len(idx)):
                out.append(_link(names, idx[p], idx[q], accuracy, fp_corr, label, corr_label, z))
    return out


def _link(names: list[str], i: int, j: int, accuracy: np.ndarray, fp_corr: np.ndarray | None, label: str,
          corr_label: str, z: np.ndarray | None) -> dict[str, Any]:
    """The evidence of one in-family pair (i, j): both directions, the pattern correlation, the link test."""
    a_ij, a_ji = float(accuracy[i, j]), float(accuracy[j, i])
    fmt = _auc_text if "AUC" in label else _pct
    text = f"{names[j]} ~ {names[i]}: {fmt(a_ij)} / {fmt(a_ji)} {label}"
    corr = None
    if fp_corr is not None and np.isfinite(fp_corr[i, j]):
        corr = float(fp_corr[i, j])
        text += f", {corr_label} {corr:+.2f}"
    entry: dict[str, Any] = {"a": names[i], "b": names[j], "a_detects_b": a_ij, "b_detects_a": a_ji,
                             corr_label.replace(" ", "_"): corr}
    if z is not None:
        pv = max(one_sided_p(z[i, j]), one_sided_p(z[j, i]))
        supported = bool(np.isfinite(pv) and pv <= LINK_ALPHA)
        entry.update(p_value=None if not np.isfinite(pv) else pv, supported=supported)
        if not supported:
            text += (f" — unresolved link: not above chance in both directions (p = {pv:.2g} > {LINK_ALPHA:g})"
                     if np.isfinite(pv) else " — unresolved link: no test images in one direction")
    entry["text"] = text
    return entry


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.0f}%"


def _auc_text(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}"
