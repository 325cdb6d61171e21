"""Model lineage from generator fingerprints: cross-detection matrix, relatedness, families.

Deep Image Fingerprint §4.3–4.4 (Sinitsa & Fried, WACV 2024): the fingerprint of generator A,
applied to held-out images of generator B against real photographs, detects them well — and
symmetrically — when B inherits A's fingerprint (a fine-tune, a shared autoencoder/decoder), and
poorly when the two are unrelated.

What this module computes, for fingerprints F_1..F_n (all made with the same denoiser and crop):

* ``accuracy[i, j]`` — balanced cross-detection accuracy of F_i on generator j's held-out images
  against held-out real images: ½·(TPR on j's images + TNR on real images), each image called
  "generated" by F_i's own rule (``detect.is_generated``, nearest of μ_gen / μ_real). Chance is 0.5.
  ``auc[i, j]`` is the threshold-free companion (ρ oriented so that F_i's generated side is high).
  Test images are each artifact's recorded held-out split (``meta["test"]``), plus or replaced by
  ``--images NAME=DIR``; any image whose sha256 is in F_i's *training* split is dropped from the cells
  of row i, so a fingerprint is never scored on images it was fitted on.
* ``fp_correlation[i, j]`` — fingerprint-to-fingerprint correlation: the largest |ρ| between the two
  standardised patterns over cyclic shifts of up to ``max_shift`` pixels each way (a fine-tuned model can
  shift its periodic artefact by a pixel; the sign of a DIF pattern is arbitrary).
* ``relatedness[i, j]`` — symmetric, in [0, 1]: the mean of the two cross-detection accuracies, rescaled
  so chance is 0 and perfect detection is 1: clip((½(A_ij + A_ji) − 0.5) / 0.5, 0, 1).
* families — average-linkage (UPGMA) hierarchical clustering on distance 1 − relatedness, cut at
  ``threshold`` (default 0.5 = a mean cross-detection accuracy of 75%, halfway between chance and
  perfect; see :data:`DEFAULT_THRESHOLD`). Average linkage, not single linkage, so that one strong pair
  cannot chain two unrelated groups together; every member of a family must on average detect the others.
* unresolved — a fingerprint whose self-detection is not above chance (one-sided z < :data:`MIN_SELF_Z`
  against 0.5, from the diagonal cell's image counts) is left out of the families and listed apart: it
  cannot detect its own generator, so it is no evidence of relation or of its absence.

Pure functions on numpy arrays (:func:`balanced_accuracy`, :func:`auc`, :func:`pattern_correlation`,
:func:`relatedness`, :func:`cluster`) are separated from :func:`analyse`, which drives the fingerprint
code (``fingerprint_cli.dif``) and shares one residual cache across the whole matrix so each image's
residual is computed once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fingerprint_cli.errors import InputError, UsageError

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


def self_detection_z(basis: np.ndarray, n_generated: np.ndarray, n_real: np.ndarray,
                     metric: str = "accuracy") -> np.ndarray:
    """z of each fingerprint's self-detection (diagonal of ``basis``) against chance (0.5).

    Null standard errors: balanced accuracy ½·sqrt(¼/n_gen + ¼/n_real) (two independent proportions at ½);
    AUC sqrt((n_gen + n_real + 1) / (12·n_gen·n_real)) (Mann–Whitney under H0). NaN where a count is 0.
    """
    b = np.diag(np.asarray(basis, dtype=np.float64))
    ng = np.diag(np.asarray(n_generated, dtype=np.float64))
    nr = np.diag(np.asarray(n_real, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("auc", "grid"):
            se = np.sqrt((ng + nr + 1) / (12 * ng * nr))
        else:
            se = 0.5 * np.sqrt(0.25 / ng + 0.25 / nr)
        z = (b - 0.5) / se
    z[(ng == 0) | (nr == 0) | ~np.isfinite(b)] = np.nan
    return z


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
        rel = np.array(relatedness_matrix, dtype=np.float64, copy=True)
        idx = [names.index(x) for x in unres]
        rel[idx, :] = 0.0
        rel[:, idx] = 0.0
        np.fill_diagonal(rel, 1.0)
        full = cluster(names, rel, threshold)
        keep = [[x for x in fam if x not in unres] for fam in full.families]
        keep = [f for f in keep if f]
        labels = [-1 if names[i] in unres else next(k for k, f in enumerate(keep) if names[i] in f)
                  for i in range(n)]
        return Clustering(keep, full.linkage, labels, threshold, unres)
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
    raw = fcluster(z, t=threshold, criterion="distance")
    # relabel by first appearance so labels do not depend on scipy's numbering
    order: dict[int, int] = {}
    labels = []
    for lab in raw:
        order.setdefault(int(lab), len(order))
        labels.append(order[int(lab)])
    families = [[names[i] for i in range(n) if labels[i] == k] for k in range(len(order))]
    return Clustering(families, [[float(x) for x in row] for row in z], labels, threshold)


def link_evidence(names: Sequence[str], accuracy: np.ndarray, fp_corr: np.ndarray | None,
                  clustering: Clustering, label: str = "cross-detection",
                  corr_label: str = "fingerprint correlation") -> list[dict[str, Any]]:
    """One entry per pair of fingerprints in the same family: the two cross-detection accuracies.

    ``"B ~ A: 93% / 91% cross-detection"`` reads: A's fingerprint detects B's images at 93% balanced
    accuracy, B's detects A's at 91%.
    """
    names = list(names)
    out = []
    for fam in clustering.families:
        idx = [names.index(x) for x in fam]
        for p in range(len(idx)):
            for q in range(p + 1, len(idx)):
                i, j = idx[p], idx[q]
                a_ij, a_ji = float(accuracy[i, j]), float(accuracy[j, i])
                fmt = _auc_text if "AUC" in label else _pct
                text = f"{names[j]} ~ {names[i]}: {fmt(a_ij)} / {fmt(a_ji)} {label}"
                corr = None
                if fp_corr is not None and np.isfinite(fp_corr[i, j]):
                    corr = float(fp_corr[i, j])
                    text += f", {corr_label} {corr:+.2f}"
                out.append({"a": names[i], "b": names[j], "a_detects_b": a_ij, "b_detects_a": a_ji,
                            corr_label.replace(" ", "_"): corr, "text": text})
    return out


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.0f}%"


def _auc_text(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}"


# ----------------------------------------------------------------------------- test sets
@dataclass
class TestSet:
    """Held-out images of one generator (by fingerprint name), and where they came from."""
    name: str
    paths: list[str]
    source: str                        # "artifact" (meta test split) or the --images directory


def _meta_paths(entries: Any) -> list[tuple[str, str | None]]:
    out = []
    for e in entries or []:
        if isinstance(e, Mapping):
            out.append((str(e.get("path")), e.get("sha256")))
        else:
            out.append((str(e), None))
    return out


def split_of(fp: Any, which: str, role: str) -> list[tuple[str, str | None]]:
    """(path, sha256) of the ``which`` ("train"/"test") split of class ``role`` ("generated"/"real")."""
    meta = getattr(fp, "meta", {}) or {}
    block = meta.get(which) or {}
    if not isinstance(block, Mapping):
        return []
    return _meta_paths(block.get(role))


def parse_images_option(values: Sequence[str], names: Sequence[str], option: str = "--images",
                        allow_bare: bool = False) -> dict[str, str]:
    """``NAME=DIR`` strings to a mapping; NAME must be one of the fingerprints' names.

    With ``allow_bare`` a plain ``DIR`` (no ``=``) is accepted once and stored under the key ``""``: it applies
    to every fingerprint not named (``--real DIR``, ``--real NAME=DIR``).
    """
    out: dict[str, str] = {}
    for v in values or []:
        if "=" not in v or (allow_bare and Path(v).is_dir()):
            if not allow_bare:
                raise UsageError(f"{option} takes NAME=DIR (got {v!r}); NAME is one of: {', '.join(names)}")
            if "" in out:
                raise UsageError(f"{option}: only one folder without NAME= (got {out['']!r} and {v!r})")
            if not Path(v).is_dir():
                raise InputError(f"{option}: not a folder", v)
            out[""] = v
            continue
        k, d = v.split("=", 1)
        k = k.strip()
        if k not in names:
            import difflib

            close = difflib.get_close_matches(k, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; fingerprints: {', '.join(names)}"
            raise UsageError(f"{option} {k}=...: no fingerprint named {k!r}{hint}")
        if not Path(d).is_dir():
            raise InputError(f"{option}: not a folder", d)
        out[k] = d
    return out


# ----------------------------------------------------------------------------- the analysis
@dataclass
class LineageResult:
    names: list[str]
    paths: list[str]
    sha256: list[str]
    accuracy: np.ndarray
    tpr: np.ndarray
    tnr: np.ndarray
    auc: np.ndarray
    n_generated: np.ndarray
    n_real: np.ndarray
    n_excluded: np.ndarray             # images dropped from cell (i, j) because F_i trained on them
    fp_correlation: np.ndarray
    fp_shift: list[list[tuple[int, int]]]
    relatedness: np.ndarray
    clustering: Clustering
    links: list[dict[str, Any]]
    test_sources: dict[str, str]
    real_source: str | dict[str, str]   # "artifact", the shared --real folder, or {name: folder or "artifact"}
    errors: dict[tuple[int, int], BaseException] = field(default_factory=dict)
    metric: str = "accuracy"
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    self_z: np.ndarray | None = None    # z of each diagonal cell against chance (see self_detection_z)
    grid_auc: np.ndarray | None = None  # AUC of ρ_grid (F_i's grid component) on j's images vs real
    grid_correlation: np.ndarray | None = None   # correlation of the oriented grid components
    period: int = DEFAULT_PERIOD


def check_compatible(fps: Sequence[Any], paths: Sequence[str]) -> None:
    """Refuse fingerprints that cannot be compared, saying what to redo."""
    if len(fps) < 2:
        raise UsageError("lineage needs at least two fingerprints")
    names = [fp.name for fp in fps]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"two fingerprints share the name {dup[0]!r}: re-extract one with --name NEW")
    ref = fps[0]
    for fp, p in zip(fps[1:], paths[1:]):
        reason = fp.compatible_with(ref) if hasattr(fp, "compatible_with") else None
        if reason:
            raise UsageError(f"cannot compare with {Path(paths[0]).name}: {reason} — re-extract both with the "
                             f"same --denoiser and --crop (fpx dif-extract), then run lineage again", p)


def analyse(fps: Sequence[Any], paths: Sequence[str], sha256: Sequence[str], *,
            images: Mapping[str, str] | None = None, real_dir: str | Mapping[str, str] | None = None,
            correlate: Callable[[Any, list[str]], np.ndarray],
            is_generated: Callable[[Any, np.ndarray], np.ndarray],
            image_sha256: Callable[[str], str],
            grid_correlate: Callable[[Any, list[str]], np.ndarray] | None = None,
            threshold: float = DEFAULT_THRESHOLD, max_shift: int = DEFAULT_MAX_SHIFT,
            metric: str = DEFAULT_METRIC, period: int = DEFAULT_PERIOD,
            on_progress: Callable[..., None] | None = None) -> LineageResult:
    """Compute the full lineage analysis.

    ``correlate(fp, paths) -> ρ`` (one value per path; NaN for an image it could not read),
    ``grid_correlate(fp, paths) -> ρ_grid`` (:func:`grid_rho` of each image's residual, oriented; needed for
    ``metric="grid"``), ``is_generated(fp, ρ) -> bool array`` and ``image_sha256(path)`` are injected so the
    pure logic can be tested with synthetic fingerprints; :func:`run` wires them to ``fingerprint_cli.dif``.
    """
    t0 = time.perf_counter()
    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r} (choose {', '.join(METRICS)})")
    if metric == "grid" and grid_correlate is None:
        raise UsageError("--metric grid needs spatial fingerprints (method dif or average)")
    names = [fp.name for fp in fps]
    n = len(fps)
    images = dict(images or {})
    from fingerprint_cli import batch

    # generated test images per generator
    tests: list[TestSet] = []
    for fp in fps:
        if fp.name in images:
            tests.append(TestSet(fp.name, batch.expand_paths([images[fp.name]]), images[fp.name]))
        else:
            tests.append(TestSet(fp.name, [p for p, _ in split_of(fp, "test", "generated")], "artifact"))
    # real test images per fingerprint: its --real NAME=DIR, else the --real DIR shared by everyone, else its
    # own held-out real split (a fingerprint fitted against processed "real" images, e.g. bicubic round trips,
    # must be tested against the same kind)
    real_map = dict(real_dir) if isinstance(real_dir, Mapping) else ({"": real_dir} if real_dir else {})
    expanded: dict[str, list[str]] = {}
    reals = []
    for fp in fps:
        d = real_map.get(fp.name, real_map.get(""))
        if d is None:
            reals.append([p for p, _ in split_of(fp, "test", "real")])
        else:
            if d not in expanded:
                expanded[d] = batch.expand_paths([d])
            reals.append(list(expanded[d]))
    if not real_map:
        real_source = "artifact"
    elif set(real_map) == {""}:
        real_source = real_map[""]
    else:
        real_source = {fp.name: real_map.get(fp.name, real_map.get("", "artifact")) for fp in fps}
    missing = [t.name for t in tests if not t.paths]
    if missing:
        raise UsageError(f"no held-out images for {', '.join(missing)}: the artifact records no test split; "
                         f"give --images {missing[0]}=DIR")
    no_real = [names[i] for i in range(n) if not reals[i]]
    if no_real:
        raise UsageError(f"no held-out real images for {', '.join(no_real)}: give --real DIR")

    # training hashes per fingerprint: never score F_i on an image it was fitted on
    train_hashes: list[set[str]] = []
    for fp in fps:
        hs = {h for _, h in split_of(fp, "train", "generated") + split_of(fp, "train", "real") if h}
        train_hashes.append(hs)
    all_paths = sorted({p for t in tests for p in t.paths} | {p for r in reals for p in r})
    sha: dict[str, str | None] = {}
    for p in all_paths:
        try:
            sha[p] = image_sha256(p)
        except Exception:  # unreadable: its ρ will be NaN and it is left out
            sha[p] = None

    t1 = time.perf_counter()
    rho: list[dict[str, float]] = []
    rho_grid: list[dict[str, float]] = []
    for i, fp in enumerate(fps):
        need = [p for p in all_paths if sha[p] is not None and sha[p] not in train_hashes[i]]
        vals = np.asarray(correlate(fp, need), dtype=np.float64)
        rho.append(dict(zip(need, vals.tolist())))
        if grid_correlate is not None:
            rho_grid.append(dict(zip(need, np.asarray(grid_correlate(fp, need), dtype=np.float64).tolist())))
        if on_progress:
            on_progress(1, fingerprint=fp.name)
    t2 = time.perf_counter()

    acc = np.full((n, n), np.nan)
    tpr = np.full((n, n), np.nan)
    tnr = np.full((n, n), np.nan)
    au = np.full((n, n), np.nan)
    gau = np.full((n, n), np.nan)
    ng = np.zeros((n, n), dtype=int)
    nr = np.zeros((n, n), dtype=int)
    nx = np.zeros((n, n), dtype=int)
    errors: dict[tuple[int, int], BaseException] = {}
    for i, fp in enumerate(fps):
        th = train_hashes[i]
        real_i = [p for p in reals[i] if sha.get(p) and sha[p] not in th and np.isfinite(rho[i].get(p, np.nan))]
        r_real = np.array([rho[i][p] for p in real_i])
        sign = _orientation(fp)
        for j in range(n):
            cand = [p for p in tests[j].paths if sha.get(p)]
            keep = [p for p in cand if sha[p] not in th and np.isfinite(rho[i].get(p, np.nan))]
            nx[i, j] = sum(1 for p in cand if sha[p] in th)
            r_gen = np.array([rho[i][p] for p in keep])
            ng[i, j], nr[i, j] = r_gen.size, r_real.size
            if r_gen.size == 0 or r_real.size == 0:
                errors[(i, j)] = InputError(
                    f"no usable held-out images of {names[j]} for fingerprint {names[i]} "
                    f"({nx[i, j]} excluded as its training images)", tests[j].source)
                continue
            g_call = np.asarray(is_generated(fp, r_gen), dtype=bool)
            r_call = np.asarray(is_generated(fp, r_real), dtype=bool)
            acc[i, j], tpr[i, j], tnr[i, j] = balanced_accuracy(g_call, r_call)
            au[i, j] = auc(sign * r_gen, sign * r_real)
            if rho_grid:
                gau[i, j] = auc(np.array([rho_grid[i][p] for p in keep]), np.array([rho_grid[i][p] for p in real_i]))

    corr = np.full((n, n), np.nan)
    gcorr = np.full((n, n), np.nan)
    shifts: list[list[tuple[int, int]]] = [[(0, 0)] * n for _ in range(n)]
    pats = [_pattern_array(fp) for fp in fps]
    if rho_grid:
        grids = [None if pats[i] is None else _standardise(grid_component(pats[i], period)) * _orientation(fps[i])
                 for i in range(n)]
        for i in range(n):
            for j in range(n):
                if grids[i] is not None and grids[j] is not None and grids[i].shape == grids[j].shape:
                    gcorr[i, j] = float((grids[i] * grids[j]).mean())
    for i in range(n):
        for j in range(n):
            if i == j:
                corr[i, j], shifts[i][j] = 1.0, (0, 0)
            elif j > i and pats[i] is not None and pats[j] is not None and pats[i].shape == pats[j].shape:
                c, s = pattern_correlation(pats[i], pats[j], max_shift)
                corr[i, j] = corr[j, i] = c
                shifts[i][j], shifts[j][i] = s, (-s[0], -s[1])
    warnings = []
    bad = [p for p in all_paths if sha[p] is None
           or any(sha[p] not in train_hashes[i] and not np.isfinite(rho[i].get(p, np.nan)) for i in range(n))]
    if bad:
        warnings.append(f"{len(bad)} image(s) could not be read and were left out, e.g. {bad[0]}")
    basis = {"accuracy": acc, "auc": au, "grid": gau}[metric]
    rel = relatedness(basis)
    z_self = self_detection_z(basis, ng, nr, metric)
    unresolved = [names[i] for i in range(n) if not (np.isfinite(z_self[i]) and z_self[i] >= MIN_SELF_Z)]
    if unresolved:
        what = {"accuracy": "accuracy", "auc": "AUC", "grid": "grid AUC"}[metric]
        fmt = _pct if metric == "accuracy" else _auc_text
        diag = ", ".join(f"{x} ({what} {fmt(basis[names.index(x), names.index(x)])})" for x in unresolved)
        warnings.append(f"unresolved (self-detection not above chance, z < {MIN_SELF_Z:g}): {diag} — these "
                        "fingerprints do not detect their own held-out images, so they give no evidence either "
                        "way; refit with more images or a larger --crop")
    cl = cluster(names, rel, threshold, unresolved)
    links = link_evidence(names, basis, gcorr if metric == "grid" else corr, cl, label=METRIC_LABELS[metric],
                          corr_label="grid correlation" if metric == "grid" else "fingerprint correlation")
    t3 = time.perf_counter()
    return LineageResult(
        names=names, paths=list(paths), sha256=list(sha256), accuracy=acc, tpr=tpr, tnr=tnr, auc=au,
        n_generated=ng, n_real=nr, n_excluded=nx, fp_correlation=corr, fp_shift=shifts, relatedness=rel,
        grid_auc=gau if rho_grid else None, grid_correlation=gcorr if rho_grid else None, period=int(period),
        clustering=cl, links=links, self_z=z_self, test_sources={t.name: t.source for t in tests},
        real_source=real_source, errors=errors, warnings=warnings, metric=metric,
        timing={"prepare_s": t1 - t0, "correlations_s": t2 - t1, "matrix_s": t3 - t2, "total_s": t3 - t0,
                "images": float(len(all_paths))})


def _orientation(fp: Any) -> float:
    """+1 when the fingerprint's generated images correlate above its real ones (μ_gen ≥ μ_real), else −1."""
    meta = getattr(fp, "meta", None)
    if not isinstance(meta, Mapping):
        return 1.0
    return 1.0 if float(meta.get("mu_gen", 1.0)) >= float(meta.get("mu_real", 0.0)) else -1.0


