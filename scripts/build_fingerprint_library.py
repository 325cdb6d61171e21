"""Build the shipped fingerprint library: fit + calibrate + measure + install one fingerprint per generator.

For every generator folder under DATA/generators (``hfapi_sd/<model>`` counts as one generator per model;
``real_kodak24`` is real, not a generator):

1. **fit** (``extract.fit``, the same function as ``fpx dif-extract``, with whatever fitting options are given:
   ``--epochs``, ``--crop``, ``--method``, ... and ``--fit-option KEY=VALUE`` for any other keyword of
   ``extract.fit``, e.g. a training profile) on the generator's images against the first ``--real-fit``
   photos of DATA/real_bsds500/train (a seeded shuffle); ``--test-fraction`` of each class is held out;
2. **calibrate** (``detect.calibrate``, as ``fpx dif-calibrate``) at ``--fpr`` on held-out real photos: the
   rest of real_bsds500/train plus the fit's real test split — never a training image;
3. **measure** on data used for neither: the true-positive rate on the generator's held-out images and the
   false-positive rate on DATA/real_bsds500/val, both at the stated threshold (p ≤ FPR), plus balanced accuracy
   and AUC of the score; and that float16 storage leaves the decisions unchanged on those images;
4. **install**: the sealed fingerprint (``--dtype``, default float16) into ``--out-dir`` (default the package's
   ``fingerprints/``) and its entry (id, version, sha256 pin, training set description and manifest hash,
   denoiser, crop, calibration, held-out measurements) into ``index.json``.

The images never enter the repository: only the fingerprint files and their hashes/paths do.

    python scripts/build_fingerprint_library.py --data /work/shared/data \\
        --generators latent_diffusion_ldm_txt2img dalle3_api CompVis__stable-diffusion-v1-4 \\
        --max-images 192 --cache bench/out/rescache
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fingerprint_cli import images  # noqa: E402
from fingerprint_cli.dif import detect, extract, heldout  # noqa: E402
from fingerprint_cli.dif.fingerprint import Fingerprint  # noqa: E402
from fingerprint_cli.dif.residuals import ResidualCache  # noqa: E402
from fingerprint_cli.images import sha256_bytes  # noqa: E402


def generator_folders(data: Path) -> dict[str, Path]:
    gen = data / "generators"
    out = {}
    for d in sorted(p for p in gen.iterdir() if p.is_dir()):
        if d.name.startswith("real_"):
            continue
        subs = [s for s in sorted(d.iterdir()) if s.is_dir()]
        if subs and not images.list_images(d):
            for s in subs:
                out[s.name] = s
        else:
            out[d.name] = d
    return out


def shuffled(paths: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


def parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def slug(name: str) -> str:
    s = name.split("__")[-1].lower()
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in s).strip("-")


def build_one(name: str, folder: Path, real_fit: list[str], real_cal: list[str], real_val: list[str],
              args, cache: ResidualCache, fit_options: dict) -> tuple[Fingerprint, dict]:
    log = lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    gen = shuffled([str(p) for p in images.list_images(folder)], args.seed)
    if args.max_images:
        gen = gen[:args.max_images]
    t0 = time.time()
    fp = extract.fit(gen, real_fit, name=name, method=args.method, crop=args.crop, epochs=args.epochs,
                     seed=args.seed, denoiser=args.denoiser, test_fraction=args.test_fraction,
                     batch_size=args.batch_size, tolerance=args.tolerance, cache=cache,
                     on_skip=lambda p, why: log(f"skipped {p}: {why}"), **fit_options)
    t_fit = time.time() - t0
    log(f"fitted in {t_fit:.0f} s: train acc {fp.meta['train_accuracy']:.3f}")
    cal_paths = real_cal + [d["path"] for d in fp.meta["test"]["real"]]
    desc = (f"held-out real photographs: real_bsds500/train not used for fitting ({len(real_cal)}) + the fit's "
            f"real test split ({len(fp.meta['test']['real'])}), BSDS500 JPEG as distributed")
    skip = lambda p, why: log(f"calibration: skipped {p}: {why}")  # noqa: E731
    fp32 = detect.calibrate(fp, cal_paths, args.fpr, cache=cache, on_skip=skip, description=desc)
    # the stored pattern is what is calibrated: quantise first (float16 storage)
    fp = fp32 if args.dtype == "float32" else detect.calibrate(fp.quantized(args.dtype), cal_paths, args.fpr,
                                                                cache=cache, description=desc)
    test_gen = [d["path"] for d in fp.meta["test"]["generated"]]
    held = heldout.measure(fp, test_gen, real_val, cache=cache)
    tpr, fpr = held["tpr"], held["fpr"]
    held.update(generated_set=f"{held['n_generated']} held-out images of {folder.relative_to(args.data)}",
                real_set=f"real_bsds500/val ({held['n_real']} JPEG photographs, never used for fitting or calibration)")
    log(f"held out: TPR {tpr:.3f} on {held['n_generated']} generated, FPR {fpr:.3f} on {held['n_real']} real (stated {fp.fpr})")
    return fp, {"held_out": held, "fit_seconds": round(t_fit, 1), "generated_paths": gen, "fp32": fp32}


def float16_check(path32: Path, path16: Path, paths: list[str], cache: ResidualCache) -> dict:
    """Decisions of the float32-stored and the float16-stored fingerprint (each calibrated on its own stored
    pattern) on held-out images."""
    a = Fingerprint.load(path32)
    b = Fingerprint.load(path16)
    ra, rb = detect.correlations(a, paths, cache=cache), detect.correlations(b, paths, cache=cache)
    da, db = detect.p_values(a, ra) <= a.fpr, detect.p_values(b, rb) <= b.fpr
    return {"images": len(paths), "max_abs_rho_difference": float(np.abs(ra - rb).max()),
            "decisions_changed": int((da != db).sum())}


def _arguments(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--generators", nargs="*", help="generator folder names (default: all)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "src" / "fingerprint_cli" / "fingerprints")
    ap.add_argument("--version", default="1")
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--real-fit", type=int, default=100, help="real_bsds500/train photos used for fitting")
    ap.add_argument("--max-images", type=int, default=None, help="cap on each generator's images")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--cache", type=Path, default=None, help="residual cache folder (default FPX_HOME's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "library32",
                    help="where the float32 twins of the fingerprints go (for the float16 check)")
    # fitting options, as dif-extract
    ap.add_argument("--method", default="dif")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--denoiser", default="dncnn")
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tolerance", type=int, default=1)
    ap.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                    help="any other keyword of extract.fit (value parsed as JSON when it parses), repeatable")
    ap.add_argument("--profile-name", default="default", help="name of the training profile, for the index")
    ap.add_argument("--member", action="store_true",
                    help="an extra member of a generator's fingerprint (fpx detect routes between members by "
                         "their coverage): the profile name goes into the id, <generator>-<method>-<profile>-v<N>")
    return ap.parse_args(argv)


def _matched_note(fp: Fingerprint) -> str:
    """The training-set description's note on format matching (``--profile format-matched``), else ""."""
    q = (fp.info.augment or {}).get("match_quality")
    return "" if q is None else f"; every lossless image re-encoded as JPEG q{q} first (format-matched)"


