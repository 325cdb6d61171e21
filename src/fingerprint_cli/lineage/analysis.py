"""`fpx lineage` analysis: which images test which fingerprint, the matrices, and the wiring to
``fingerprint_cli.dif`` (see :mod:`fingerprint_cli.lineage`)."""

from __future__ import annotations

import datetime
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fingerprint_cli import __version__, batch
from fingerprint_cli.dif import condition
from fingerprint_cli.dif.augment import Augmentation
from fingerprint_cli.dif.augment import apply as augment_apply
from fingerprint_cli.errors import FpxError, InputError, UsageError
from fingerprint_cli.images import sha256_file
from fingerprint_cli.lineage.stats import (CONTROLS, DEFAULT_MAX_SHIFT, DEFAULT_METRIC, DEFAULT_PERIOD,
                                           DEFAULT_THRESHOLD, METRIC_LABELS, METRICS, MIN_SELF_Z, Clustering, _auc_text, _pct,
                                           _standardise, auc, chance_z, balanced_accuracy, families, grid_component,
                                           grid_rho, link_evidence, pattern_correlation)
from fingerprint_cli.registry import suggest

# fingerprint_cli.dif.{fingerprint,detect,residuals} import torch when imported: they stay inside the functions
# that use them, so `fpx --help` and the pure analysis never load it.

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
            hint = suggest(k, names, n=1) or f"; fingerprints: {', '.join(names)}"
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
    control: str = "none"               # "format": each column's real negatives re-saved in its images' format
    control_formats: dict[str, str] = field(default_factory=dict)   # name -> "jpegQ" / "lossless" (control only)

    def matrix(self, metric: str) -> np.ndarray | None:
        """The cross-detection matrix of ``metric`` ("grid", "accuracy" or "auc")."""
        return {"accuracy": self.accuracy, "auc": self.auc, "grid": self.grid_auc}[metric]


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
            control_views: Mapping[str, Any] | None = None,
            control_correlate: Callable[[Any, list[str], Any], tuple[np.ndarray, np.ndarray | None]] | None = None,
            on_progress: Callable[..., None] | None = None) -> LineageResult:
    """Compute the full lineage analysis.

    ``correlate(fp, paths) -> ρ`` (one value per path; NaN for an image it could not read),
    ``grid_correlate(fp, paths) -> ρ_grid`` (:func:`grid_rho` of each image's residual, oriented; needed for
    ``metric="grid"``), ``is_generated(fp, ρ) -> bool array`` and ``image_sha256(path)`` are injected so the
    pure logic can be tested with synthetic fingerprints; :func:`run` wires them to ``fingerprint_cli.dif``.

    ``control_views`` ({generator name j: view}, see :data:`CONTROLS`): the real images of every cell in
    column j are the real test images after j's view (``control_correlate(fp, paths, view) -> (ρ, ρ_grid or
    None)``) instead of as they are; a column without a view (or a None view) keeps them as they are.

    Steps: the held-out generated and real test sets of every fingerprint; the hashes of every image (never
    score a fingerprint on an image it was fitted on); ρ (and ρ_grid) of every fingerprint on every image once;
    the cross-detection matrices; the fingerprint-to-fingerprint correlations; families from the chosen metric.
    """
    t0 = time.perf_counter()
    _check_metric(metric, grid_correlate)
    names = [fp.name for fp in fps]
    tests = _test_sets(fps, dict(images or {}))
    reals, real_source = _real_sets(fps, real_dir)
    _require_test_images(names, tests, reals)
    train_hashes = [_train_hashes(fp) for fp in fps]
    all_paths = sorted({p for t in tests for p in t.paths} | {p for r in reals for p in r})
    sha = _hashes(all_paths, image_sha256)
    t1 = time.perf_counter()
    rho, rho_grid = _correlations(fps, all_paths, sha, train_hashes, correlate, grid_correlate, on_progress)
    views = {k: v for k, v in (control_views or {}).items() if v is not None}
    ctrl = _control_correlations(fps, reals, sha, train_hashes, views, control_correlate)
    t2 = time.perf_counter()
    negatives = _Negatives(rho, rho_grid, views, ctrl)
    m = _detection_matrices(fps, names, tests, reals, sha, train_hashes, negatives, is_generated)
    corr, gcorr, shifts = _pattern_matrices(fps, period, max_shift, grid=bool(rho_grid))
    warnings = _unreadable_warning(all_paths, sha, train_hashes, rho)
    rel, z_self, cl, links = _families_and_links(names, m, gcorr if metric == "grid" else corr, metric, threshold,
                                                 warnings)
    t3 = time.perf_counter()
    return LineageResult(
        names=names, paths=list(paths), sha256=list(sha256), accuracy=m.acc, tpr=m.tpr, tnr=m.tnr, auc=m.au,
        n_generated=m.ng, n_real=m.nr, n_excluded=m.nx, fp_correlation=corr, fp_shift=shifts, relatedness=rel,
        grid_auc=m.gau if rho_grid else None, grid_correlation=gcorr if rho_grid else None, period=int(period),
        clustering=cl, links=links, self_z=z_self, test_sources={t.name: t.source for t in tests},
        real_source=real_source, errors=m.errors, warnings=warnings, metric=metric,
        timing={"prepare_s": t1 - t0, "correlations_s": t2 - t1, "matrix_s": t3 - t2, "total_s": t3 - t0,
                "images": float(len(all_paths))})