def _pattern_array(fp: Any) -> np.ndarray | None:
    pat = getattr(fp, "pattern", None)
    if pat is None:
        return None
    if hasattr(pat, "detach"):
        pat = pat.detach().cpu().numpy()
    return np.asarray(pat, dtype=np.float64)


# ----------------------------------------------------------------------------- records
FEATURE_DIRECTIONS = {
    "cross_accuracy": "higher = fingerprint detects these images (related)",
    "tpr": "higher = more of the generator's images called generated",
    "tnr": "higher = more real images called real",
    "auc": "higher = better separation of these images from real",
    "grid_auc": "higher = the fingerprint's grid component separates these images from real (related)",
    "fingerprint_correlation": "larger |value| = more similar fingerprints",
    "grid_correlation": "higher = more similar grid components (both oriented: generated side positive)",
    "relatedness": "higher = more related (0 chance, 1 perfect mutual detection)",
}


def to_records(res: LineageResult, provenance: Mapping[str, Any]) -> list:
    """One record per ordered pair (fingerprint i on generator j's images), then one summary record.

    Pair record: ``inputs`` = {"fingerprint": F_i, "images_of": F_j}; ``features`` = cross_accuracy, tpr, tnr,
    auc, grid_auc, fingerprint_correlation, grid_correlation, relatedness (null where not computed); ``details`` = names, counts, shift, test-image source.
    Summary record: ``inputs`` = {"fingerprint_<k>": F_k}; ``decision`` = {"label": "families", "families",
    "threshold"}; ``details`` = the matrices (rows = fingerprint, columns = images of), links, linkage, timing.
    """
    from fingerprint_cli.records import Record

    names = res.names
    n = len(names)
    prov = dict(provenance)
    out = []
    for i in range(n):
        for j in range(n):
            inputs = {"fingerprint": {"path": res.paths[i], "sha256": res.sha256[i]},
                      "images_of": {"path": res.paths[j], "sha256": res.sha256[j]}}
            details = {"fingerprint": names[i], "images_of": names[j],
                       "same_family": res.clustering.labels[i] == res.clustering.labels[j] >= 0,
                       "n_generated": int(res.n_generated[i, j]), "n_real": int(res.n_real[i, j]),
                       "n_excluded_training": int(res.n_excluded[i, j]),
                       "fingerprint_shift": list(res.fp_shift[i][j]),
                       "test_images": res.test_sources[names[j]],
                       "real_images": res.real_source[names[i]] if isinstance(res.real_source, dict)
                       else res.real_source}
            if (i, j) in res.errors:
                r = Record.failure("lineage", inputs, res.errors[(i, j)], prov)
                r.details = details
                out.append(r)
                continue
            feats = {"cross_accuracy": res.accuracy[i, j], "tpr": res.tpr[i, j], "tnr": res.tnr[i, j],
                     "auc": res.auc[i, j], "grid_auc": _cell(res.grid_auc, i, j),
                     "fingerprint_correlation": res.fp_correlation[i, j],
                     "grid_correlation": _cell(res.grid_correlation, i, j),
                     "relatedness": res.relatedness[i, j]}
            out.append(Record(command="lineage", inputs=inputs,
                              features={k: _num(v) for k, v in feats.items()},
                              directions=dict(FEATURE_DIRECTIONS), details=details, provenance=prov))
    summary_inputs = {f"fingerprint_{k}": {"path": res.paths[k], "sha256": res.sha256[k]} for k in range(n)}
    what = {"accuracy": "cross-detection accuracies", "auc": "cross-detection AUCs",
            "grid": f"grid cross-detection AUCs (period {res.period})"}[res.metric]
    decision = {"label": "families", "families": res.clustering.families, "threshold": res.clustering.threshold,
                "unresolved": list(res.clustering.unresolved),
                "metric": res.metric,
                "rule": "average-linkage clustering on 1 - relatedness, cut at threshold; relatedness = "
                        f"clip((mean of the two {what} - 0.5) / 0.5, 0, 1); a fingerprint "
                        f"whose self-detection is not above chance (z < {MIN_SELF_Z:g}) is unresolved"}
    reasons = [{"link": lk["text"], "a": lk["a"], "b": lk["b"]} for lk in res.links]
    details = {"names": names,
               "cross_accuracy": _mat(res.accuracy), "auc": _mat(res.auc),
               "grid_auc": _mat(res.grid_auc) if res.grid_auc is not None else None,
               "grid_correlation": _mat(res.grid_correlation) if res.grid_correlation is not None else None,
               "period": res.period,
               "fingerprint_correlation": _mat(res.fp_correlation), "relatedness": _mat(res.relatedness),
               "links": res.links, "linkage": res.clustering.linkage,
               "self_detection_z": [_num(v) for v in (res.self_z if res.self_z is not None else [])],
               "matrix_orientation": "rows: fingerprint; columns: generator whose held-out images are tested",
               "timing": {k: round(v, 3) for k, v in res.timing.items()}}
    out.append(Record(command="lineage", inputs=summary_inputs, features={"n_families": len(res.clustering.families)},
                      directions={"n_families": "count"}, decision=decision, reasons=reasons,
                      details=details, provenance=prov))
    return out


