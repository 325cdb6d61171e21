#!/usr/bin/env python
"""Issue 15 — scale restoration for resized copies: Fig.-6-style rows before / after restoration at detection.

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 python bench/dif_scale.py --stage fit --generators ldm  # and dalle3
    ... --stage calibrate
    ... --stage dev        # LDM development rows, every candidate kernel (picks the kernel by the rule below)
    ... --stage heldout --kernel K   # once, everything frozen (LDM fresh + DALL-E 3 library held-out)

Fingerprints (``--stage fit``; Gaussian residuals as rounds 4–5, not the library's DnCNN):
``plain`` DIF, crop 256, 30 epochs, batch 64, zero-shift ρ. LDM: the 192 LDM images after the 64 of smallest
sha256 (round 4's training images), DALL-E 3: the shipped library entry's 48 training images; real class: the first
100 BSDS500 ``train/`` photos of the seeded shuffle (rng 0). Calibration (stated FPR 0.01): the other 100
``train/`` photos, as distributed, under ``DEFAULT_RECOMPRESSIONS`` and — for restoration — resized to each band
(0.9, 0.75, 0.5 × the training short side), saved losslessly and as JPEG 95 / 85 / 75, then restored; one
calibrated file per candidate kernel.

Test conditions (each class; the generated image as produced, then): ``none``; ``resizeS`` (S = 0.9, 0.75, 0.5:
the generated image resized by S, PNG); ``resize0.9+jpeg85`` (then JPEG q85). The real class of a ``resizeS``
condition is the photo resized so that its short side is that of the resized generated images (S × the
training short side; the size a real suspect of that band has — a factor resize of a 321-px BSDS photo would
land outside every band and test nothing), saved the same way. ``none``: the photo as distributed.

Decisions are read from the records of ``fpx detect``'s own function (``detect.detect_one``) with restoration on
(``after``) and off (``before``, today's behaviour): "called" = p-value ≤ the stated 0.01 (the claim, before the
abstention outside the training conditions, which the table counts separately). Balanced accuracy = (TPR + TNR)
/ 2 of that call; AUC of the scores; FP = real photos called.

**Development rule (written before the dev run):** dev = round 4's LDM test split (the 64 LDM images of smallest
sha256 and the 64 BSDS500 ``val/`` photos of round 4's seeded shuffle). The kernel is the one among bicubic and
lanczos (bilinear was dropped for time before any dev run: the machine's load made each calibration ~10 min) with
the highest mean TPR at the stated rate over the four resized dev rows (resize0.9,
resize0.75, resize0.5, resize0.9+jpeg85); ties → bicubic. The band slack stays at ``condition.SCALE_SLACK`` (3 %)
and the encodings at ``restore.DEFAULT_ENCODINGS`` — not tuned. No scale-grid search is built (restoration at the
estimate only) unless the dev rows show the estimate is off (not planned).

Held-out sets and the decision rule: docs/benchmarks.md, "Issue 15 — scale restoration for resized copies".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binom

from fingerprint_cli import atomic, images
from fingerprint_cli.dif import condition, detect, restore
from fingerprint_cli.dif.condition import Recompression
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import ResidualCache

OUT = Path("bench/out/scale")
GEN = Path("/work/shared/data/generators")
BSDS = Path("/work/shared/data/real_bsds500")
FPR = 0.01
SCALES = (0.9, 0.75, 0.5)
CONDITIONS = ("none", "resize0.9", "resize0.75", "resize0.5", "resize0.9+jpeg85")
KERNELS = ("bicubic", "lanczos")
NAMES = {"ldm": "latent_diffusion_ldm_txt2img", "dalle3": "dalle3_api", "glid3": "glid3_xl", "dalle_mini": "dalle_mini"}
#: round 2 (docs/benchmarks.md, "Round 2: an independent test on GLID-3-XL"): the first ROUND2_FIT images by sha256
#: fit, the rest are held out
ROUND2_FIT = 160


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bsds_split() -> dict[str, list[str]]:
    """The BSDS500 photos: fit (first 100 train/ of the rng-0 shuffle), cal (the other 100), dev (round 4's 64
    val/ test photos), fresh (the other 36 val/ photos: held out)."""
    train = [str(p) for p in images.list_images(BSDS / "train")]
    val = [str(p) for p in images.list_images(BSDS / "val")]
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))]
    val_perm = [val[i] for i in rng.permutation(len(val))]
    return {"fit": train[:100], "cal": train[100:200], "dev": val_perm[:64], "fresh": val_perm[64:]}


def ldm_split() -> dict[str, list[str]]:
    files = [str(p) for p in sorted(images.list_images(GEN / NAMES["ldm"]), key=images.sha256_file)]
    return {"dev": files[:64], "train": files[64:256], "fresh": files[256:]}


def round2_split(which: str) -> dict[str, list[str]]:
    """Round 2's generators (GLID-3-XL, DALL-E mini): the first :data:`ROUND2_FIT` by sha256 fit, the rest held out."""
    files = [str(p) for p in sorted(images.list_images(GEN / NAMES[which]), key=images.sha256_file)]
    return {"train": files[:ROUND2_FIT], "fresh": files[ROUND2_FIT:]}