def _check_metric(metric: str, grid_correlate: Callable | None) -> None:
    """Refuse an unknown metric, and the grid metric without a grid correlation."""
    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r} (choose {', '.join(METRICS)})")
    if metric == "grid" and grid_correlate is None:
        raise UsageError("--metric grid needs spatial fingerprints (method dif or average)")


def _train_hashes(fp: Any) -> set[str]:
    """sha256 of every image (generated and real) the fingerprint was fitted on."""
    return {h for _, h in split_of(fp, "train", "generated") + split_of(fp, "train", "real") if h}


def _families_and_links(names: list[str], m: "_Matrices", pair_corr: np.ndarray, metric: str, threshold: float,
                        warnings: list[str]):
    """Relatedness, self-detection z, families and the evidence of each in-family link, from the matrix of
    ``metric``; an unresolved fingerprint adds a warning to ``warnings``."""
    basis = m.of(metric)
    rel, z_self, cl = families(names, basis, m.ng, m.nr, metric, threshold)
    if cl.unresolved:
        warnings.append(_unresolved_warning(names, basis, metric, cl.unresolved))
    links = link_evidence(names, basis, pair_corr, cl, label=METRIC_LABELS[metric],
                          corr_label="grid correlation" if metric == "grid" else "fingerprint correlation",
                          z=chance_z(basis, m.ng, m.nr, metric))
    return rel, z_self, cl, links


def _test_sets(fps: Sequence[Any], images: Mapping[str, str]) -> list[TestSet]:
    """Generated test images per generator: its ``--images NAME=DIR``, else the artifact's held-out split."""
    return [TestSet(fp.name, batch.expand_paths([images[fp.name]]), images[fp.name]) if fp.name in images
            else TestSet(fp.name, [p for p, _ in split_of(fp, "test", "generated")], "artifact") for fp in fps]


def _real_sets(fps: Sequence[Any], real_dir: str | Mapping[str, str] | None) -> tuple[list[list[str]], Any]:
    """Real test images per fingerprint: its ``--real NAME=DIR``, else the ``--real DIR`` shared by everyone,
    else its own held-out real split (a fingerprint fitted against processed "real" images, e.g. bicubic round
    trips, must be tested against the same kind); and how to describe where they came from."""
    real_map = dict(real_dir) if isinstance(real_dir, Mapping) else ({"": real_dir} if real_dir else {})
    expanded: dict[str, list[str]] = {}
    reals = []
    for fp in fps:
        d = real_map.get(fp.name, real_map.get(""))
        if d is None:
            reals.append([p for p, _ in split_of(fp, "test", "real")])
            continue
        if d not in expanded:
            expanded[d] = batch.expand_paths([d])
        reals.append(list(expanded[d]))
    if not real_map:
        return reals, "artifact"
    if set(real_map) == {""}:
        return reals, real_map[""]
    return reals, {fp.name: real_map.get(fp.name, real_map.get("", "artifact")) for fp in fps}


def _require_test_images(names: Sequence[str], tests: Sequence[TestSet], reals: Sequence[list[str]]) -> None:
    missing = [t.name for t in tests if not t.paths]
    if missing:
        raise UsageError(f"no held-out images for {', '.join(missing)}: the artifact records no test split; "
                         f"give --images {missing[0]}=DIR")
    no_real = [nm for nm, r in zip(names, reals) if not r]
    if no_real:
        raise UsageError(f"no held-out real images for {', '.join(no_real)}: give --real DIR")


