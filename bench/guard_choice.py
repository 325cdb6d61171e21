"""Round 9 (issue 11): choose the decision guard's levels on DEVELOPMENT rows only (docs/benchmarks.md, round 9).

The artifact (v8 by default) decides every cached development row once without a guard; then every grid point of
:class:`fingerprint_cli.anchored.naming.Guard` is applied to those calls (its :meth:`~Guard.apply`, the code the
Decider runs) and the rule written before the run picks the levels: maximise the decided rate (a band or a system
named) of the known AI-system calls, subject to confident known-system labels <= 0.03 and benign edits in an AI
band <= 0.01 on the pooled development held-out rows; ties to the larger tau_band, tau_system, tau_gate, then
``all``. Development rows (cached features, no rescoring): the known rows and the test4 / test6 held-out rows of
the 32 standard eval photos (``bench/out/openset``), the known rows and the test8 rows of the 40 fresh8 photos
(``bench/out/openset_fresh8``). Exact copies keep the exact rule's answer (the guard never sees them).

    python bench/guard_choice.py [--artifact bench/out/corpus_v2/local-offline-pixel-v8.json] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import fingerprint_cli  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent / "src"))

import openset  # noqa: E402

from fingerprint_cli.anchored import attribute, naming, thresholds  # noqa: E402

TAU_BAND = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
TAU_SYSTEM = TAU_BAND + (0.6, 0.7, 0.8, 0.9, naming.NEVER)
TAU_GATE = (0.0, 0.02, 0.05, 0.1)
RULES = ("all", "best")
MAX_CONFIDENT, MAX_BENIGN_AI = 0.03, 0.01
DEV_RUNS = (  # (folders, cache folder, photo set, max per folder, held-out lists)
    (("/work/shared/data/generators/real_kodak24", "/work/shared/data/real_bsds500/val"), "openset", "standard", 20,
     ("test4", "test6")),
    (("/work/shared/data/real_bsds500/train",), "openset_fresh8", "fresh8", 40, ("test8",)),
)


def dev_rows(names):
    """(rows, features) of every development run of :data:`DEV_RUNS` (held-out rows tagged with their list)."""
    from corpus_local import BANDS_V4 as BANDS

    rows, feats = [], []
    for folders, cache, photos, per, lists in DEV_RUNS:
        present = [Path(f) for f in folders if Path(f).is_dir()]
        if not present:
            continue
        ph = openset.select_set(present, photos, per)
        out = HERE / "out" / cache
        got = openset.build(ph, out, 160, 1, list(BANDS), None, ("known",))
        for name in lists:
            held = openset.build(ph, out, 160, 1, [], openset.SETS[name], ("held",))
            got += [{**r, "list": name} for r in held]
        rows += got
        feats += openset._features(got, names, out / "rows.csv", False)
    return rows, feats


def base_calls(decider, rows, feats):
    """Per row: (unguarded call tuple, set, density p-values, p_ood, exact copy)."""
    out = []
    for r, f in zip(rows, feats):
        d, _ = decider.decide(f, top_k=3, exact={"identical": r.get("exact_copy") == "1"})
        dens = d.get("p_values_density") or d.get("p_values") or {}
        out.append(((d["system"], d["band"], d["label"], []), list(d["prediction_set"] or []), dens,
                    d.get("p_ood"), d.get("rule") == "exact-copy"))
    return out


def guarded(calls, g: naming.Guard):
    """(system, band) of every call under guard ``g`` (exact copies and calls with no density p unchanged)."""
    res = []
    for call, members, dens, p_ood, exact in calls:
        if exact or not members or not dens:
            res.append(call[:2])
        else:
            res.append(g.apply(call, members, dens, p_ood)[:2])
    return res


def metrics(rows, res, systems, bands) -> dict:
    """The rule's rows for one guard: held-out confident labels and benign-in-AI (pooled), known AI decided."""
    sysl = np.array([s for s, _ in res])
    band = np.array([b for _, b in res])
    kind = np.array([r["kind"] for r in rows])
    truth = np.array([r["truth"] for r in rows])
    tband = np.array([r["truth_band"] for r in rows])
    held = np.char.startswith(kind.astype(str), "held_out")
    named = np.isin(band, sorted(set(bands.values())))
    is_sys = np.isin(sysl, list(systems))
    known = (kind == "known") & np.isin(truth, list(systems))
    ai = known & np.isin(tband, openset.AI_BANDS)
    right = np.where(is_sys, sysl == truth, band == tband)
    return {"confident": float(is_sys[held].mean()),
            "benign_ai": float(np.isin(band, openset.AI_BANDS)[kind == "held_out_benign"].mean()),
            "ai_decided": float(named[ai].mean()), "known_decided": float(named[known].mean()),
            "known_accuracy": float(right[known & named].mean()) if (known & named).any() else None,
            "per_list": {name: float(is_sys[held & (np.array([r.get("list", "") for r in rows]) == name)].mean())
                         for name in sorted({r.get("list") for r in rows if r.get("list")})}}


