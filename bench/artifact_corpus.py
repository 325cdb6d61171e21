"""Issue 11 round 11: add the artifact features (``af_*``) to the stored calibration corpus's scored calls.

Reads the v7 corpus (``corpus_v7.csv``) and its scored calls (``scores_r6all.jsonl``, v9's features), aligns each
stored suspect to its reference as ``fpx score`` does (:func:`fingerprint_cli.anchored.score.align`), fits the tone
curve and computes :func:`fingerprint_cli.anchored.artifact_features.compute` on the curve-corrected suspect (the
same path as ``pixel.feature_hook``), and writes the records with the new features (and directions) added — the old
features untouched — to ``--out`` (a ``--scores`` jsonl that ``fpx calibrate --reuse-scores`` reads).
``--part i/n`` computes every n-th row from i (run n of them at once; ``--merge`` joins the parts); ``--photos N``
keeps only the rows of a seeded subsample of N photos (:func:`photo_subsample`, the one ``bench/feature_choice.py``
uses), photo by photo in its draw order; the merge keeps the photos whose every call was computed and writes
their corpus rows beside the original corpus (``--out`` with the suffix ``.csv``) for ``fpx calibrate``.

    PYTHONPATH=src nice -n 10 python bench/artifact_corpus.py --part 0/2 &
    PYTHONPATH=src nice -n 10 python bench/artifact_corpus.py --part 1/2 &
    PYTHONPATH=src python bench/artifact_corpus.py --merge 2
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from fingerprint_cli import atomic, images
from fingerprint_cli.anchored import artifact_features, metrics, pixel
from fingerprint_cli.anchored.score import align


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def photo_order(image_ids, n: int, seed: int = 11) -> list[str]:
    """A seeded subsample of ``n`` of the distinct ``image_ids``, in the order numpy's ``default_rng(seed).choice``
    draws them (all of them, sorted, when ``n`` is 0)."""
    ids = sorted(set(image_ids))
    if not n or n >= len(ids):
        return ids
    return np.random.default_rng(seed).choice(ids, n, replace=False).tolist()


def photo_subsample(image_ids, n: int, seed: int = 11) -> set[str]:
    """The photos of :func:`photo_order` as a set."""
    return set(photo_order(image_ids, n, seed))


def _keep_photos(recs: list[dict], corpus: Path, n: int) -> list[dict]:
    """The records of the corpus rows whose photo is in the seeded subsample of ``n`` photos, photo by photo in the
    subsample's order (so a run cut short holds whole photos, the first ones of that order)."""
    rows = list(csv.DictReader(open(corpus)))
    rank = {p: i for i, p in enumerate(photo_order([r["image_id"] for r in rows], n))}
    base = corpus.parent
    photo = {(f"{base}/{r['reference']}", f"{base}/{r['suspect']}"): r["image_id"] for r in rows
             if r["image_id"] in rank}
    keep = [d for d in recs if (d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"]) in photo]
    return sorted(keep, key=lambda d: rank[photo[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])]])


def features_of(reference: str, suspect: str, only: str = "") -> dict[str, float]:
    """The artifact features of one stored pair (aligned and tone-corrected as the scoring path does); with
    ``only="period"`` just ``af_period_2/3/4`` (:func:`artifact_features.periodicity`, the same numbers)."""
    ref, sus = images.load_image(reference), images.load_image(suspect)
    px, _ = align(ref, sus)
    corrected, _ = pixel.tone_curve(np.asarray(ref.pixels, dtype=np.float64), px)
    if only == "period":
        return artifact_features.periodicity(*metrics.pair_luma(ref.pixels, corrected)[2:])
    return artifact_features.compute(ref.pixels, corrected)


def _pair(d: dict) -> tuple[str, str]:
    return d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"]


def reused(recs: list[dict], parts: list[Path], only: str = "") -> dict[tuple[str, str], dict[str, float]]:
    """Features already computed by an earlier run (``recs``: the record list its part files' rows index, i.e. its
    ``--scores`` kept to its ``--photos``), by pair, limited to the ``only`` group's names (``period``:
    ``af_period_*``)."""
    out = {}
    for p in parts:
        for line in p.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                out[_pair(recs[d["k"]])] = {f: v for f, v in d["f"].items()
                                            if not only or f.startswith(f"af_{only}_")}
    return out