def _hashes(paths: Sequence[str], image_sha256: Callable[[str], str]) -> dict[str, str | None]:
    sha: dict[str, str | None] = {}
    for p in paths:
        try:
            sha[p] = image_sha256(p)
        except Exception:  # noqa: BLE001 - unreadable: its ρ will be NaN and it is left out
            sha[p] = None
    return sha


def _control_correlations(fps, reals, sha, train_hashes, views: Mapping[str, Any],
                          control_correlate: Callable | None) -> list[dict[Any, tuple[dict, dict | None]]]:
    """For each fingerprint i and each distinct control view: ρ (and ρ_grid) of i's real test images after the
    view, as {path: value} maps — computed once per (fingerprint, view), shared by every column using it."""
    if views and control_correlate is None:
        raise UsageError("control views need a control_correlate function")
    out: list[dict[Any, tuple[dict, dict | None]]] = []
    for i, fp in enumerate(fps):
        need = [p for p in reals[i] if sha.get(p) is not None and sha[p] not in train_hashes[i]]
        per_view: dict[Any, tuple[dict, dict | None]] = {}
        for v in dict.fromkeys(views.values()):
            r, g = control_correlate(fp, need, v)
            per_view[v] = (dict(zip(need, np.asarray(r, dtype=np.float64).tolist())),
                           None if g is None else dict(zip(need, np.asarray(g, dtype=np.float64).tolist())))
        out.append(per_view)
    return out


@dataclass
class _Negatives:
    """Where the real side of cell (i, j) reads its ρ / ρ_grid: i's images as they are, or — when column j has a
    control view — the same images after that view."""
    rho: list[dict[str, float]]
    rho_grid: list[dict[str, float]]
    views: Mapping[str, Any]
    ctrl: list[dict[Any, tuple[dict, dict | None]]]

    def of(self, i: int, column: str) -> tuple[Mapping[str, float], Mapping[str, float] | None]:
        """(ρ map, ρ_grid map or None) of fingerprint i's real images for the column of generator ``column``."""
        v = self.views.get(column)
        if v is not None:
            return self.ctrl[i][v]
        return self.rho[i], (self.rho_grid[i] if self.rho_grid else None)


def _correlations(fps, all_paths, sha, train_hashes, correlate, grid_correlate, on_progress):
    """ρ (and ρ_grid) of each fingerprint on every readable image it was not fitted on, computed once."""
    rho: list[dict[str, float]] = []
    rho_grid: list[dict[str, float]] = []
    for i, fp in enumerate(fps):
        need = [p for p in all_paths if sha[p] is not None and sha[p] not in train_hashes[i]]
        rho.append(dict(zip(need, np.asarray(correlate(fp, need), dtype=np.float64).tolist())))
        if grid_correlate is not None:
            rho_grid.append(dict(zip(need, np.asarray(grid_correlate(fp, need), dtype=np.float64).tolist())))
        if on_progress:
            on_progress(1, fingerprint=fp.name)
    return rho, rho_grid


@dataclass
class _Matrices:
    acc: np.ndarray
    tpr: np.ndarray
    tnr: np.ndarray
    au: np.ndarray
    gau: np.ndarray
    ng: np.ndarray
    nr: np.ndarray
    nx: np.ndarray
    errors: dict[tuple[int, int], BaseException]

    def of(self, metric: str) -> np.ndarray:
        """The matrix ``metric`` ("accuracy", "auc" or "grid") drives the families with."""
        return {"accuracy": self.acc, "auc": self.au, "grid": self.gau}[metric]


def _usable(paths: Sequence[str], sha: Mapping[str, str | None], train: set[str], rho_i: Mapping[str, float]
            ) -> list[str]:
    """The paths that were read (a sha256), are not training images of the fingerprint, and have a finite ρ."""
    return [p for p in paths if sha.get(p) and sha[p] not in train and np.isfinite(rho_i.get(p, np.nan))]


