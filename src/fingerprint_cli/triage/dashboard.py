"""The triage dashboard: one self-contained HTML page (inline CSS and JS, base64 thumbnails, no external
resource), one row per image — thumbnail, verdict, evidence chips — sortable by any column, filterable by
text and verdict, each row expanding to the image's detail: custody, the ranked evidence, every
fingerprint's score against its threshold (an inline SVG plot), the provenance metadata. Every string that
came from a file or a path is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

from fingerprint_cli import atomic
from fingerprint_cli.records import Record

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:20px;color:#222}
h1{font-size:20px;margin:0 0 6px} .note{font-size:12px;color:#666}
.bar{display:flex;gap:10px;align-items:center;margin:10px 0;flex-wrap:wrap}
input,select{font-size:13px;padding:3px 6px}
table{border-collapse:collapse;font-size:13px;width:100%}
th{background:#f2f2f2;cursor:pointer;user-select:none;text-align:left;padding:5px 8px;border-bottom:2px solid #ccc}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td{padding:4px 8px;border-bottom:1px solid #e4e4e4;vertical-align:top}
tr.row:hover{background:#fafafa} img.t{width:72px;height:auto;border:1px solid #ddd;display:block}
.v{font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap}
.v-generated{background:#fde2e1;color:#a1150f} .v-ai-edited{background:#fdebd3;color:#8a4b00}
.v-captured{background:#dff3e4;color:#0d6b2d} .v-unknown{background:#ececec;color:#555}
.v-disputed{background:#efe0fb;color:#5d1c8f} .v-error{background:#333;color:#fff}
.chip{display:inline-block;font-size:11px;padding:1px 6px;margin:1px 2px;border-radius:8px;border:1px solid #bbb}
.t1,.t2{border-color:#1b5e20;background:#e8f5e9} .t3{border-color:#8d6e00;background:#fff8e1}
.t4{border-color:#0d47a1;background:#e3f2fd} .t5{border-color:#bbb;background:#fafafa;color:#666}
.s-generated{font-weight:600} .s-altered{color:#b00020;font-weight:600}
tr.detail td{background:#fcfcfc} tr.detail{display:none} tr.detail.open{display:table-row}
pre{font-size:11px;background:#f6f6f6;padding:6px;overflow:auto;max-height:320px}
.k{color:#555} .mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
"""

JS = """
(function(){
  const tbody=document.querySelector('#rows');
  const rows=()=>Array.from(tbody.querySelectorAll('tr.row'));
  function detailOf(r){return document.getElementById('d-'+r.dataset.i);}
  document.querySelectorAll('th[data-k]').forEach(th=>th.addEventListener('click',()=>{
    const k=th.dataset.k, asc=!th.classList.contains('sorted-asc');
    document.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
    th.classList.add(asc?'sorted-asc':'sorted-desc');
    const rs=rows().sort((a,b)=>{const x=a.dataset[k]||'',y=b.dataset[k]||'';
      const nx=parseFloat(x),ny=parseFloat(y);
      const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
    rs.forEach(r=>{tbody.appendChild(r);tbody.appendChild(detailOf(r));});
  }));
  function filter(){
    const q=document.getElementById('q').value.toLowerCase(), v=document.getElementById('verdict').value;
    let n=0; rows().forEach(r=>{const ok=(!v||r.dataset.verdict===v)&&(!q||r.dataset.text.includes(q));
      r.style.display=ok?'':'none'; if(!ok) detailOf(r).classList.remove('open'); n+=ok;});
    document.getElementById('count').textContent=n+' shown';
  }
  document.getElementById('q').addEventListener('input',filter);
  document.getElementById('verdict').addEventListener('change',filter);
  rows().forEach(r=>r.addEventListener('click',()=>detailOf(r).classList.toggle('open')));
  // a view can be bookmarked: #q=TEXT&verdict=V&sort=KEY&dir=desc&open=1|TEXT (expand the first (matching) row)
  const h=new URLSearchParams(location.hash.slice(1));
  if(h.get('q')) document.getElementById('q').value=h.get('q');
  if(h.get('verdict')) document.getElementById('verdict').value=h.get('verdict');
  const th=h.get('sort')&&document.querySelector('th[data-k="'+h.get('sort')+'"]');
  if(th){th.click(); if(h.get('dir')==='desc') th.click();}
  filter();
  const o=h.get('open');
  if(o) rows().filter(r=>r.style.display!=='none'&&(o==='1'||r.dataset.text.includes(o.toLowerCase())))
    .slice(0,1).forEach(r=>detailOf(r).classList.add('open'));
})();
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _attr(x: Any) -> str:
    return _e(x).replace("\n", " ")


def _verdict(r: Record) -> str:
    if not r.ok:
        return "error"
    return str((r.decision or {}).get("label") or "unknown")


def _score_svg(fps: list[dict[str, Any]]) -> str:
    """Horizontal bars: each fingerprint's score (z vs real images); calibrated ones marked with their p."""
    if not fps:
        return ""
    w, row, left = 600, 18, 150
    vals = [float(f.get("score") or 0.0) for f in fps]
    lo, hi = min(0.0, min(vals)), max(4.0, max(vals))

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo + 1e-12) * (w - left - 160)

    parts = [f"<svg width='{w}' height='{row * len(fps) + 24}' role='img' aria-label='fingerprint scores'>"]
    for i, (f, v) in enumerate(zip(fps, vals, strict=True)):
        y = 4 + i * row
        colour = "#c62828" if f.get("generated") else "#90a4ae"
        x0, x1 = sx(0.0), sx(v)
        parts.append(f"<text x='0' y='{y + 12}' font-size='11'>{_e(f.get('name'))[:24]}</text>")
        parts.append(f"<rect x='{min(x0, x1):.1f}' y='{y + 2}' width='{abs(x1 - x0):.1f}' height='{row - 6}' "
                     f"fill='{colour}'/>")
        tag = f"p={f['p_value']:.3g}" if f.get("p_value") is not None else "not calibrated"
        parts.append(f"<text x='{max(x0, x1) + 4:.1f}' y='{y + 12}' font-size='10' fill='#444'>{v:.2f} "
                     f"{_e(tag)}</text>")
    y = 4 + len(fps) * row
    parts.append(f"<line x1='{sx(0):.1f}' y1='0' x2='{sx(0):.1f}' y2='{y}' stroke='#333' stroke-width='1'/>")
    parts.append(f"<text x='{left}' y='{y + 14}' font-size='10' fill='#666'>score = z of ρ against real images "
                 "(0 = typical real image)</text></svg>")
    return "".join(parts)


