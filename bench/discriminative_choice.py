"""Issue 11 round 8: choose the discriminative model on the calibration corpus alone (docs/benchmarks.md, round 8).

Reads the v7 calibration corpus (``bench/out/corpus_v2/corpus_v7.csv``) and its scored calls
(``scores_r6all.jsonl``), computes v7's density p-values (robust top-3 + kNN gate, leave-one-image-out) once, then
for each candidate (``lda``, ``qda``, ``logistic``) the discriminative p-values cross-fitted by photo, alone and
combined (``min(1, 2 min(p_density, p_disc))``), and prints coverage, set sizes and decided rates at alpha 0.05.
The rule (written before it ran): among candidates with combined coverage >= 0.94 and every system >= 0.92, the
smallest mean set size.

    PYTHONPATH=src python bench/discriminative_choice.py [--corpus-dir bench/out/corpus_v2]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from fingerprint_cli.anchored import calibrate as C
from fingerprint_cli.anchored import discriminative as D
from fingerprint_cli.anchored.attribute import FEATURE_SETS
from fingerprint_cli.anchored.models import LDA


def load(corpus_dir: Path):
    """(X, systems, photos, bands) of the v7 corpus from its scored calls (no image is read)."""
    names = list(FEATURE_SETS["pixel-v2"])
    feat = {}
    with open(corpus_dir / "scores_r6all.jsonl") as f:
        for line in f:
            d = json.loads(line)
            feat[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])] = d["features"]
    rows = list(csv.DictReader(open(corpus_dir / "corpus_v7.csv")))
    X = np.array([[feat[(f"{corpus_dir}/{r['reference']}", f"{corpus_dir}/{r['suspect']}")][n] for n in names]
                  for r in rows])
    return (X, np.array([r["system"] for r in rows]), np.array([r["image_id"] for r in rows]),
            {r["system"]: r["band"] for r in rows})


def line(name: str, P: np.ndarray, y, classes, bands) -> str:
    r = C.conformal_report(P, y, classes, bands, 0.05)
    ai = np.isin(y, [c for c in classes if bands[c] in ("tight", "drift")])
    one = np.array([len({bands[classes[j]] for j in np.flatnonzero(row)}) == 1 for row in P >= 0.05])
    return (f"| {name} | {r['coverage']:.3f} ({r['coverage_min_system']:.3f}-{r['coverage_max_system']:.3f}) | "
            f"{r['mean_set_size']:.2f} | {r['unknown_rate']:.3f} | {r['singleton_rate']:.3f} "
            f"({r['singleton_accuracy']:.3f}) | {r['band_decided_rate']:.3f} ({r['band_accuracy_when_decided']:.3f}) | "
            f"{one[ai].mean():.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus-dir", type=Path, default=Path("bench/out/corpus_v2"))
    args = ap.parse_args()
    X, y, g, bands = load(args.corpus_dir)
    classes = sorted(set(y.tolist()))
    Z = LDA.fit(X, y, classes=classes).standardise(X)
    A, own = C.conformal_loo(Z, y, g, classes, score="robust-top3+knn")
    _, P = C._gate("robust-top3+knn", Z, g, C.conformal_loo_p(A, own, y, g, classes), 0.2)
    print("| p-values | coverage (per system) | mean set size | unknown | one system (accuracy) | one band (accuracy) "
          "| AI-system calls: one band |\n|---|---|---|---|---|---|---|")
    print(line("v7: density alone", P, y, classes, bands))
    for kind in D.KINDS[1:]:
        Ad, ownd = D.cross_fitted_scores(kind, Z, y, g, classes)
        Pd = D.calibration_p_values(Ad, ownd, y, g, classes)
        print(line(f"{kind} alone", Pd, y, classes, bands))
        print(line(f"{kind} combined", D.combine(P, Pd), y, classes, bands))


if __name__ == "__main__":
    main()