def _fill_cell(m: _Matrices, i: int, j: int, fp: Any, keep: list[str], real_i: list[str],
               rho_i: Mapping[str, float], grid_i: Mapping[str, float] | None, is_generated: Callable,
               neg: tuple[Mapping[str, float], Mapping[str, float] | None]) -> bool:
    """Counts, balanced accuracy, AUC (and grid AUC) of cell (i, j) — generated side from ``rho_i`` /
    ``grid_i``, real side from ``neg`` (ρ, ρ_grid maps); False when a side has no usable image."""
    neg_rho, neg_grid = neg
    r_gen = np.array([rho_i[p] for p in keep])
    r_real = np.array([neg_rho[p] for p in real_i])
    m.ng[i, j], m.nr[i, j] = r_gen.size, r_real.size
    if r_gen.size == 0 or r_real.size == 0:
        return False
    g_call = np.asarray(is_generated(fp, r_gen), dtype=bool)
    r_call = np.asarray(is_generated(fp, r_real), dtype=bool)
    m.acc[i, j], m.tpr[i, j], m.tnr[i, j] = balanced_accuracy(g_call, r_call)
    sign = _orientation(fp)
    m.au[i, j] = auc(sign * r_gen, sign * r_real)
    if grid_i is not None:
        m.gau[i, j] = auc(np.array([grid_i[p] for p in keep]), np.array([(neg_grid or grid_i)[p] for p in real_i]))
    return True


def _detection_matrices(fps, names, tests, reals, sha, train_hashes, neg: _Negatives, is_generated) -> _Matrices:
    """Cell (i, j): fingerprint i on generator j's held-out images against i's real test images (after j's
    control view, if any) — balanced accuracy of i's own rule, AUC of ρ, AUC of ρ_grid, and the counts."""
    n = len(fps)
    m = _Matrices(*(np.full((n, n), np.nan) for _ in range(5)),
                  *(np.zeros((n, n), dtype=int) for _ in range(3)), errors={})
    rho, rho_grid = neg.rho, neg.rho_grid
    for i, fp in enumerate(fps):
        th = train_hashes[i]
        for j in range(n):
            neg_ij = neg.of(i, names[j])
            real_i = _usable(reals[i], sha, th, neg_ij[0])
            cand = [p for p in tests[j].paths if sha.get(p)]
            m.nx[i, j] = sum(1 for p in cand if sha[p] in th)
            keep = _usable(cand, sha, th, rho[i])
            if not _fill_cell(m, i, j, fp, keep, real_i, rho[i], rho_grid[i] if rho_grid else None, is_generated,
                              neg_ij):
                m.errors[(i, j)] = InputError(
                    f"no usable held-out images of {names[j]} for fingerprint {names[i]} "
                    f"({m.nx[i, j]} excluded as its training images)", tests[j].source)
    return m


def _grid_correlations(fps, pats: list[np.ndarray | None], period: int) -> np.ndarray:
    """Correlation of every two fingerprints' oriented, standardised grid components (NaN where either has no
    spatial pattern or the shapes differ)."""
    n = len(fps)
    gcorr = np.full((n, n), np.nan)
    grids = [None if pats[i] is None else _standardise(grid_component(pats[i], period)) * _orientation(fps[i])
             for i in range(n)]
    for i in range(n):
        for j in range(n):
            if grids[i] is not None and grids[j] is not None and grids[i].shape == grids[j].shape:
                gcorr[i, j] = float((grids[i] * grids[j]).mean())
    return gcorr


def _pattern_matrices(fps, period: int, max_shift: int, grid: bool):
    """Fingerprint-to-fingerprint correlations: whole pattern (best shift within ``max_shift``) and, with
    ``grid``, of their grid-periodic components."""
    n = len(fps)
    corr = np.full((n, n), np.nan)
    shifts: list[list[tuple[int, int]]] = [[(0, 0)] * n for _ in range(n)]
    pats = [_pattern_array(fp) for fp in fps]
    gcorr = _grid_correlations(fps, pats, period) if grid else np.full((n, n), np.nan)
    for i in range(n):
        corr[i, i] = 1.0
        for j in range(i + 1, n):
            if pats[i] is not None and pats[j] is not None and pats[i].shape == pats[j].shape:
                c, s = pattern_correlation(pats[i], pats[j], max_shift)
                corr[i, j] = corr[j, i] = c
                shifts[i][j], shifts[j][i] = s, (-s[0], -s[1])
    return corr, gcorr, shifts