def _kv(d: dict[str, Any], keys: Sequence[str]) -> str:
    cells = [f"<span class='k'>{_e(k)}</span> {_e(d.get(k))}" for k in keys if d.get(k) not in (None, "", [])]
    return " · ".join(cells)


def _detail(r: Record) -> str:
    """The expanded row: custody, the verdict and the ranked evidence (ok records), the provenance metadata."""
    d = r.details or {}
    c = d.get("custody") or {}
    out = [f"<p class='mono'>{_kv(c, ['path', 'sha256', 'size', 'format', 'width', 'height', 'received_utc', 'entry_sha256'])}</p>"]
    if d.get("duplicate_of"):
        out.append(f"<p>Duplicate (same sha256) of {_e(d['duplicate_of'])}</p>")
    if not r.ok:
        out.append(f"<p><b>error:</b> {_e(r.error.get('message'))}</p>")
    else:
        out.append(_verdict_html(r.decision or {}))
        out.append(_evidence_html(r, d))
    meta = d.get("metadata") or {}
    if meta:
        out.append("<p><b>Provenance metadata</b></p><pre>" + _e(json.dumps(meta, indent=1, default=str)[:20000])
                   + "</pre>")
    return "".join(out)


def _verdict_html(dec: dict[str, Any]) -> str:
    """The verdict with its generator, why, error note and integrity warning; the disagreeing evidence."""
    out = (f"<p><b>Verdict:</b> {_e(dec.get('label'))}"
           + (f" — {_e(dec.get('generator'))}" if dec.get("generator") else "")
           + f"<br><span class='note'>{_e(dec.get('why'))}</span>"
           + (f"<br><span class='note'>{_e(dec.get('error_note'))}</span>" if dec.get("error_note") else "")
           + (f"<br><span class='s-altered'>integrity: {_e(dec.get('integrity'))}</span>"
              if dec.get("integrity") else "") + "</p>")
    if dec.get("disagreements"):
        out += "<p><b>Disagreeing evidence:</b> " + "; ".join(
            f"{_e(x.get('source'))} says {_e(x.get('says'))} ({_e(x.get('strength'))})"
            for x in dec["disagreements"]) + "</p>"
    return out


def _evidence_html(r: Record, d: dict[str, Any]) -> str:
    """The ranked evidence table and the fingerprint score plot."""
    out = ["<table><tr><th>rank</th><th>source</th><th>says</th><th>strength</th><th>detail</th></tr>"]
    for e in r.reasons:
        out.append(f"<tr><td>{_e(e.get('tier'))}</td><td>{_e(e.get('source'))}</td>"
                   f"<td class='s-{_attr(e.get('says'))}'>{_e(e.get('says'))}</td><td>{_e(e.get('strength'))}</td>"
                   f"<td>{_e(e.get('detail'))}</td></tr>")
    out.append("</table>")
    gen = d.get("generator") or {}
    if gen.get("fingerprints"):
        out.append("<p><b>Generator fingerprints</b></p>" + _score_svg(gen["fingerprints"]))
    return "".join(out)