def training_images(which: str) -> list[str]:
    """The generated images a bench fingerprint is fitted on (module docstring; round 2: :func:`round2_split`)."""
    if which == "ldm":
        return ldm_split()["train"]
    if which == "dalle3":
        lib = Fingerprint.load("src/fingerprint_cli/fingerprints/dalle3-api-dif-v2.fpx.safetensors")
        shas = {d["sha256"] for d in lib.info.split("train", "generated")}
        return [str(p) for p in images.list_images(GEN / NAMES[which]) if images.sha256_file(p) in shas]
    return round2_split(which)["train"]


def heldout_images(which: str) -> list[str]:
    """The held-out generated images (round 1: LDM fresh, DALL-E 3 library held-out; round 2: :func:`round2_split`)."""
    if which == "ldm":
        return ldm_split()["fresh"]
    if which == "dalle3":
        return dalle3_heldout()
    return round2_split(which)["fresh"]


def dalle3_heldout() -> list[str]:
    lib = Fingerprint.load("src/fingerprint_cli/fingerprints/dalle3-api-dif-v2.fpx.safetensors")
    shas = {d["sha256"] for d in lib.info.split("test", "generated")}
    return [str(p) for p in images.list_images(GEN / NAMES["dalle3"]) if images.sha256_file(p) in shas]


def stage_fit(args, cache) -> None:
    """The bench fingerprints (see the module docstring), saved as bench/out/scale/<which>-plain.fpx.safetensors."""
    from fingerprint_cli.dif import extract

    real = bsds_split()["fit"]
    for which in args.generators:
        gen = training_images(which)
        fp = extract.fit(gen, real, name=NAMES[which], method="dif", crop=256, epochs=30, test_fraction=0.0,
                         cache=cache, batch_size=64, denoiser="gaussian", profile="plain", tolerance=0)
        fp.save(OUT / f"{which}-plain.fpx.safetensors")
        log(f"{which}: fitted {len(gen)} + {len(real)} images, {fp.meta['seconds']}")


def calibrated_path(which: str, kernel: str) -> Path:
    return OUT / f"{which}-plain-cal-{kernel}.fpx.safetensors"


def stage_calibrate(args, cache) -> None:
    real = bsds_split()["cal"]
    for which in args.generators:
        fp = Fingerprint.load(OUT / f"{which}-plain.fpx.safetensors")
        for kernel in args.kernels:
            t = time.time()
            new = detect.calibrate(fp, real, FPR, cache=cache, recompressions=condition.DEFAULT_RECOMPRESSIONS,
                                   restore_scales=SCALES, restore_method=kernel,
                                   description="BSDS500 train/ photos not used for fitting (100)")
            new.save(calibrated_path(which, kernel))
            log(f"{which} {kernel}: calibrated in {time.time() - t:.0f} s (n = {new.conformal.n})")


def _parse(cond: str) -> tuple[float, int | None]:
    r = Recompression.parse(cond)
    return r.scale, r.quality


def generated_copies(paths: list[str], cond: str, folder: Path) -> list[str]:
    """The generated images under ``cond``: resized by its factor, saved as PNG or JPEG (files, as received)."""
    if cond == "none":
        return list(paths)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        data, sfx = Recompression(*_parse(cond)).encode(images.load_image(p).pixels)
        f = folder / (Path(p).stem + sfx)
        if not f.exists():
            atomic.write_bytes(f, data)
        out.append(str(f))
    return out


def real_copies(paths: list[str], cond: str, ref: int, folder: Path) -> list[str]:
    """The real photos under ``cond``: resized so that the short side is round(S · ref), saved the same way."""
    if cond == "none":
        return list(paths)
    folder.mkdir(parents=True, exist_ok=True)
    scale, quality = _parse(cond)
    out = []
    for p in paths:
        small = images.resize_short_side(images.load_image(p).pixels, int(round(scale * ref)))
        data, sfx = Recompression(1.0, quality).encode(small)
        f = folder / (Path(p).stem + sfx)
        if not f.exists():
            atomic.write_bytes(f, data)
        out.append(str(f))
    return out