def _unreadable_warning(all_paths, sha, train_hashes, rho) -> list[str]:
    n = len(rho)
    bad = [p for p in all_paths if sha[p] is None
           or any(sha[p] not in train_hashes[i] and not np.isfinite(rho[i].get(p, np.nan)) for i in range(n))]
    return [f"{len(bad)} image(s) could not be read and were left out, e.g. {bad[0]}"] if bad else []


def _unresolved_warning(names, basis: np.ndarray, metric: str, unresolved: Sequence[str]) -> str:
    what = {"accuracy": "accuracy", "auc": "AUC", "grid": "grid AUC"}[metric]
    fmt = _pct if metric == "accuracy" else _auc_text
    diag = ", ".join(f"{x} ({what} {fmt(basis[names.index(x), names.index(x)])})" for x in unresolved)
    return (f"unresolved (self-detection not above chance, z < {MIN_SELF_Z:g}): {diag} — these "
            "fingerprints do not detect their own held-out images, so they give no evidence either "
            "way (refit with more images or a larger --crop; if that does not help, the generator "
            "leaves no trace these fingerprints can see)")


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


# ----------------------------------------------------------------------------- wiring to fingerprint_cli.dif
def load_fingerprints(paths: Sequence[str]) -> list[Any]:
    """Load fingerprint artifacts (``Fingerprint.load``); unreadable ones raise InputError naming the file."""
    from fingerprint_cli.dif.fingerprint import Fingerprint  # imports torch

    fps = []
    for p in paths:
        if not Path(p).is_file():
            raise InputError("is a folder, not a fingerprint file" if Path(p).is_dir() else "no such fingerprint file",
                             p)
        try:
            fps.append(Fingerprint.load(p))
        except FpxError:
            raise
        except Exception as exc:  # a file that is not a fingerprint artifact
            raise InputError(f"not a readable fingerprint artifact ({exc.__class__.__name__}: {exc})", p) from exc
    return fps


class _Correlator:
    """ρ and ρ_grid of one fingerprint on a list of images, through one residual cache. :func:`analyse` asks for
    ρ and then ρ_grid of the same images per fingerprint: their residuals are loaded (and hashed) once."""

    def __init__(self, cache: Any, aug: Any, period: int):
        from fingerprint_cli.dif import detect  # imports torch

        self.detect, self.cache, self.aug, self.period = detect, cache, aug, period
        self._last: dict[str, Any] = {}

    def _residuals_for(self, fp: Any, ps: list[str]) -> tuple[Any, list[dict]]:
        key = (id(fp), tuple(ps))
        if self._last.get("key") != key:
            self._last.update(key=key, value=_residuals(self.detect, fp, ps, self.cache, self.aug))
        return self._last["value"]

    def correlate(self, fp: Any, ps: list[str]) -> np.ndarray:
        res, infos = self._residuals_for(fp, ps)
        return _by_path(ps, infos, self.detect.correlate_residuals(fp, res))

    def grid_correlate(self, fp: Any, ps: list[str]) -> np.ndarray:
        res, infos = self._residuals_for(fp, ps)
        return _by_path(ps, infos, grid_rho(res, _pattern_array(fp), self.period, _orientation(fp)))

    def is_generated(self, fp: Any, r: np.ndarray) -> np.ndarray:
        return self.detect.is_generated(fp, r)

    def control_correlate(self, fp: Any, ps: list[str], view: "FormatView") -> tuple[np.ndarray, np.ndarray]:
        """ρ and ρ_grid of ``ps`` re-saved in ``view``'s format (then through the equaliser, if any), each view's
        residual cached per image like any augmentation."""
        chain = _Chain(tuple(view.steps()) + ((self.aug,) if self.aug is not None else ()))
        res, infos = _residuals(self.detect, fp, ps, self.cache, chain, window=_chain_window)
        return (_by_path(ps, infos, self.detect.correlate_residuals(fp, res)),
                _by_path(ps, infos, grid_rho(res, _pattern_array(fp), self.period, _orientation(fp))))


@dataclass(frozen=True)
class FormatView:
    """The format of one generator's images, as a control view of the real photos: JPEG at ``quality`` (the IJG
    quality its images' tables match), or None for lossless (the photos stay as they are)."""
    quality: int | None = None

    @property
    def id(self) -> str:
        return "lossless" if self.quality is None else f"jpeg{int(self.quality)}"

    def steps(self) -> list[Augmentation]:
        """The augmentations that re-save a photo's crop window in this format (none for lossless)."""
        return [] if self.quality is None else [Augmentation(quality=int(self.quality))]


