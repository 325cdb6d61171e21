"""Figures for calibration and case reports (matplotlib, Agg backend, PNG bytes; no display needed)."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from fingerprint_cli.anchored.models import LDA
from fingerprint_cli.anchored.thresholds import Thresholds


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _extent(points: dict[str, Any], marks: Sequence[tuple[str, Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of the plot: every calibration point and mark, padded by 8%."""
    pts_all = np.concatenate([np.asarray(v, float).reshape(-1, 2) for v in points.values()]
                             + [np.asarray([m[1] for m in marks], float).reshape(-1, 2)])
    lo, hi = pts_all.min(0), pts_all.max(0)
    pad = (hi - lo) * 0.08 + 1e-9
    return lo - pad, hi + pad


def _band_regions(ax, plt, model: LDA, lo: np.ndarray, hi: np.ndarray) -> None:
    """Shade each band's region of the 2-feature band model, draw the boundary, name the regions."""
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    lab = model.predict_proba(grid).argmax(1).reshape(gx.shape)
    cmap = plt.get_cmap("Pastel2")
    ax.contourf(gx, gy, lab, levels=np.arange(len(model.classes) + 1) - 0.5,
                colors=[cmap(i) for i in range(len(model.classes))], alpha=0.5)
    ax.contour(gx, gy, lab, levels=np.arange(len(model.classes)) + 0.5, colors="k", linewidths=1.2)
    for k, band in enumerate(model.classes):
        m = lab == k
        if m.any():
            ax.text(gx[m].mean(), gy[m].mean(), band, fontsize=11, color="0.35", ha="center", va="center",
                    fontweight="bold", alpha=0.8)


def _clouds(ax, plt, points: dict[str, Any], bands: dict[str, str]) -> None:
    """One scatter per system (colour per system, marker per band)."""
    markers = {b: m for b, m in zip(sorted(set(bands.values())), "os^Dv<>p")}
    n_colours = 10 if len(points) <= 10 else 20
    colours = plt.get_cmap(f"tab{n_colours}")
    for i, (system, pts) in enumerate(sorted(points.items())):
        p = np.asarray(pts, float).reshape(-1, 2)
        ax.scatter(p[:, 0], p[:, 1], s=12, alpha=0.7, color=colours(i % n_colours),
                   marker=markers.get(bands[system], "o"), label=f"{system} ({bands[system]})")


def plane(doc: Thresholds, marks: Sequence[tuple[str, Sequence[float]]] = (), title: str | None = None) -> bytes:
    """The calibrated clouds on the artifact's plane, the band regions/boundary, and optional marked points."""
    plt = _plt()
    cal = doc.plane
    fx, fy = cal["features"]
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    lo, hi = _extent(cal["points"], marks)
    pm = doc.band_rule.plane
    model = LDA.from_json(pm["model"], pm["standardisation"])
    _band_regions(ax, plt, model, lo, hi)
    _clouds(ax, plt, cal["points"], doc.band_rule.bands)
    for name, (x, y) in marks:
        ax.scatter([x], [y], s=220, marker="*", color="crimson", edgecolor="k", zorder=5)
        ax.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, color="crimson")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel(fx)
    ax.set_ylabel(fy)
    ax.set_title(title or f"{doc.id}: calibrated calls; shaded = band regions "
                          f"({', '.join(model.classes)}), line = band boundary", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), framealpha=0.8)
    return _png(fig)


def heatmap(dmap: np.ndarray, label: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    im = ax.imshow(np.asarray(dmap, float), cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)
