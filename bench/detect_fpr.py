"""Does `fpx detect`'s stated false-positive rate hold on held-out real photos and on their everyday copies?

For each fingerprint (default: the shipped library; ``--before DIR`` adds a second set, e.g. the library as it
was before condition-aware calibration) and each condition of the held-out real photographs
DATA/real_bsds500/val (never used for fitting or calibration by scripts/build_fingerprint_library.py, whose
calibration photos come from real_bsds500/train):

* ``none``              — the JPEG photos as distributed (q95, the calibration photos' condition);
* ``jpegQ``             — decoded and re-encoded as JPEG quality Q (Pillow, 4:2:0), whole image;
* ``resizeS``           — bicubic (antialiased) resize to S× each side, saved losslessly as PNG;
* ``resizeS+jpegQ``     — both, in that order (a chain);
* ``jpegQ>png``         — the JPEG copy decoded and re-saved as PNG (same pixels; the header says lossless);

it runs the real detection path (:func:`fingerprint_cli.dif.detect.detect_one`: the suspect's JPEG quality is
read from its file header and picks the calibration sets its p-value is taken over) and prints the measured
false-positive rate at the fingerprint's stated rate with a 95 % Clopper–Pearson upper bound, next to the
nominal rate; whether each condition is one the fingerprint was calibrated on (a condition outside that list
is the honest test: nothing was tuned on it); for the library as a whole (``fpx detect`` without -F) the rate
of real photos given any generator label next to the union bound Σ FPR; and with ``--tpr`` the detection rate
on each fingerprint's held-out generated images as produced (what the stated rate costs in power), and with
``--tpr-conditions`` also on copies of those images under each listed condition (e.g. ``jpeg90,jpeg75``: the
recompressed copy an analyst receives). Copies are written under --out (git-ignored) and analysed from there;
nothing is tuned here. ``--lossless NAME=DIR`` (repeatable) adds held-out lossless real photos (PNG, analysed as
they are) as rows ``lossless:NAME``, and their union as ``lossless:all`` (issue 15: a calibration on JPEG photos
alone does not state its rate there; ``calibrated on`` says whether the fingerprint has a lossless set).

    nice -n 10 python bench/detect_fpr.py --data /work/shared/data --cache bench/out/rescache \\
        --before bench/out/library-before --tpr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fingerprint_cli import atomic, images  # noqa: E402
from fingerprint_cli.dif import detect  # noqa: E402
from fingerprint_cli.dif.condition import Recompression  # noqa: E402
from fingerprint_cli.dif.fingerprint import Fingerprint, load_folder, load_library  # noqa: E402
from fingerprint_cli.dif.residuals import ResidualCache  # noqa: E402
from fingerprint_cli.dif import route  # noqa: E402

LOSSLESS = "lossless:"
CONDITIONS = ("none", "jpeg90", "jpeg75", "jpeg50", "resize0.9", "jpeg60", "resize0.9+jpeg75", "jpeg75>png")


def make_copies(paths: list[str], out: Path, cond: str) -> list[str]:
    """The copies of ``paths`` under condition ``cond`` (:class:`Recompression`), written once under ``out``;
    ``COND>png``: those copies decoded and re-saved losslessly (same pixels, a header that says lossless)."""
    if cond.endswith(">png"):
        copies = []
        for i, p in enumerate(make_copies(paths, out, cond[:-4])):
            f = out / cond.replace(">", "_") / f"{i:04d}_{Path(p).stem}.png"
            if not f.exists():
                f.parent.mkdir(parents=True, exist_ok=True)
                images.save_png(images.load_image(p).pixels, f)
            copies.append(str(f))
        return copies
    rc = Recompression.parse(cond)
    if rc.id == "none":
        return list(paths)
    copies = []
    for i, p in enumerate(paths):
        stem = out / rc.id / f"{i:04d}_{Path(p).stem}"
        f = stem.with_suffix(".jpg" if rc.quality is not None else ".png")
        if not f.exists():
            data, _ = rc.encode(images.load_image(p).pixels)
            f.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(f, data)
        copies.append(str(f))
    return copies


def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float:
    from scipy.stats import beta

    return 1.0 if k == n else float(beta.ppf(level, k + 1, n - k))


def verdict(k: int, n: int, a: float) -> str:
    """yes / within noise / no: a one-sided binomial test of "the true rate is at most the stated one"."""
    from scipy.stats import binom

    if k / n <= a:
        return "yes"
    p = binom.sf(k - 1, n, a)
    return f"within noise (binomial p = {p:.2f})" if p >= 0.05 else f"**no** (binomial p = {p:.1g})"


def calibrated_on(fp: Fingerprint, cond: str) -> str:
    cal = fp.conformal
    if cond.startswith(LOSSLESS):
        return "its lossless set (other photos)" if cal.lossless else "no (JPEG photos only)"
    if cond == "none":
        return "yes"
    if cond.endswith(">png"):
        return "no (its JPEG set, but the header says lossless)"
    return "yes" if cal.recompressions and Recompression.parse(cond).id in cal.recompressions else "no"


def generated_rate(fps: list[Fingerprint], paths: list[str], cache: ResidualCache) -> tuple[int, int]:
    """(images called generated, images) by ``fpx detect``'s decision with these fingerprints."""
    names = detect.labels(fps)
    k = 0
    for p in paths:
        rec = detect.detect_one(fps, p, names=names, cache=cache)
        k += int(detect.claimed(rec.decision))
    return k, len(paths)


