"""Issue 12 round 10, step 1: where does a composited suspect's true origin get lost? (development families only)

For each test query of the development families that composite the origin with something else (banner, collage,
picture-in-picture, caption bar, meme text, frame, screenshot: rounds 5-9, all development material now), against
a frozen index (default: the round-9 default's mixed library ``r9_all_after``), this prints per family:

* the global stage: the true origin's rank over both suspect views (exact, every reference), and the best rank
  over a few fixed sub-windows of the suspect (halves and two-thirds, each embedded on its own);
* the local stage: whether the origin is among the stage's candidates (votes' best + global shortlist), its
  RANSAC inliers against the suspect's views and its dense score (the index's region), against the index's
  thresholds; the same inliers when ORB runs on each sub-window instead (the best window);
* why it fails: ``not a candidate`` / ``inliers <= threshold`` / ``dense <= threshold`` / ``passes``.

    PYTHONPATH=src nice -n 10 python bench/origin_r10_diag.py --per-family 20

Reads the bench's query files (``bench/out/origin/q/FAMILY/SHA12.png``, made by ``bench/origin.py``); the
origin is the library reference ``lib/real/SHA12.png``. Nothing here decides anything; it is a diagnosis.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fingerprint_cli import images
from fingerprint_cli.origin import library
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import dense_best, load_index, project

FAMILIES = ("crop_banner_jpeg80", "collage_2up", "crop_pip", "crop_caption_bar", "crop_meme_text",
            "crop_0.45_frame", "crop_screenshot")
# sub-windows (y0, y1, x0, x1) as fractions of the suspect's frame
WINDOWS = {"left": (0, 1, 0, .5), "right": (0, 1, .5, 1), "top": (0, .5, 0, 1), "bottom": (.5, 1, 0, 1),
           "left2/3": (0, 1, 0, 2 / 3), "right2/3": (0, 1, 1 / 3, 1), "top2/3": (0, 2 / 3, 0, 1),
           "bottom2/3": (1 / 3, 1, 0, 1), "middle": (1 / 6, 5 / 6, 0, 1), "centre": (1 / 6, 5 / 6, 1 / 6, 5 / 6)}


def _window(px, w):
    """The sub-window ``w`` (fractions y0, y1, x0, x1) of ``px``."""
    h, wd = px.shape[:2]
    y0, y1, x0, x1 = w
    return np.ascontiguousarray(px[round(y0 * h):round(y1 * h), round(x0 * wd):round(x1 * wd)])


def _rank(idx, emb, pxs, true):
    """Best 1-based rank of ``true`` over the images ``pxs`` (each with its mirror)."""
    best = idx.n
    for px in pxs:
        q = project(idx.proj_weight, emb.embed(library.views(px)))
        s = (q @ idx.vectors.T).max(axis=0)  # the default "full" reference views: one row per reference
        best = min(best, int(np.sum(s > s[true])) + 1)
    return best


def _one(idx, emb, path, true):
    px = images.load_image(path).pixels
    lv = L.extract_views(px)
    r_global = _rank(idx, emb, [px], true)
    r_win = _rank(idx, emb, [_window(px, w) for w in WINDOWS.values()], true)
    hits = idx.search_many(project(idx.proj_weight, emb.embed(library.views(px)))[None], library.DECISION_HITS)[0]
    m = L.match(idx.local, lv, [h[0] for h in hits[:L.SHORTLIST]])
    cand = true in {c for c, _, _ in m}
    own = idx.local.features(true)
    n = max(L.inliers(v, own, idx.local.settings.inlier_count) for v in lv)
    d = dense_best(lv, px, own, images.load_image(idx.refs[true]["path"]).pixels, idx.local.settings.dense_region)
    nw = max(max(L.inliers(v, own, idx.local.settings.inlier_count) for v in L.extract_views(_window(px, w)))
             for w in WINDOWS.values())
    feats = sum(len(v) for v in lv) / 2
    return r_global, r_win, cand, n, d, nw, feats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="bench/out/origin/r9_all_after.fpxindex")
    ap.add_argument("--per-family", type=int, default=20)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--windows", default=",".join(WINDOWS), help="the sub-windows tried (names of WINDOWS)")
    args = ap.parse_args()
    keep = args.windows.split(",")
    for k in [k for k in WINDOWS if k not in keep]:
        del WINDOWS[k]
    idx = load_index(args.index)
    emb = library.embedder_for(idx)
    row = {Path(r["path"]).stem: i for i, r in enumerate(idx.refs) if "/real/" in r["path"]}
    cal = idx.calibration
    lt, dt = cal["local_threshold"], cal.get("dense_threshold")
    print(f"index {args.index}: N = {idx.n}, local threshold {lt}, dense threshold {dt}, embedder {emb.name}")
    print("| family | n | global rank 1 | global ≤ 32 | sub-window rank 1 | local candidate | inliers > thr "
          "| median inliers | dense > thr (of inliers > thr) | sub-window inliers > thr | median sub-window inliers "
          "| fails: not candidate / inliers / dense |")
    print("|---|" + "---|" * 11)
    for fam in args.families.split(","):
        qs = sorted(p for p in Path(f"bench/out/origin/q/{fam}").glob("*.png") if p.stem in row)[:args.per_family]
        res = [_one(idx, emb, str(p), row[p.stem]) for p in qs]
        if not res:
            continue
        rg, rw, cand, n, d, nw, _ = (np.asarray(x, float) for x in zip(*[(a, b, c, e, -1 if f is None else f, g, h)
                                                                          for a, b, c, e, f, g, h in res]))
        ok_n = n > lt
        ok_d = ok_n & (d > dt) if dt is not None else ok_n
        print(f"| {fam} | {len(res)} | {np.mean(rg == 1):.2f} | {np.mean(rg <= 32):.2f} | {np.mean(rw == 1):.2f} "
              f"| {np.mean(cand > 0):.2f} | {np.mean(ok_n):.2f} | {np.median(n):.0f} | "
              f"{np.sum(ok_d)}/{np.sum(ok_n)} | {np.mean(nw > lt):.2f} | {np.median(nw):.0f} | "
              f"{int(np.sum(cand == 0))} / {int(np.sum((cand > 0) & ~ok_n))} / {int(np.sum((cand > 0) & ok_n & ~ok_d))} |",
              flush=True)


if __name__ == "__main__":
    main()