def _cell(m: np.ndarray | None, i: int, j: int) -> float:
    return float("nan") if m is None else float(m[i, j])


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _mat(m: np.ndarray) -> list[list[float | None]]:
    return [[_num(x) for x in row] for row in np.asarray(m, dtype=np.float64)]


# ----------------------------------------------------------------------------- text and picture
def _basis(res: LineageResult) -> np.ndarray:
    return {"accuracy": res.accuracy, "auc": res.auc, "grid": res.grid_auc}[res.metric]


def matrix_text(res: LineageResult) -> str:
    """A terminal rendering: the accuracy matrix, then families and their evidence."""
    import io

    from rich.console import Console
    from rich.table import Table

    t = Table()
    t.add_column("fingerprint")
    for nm in res.names:
        t.add_column(nm, justify="right")
    for i, nm in enumerate(res.names):
        cells = []
        for j in range(len(res.names)):
            if (i, j) in res.errors:
                cells.append("error")
            else:
                cells.append((_pct if res.metric == "accuracy" else _auc_text)(_basis(res)[i, j]))
        t.add_row(nm, *cells)
    buf = io.StringIO()
    con = Console(file=buf, width=160)
    what = {"accuracy": "balanced accuracy", "auc": "AUC", "grid": f"grid AUC, period {res.period}"}[res.metric]
    con.print(f"cross-detection {what} (row: fingerprint; column: held-out images of)")
    con.print(t)
    fams = "; ".join("{" + ", ".join(f) + "}" for f in res.clustering.families)
    con.print(f"families (threshold {res.clustering.threshold:g} on 1 - relatedness): {fams}")
    if res.clustering.unresolved:
        con.print(f"unresolved (self-detection not above chance): {', '.join(res.clustering.unresolved)}")
    for lk in res.links:
        con.print(f"  {lk['text']}")
    return buf.getvalue()


