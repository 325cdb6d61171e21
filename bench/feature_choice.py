"""Issue 11 round 11: choose the feature set of the v10 candidate on the calibration corpus alone
(docs/benchmarks.md, round 11).

Reads the v7 calibration corpus (``corpus_v7.csv``) and its scored calls with the artifact features added
(``scores_r11.jsonl``, ``bench/artifact_corpus.py``). For each candidate feature set, v9's exact pipeline at v9's
levels, cross-fitted by photo: density p-values (robust top-3 + kNN gate w = 0.2, leave-one-image-out), the
discriminative p-values (multinomial logistic, 10 photo folds), combined ``min(1, 2 min(p_density, p_disc))``, the
set at alpha = 0.05, and v9's guard (a band named only when the set lies in one band, the best member's density
p >= 0.2 and the gate's p_ood >= 0.02; no system named from statistics). Prints coverage, mean set size, the rate
at which the six AI systems' plain calls get a band named (and its accuracy), the same for the "+ JPEG" chain
calls of every system, and how often a benign call is put in an AI band.

The rule (written in docs/benchmarks.md before this ran): among candidates with cross-fitted coverage >= 0.94 and
every system >= 0.92 and named-band accuracy >= 0.95 on both row kinds, the one with the largest mean of the two
named rates (AI plain, chain + JPEG); ties to fewer features. Pinned: the candidate sets below, alpha, the guard.

    PYTHONPATH=src:bench nice -n 10 python bench/feature_choice.py --scores scores_r11_p64.jsonl [--photos N]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from artifact_corpus import photo_subsample

from fingerprint_cli.anchored import artifact_features
from fingerprint_cli.anchored import calibrate as C
from fingerprint_cli.anchored import discriminative as D
from fingerprint_cli.anchored import ood
from fingerprint_cli.anchored.attribute import FEATURE_SETS
from fingerprint_cli.anchored.models import LDA

ALPHA, TAU_BAND, TAU_GATE, GATE_WEIGHT = 0.05, 0.2, 0.02, 0.2  # v9's levels
AI = ("ffdnet_s5", "ffdnet_s15", "realesrgan_anime", "realesrgan_x4plus", "waifu2x_anime", "waifu2x_photo")
V9 = tuple(FEATURE_SETS["pixel-v2"])
CANDIDATES = {
    "v9 (pixel-v2)": V9,
    "+ period": V9 + ("af_period_2", "af_period_3", "af_period_4"),
    "+ halluc": V9 + ("af_halluc_0", "af_halluc_1"),
    "+ shape (edge/flat, sparsity, coupling)": V9 + ("af_edge_flat", "af_sparsity", "af_chroma_coupling"),
    "+ all artifact": V9 + artifact_features.NAMES,
}


def load(corpus_dir: Path, names, photos: int, scores: str = "scores_r11.jsonl", seed: int = 11):
    """(X, systems, photos, bands, chain) of the corpus rows the scores file holds (all features of ``names``);
    ``photos`` > 0 keeps a seeded subsample of that many photos."""
    feat = {}
    with open(corpus_dir / scores) as f:
        for line in f:
            d = json.loads(line)
            feat[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])] = d["features"]
    rows = [r for r in csv.DictReader(open(corpus_dir / "corpus_v7.csv"))
            if (f"{corpus_dir}/{r['reference']}", f"{corpus_dir}/{r['suspect']}") in feat]  # the scored photos
    if photos:
        keep = photo_subsample([r["image_id"] for r in rows], photos, seed)
        rows = [r for r in rows if r["image_id"] in keep]
    X = np.array([[feat[(f"{corpus_dir}/{r['reference']}", f"{corpus_dir}/{r['suspect']}")][n] for n in names]
                  for r in rows])
    return (X, np.array([r["system"] for r in rows]), np.array([r["image_id"] for r in rows]),
            {r["system"]: r["band"] for r in rows}, np.array([r["chain"] for r in rows]))


def pipeline(X, y, g, classes):
    """(combined P, density P, p_ood) of every call, cross-fitted / leave-one-image-out, v9's options."""
    Z = LDA.fit(X, y, classes=classes).standardise(X)
    A, own = C.conformal_loo(Z, y, g, classes, score="robust-top3+knn")
    gate, gown = ood.UnionGate.fit(Z, g, weight=GATE_WEIGHT)
    p_ood = ood.loo_p_values(gown, g)
    Pdens = ood.combine(C.conformal_loo_p(A, own, y, g, classes), p_ood, gate.weight)
    Ad, ownd = D.cross_fitted_scores("logistic", Z, y, g, classes)
    return D.combine(Pdens, D.calibration_p_values(Ad, ownd, y, g, classes)), Pdens, p_ood