def calls(fp: Fingerprint, paths: list[str], on: bool, cache) -> dict:
    """Per image: score, p-value, called (p ≤ fpr), abstained (label unknown), restored; and the seconds."""
    t = time.time()
    rows = []
    for p in paths:
        rec = detect.detect_one([fp], p, cache=cache, restore_scale=on)
        d = rec.decision
        rows.append({"score": rec.features["score"], "p": rec.features["p_value"],
                     "called": rec.features["p_value"] <= fp.fpr, "abstained": d.get("label") == "unknown",
                     "label": d.get("label"),
                     "restored": rec.details["condition"]["scale_restored"] is not None,
                     "sets": rec.details["condition"]["calibration_sets"]})
    return {"rows": rows, "seconds": time.time() - t}


def binom_tail(k: int, n: int) -> float:
    """P(X ≥ k | n, FPR): how likely k or more false positives are at the stated rate."""
    return float(binom.sf(k - 1, n, FPR)) if k else 1.0


def summary(g: dict, r: dict) -> dict:
    gc = np.array([x["called"] for x in g["rows"]])
    rc = np.array([x["called"] for x in r["rows"]])
    tpr, fp_n = float(gc.mean()), int(rc.sum())
    tnr = 1 - fp_n / len(rc)
    claimed_fp = sum(x["called"] and not x["abstained"] for x in r["rows"])
    return {"acc": (tpr + tnr) / 2, "tpr": tpr, "fp": fp_n, "n_gen": len(gc), "n_real": len(rc),
            "tpr_claimed": float(np.mean([x["called"] and not x["abstained"] for x in g["rows"]])),
            "fp_claimed": claimed_fp, "fp_claimed_binom_p": binom_tail(claimed_fp, len(rc)),
            "abstained_real": sum(x["abstained"] for x in r["rows"]),
            "auc": detect.auc([x["score"] for x in g["rows"]], [x["score"] for x in r["rows"]]),
            "fp_binom_p": binom_tail(fp_n, len(rc)),
            "abstained_gen": sum(x["abstained"] for x in g["rows"]),
            "restored": [sum(x["restored"] for x in g["rows"]), sum(x["restored"] for x in r["rows"])],
            "sets": sorted({s for x in g["rows"] + r["rows"] for s in x["sets"]}),
            "s_per_image": (g["seconds"] + r["seconds"]) / (len(gc) + len(rc))}


def evaluate(which: str, kernel: str, gen: list[str], real: list[str], tag: str, cache) -> dict:
    fp = Fingerprint.load(calibrated_path(which, kernel))
    ref = restore.reference_side(fp.info)
    out: dict = {}
    for cond in CONDITIONS:
        gp = generated_copies(gen, cond, OUT / tag / which / "gen" / cond)
        rp = real_copies(real, cond, ref, OUT / tag / which / "real" / cond)
        for on in (False, True):
            key = f"{cond}|{'after' if on else 'before'}"
            out[key] = summary(calls(fp, gp, on, cache), calls(fp, rp, on, cache))
            s = out[key]
            log(f"{tag} {which} {kernel} {key}: acc {s['acc']:.3f} TPR {s['tpr']:.3f} FP {s['fp']}/{s['n_real']} "
                f"AUC {s['auc']:.3f} restored {s['restored']} {s['s_per_image'] * 1000:.0f} ms/img")
    return out


def before_after_table(res: dict, title: str, header: str, row) -> list[str]:
    """A markdown table of one generator's results: ``header``'s columns, one ``row(cond, before, after)`` line per
    condition."""
    lines = [title, "", header, "|" + "---|" * (header.count("|") - 1)]
    for cond in CONDITIONS:
        lines.append(row(cond, res[f"{cond}|before"], res[f"{cond}|after"]))
    return lines


def _called_row(cond: str, b: dict, a: dict) -> str:
    """Round 1's row: balanced accuracy (AUC), TPR and FP of the calls (p ≤ the stated rate), before / after."""
    return (f"| {cond} | {b['acc']:.3f} ({b['auc']:.2f}) | {b['tpr']:.3f} | {b['fp']}/{b['n_real']} | "
            f"{a['acc']:.3f} ({a['auc']:.2f}) | {a['tpr']:.3f} | {a['fp']}/{a['n_real']} "
            f"({a['fp_binom_p']:.2f}) | {a['restored'][0]}/{a['restored'][1]} |")


def table(res: dict, title: str) -> list[str]:
    return before_after_table(res, title, "| condition | before: acc (AUC) | TPR | FP | after: acc (AUC) | TPR | "
                              "FP (binom. p) | restored gen/real |", _called_row)