def plot(res: LineageResult, path: str, inputs: Sequence[str] = ()) -> None:
    """Heatmap of the cross-detection matrix with the dendrogram above it, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    from fingerprint_cli import atomic

    names = res.names
    n = len(names)
    if res.clustering.linkage:
        order = dendrogram(np.asarray(res.clustering.linkage), no_plot=True)["leaves"]
    else:
        order = list(range(n))
    size = max(4.0, 1.0 + 0.9 * n)
    fig = plt.figure(figsize=(size + 1.5, size + 1.8))
    ax_d = fig.add_axes([0.22, 0.78, 0.62, 0.17])
    ax_h = fig.add_axes([0.22, 0.12, 0.62, 0.64])
    ax_c = fig.add_axes([0.86, 0.12, 0.03, 0.64])
    if res.clustering.linkage:
        import warnings

        with warnings.catch_warnings():  # a tree whose links are all at height 0 makes scipy warn about ylim
            warnings.simplefilter("ignore", UserWarning)
            dendrogram(np.asarray(res.clustering.linkage), ax=ax_d, no_labels=True,
                       color_threshold=res.clustering.threshold, above_threshold_color="grey")
        ax_d.axhline(res.clustering.threshold, color="red", lw=0.8, ls="--")
        ax_d.set_ylabel("1 - relatedness")
        ax_d.set_ylim(0, 1.05)
    ax_d.set_xticks([])
    for s in ("top", "right"):
        ax_d.spines[s].set_visible(False)
    m = _basis(res)[np.ix_(order, order)]
    im = ax_h.imshow(m, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    ax_h.set_xticks(range(n))
    shown = [names[k] + (" (?)" if names[k] in res.clustering.unresolved else "") for k in order]
    ax_h.set_xticklabels(shown, rotation=45, ha="right")
    ax_h.set_yticks(range(n))
    ax_h.set_yticklabels(shown)
    ax_h.set_xlabel("held-out images of")
    ax_h.set_ylabel("fingerprint")
    for a in range(n):
        for b in range(n):
            v = m[a, b]
            txt = "-" if not np.isfinite(v) else (f"{100 * v:.0f}" if res.metric == "accuracy" else f"{v:.2f}")
            ax_h.text(b, a, txt, ha="center", va="center",
                      color="white" if np.isfinite(v) and v < 0.8 else "black", fontsize=9)
    fig.colorbar(im, cax=ax_c, label={"accuracy": "balanced accuracy", "auc": "AUC",
                                      "grid": f"grid AUC (period {res.period})"}[res.metric])
    fams = " | ".join(", ".join(f) for f in res.clustering.families)
    if res.clustering.unresolved:
        fams += "   (unresolved: " + ", ".join(res.clustering.unresolved) + ")"
    fig.suptitle(f"families: {fams}", fontsize=9, y=0.995)
    p = Path(path)
    atomic.refuse_overwrite_of_inputs(p, inputs)
    with atomic.atomic_path(p) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # long names stay inside
    plt.close(fig)


# ----------------------------------------------------------------------------- wiring to fingerprint_cli.dif
def load_fingerprints(paths: Sequence[str]) -> list[Any]:
    """Load fingerprint artifacts (``Fingerprint.load``); unreadable ones raise InputError naming the file."""
    from fingerprint_cli.dif.fingerprint import Fingerprint
    from fingerprint_cli.errors import FpxError

    fps = []
    for p in paths:
        if not Path(p).is_file():
            raise InputError("no such fingerprint file", p)
        try:
            fps.append(Fingerprint.load(p))
        except FpxError:
            raise
        except Exception as exc:  # a file that is not a fingerprint artifact
            raise InputError(f"not a readable fingerprint artifact ({exc.__class__.__name__}: {exc})", p) from exc
    return fps


def run(paths: Sequence[str], *, images: Sequence[str] = (), real_dir: str | Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD, max_shift: int = DEFAULT_MAX_SHIFT, metric: str = DEFAULT_METRIC,
        period: int = DEFAULT_PERIOD, device: str = "auto", cache: Any = None,
        on_progress: Callable[..., None] | None = None) -> tuple[LineageResult, dict[str, Any]]:
    """Load the fingerprints at ``paths`` and run :func:`analyse` with one shared residual cache.

    ``real_dir``: one folder for every fingerprint, or ``--real`` values (``DIR`` and/or ``NAME=DIR``).
    ``cache``: a :class:`~fingerprint_cli.dif.residuals.ResidualCache` to use (e.g. a disk cache shared with
    earlier runs); by default a fresh in-memory one.
    Returns the result and the provenance block for records.
    """
    from fingerprint_cli import images as images_mod
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.residuals import ResidualCache

    paths = [str(p) for p in paths]
    fps = load_fingerprints(paths)
    check_compatible(fps, paths)
    names = [fp.name for fp in fps]
    img_map = parse_images_option(images, names)
    real_vals = [real_dir] if isinstance(real_dir, (str, Path)) else list(real_dir or [])
    real_map = parse_images_option([str(v) for v in real_vals], names, "--real", allow_bare=True)
    if cache is None:
        cache = _make_cache(ResidualCache, fps[0], device)

    def correlate(fp: Any, ps: list[str]) -> np.ndarray:
        return _correlations(detect, fp, ps, cache)

    def grid_correlate(fp: Any, ps: list[str]) -> np.ndarray:
        return _grid_correlations(detect, fp, ps, cache, period)

    crop = int(getattr(fps[0], "crop", 0) or 0)
    if metric == "grid" and crop and not 1 <= int(period) <= crop // 2:
        raise UsageError(f"--period {period} does not fit the {crop}-px fingerprints: use 1 to {crop // 2} "
                         "(at least two tiles per side)")
    spatial = all(getattr(fp, "method", "dif") != "spectral" for fp in fps)
    if metric == "grid" and not spatial:
        raise UsageError("--metric grid needs spatial fingerprints (method dif or average), not spectral ones: "
                         "use --metric accuracy or auc")
    res = analyse(fps, paths, [images_mod.sha256_file(p) for p in paths], images=img_map, real_dir=real_map or None,
                  correlate=correlate, grid_correlate=grid_correlate if spatial else None,
                  is_generated=lambda fp, r: detect.is_generated(fp, r),
                  image_sha256=images_mod.sha256_file, threshold=threshold, max_shift=max_shift, metric=metric,
                  period=period, on_progress=on_progress)
    prov = _provenance(fps[0], threshold, max_shift)
    prov["metric"] = metric
    prov["period"] = int(period)
    return res, prov


def _make_cache(ResidualCache: Any, fp: Any, device: str) -> Any:
    """One in-memory residual cache for the whole matrix (keyed by image sha256, denoiser sha256, crop)."""
    return ResidualCache()


def _correlations(detect: Any, fp: Any, paths: list[str], cache: Any) -> np.ndarray:
    """ρ of each image against ``fp``; images that fail to load give NaN (left out of the matrix)."""
    failed: dict[str, str] = {}
    vals, infos = detect.correlations_with_info(fp, paths, cache=cache,
                                                on_error=lambda p, exc: failed.__setitem__(str(p), str(exc)))
    got = {str(info["path"]): float(v) for info, v in zip(infos, np.asarray(vals, dtype=np.float64).reshape(-1))}
    return np.array([got.get(str(p), np.nan) for p in paths], dtype=np.float64)


def _grid_correlations(detect: Any, fp: Any, paths: list[str], cache: Any, period: int) -> np.ndarray:
    """ρ_grid of each image against ``fp`` (:func:`grid_rho`, oriented); NaN for images that fail to load.
    Residuals come from the same cache as :func:`_correlations`, so they are computed once."""
    from fingerprint_cli.dif.residuals import compute

    res, infos = compute(list(paths), detect.denoiser_for(fp), fp.crop, cache=cache,
                         on_error=lambda p, exc: None, allow_smaller=True)
    vals = grid_rho(res, _pattern_array(fp), period, _orientation(fp))
    got = {str(info["path"]): float(v) for info, v in zip(infos, vals)}
    return np.array([got.get(str(p), np.nan) for p in paths], dtype=np.float64)


def _as_numpy(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def _provenance(fp: Any, threshold: float, max_shift: int) -> dict[str, Any]:
    import datetime
    import platform

    import fingerprint_cli

    meta = fp.meta
    return {"fpx_version": fingerprint_cli.__version__, "denoiser": meta.get("denoiser"), "crop": meta.get("crop"),
            "method": getattr(fp, "method", meta.get("method")), "threshold": threshold, "max_shift": max_shift,
            "numpy": np.__version__, "python": platform.python_version(),
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