def format_of(paths: Sequence[str]) -> FormatView:
    """The format most of ``paths`` carry (their headers, :func:`..dif.condition.probe_many`): JPEG at the median
    IJG quality of the JPEG ones when they are the majority, else lossless."""
    conds = condition.probe_many(paths)
    qs = [c["jpeg_quality"] for c in conds if not c.get("lossless") and c.get("jpeg_quality") is not None]
    if not conds or len(qs) * 2 <= len(conds):
        return FormatView(None)
    return FormatView(int(np.median(qs)))


@dataclass(frozen=True)
class _Chain:
    """Augmentations applied in turn to an image's centre window (a control view, then the equaliser); its
    ``id`` keys the residual cache ("q75", "q75-q90") — one step is exactly that :class:`Augmentation`."""
    parts: tuple

    @property
    def id(self) -> str:
        return "-".join(a.id for a in self.parts) or "none"


def _chain_window(pixels: np.ndarray, chain: _Chain, crop: int, path: str) -> np.ndarray:
    """The centre ``crop`` window after every step of ``chain`` (:func:`..dif.augment.apply` each)."""
    out = augment_apply(pixels, chain.parts[0] if chain.parts else Augmentation(), crop, path)
    for a in chain.parts[1:]:
        out = augment_apply(out, a, crop, path)
    return out


def _grid_applicable(fps: Sequence[Any], metric: str, period: int) -> bool:
    """Whether the grid matrices can be computed (spatial fingerprints, a period that fits the crop); refuses
    ``metric="grid"`` when they cannot."""
    crop = int(getattr(fps[0], "crop", 0) or 0)
    fits = not crop or 1 <= int(period) <= crop // 2
    if metric == "grid" and not fits:
        raise UsageError(f"--period {period} does not fit the {crop}-px fingerprints: use 1 to {crop // 2} "
                         "(at least two tiles per side)")
    spatial = all(getattr(fp, "method", "dif") != "spectral" for fp in fps)
    if metric == "grid" and not spatial:
        raise UsageError("--metric grid needs spatial fingerprints (method dif or average), not spectral ones: "
                         "use --metric accuracy or auc")
    return spatial and fits