def measure(label: str, fps: list[Fingerprint], sets: dict[str, list[str]], cache: ResidualCache):
    rows, lib = [], []
    for cond, paths in sets.items():
        for members in route.groups(fps):  # the members of one generator's fingerprint are routed between, as detect does
            fp = members[0]
            k, n = generated_rate(members, paths, cache)
            rows.append({"set": label, "fingerprint": fp.name, "condition": cond,
                         "calibrated_on": calibrated_on(fp, cond), "fpr": fp.fpr, "k": k, "n": n})
            print(f"[{label}] {fp.name} {cond}: {k}/{n} false positives (stated {fp.fpr})", file=sys.stderr,
                  flush=True)
        k, n = generated_rate(fps, paths, cache)
        lib.append({"set": label, "condition": cond, "k": k, "n": n,
                    "union_bound": min(1.0, sum(fp.fpr for fp in fps))})
    return rows, lib


def fpr_tables(after: list[Fingerprint], groups: dict[str, list[Fingerprint]], conds: list[str], rows: list[dict],
               lib: list[dict]) -> None:
    """Print the per-fingerprint false-positive table and the library's (any generator label) table."""
    print("| fingerprint | real photos (val) | calibrated on this condition | stated FPR | "
          + " | ".join(f"{g} FP / n" for g in groups) + " | after: measured FPR, 95 % upper | after holds? |")
    print("|---|---|---|---|" + "---|" * len(groups) + "---|---|")
    for fp in (members[0] for members in route.groups(after)):
        for cond in conds:
            cells = {r["set"]: r for r in rows if r["fingerprint"] == fp.name and r["condition"] == cond}
            a = cells["after"]
            print(f"| {fp.name} | {cond} | {a['calibrated_on']} | {a['fpr']:g} | "
                  + " | ".join(f"{cells[g]['k']}/{cells[g]['n']}" for g in groups)
                  + f" | {a['k'] / a['n']:.3f}, {clopper_pearson_upper(a['k'], a['n']):.3f} | "
                    f"{verdict(a['k'], a['n'], a['fpr'])} |")
    print()
    print("| library (`fpx detect` without -F) | real photos (val) | "
          + " | ".join(f"{g}: any generator label" for g in groups) + " | union bound Σ FPR |")
    print("|---|---|" + "---|" * len(groups) + "---|")
    for cond in conds:
        cells = {r["set"]: r for r in lib if r["condition"] == cond}
        print(f"| {len(after)} fingerprints | {cond} | "
              + " | ".join(f"{cells[g]['k']}/{cells[g]['n']} = {cells[g]['k'] / cells[g]['n']:.3f}" for g in groups)
              + f" | {cells['after']['union_bound']:.3f} |")