def run_part(recs: list[dict], i: int, n: int, out: Path, only: str = "", reuse: dict | None = None) -> None:
    """Features of rows i, i+n, … appended as jsonl lines ``{"k": row, "f": {...}}`` to ``out`` as they are computed
    (a run stopped early keeps what it wrote; the merge takes only whole photos); pairs in ``reuse`` are copied
    from it, not recomputed."""
    reuse = reuse or {}
    t0 = time.time()
    done = 0
    with open(out, "w") as fh:
        for k in range(i, len(recs), n):
            d = recs[k]
            if d.get("status") != "ok":
                continue
            f = reuse.get(_pair(d)) or features_of(*_pair(d), only=only)
            fh.write(json.dumps({"k": k, "f": f}) + "\n")
            fh.flush()
            done += 1
            if done % 200 == 0:
                print(f"  part {i}/{n}: {done} pairs ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(f"part {i}/{n}: {done} pairs in {time.time() - t0:.0f} s", file=sys.stderr)


def merge(recs: list[dict], parts: list[Path], out: Path, corpus: Path) -> list[str]:
    """The records of the photos whose every call has its features in the parts, with those features (and their
    directions) added; written to ``out``. Returns those photos."""
    got = {}
    for p in parts:
        for line in p.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                got[d["k"]] = d["f"]
    photo = {(f"{corpus.parent}/{r['reference']}", f"{corpus.parent}/{r['suspect']}"): r["image_id"]
             for r in csv.DictReader(open(corpus))}

    def img(d):
        return photo[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])]

    whole = {img(d) for d in recs} - {img(d) for k, d in enumerate(recs) if k not in got}
    kept = []
    for k, d in enumerate(recs):
        if img(d) in whole:
            d["features"].update(got[k])
            d["directions"].update({f: artifact_features.FEATURES[f][0] for f in got[k]})
            kept.append(d)
    atomic.write_text(out, "".join(json.dumps(r) + "\n" for r in kept))
    _write_corpus(corpus, whole, out.with_suffix(".csv"))
    return sorted(whole)


def _write_corpus(corpus: Path, photos: set[str], out: Path) -> None:
    """The corpus rows of ``photos`` as a corpus CSV beside the original (its relative paths stay valid)."""
    rows = list(csv.DictReader(open(corpus)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(r for r in rows if r["image_id"] in photos)
    atomic.write_text(out, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scores", type=Path, default=Path("bench/out/corpus_v2/scores_r6all.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/corpus_v2/scores_r11.jsonl"))
    ap.add_argument("--part", default="0/1", help="i/n: every n-th record from i")
    ap.add_argument("--merge", type=int, default=0, help="join the n parts into --out")
    ap.add_argument("--photos", type=int, default=0, help="only a seeded subsample of this many photos (0: all)")
    ap.add_argument("--corpus", type=Path, default=Path("bench/out/corpus_v2/corpus_v7.csv"))
    ap.add_argument("--only", choices=["period"], default="", help="compute only this group (af_period_2/3/4)")
    ap.add_argument("--reuse", type=Path, nargs="*", default=[],
                    help="an earlier run's part files (same --scores; its --photos given by --reuse-photos): their "
                         "pairs are not recomputed")
    ap.add_argument("--reuse-photos", type=int, default=0, help="the --photos of the --reuse run")
    args = ap.parse_args()
    recs = _records(args.scores)
    reuse = {}
    if args.reuse:
        old = _keep_photos(recs, args.corpus, args.reuse_photos) if args.reuse_photos else recs
        reuse = reused(old, args.reuse, args.only)
    if args.photos:
        recs = _keep_photos(recs, args.corpus, args.photos)
    parts = [args.out.with_suffix(f".part{i}of{args.merge}") for i in range(args.merge)]
    if args.merge:
        whole = merge(recs, parts, args.out, args.corpus)
        print(f"merged: {len(whole)} whole photos -> {args.out}", file=sys.stderr)
        return
    i, n = (int(x) for x in args.part.split("/"))
    run_part(recs, i, n, args.out.with_suffix(f".part{i}of{n}"), args.only, reuse)


if __name__ == "__main__":
    main()
