"""`fpx lineage` output: records, the terminal table and the heatmap + dendrogram picture."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fingerprint_cli import atomic
from fingerprint_cli.lineage.analysis import LineageResult
from fingerprint_cli.lineage.stats import LINK_ALPHA, METRIC_LABELS, MIN_SELF_Z, _auc_text, _pct
from fingerprint_cli.records import Record

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
    "threshold", "unresolved", "unresolved_links" (in-family pairs not above chance both ways), "error_rate"
    (:func:`link_error_rate`)}; ``details`` = the matrices (rows = fingerprint, columns = images of), links, linkage, timing.
    """
    prov = dict(provenance)
    n = len(res.names)
    out = [_pair_record(res, i, j, prov) for i in range(n) for j in range(n)]
    out.append(_summary_record(res, prov))
    return out


def _pair_record(res: LineageResult, i: int, j: int, prov: dict[str, Any]) -> Record:
    """The record of cell (i, j): fingerprint i on generator j's held-out images (a failure record when the
    cell could not be computed)."""
    names = res.names
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
        return r
    feats = {"cross_accuracy": res.accuracy[i, j], "tpr": res.tpr[i, j], "tnr": res.tnr[i, j],
             "auc": res.auc[i, j], "grid_auc": _cell(res.grid_auc, i, j),
             "fingerprint_correlation": res.fp_correlation[i, j],
             "grid_correlation": _cell(res.grid_correlation, i, j),
             "relatedness": res.relatedness[i, j]}
    return Record(command="lineage", inputs=inputs, features={k: _num(v) for k, v in feats.items()},
                  directions=dict(FEATURE_DIRECTIONS), details=details, provenance=prov)


def _summary_record(res: LineageResult, prov: dict[str, Any]) -> Record:
    """The summary record: the families decision, one reason per link, the matrices."""
    n = len(res.names)
    summary_inputs = {f"fingerprint_{k}": {"path": res.paths[k], "sha256": res.sha256[k]} for k in range(n)}
    what = {"accuracy": "cross-detection accuracies", "auc": "cross-detection AUCs",
            "grid": f"grid cross-detection AUCs (period {res.period})"}[res.metric]
    decision = {"label": "families", "families": res.clustering.families, "threshold": res.clustering.threshold,
                "unresolved": list(res.clustering.unresolved),
                "metric": res.metric,
                "rule": "average-linkage clustering on 1 - relatedness, cut at threshold; relatedness = "
                        f"clip((mean of the two {what} - 0.5) / 0.5, 0, 1); a fingerprint "
                        f"whose self-detection is not above chance (z < {MIN_SELF_Z:g}) is unresolved"
                        + ("; the real side of each generator's column is the real photos re-saved in that "
                           "generator's format (--control format)" if res.control == "format" else ""),
                "unresolved_links": [[lk["a"], lk["b"]] for lk in res.links if lk.get("supported") is False],
                "error_rate": link_error_rate(res.metric)}
    reasons = [{"link": lk["text"], "a": lk["a"], "b": lk["b"], "p_value": lk.get("p_value"),
                "supported": lk.get("supported")} for lk in res.links]
    details = {"names": res.names,
               "cross_accuracy": _mat(res.accuracy), "auc": _mat(res.auc),
               "grid_auc": _mat(res.grid_auc) if res.grid_auc is not None else None,
               "grid_correlation": _mat(res.grid_correlation) if res.grid_correlation is not None else None,
               "period": res.period,
               "control": res.control, "control_formats": dict(res.control_formats),
               "fingerprint_correlation": _mat(res.fp_correlation), "relatedness": _mat(res.relatedness),
               "links": res.links, "linkage": res.clustering.linkage,
               "self_detection_z": [_num(v) for v in (res.self_z if res.self_z is not None else [])],
               "matrix_orientation": "rows: fingerprint; columns: generator whose held-out images are tested",
               "timing": {k: round(v, 3) for k, v in res.timing.items()}}
    return Record(command="lineage", inputs=summary_inputs, features={"n_families": len(res.clustering.families)},
                  directions={"n_families": "count"}, decision=decision, reasons=reasons,
                  details=details, provenance=prov)


def link_error_rate(metric: str) -> dict[str, Any]:
    """What a family link's stated error rate is, and what it is not (the summary decision's ``error_rate``)."""
    return {"test": f"each in-family link: both directions of its {METRIC_LABELS[metric]} above chance (0.5), "
                    "one-sided, with the null standard error of the cell's image counts; the link's p_value is "
                    "the larger of the two (intersection-union test)",
            "alpha": LINK_ALPHA,
            "false_link_rate": f"<= {LINK_ALPHA:g} per link against generators whose fingerprints are at chance on "
                               "each other's images; a link with p_value > alpha is listed in unresolved_links",
            "calibrated": False,
            "not_covered": "unrelated generators that differ from the real photos in the same way (format, size, "
                           "smoothing) cross-detect above chance: this rate does not bound them (use --control "
                           "format; measured false and true links: docs/benchmarks.md, lineage sections)"}


def _cell(m: np.ndarray | None, i: int, j: int) -> float:
    return float("nan") if m is None else float(m[i, j])


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _mat(m: np.ndarray) -> list[list[float | None]]:
    return [[_num(x) for x in row] for row in np.asarray(m, dtype=np.float64)]


# ----------------------------------------------------------------------------- text and picture
def _basis(res: LineageResult) -> np.ndarray:
    return res.matrix(res.metric)


def matrix_text(res: LineageResult) -> str:
    """A terminal rendering: the accuracy matrix, then families and their evidence."""
    import io

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table()
    t.add_column("fingerprint")
    for nm in res.names:  # names come from the artifacts: never read them as markup
        t.add_column(escape(nm), justify="right")
    for i, nm in enumerate(res.names):
        cells = []
        for j in range(len(res.names)):
            if (i, j) in res.errors:
                cells.append("error")
            else:
                cells.append((_pct if res.metric == "accuracy" else _auc_text)(_basis(res)[i, j]))
        t.add_row(escape(nm), *cells)
    buf = io.StringIO()
    con = Console(file=buf, width=160)
    what = {"accuracy": "balanced accuracy", "auc": "AUC", "grid": f"grid AUC, period {res.period}"}[res.metric]
    con.print(f"cross-detection {what} (row: fingerprint; column: held-out images of)")
    con.print(t)
    fams = "; ".join("{" + ", ".join(f) + "}" for f in res.clustering.families)
    con.print(f"families (threshold {res.clustering.threshold:g} on 1 - relatedness): {fams}", markup=False)
    if res.clustering.unresolved:
        con.print(f"unresolved (self-detection not above chance): {', '.join(res.clustering.unresolved)}",
                  markup=False)
    for lk in res.links:
        con.print(f"  {lk['text']}", markup=False)
    return buf.getvalue()


def plot(res: LineageResult, path: str, inputs: Sequence[str] = ()) -> None:
    """Heatmap of the cross-detection matrix with the dendrogram above it, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

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
