"""Self-contained HTML case report for ``fpx attribute --report case.html``.

One page, no external resources: every figure is an inline ``data:image/png;base64`` URI. Per pair:
reference and suspect side by side (downscaled to at most 480 px for display; the analysis used full
resolution), the per-patch distance heatmap (DINOv2 token distances when an encoder was used, else the
per-block RMS luma difference), the call on the calibrated plane among the calibration clouds, the
decision with its top-k and reasons, survival when known, and the provenance.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

import numpy as np

from fingerprint_cli import atomic, images, plots
from fingerprint_cli.anchored.thresholds import Thresholds

MAX_SIDE = 480

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start} figure{margin:0} figure.t{max-width:460px} figcaption{font-size:12px;color:#555;overflow-wrap:anywhere}
img{border:1px solid #ddd;max-width:640px} img.thumb{width:440px;height:auto;image-rendering:pixelated} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} .call{font-size:20px;font-weight:600}
.inc{color:#a60} .ok{color:#075} .note{font-size:12px;color:#666} pre{font-size:11px;background:#f6f6f6;padding:8px;overflow:auto}
"""


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumb(pixels: np.ndarray) -> str:
    h, w = pixels.shape[:2]
    s = min(1.0, MAX_SIDE / max(h, w))
    if s < 1.0:
        pixels = np.clip(images.resize(pixels, max(1, round(h * s)), max(1, round(w * s))), 0, 1)
    return _uri(images.encode(pixels, "PNG"))


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else _e(v)


def _call_lines(d: dict[str, Any]) -> list[str]:
    """The call (band, system), the prediction set or the not-calibrated note, and why it abstained."""
    cls = "inc" if d.get("inconclusive") or d.get("unknown") else "ok"
    parts = [f"<p class='call {cls}'>band: {_e(d.get('band'))} &nbsp;·&nbsp; system: {_e(d.get('system'))}</p>"]
    if d.get("prediction_set") is not None:  # conformal artifact (issue 11)
        pv = ", ".join(f"{_e(k)} {v:.3f}" for k, v in sorted(d["p_values"].items(), key=lambda kv: -kv[1])[:5])
        parts.append(f"<p>prediction set at alpha {d['alpha']:g}: {_e(', '.join(d['prediction_set']) or 'empty (unknown)')}"
                     f" &nbsp;·&nbsp; largest p-values: {pv}</p>")
    elif d.get("conformal"):
        parts.append(f"<p>{_e(d['conformal']['note'])}</p>")
    if d.get("why_inconclusive"):
        parts.append("<p class='inc'>" + "; ".join(_e(w) for w in d["why_inconclusive"]) + "</p>")
    return parts


def _image_row(record, reference_px, suspect_px) -> str:
    """Reference and suspect thumbnails with their names and sha256."""
    figs = []
    if reference_px is not None:
        figs.append(f"<figure class='t'><img class='thumb' alt='reference' src='{_thumb(reference_px)}'><figcaption>reference "
                    f"{_e(record.inputs['reference']['path'])}<br>sha256 {_e(record.inputs['reference']['sha256'])}"
                    "</figcaption></figure>")
    if suspect_px is not None:
        figs.append(f"<figure class='t'><img class='thumb' alt='suspect' src='{_thumb(suspect_px)}'><figcaption>suspect "
                    f"{_e(record.inputs['suspect']['path'])} (on the reference's grid)<br>sha256 "
                    f"{_e(record.inputs['suspect']['sha256'])}</figcaption></figure>")
    return "<div class='row'>" + "".join(figs) + "</div>"


def _figure_row(record, dmap, dmap_label: str, doc: Thresholds) -> str:
    """The distance heatmap and the call on the calibrated plane."""
    figs = []
    if dmap is not None:
        figs.append(f"<figure><img alt='heatmap' src='{_uri(plots.heatmap(dmap, dmap_label))}'>"
                    f"<figcaption>{_e(dmap_label)}</figcaption></figure>")
    pt = doc.plane_point(record.features)
    if pt is not None:
        figs.append(f"<figure><img alt='plane' src='{_uri(plots.plane(doc, [('this call', pt)]))}'>"
                    f"<figcaption>the call (star) on the ({_e(', '.join(doc.plane['features']))})"
                    f" plane among the calibrated calls; the shaded band regions are a 2-feature boundary for display,"
                    f" the decision uses all {len(doc.features)} features</figcaption></figure>")
    return "<div class='row'>" + "".join(figs) + "</div>"