def stage_dev(args, cache) -> None:
    gen, real = ldm_split()["dev"], bsds_split()["dev"]
    res = {k: evaluate("ldm", k, gen, real, "dev", cache) for k in args.kernels}
    resized = [c for c in CONDITIONS if c != "none"]
    mean_tpr = {k: float(np.mean([res[k][f"{c}|after"]["tpr"] for c in resized])) for k in res}
    best = max(sorted(mean_tpr), key=lambda k: (mean_tpr[k], k == "bicubic"))
    lines = []
    for k in res:
        lines += table(res[k], f"LDM dev (64 + 64), kernel {k}: mean resized TPR after {mean_tpr[k]:.3f}") + [""]
    lines.append(f"rule: kernel = {best}")
    (OUT / "dev.json").write_text(json.dumps({"results": res, "mean_tpr": mean_tpr, "kernel": best}, indent=1))
    (OUT / "dev.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _claimed_row(cond: str, b: dict, a: dict) -> str:
    """Round 2's row: claimed TPR / FP (calls not withheld as unknown) before / after, the calls after, the AUCs."""
    return (f"| {cond} | {b['tpr_claimed']:.3f} | {b['fp_claimed']}/{b['n_real']} | {a['tpr_claimed']:.3f} | "
            f"{a['fp_claimed']}/{a['n_real']} ({a['fp_claimed_binom_p']:.2f}) | {a['tpr']:.3f} / "
            f"{a['fp']}/{a['n_real']} | {b['auc']:.2f} / {a['auc']:.2f} | {a['restored'][0]}/{a['restored'][1]} |")


def claims_table(res: dict, title: str) -> list[str]:
    """Round 2's table: what `fpx detect` answers (claims = calls not withheld as unknown), before / after."""
    return before_after_table(res, title, "| condition | before: claimed TPR | claimed FP | after: claimed TPR | "
                              "claimed FP (binom. p) | after: called TPR / FP | AUC before / after | "
                              "restored gen/real |", _claimed_row)


def rule(res: dict) -> dict:
    """Round 2's pre-registered decision rule (docs/benchmarks.md) on one generator's held-out results."""
    resized = [c for c in CONDITIONS if c != "none"]
    a = all(res[f"{c}|after"]["fp_claimed_binom_p"] >= 0.05 for c in resized)
    nb, na = res["none|before"], res["none|after"]
    b = na["restored"] == [0, 0] and (na["tpr_claimed"], na["fp_claimed"]) == (nb["tpr_claimed"], nb["fp_claimed"])
    before = float(np.mean([res[f"{c}|before"]["tpr_claimed"] for c in resized]))
    after = float(np.mean([res[f"{c}|after"]["tpr_claimed"] for c in resized]))
    c = after >= 0.15 and after - before >= 0.05
    return {"a": a, "b": b, "c": c, "mean_claimed_tpr_before": before, "mean_claimed_tpr_after": after,
            "holds": a and b and c}


def stage_heldout(args, cache) -> None:
    real = bsds_split()["fresh"]
    res, lines = {}, []
    for which in args.generators:
        gen = heldout_images(which)
        res[which] = evaluate(which, args.kernel, gen, real, "heldout", cache)
        title = f"{which} held-out ({len(gen)} + {len(real)}), kernel {args.kernel}"
        lines += (claims_table if args.tag else table)(res[which], title) + [""]
        if args.tag:
            res[which]["rule"] = rule(res[which])
            lines += [f"rule ({which}): {json.dumps(res[which]['rule'])}", ""]
    suffix = f"-{args.tag}" if args.tag else ""
    (OUT / f"heldout{suffix}.json").write_text(json.dumps(res, indent=1))
    (OUT / f"heldout{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["fit", "calibrate", "dev", "heldout"], required=True)
    ap.add_argument("--generators", nargs="*", default=["ldm", "dalle3"], choices=list(NAMES))
    ap.add_argument("--kernels", nargs="*", default=list(KERNELS), choices=list(restore.METHODS))
    ap.add_argument("--kernel", default="bicubic", choices=list(restore.METHODS),
                    help="the kernel of the held-out stage")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="round 2: write heldout-<tag>.json/.md with the claims table and rule")
    args = ap.parse_args(argv)
    if not GEN.is_dir():
        print(f"skipped: {GEN} does not exist", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    cache = ResidualCache(disk=OUT / "cache")
    {"fit": stage_fit, "calibrate": stage_calibrate, "dev": stage_dev, "heldout": stage_heldout}[args.stage](args, cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