def _chips(r: Record) -> str:
    if not r.ok:
        return f"<span class='chip t5'>{_e(r.error.get('message'))[:120]}</span>"
    chips = []
    for e in r.reasons:
        chips.append(f"<span class='chip t{_attr(e.get('tier'))}' title='{_attr(e.get('strength'))}: "
                     f"{_attr(e.get('detail'))}'>{_e(e.get('source'))}: {_e(e.get('says'))}</span>")
    return "".join(chips) or "<span class='chip t5'>no evidence</span>"


def _row(i: int, r: Record, thumbs: dict[str, str]) -> str:
    """One image's table row (its data-* attributes drive sorting and filtering) and its detail row."""
    img = r.inputs.get("image") or {}
    sha = img.get("sha256") or ""
    path = str(img.get("path") or "")
    v = _verdict(r)
    dec = r.decision or {}
    uri = thumbs.get(sha, "")
    thumb = (f"<img class='t' alt='' src='{_attr(uri)}'>" if uri.startswith("data:image/") else "")
    text = " ".join([path, v, str(dec.get("generator") or ""),
                     " ".join(f"{e.get('source')} {e.get('says')}" for e in r.reasons),
                     (r.error or {}).get("message", "")]).lower()
    c = r.details.get("custody") or {}
    return (
        f"<tr class='row' data-i='{i}' data-verdict='{_attr(v)}' data-name='{_attr(path.lower())}' "
        f"data-tier='{_attr(dec.get('tier') if dec.get('tier') is not None else 9)}' "
        f"data-received='{_attr(c.get('received_utc'))}' data-format='{_attr(c.get('format'))}' "
        f"data-text='{_attr(text)}'>"
        f"<td>{thumb}</td><td>{_e(path)}<div class='note mono'>{_e(sha[:16])}</div></td>"
        f"<td><span class='v v-{_attr(v)}'>{_e(v)}</span>"
        + (f"<div class='note'>{_e(dec.get('generator'))}</div>" if dec.get("generator") else "")
        + f"</td><td>{_e(dec.get('strength') or '')}</td><td>{_e(c.get('format'))}</td><td>{_chips(r)}</td>"
        f"<td class='note'>{_e(c.get('received_utc'))}</td></tr>"
        f"<tr class='detail' id='d-{i}'><td colspan='7'>{_detail(r)}</td></tr>")


def render(records: Sequence[Record], thumbs: dict[str, str] | None = None, *, refresh_seconds: int | None = None,
           custody_head: str | None = None, title: str = "fpx triage") -> str:
    """The dashboard HTML for ``records`` (thumbnails keyed by image sha256, as data URIs)."""
    thumbs = thumbs or {}
    counts: dict[str, int] = {}
    for r in records:
        counts[_verdict(r)] = counts.get(_verdict(r), 0) + 1
    rows = [_row(i, r, thumbs) for i, r in enumerate(records)]
    options = "".join(f"<option value='{_attr(k)}'>{_e(k)} ({n})</option>" for k, n in sorted(counts.items()))
    summary = ", ".join(f"{_e(k)}: {n}" for k, n in sorted(counts.items()))
    meta_refresh = f"<meta http-equiv='refresh' content='{int(refresh_seconds)}'>" if refresh_seconds else ""
    head_note = (f" · custody log head <span class='mono'>{_e(custody_head)}</span>" if custody_head else "")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{meta_refresh}"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><div class='note'>{len(records)} file(s) — {summary}{head_note}. Click a row for "
            "its detail; click a column header to sort. Evidence rank: 1–2 signed C2PA, 3 unsigned declarations, "
            "4 calibrated pixel statistics, 5 weak context (never decides alone).</div>"
            "<div class='bar'><input id='q' type='search' placeholder='filter: name, generator, evidence…' size='40'>"
            f"<select id='verdict'><option value=''>all verdicts</option>{options}</select>"
            "<span id='count' class='note'></span></div>"
            "<table><thead><tr><th>image</th><th data-k='name'>file</th><th data-k='verdict'>verdict</th>"
            "<th data-k='tier'>strength</th><th data-k='format'>format</th><th>evidence</th>"
            "<th data-k='received'>received</th></tr></thead>"
            f"<tbody id='rows'>{''.join(rows)}</tbody></table><script>{JS}</script></body></html>\n")


def write(path: str, records: Sequence[Record], thumbs: dict[str, str] | None = None, **kw) -> None:
    """Render and write atomically."""
    atomic.write_text(path, render(records, thumbs, **kw))
