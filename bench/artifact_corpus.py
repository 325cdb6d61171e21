"""Issue 11 round 11: add the artifact features (``af_*``) to the stored calibration corpus's scored calls.

Reads the v7 corpus (``corpus_v7.csv``) and its scored calls (``scores_r6all.jsonl``, v9's features), aligns each
stored suspect to its reference as ``fpx score`` does (:func:`fingerprint_cli.anchored.score.align`), fits the tone
curve and computes :func:`fingerprint_cli.anchored.artifact_features.compute` on the curve-corrected suspect (the
same path as ``pixel.feature_hook``), and writes the records with the new features (and directions) added — the old
features untouched — to ``--out`` (a ``--scores`` jsonl that ``fpx calibrate --reuse-scores`` reads).
``--part i/n`` computes every n-th row from i (run n of them at once; ``--merge`` joins the parts).

    PYTHONPATH=src nice -n 10 python bench/artifact_corpus.py --part 0/2 &
    PYTHONPATH=src nice -n 10 python bench/artifact_corpus.py --part 1/2 &
    PYTHONPATH=src python bench/artifact_corpus.py --merge 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fingerprint_cli import atomic, images
from fingerprint_cli.anchored import artifact_features, pixel
from fingerprint_cli.anchored.score import align


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def features_of(reference: str, suspect: str) -> dict[str, float]:
    """The artifact features of one stored pair (aligned and tone-corrected as the scoring path does)."""
    ref, sus = images.load_image(reference), images.load_image(suspect)
    px, _ = align(ref, sus)
    corrected, _ = pixel.tone_curve(np.asarray(ref.pixels, dtype=np.float64), px)
    return artifact_features.compute(ref.pixels, corrected)


def run_part(recs: list[dict], i: int, n: int, out: Path) -> None:
    """Features of rows i, i+n, … written as jsonl lines ``{"k": row, "f": {...}}`` to ``out``."""
    t0 = time.time()
    lines = []
    for k in range(i, len(recs), n):
        d = recs[k]
        if d.get("status") != "ok":
            continue
        f = features_of(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])
        lines.append(json.dumps({"k": k, "f": f}))
        if len(lines) % 500 == 0:
            print(f"  part {i}/{n}: {len(lines)} pairs ({time.time() - t0:.0f} s)", file=sys.stderr)
    atomic.write_text(out, "\n".join(lines) + "\n")
    print(f"part {i}/{n}: {len(lines)} pairs in {time.time() - t0:.0f} s", file=sys.stderr)


def merge(recs: list[dict], parts: list[Path], out: Path) -> None:
    """The records with each part's features (and their directions) added."""
    for p in parts:
        for d in _records(p):
            rec = recs[d["k"]]
            rec["features"].update(d["f"])
            rec["directions"].update({k: artifact_features.FEATURES[k][0] for k in d["f"]})
    atomic.write_text(out, "".join(json.dumps(r) + "\n" for r in recs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scores", type=Path, default=Path("bench/out/corpus_v2/scores_r6all.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/corpus_v2/scores_r11.jsonl"))
    ap.add_argument("--part", default="0/1", help="i/n: every n-th record from i")
    ap.add_argument("--merge", type=int, default=0, help="join the n parts into --out")
    args = ap.parse_args()
    recs = _records(args.scores)
    parts = [args.out.with_suffix(f".part{i}of{args.merge}") for i in range(args.merge)]
    if args.merge:
        merge(recs, parts, args.out)
        return
    i, n = (int(x) for x in args.part.split("/"))
    run_part(recs, i, n, args.out.with_suffix(f".part{i}of{n}"))


if __name__ == "__main__":
    main()