def tpr_table(after: list[Fingerprint], sets: dict[str, list[Fingerprint]], conds: list[str], out: Path,
              cache: ResidualCache) -> list[dict]:
    """Print the detection rate of each fingerprint (and its namesake in every group) on its held-out generated
    images, as produced (``none``) and as copies under each other condition; returns the rows."""
    print()
    print("| fingerprint | its held-out generated images | condition | stated FPR | "
          + " | ".join(f"{g}: detected (TPR)" for g in sets) + " |")
    print("|---|---|---|---|" + "---|" * len(sets))
    rows = []
    for fp in (members[0] for members in route.groups(after)):
        held = [d["path"] for d in fp.info.split("test", "generated")]
        for cond in conds:
            paths = make_copies(held, out / fp.name, cond)
            cells = {}
            for g, fps in sets.items():
                same = [x for x in fps if x.name == fp.name]  # all members of that label (routed)
                k, n = generated_rate(same, paths, cache)
                cells[g] = (k, n)
                rows.append({"set": g, "fingerprint": fp.name, "condition": cond, "k": k, "n": n})
            shown = "as produced" if cond == "none" else cond
            print(f"| {fp.name} | {len(held)} images | {shown} | {fp.fpr:g} | "
                  + " | ".join(f"{k}/{n} = {k / n:.3f}" for k, n in cells.values()) + " |", flush=True)
    return rows


def _arguments(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--fingerprint", "-F", action="append", default=[], help="default: the shipped library")
    ap.add_argument("--before", type=Path, default=None, help="a folder of the same fingerprints before")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--n", type=int, default=None, help="at most this many val photos per condition")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "detect_fpr")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tpr", action="store_true",
                    help="also the detection rate on each fingerprint's held-out generated images as produced")
    ap.add_argument("--tpr-conditions", default="",
                    help="with --tpr: also on copies of those images under these conditions (e.g. jpeg90,jpeg75)")
    ap.add_argument("--lossless", action="append", default=[], metavar="NAME=DIR",
                    help="held-out lossless real photos (repeatable): rows lossless:NAME and lossless:all")
    return ap.parse_args(argv)


def lossless_sets(specs: list[str]) -> dict[str, list[str]]:
    """``--lossless NAME=DIR`` → {"lossless:NAME": paths, …, "lossless:all": their union} (empty without)."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, d = spec.partition("=")
        out[LOSSLESS + name] = [str(p) for p in images.list_images(d)]
    if len(out) > 1:
        out[LOSSLESS + "all"] = [p for paths in list(out.values()) for p in paths]
    return out


def _groups(args) -> dict[str, list[Fingerprint]] | None:
    """The fingerprints measured ("after": -F or the shipped library; "before": --before's folder), or None
    (after a message) when one of them is not calibrated."""
    after = [Fingerprint.load(p) for p in args.fingerprint] or load_library()
    groups = {"before": load_folder(args.before), "after": after} if args.before else {"after": after}
    for label, fps in groups.items():
        if any(not fp.calibrated for fp in fps):
            print(f"{label}: every fingerprint must be calibrated", file=sys.stderr)
            return None
    return groups


def main(argv=None) -> int:
    args = _arguments(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    vdir = args.data / "real_bsds500" / "val"
    if not vdir.is_dir():
        print(f"skip: {vdir} not found", file=sys.stderr)
        return 0
    groups = _groups(args)
    if groups is None:
        return 1
    after = groups["after"]
    val = [str(p) for p in images.list_images(vdir)][:args.n]
    conds = [c.strip() for c in args.conditions.split(",") if c.strip()]
    sets = {c: make_copies(val, args.out, c) for c in conds}
    sets.update(lossless_sets(args.lossless))
    conds = list(sets)
    cache = ResidualCache(disk=args.cache if args.cache else True)
    rows, lib = [], []
    for label, fps in groups.items():
        r, lb = measure(label, fps, sets, cache)
        rows += r
        lib += lb
    fpr_tables(after, groups, conds, rows, lib)
    tpr = []
    if args.tpr:
        tpr_conds = ["none"] + [c.strip() for c in args.tpr_conditions.split(",") if c.strip() and c.strip() != "none"]
        tpr = tpr_table(after, groups, tpr_conds, args.out / "generated", cache)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "result.json", json.dumps({"rows": rows, "library": lib, "tpr": tpr}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