def install(name: str, folder: Path, fp: Fingerprint, info: dict, args, cache: ResidualCache,
            real_val: list[str], fit_options: dict) -> dict:
    """Save the sealed fingerprint (and its float32 twin for the storage check); returns its index entry."""
    fid = f"{slug(name)}-{args.method}-{slug(args.profile_name) + '-' if args.member else ''}v{args.version}"
    fname = f"{fid}.fpx.safetensors"
    tmp32 = args.work / fname
    tmp32.parent.mkdir(parents=True, exist_ok=True)
    fp.info.library_id = fid
    info["fp32"].info.library_id = fid
    info["fp32"].save(tmp32, dtype="float32")
    digest = fp.save(args.out_dir / fname, dtype=args.dtype)
    check = float16_check(tmp32, args.out_dir / fname,
                          [d["path"] for d in fp.meta["test"]["generated"]] + real_val, cache)
    train_sha = sorted(d["sha256"] for cls in ("generated", "real") for d in fp.meta["train"][cls])
    cal = fp.meta["conformal"]
    return {
        "id": fid, "name": name, "version": str(args.version), "file": fname, "sha256": digest,
        "method": fp.method, "crop": fp.crop, "denoiser": fp.meta["denoiser"], "storage": args.dtype,
        "profile": args.profile_name, "fit_options": fit_options, "epochs": fp.meta.get("epochs"),
        "fpx_version": fp.meta.get("fpx_version"),
        "training_set": {
            "description": f"{fp.meta['counts']['train_generated']} images of "
                           f"{folder.relative_to(args.data)} vs {fp.meta['counts']['train_real']} "
                           f"real_bsds500/train photographs (JPEG), centre {fp.crop}² crops" + _matched_note(fp),
            "generated": fp.meta["counts"]["train_generated"], "real": fp.meta["counts"]["train_real"],
            "manifest_sha256": sha256_bytes("\n".join(train_sha).encode())},
        "calibration": {"fpr": cal["fpr"], "n": cal["n"], "description": cal["description"],
                        "manifest_sha256": cal["manifest_sha256"], "conditions": cal["conditions"]},
        "conditions": fp.meta.get("conditions"),
        "held_out": info["held_out"], "storage_check": check, "fit_seconds": info["fit_seconds"],
        "licence": "MIT (fitted by the fpx project; the images are not redistributed)",
    }