def _folder_options(names: list[str], images: Sequence[str], real_dir: str | Sequence[str] | None
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """``--images NAME=DIR`` and ``--real [NAME=]DIR`` values, checked against the fingerprints' names."""
    img_map = parse_images_option(images, names)
    real_vals = [real_dir] if isinstance(real_dir, (str, Path)) else list(real_dir or [])
    return img_map, parse_images_option([str(v) for v in real_vals], names, "--real", allow_bare=True)


def run(paths: Sequence[str], *, images: Sequence[str] = (), real_dir: str | Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD, max_shift: int = DEFAULT_MAX_SHIFT, metric: str = DEFAULT_METRIC,
        period: int = DEFAULT_PERIOD, device: str = "auto", cache: Any = None, equalise: str | None = None,
        control: str = "none", on_progress: Callable[..., None] | None = None) -> tuple[LineageResult, dict[str, Any]]:
    """Load the fingerprints at ``paths`` and run :func:`analyse` with one shared residual cache.

    ``equalise`` ("jpegQ", e.g. "jpeg90"; None/"none" = off): every test image — generated and real alike —
    is re-saved as JPEG at quality Q before its residual (:func:`equaliser`), so generated and real images
    share one format and a link cannot come from both generators differing from the real class the same way
    (lossless vs JPEG).

    ``control`` (:data:`CONTROLS`): ``"format"`` tests each column j against the real photos re-saved in j's
    format (:func:`format_of` of j's test images; with ``equalise`` the copies are equalised too), so a link
    must beat a control that shares j's format but not its generator; a warning says when the real photos are
    JPEG and a column is lossless (no lossless copy of a JPEG can be made: that column keeps them as they are).

    ``real_dir``: one folder for every fingerprint, or ``--real`` values (``DIR`` and/or ``NAME=DIR``).
    ``cache``: a :class:`~fingerprint_cli.dif.residuals.ResidualCache` to use (e.g. a disk cache shared with
    earlier runs); by default a fresh in-memory one.
    Returns the result and the provenance block for records.
    """
    from fingerprint_cli.dif.residuals import ResidualCache  # imports torch

    if control not in CONTROLS:
        raise UsageError(f"unknown --control {control!r} (choose {', '.join(CONTROLS)})")
    paths = [str(p) for p in paths]
    fps = load_fingerprints(paths)
    check_compatible(fps, paths)
    img_map, real_map = _folder_options([fp.name for fp in fps], images, real_dir)
    if cache is None:
        cache = _make_cache(ResidualCache, fps[0], device)
    aug = equaliser(equalise)
    rc = _Correlator(cache, aug, period)
    grid = _grid_applicable(fps, metric, period)
    formats = _control_formats(fps, img_map) if control == "format" else {}
    # the grid matrices are reported with every metric when they can be computed
    res = analyse(fps, paths, [sha256_file(p) for p in paths], images=img_map, real_dir=real_map or None,
                  correlate=rc.correlate, grid_correlate=rc.grid_correlate if grid else None,
                  is_generated=rc.is_generated, image_sha256=sha256_file, threshold=threshold,
                  max_shift=max_shift, metric=metric, period=period, on_progress=on_progress,
                  control_views={k: v for k, v in formats.items() if v.quality is not None},
                  control_correlate=rc.control_correlate)
    res.control = control
    res.control_formats = {k: v.id for k, v in formats.items()}
    res.warnings.extend(_control_warnings(fps, real_map, formats))
    if aug is None:  # with --equalise every image shares one format: no format confound is left
        gen_kind, cell_real = _format_kinds(fps, img_map, real_map, formats)
        mark_format_confounds(res, gen_kind, cell_real)
    prov = _provenance(fps[0], threshold, max_shift)
    prov.update(metric=metric, period=int(period), equalise=aug.id if aug is not None else "none", control=control)
    return res, prov


def _kind(view: FormatView) -> str:
    """"lossless" or "jpeg": the format class a fingerprint can learn instead of a generator."""
    return "lossless" if view.quality is None else "jpeg"


def _format_kinds(fps: Sequence[Any], img_map: Mapping[str, str], real_map: Mapping[str, str],
                  controls: Mapping[str, FormatView]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The format class of each generator's test images, and of the real photos each cell (fingerprint i,
    column j) tests them against: i's real photos as they are, or re-saved as JPEG in a ``--control format``
    column of JPEG images (``controls``: {name: view}, empty without the control)."""
    gen = {name: _kind(v) for name, v in _control_formats(fps, img_map).items()}
    reals, _ = _real_sets(fps, real_map or None)
    real = {fp.name: _kind(format_of(r)) for fp, r in zip(fps, reals)}
    cell = {i: {j: ("jpeg" if controls.get(j) is not None and controls[j].quality is not None else real[i])
                for j in gen} for i in gen}
    return gen, cell


def mark_format_confounds(res: "LineageResult", gen_kind: Mapping[str, str],
                          cell_real: Mapping[str, Mapping[str, str]]) -> None:
    """Turn a supported link that a shared format explains into an unresolved one.

    Link (a, b) rests on a's fingerprint telling b's images from a's real photos and the other way round. When
    both generators' images are of one format class (``gen_kind``: "lossless" / "jpeg") and the real photos of
    both cells are of the other (``cell_real[i][j]``), two fingerprints that only learned "lossless, not JPEG"
    (or the reverse) detect each other's images perfectly: the link is no evidence of shared lineage (the shipped
    DALL-E 3 and LDM fingerprints, unrelated, linked at p = 4.5e-8 against the JPEG photos they were fitted with).
    Such a link gets ``supported: False`` (so the summary lists it in ``unresolved_links``), ``confound`` and a
    text saying why, and the run a warning."""
    hit = []
    for lk in res.links:
        a, b = lk["a"], lk["b"]
        ga, gb = gen_kind.get(a), gen_kind.get(b)
        if not lk.get("supported") or ga is None or ga != gb:
            continue
        if cell_real.get(a, {}).get(b) == ga or cell_real.get(b, {}).get(a) == gb:
            continue  # a cell with format-matched real photos: the format alone does not separate it
        other = cell_real.get(a, {}).get(b)
        lk["supported"] = False
        lk["confound"] = f"both generators' test images are {ga} and the real photos {other}"
        lk["text"] += (f" — unresolved link: {lk['confound']}, so a shared format difference explains it "
                       "(give --real photos in their format, or --equalise jpegQ)")
        hit.append(f"{a} ~ {b}")
    if hit:
        res.warnings.append(f"link(s) {', '.join(hit)} rest on a format difference the real photos do not control "
                            "(generated and real images of different formats): reported as unresolved links")


def _control_formats(fps: Sequence[Any], img_map: Mapping[str, str]) -> dict[str, FormatView]:
    """{generator name: :func:`format_of` its test images} (the images each column of the matrix tests)."""
    return {t.name: format_of(t.paths) for t in _test_sets(fps, img_map)}


def _control_warnings(fps: Sequence[Any], real_map: Mapping[str, str], formats: Mapping[str, FormatView]
                      ) -> list[str]:
    """A warning when the real photos are JPEG but some columns are lossless: those keep the photos as they
    are (a lossless copy of a JPEG cannot be made), so their cells are not format-matched."""
    lossless = [k for k, v in formats.items() if v.quality is None]
    if not lossless:
        return []
    reals, _ = _real_sets(fps, real_map or None)
    real_fmt = format_of(sorted({p for r in reals for p in r}))
    if real_fmt.quality is None:
        return []
    return [f"--control format: the real photos are JPEG (q{real_fmt.quality}) and {', '.join(lossless)} "
            "are lossless; no lossless copy of a JPEG can be made, so their columns test against the photos as "
            "they are (a link between lossless generators there may still be their shared format)"]


def equaliser(spec: str | None):
    """The :class:`~fingerprint_cli.dif.augment.Augmentation` that ``--equalise`` names ("jpeg90" → JPEG
    quality 90), or None for "none" / None."""
    if spec is None or str(spec).lower() in ("", "none", "off"):
        return None
    s = str(spec).lower()
    q = s[4:] if s.startswith("jpeg") else ""
    if not q.isdigit() or not 1 <= int(q) <= 100:
        raise UsageError(f"--equalise {spec!r}: use jpegQ with a quality Q from 1 to 100 (e.g. jpeg90), or none")
    return Augmentation(quality=int(q))


def _make_cache(ResidualCache: Any, fp: Any, device: str) -> Any:
    """One in-memory residual cache for the whole matrix (keyed by image sha256, denoiser sha256, crop)."""
    return ResidualCache()


def _residuals(detect: Any, fp: Any, paths: Sequence[str], cache: Any, aug: Any = None,
               window: Callable | None = None) -> tuple[Any, list[dict]]:
    """Residuals of ``paths`` with ``fp``'s denoiser and crop, through ``cache``; images that fail to load are
    left out (their ρ become NaN in :func:`_by_path`). With ``aug`` (an equalising augmentation, or a
    :class:`_Chain` of them with ``window=_chain_window``) each image's centre crop is passed through it first
    (cached per image and augmentation); images smaller than the crop are then left out too. Without ``aug`` a
    ``format-matched`` fingerprint's lossless images are re-encoded at its quality first, as ``fpx detect`` does
    (:func:`fingerprint_cli.dif.residuals.compute_matched`)."""
    from fingerprint_cli.dif.residuals import compute_matched, compute_views  # imports torch

    if aug is not None:
        res, infos, _ = compute_views(list(paths), lambda sha: [aug], detect.denoiser_for(fp), fp.crop, cache=cache,
                                      on_error=lambda p, exc: None, window=window)
        return res[:, 0], infos
    return compute_matched(list(paths), detect.denoiser_for(fp), fp.crop, detect.matched_quality(fp), cache=cache,
                           on_error=lambda p, exc: None, allow_smaller=True)


def _by_path(paths: Sequence[str], infos: list[dict], vals: Any) -> np.ndarray:
    """Values computed for the images in ``infos``, back in the order of ``paths``; NaN for the missing ones."""
    got = {str(info["path"]): float(v) for info, v in zip(infos, np.asarray(vals, dtype=np.float64).reshape(-1))}
    return np.array([got.get(str(p), np.nan) for p in paths], dtype=np.float64)


def _provenance(fp: Any, threshold: float, max_shift: int) -> dict[str, Any]:
    meta = fp.meta
    return {"fpx_version": __version__, "denoiser": meta.get("denoiser"), "crop": meta.get("crop"),
            "method": getattr(fp, "method", meta.get("method")), "threshold": threshold, "max_shift": max_shift,
            "numpy": np.__version__, "python": platform.python_version(),
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