def _posterior_tables(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(t['system'])}</td><td>{_e(t['band'])}</td><td>{t['p']:.3f}</td></tr>"
                   for t in d.get("top_k", []))
    bands = "".join(f"<tr><td>{_e(b)}</td><td>{p:.3f}</td></tr>" for b, p in d.get("band_probabilities", {}).items())
    return ("<div class='row'><table><tr><th>system</th><th>band</th><th>posterior</th></tr>" + rows +
            "</table><table><tr><th>band</th><th>posterior</th></tr>" + bands + "</table></div>")


def _reasons_table(reasons: Sequence[dict[str, Any]]) -> str:
    rs = "".join(f"<tr><td>{_e(r['feature'])}</td><td>{_fmt(r['value'])}</td><td>{r['z']:+.2f}</td>"
                 f"<td>{r['margin_contribution']:+.2f}</td><td>{_e(r['favours'])}</td><td>{_e(r['direction'])}</td></tr>"
                 for r in reasons)
    return ("<table><tr><th>feature</th><th>value</th><th>z (corpus)</th><th>log-odds share (top vs runner-up)</th>"
            "<th>favours</th><th>direction</th></tr>" + rs + "</table>")


def _survival_line(features: dict[str, Any]) -> str:
    surv = {k: v for k, v in features.items() if k in ("survival", "perturbation_z", "perturbation_detected")}
    return ("<p>survival of the protective perturbation: " +
            (", ".join(f"{_e(k)} = {_fmt(v)}" for k, v in surv.items()) if surv else
             "not known (no --perturbed copy given)") + "</p>")


def case_section(i: int, record, reference_px, suspect_px, dmap, dmap_label: str, doc: Thresholds) -> str:
    """One case of the report: the call, the images, the heatmap and plane, posteriors, reasons, survival."""
    parts = [f"<h2>Case {i}: {_e(record.inputs['suspect']['path'])}</h2>"]
    if not record.ok:
        parts.append(f"<p class='inc'>error: {_e(record.error['message'])}</p>")
        return "\n".join(parts)
    d = record.decision or {}
    parts += _call_lines(d)
    parts += [_image_row(record, reference_px, suspect_px), _figure_row(record, dmap, dmap_label, doc),
              _posterior_tables(d), _reasons_table(record.reasons), _survival_line(record.features)]
    return "\n".join(parts)


def write(path: str, sections: Sequence[str], doc: Thresholds, provenance: dict[str, Any],
          aggregates: Sequence[dict[str, Any]] = (), inputs: Sequence[str] = ()) -> None:
    """Write the report atomically (never over an input)."""
    cal = doc.calibration
    loo = doc.loo
    note = doc.description if "description" in doc.order else ""
    head = (f"<h1>fpx attribution case report</h1><p class='note'>thresholds <b>{_e(doc.id)}</b> v{_e(doc.version)}"
            f" (sha256 {_e(doc.sha256[:16])}…): {_e(note)}<br>leave-one-image-out "
            f"system accuracy {loo['accuracy']:.3f} [{loo['ci95'][0]:.3f}, {loo['ci95'][1]:.3f}] "
            f"(chance {loo['chance']:.3f}) on {cal['corpus']['n_images']} images / {cal['corpus']['n_calls']} calls; "
            f"band {cal['band_loo']['accuracy']:.3f}.</p>")
    agg = ""
    if aggregates:
        rows = "".join(f"<tr><td>{_e(a['reference'])}</td><td>{a['calls']}</td><td>{_e(a['band'])}</td>"
                       f"<td>{_e(a['system'])}</td></tr>" for a in aggregates)
        agg = ("<h2>Per-image decisions (several suspects of one reference)</h2><table><tr><th>reference</th>"
               "<th>calls</th><th>band</th><th>system</th></tr>" + rows + "</table>")
    prov = f"<h2>Provenance</h2><pre>{_e(json.dumps(provenance, indent=1, default=str))}</pre>"
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fpx case report</title>"
            f"<style>{CSS}</style></head><body>{head}{agg}{''.join(sections)}{prov}</body></html>\n")
    atomic.refuse_overwrite_of_inputs(path, inputs)
    atomic.write_text(path, page)