def print_table(entries: list[dict], fpr: float) -> None:
    print("| fingerprint | stated FPR | held-out TPR | held-out FPR (val) | bal. acc | AUC | n gen/real | "
          "float16: max |Δρ| / decisions changed | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in entries:
        h, c = e["held_out"], e["storage_check"]
        print(f"| {e['id']} | {fpr} | {h['tpr']:.3f} | {h['fpr']:.3f} | {h['balanced_accuracy']:.3f} | "
              f"{h['auc']:.3f} | {h['n_generated']}/{h['n_real']} | {c['max_abs_rho_difference']:.2e} / "
              f"{c['decisions_changed']} | {e['fit_seconds']:.0f} |")


def main(argv=None) -> int:
    args = _arguments(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not (args.data / "generators").is_dir() or not (args.data / "real_bsds500").is_dir():
        print(f"skip: {args.data} lacks generators/ or real_bsds500/", file=sys.stderr)
        return 0
    fit_options = {}
    for kv in args.fit_option:
        k, _, v = kv.partition("=")
        fit_options[k.strip().replace("-", "_")] = parse_value(v)
    folders = generator_folders(args.data)
    names = args.generators or list(folders)
    unknown = [n for n in names if n not in folders]
    if unknown:
        print(f"unknown generator(s) {unknown}; known: {list(folders)}", file=sys.stderr)
        return 2
    train = shuffled([str(p) for p in images.list_images(args.data / "real_bsds500" / "train")], args.seed)
    real_fit, real_cal = train[:args.real_fit], train[args.real_fit:]
    real_val = [str(p) for p in images.list_images(args.data / "real_bsds500" / "val")]
    cache = ResidualCache(disk=args.cache if args.cache else True)
    from fingerprint_cli import fingerprints

    args.out_dir.mkdir(parents=True, exist_ok=True)
    entries = {e["id"]: e for e in fingerprints.index(args.out_dir)}
    built = []
    for name in names:
        fp, info = build_one(name, folders[name], real_fit, real_cal, real_val, args, cache, fit_options)
        entry = install(name, folders[name], fp, info, args, cache, real_val, fit_options)
        entries[entry["id"]] = entry
        fingerprints.write_index(list(entries.values()), args.out_dir)
        built.append(entry)
        print(f"installed {entry['id']} ({entry['sha256'][:12]}…)", file=sys.stderr, flush=True)
    print_table(built, args.fpr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