def choose(table):
    """The grid point the rule picks (None when no point meets the constraints)."""
    ok = [t for t in table if t["confident"] <= MAX_CONFIDENT and t["benign_ai"] <= MAX_BENIGN_AI]
    if not ok:
        return None
    return max(ok, key=lambda t: (t["ai_decided"], t["tau_band"], t["tau_system"], t["tau_gate"], t["band_rule"] == "all"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", default=str(HERE / "out" / "corpus_v2" / "local-offline-pixel-v8.json"))
    ap.add_argument("--json", type=Path, default=HERE / "out" / "r9_guard_choice.json")
    args = ap.parse_args()
    doc = thresholds.find(args.artifact)
    decider = attribute.Decider(doc)
    rows, feats = dev_rows(list(doc.features))
    if not rows:
        print("guard_choice: no development data present; nothing to do (skipped)")
        return 0
    calls = base_calls(decider, rows, feats)
    systems = set(decider.model.classes)
    table = []
    for tb, ts, tg, rule in itertools.product(TAU_BAND, TAU_SYSTEM, TAU_GATE, RULES):
        g = naming.Guard(tb, ts, tg, rule)
        table.append({"tau_band": tb, "tau_system": ts, "tau_gate": tg, "band_rule": rule,
                      **metrics(rows, guarded(calls, g), systems, decider.bands)})
    none = next(t for t in table if not (t["tau_band"] or t["tau_system"] or t["tau_gate"]) and t["band_rule"] == "all")
    best = choose(table)
    args.json.write_text(json.dumps({"artifact": doc.id, "n_rows": len(rows), "no_guard": none, "chosen": best,
                                     "table": table}, indent=1))
    print(f"guard_choice: {doc.id} on {len(rows)} development rows "
          f"({sum(r['kind'].startswith('held_out') for r in rows)} held-out); {len(table)} grid points\n")
    print("| guard | dev held-out: confident known-system label (<= 0.03) | dev benign in an AI band (<= 0.01) | "
          "known AI systems: decided | known: decided (accuracy) | confident per list |")
    print("|---|---|---|---|---|---|")
    for name, t in (("none (v8)", none), ("chosen", best)):
        if t is None:
            print(f"| {name} | no grid point meets the constraints | | | | |")
            continue
        lbl = (f"{name}: tau_band {t['tau_band']:g}, tau_system {t['tau_system']:g}, tau_gate {t['tau_gate']:g}, "
               f"{t['band_rule']}")
        acc = "-" if t["known_accuracy"] is None else f"{t['known_accuracy']:.3f}"
        print(f"| {lbl} | {t['confident']:.3f} | {t['benign_ai']:.3f} | {t['ai_decided']:.3f} | "
              f"{t['known_decided']:.3f} ({acc}) | "
              + ", ".join(f"{k} {v:.3f}" for k, v in t["per_list"].items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