def guarded_bands(P, Pdens, p_ood, classes, bands) -> np.ndarray:
    """The band v9's guard lets each call name ('' when none: unknown, several bands, or the guard stops it)."""
    out = []
    for p, pd, po in zip(P >= ALPHA, Pdens, p_ood):
        members = np.flatnonzero(p)
        one = {bands[classes[j]] for j in members}
        ok = len(one) == 1 and max(pd[j] for j in members) >= TAU_BAND and po >= TAU_GATE
        out.append(one.pop() if ok else "")
    return np.array(out)


def summary(name: str, k: int, P, named, y, classes, bands, chain) -> dict:
    """One candidate's numbers: coverage (overall, worst system), set size, named-band rates and accuracies."""
    r = C.conformal_report(P, y, classes, bands, ALPHA)
    truth = np.array([bands[c] for c in y])
    ai, jpeg = np.isin(y, AI) & (chain == ""), np.char.startswith(chain.astype(str), "jpeg")

    def rate(m):
        got = named[m] != ""
        return float(got.mean()), float((named[m][got] == truth[m][got]).mean()) if got.any() else float("nan")

    return {"name": name, "k": k, "coverage": r["coverage"], "coverage_min": r["coverage_min_system"],
            "set_size": r["mean_set_size"], "ai": rate(ai), "chain": rate(jpeg), "all": rate(np.ones(len(y), bool)),
            "benign_in_ai": float(np.isin(named[truth == "benign"], ("tight", "drift")).mean())}


def row(s: dict) -> str:
    """One table line."""
    def two(v):
        return f"{v[0]:.3f} ({v[1]:.3f})"

    return (f"| {s['name']} | {s['k']} | {s['coverage']:.3f} ({s['coverage_min']:.3f}) | {s['set_size']:.2f} | "
            f"{two(s['ai'])} | {two(s['chain'])} | {two(s['all'])} | {s['benign_in_ai']:.4f} |")


def choose(table: list[dict]) -> dict | None:
    """The rule written before the run: coverage >= 0.94, every system >= 0.92, named-band accuracy >= 0.95 on the
    AI systems' plain calls and the + JPEG chains; the largest mean of those two named rates; ties to fewer
    features (then table order)."""
    ok = [s for s in table if s["coverage"] >= 0.94 and s["coverage_min"] >= 0.92
          and all(s[k][1] >= 0.95 for k in ("ai", "chain"))]
    if not ok:
        return None
    return max(ok, key=lambda s: (round((s["ai"][0] + s["chain"][0]) / 2, 12), -s["k"], -table.index(s)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus-dir", type=Path, default=Path("bench/out/corpus_v2"))
    ap.add_argument("--photos", type=int, default=0, help="a seeded subsample of this many photos (0: all)")
    ap.add_argument("--scores", default="scores_r11.jsonl", help="the scored calls (in --corpus-dir)")
    ap.add_argument("--only", default="", help="candidate names to run, separated by ; (default: all)")
    args = ap.parse_args()
    print("| feature set (calibration, cross-fitted by photo) | features | coverage (min system) | mean set size | "
          "AI systems, plain: band named (accuracy) | + JPEG chains: band named (accuracy) | all calls: band named "
          "(accuracy) | benign calls in an AI band |\n|---|---|---|---|---|---|---|---|", flush=True)
    table = []
    for name, names in CANDIDATES.items():
        if args.only and name != args.only and name not in args.only.split(";"):
            continue
        X, y, g, bands, chain = load(args.corpus_dir, names, args.photos, args.scores)
        classes = sorted(set(y.tolist()))
        P, Pdens, p_ood = pipeline(X, y, g, classes)
        table.append(summary(name, len(names), P, guarded_bands(P, Pdens, p_ood, classes, bands), y, classes, bands,
                             chain))
        print(row(table[-1]), flush=True)
    best = choose(table)
    print(f"\n{len(set(g.tolist()))} photos, {len(y)} calls; chosen by the rule: "
          f"{best['name'] if best else 'none'}" + (f" = {','.join(CANDIDATES[best['name']])}" if best else ""))


if __name__ == "__main__":
    main()
