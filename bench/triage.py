#!/usr/bin/env python
"""Benchmark of ``fpx triage`` (issue 13): throughput per evidence stage on a mixed inbox of real third-party
files, the share of time in each stage (metadata stages vs pixel stages), and the verdicts against the folder
labels.

    nice -n 10 python bench/triage.py /work/shared/data --out bench/out/triage

DATA: the shared data folder (``generators/…``, ``real_bsds500/{train,val}``); skips cleanly (exit 0) when it
is absent. Nothing is copied into the repository: the inbox is built under ``--out`` (git-ignored).

Splits (by file, fixed by sorted sha256 — nothing reported is tuned on):

* fingerprints are fitted (``--method``, default ``average``: no training) for four generators on images that
  are NOT in the inbox: LDM, DALL-E mini, DALL-E 3 (PNG) and SD 1.4 (JPEG as served), against real BSDS500
  *train* photos (JPEG);
* each fingerprint is calibrated at ``--fpr`` on other BSDS500 train photos (not used for fitting): the
  conformal calibration triage reads (``meta.calibration = {fpr, scores}``);
* the inbox: held-out images of those four generators, five generators no fingerprint was fitted on
  (GLID-3-XL, Disco Diffusion, gpt-image-1-mini, SDXL, openjourney-v4), real BSDS500 *val* JPEGs and real
  Kodak PNGs (a real class in a format the calibration never saw), and a handful of bad files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

FITTED = {"ldm": "generators/latent_diffusion_ldm_txt2img", "dalle_mini": "generators/dalle_mini",
          "dalle3": "generators/dalle3_api", "sd14": "generators/hfapi_sd/CompVis__stable-diffusion-v1-4"}
UNSEEN = {"glid3_xl": "generators/glid3_xl", "disco": "generators/disco_diffusion",
          "gpt_image_1_mini": "generators/gpt_image_1_mini_api",
          "sdxl": "generators/hfapi_sd/stabilityai__stable-diffusion-xl-base-1.0",
          "openjourney": "generators/hfapi_sd/prompthero__openjourney-v4"}
REAL = {"real_bsds_val": "real_bsds500/val", "real_kodak": "generators/real_kodak24"}
SUFFIXES = (".png", ".jpg", ".jpeg")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def files(folder: Path) -> list[Path]:
    """Image files of a folder, ordered by sha256 of their bytes (a fixed, content-defined order)."""
    fs = [p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()]
    return sorted(fs, key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest())


def conditions(paths) -> dict:
    """The formats and JPEG quality range the calibration images cover (what triage checks inputs against)."""
    from fingerprint_cli import images
    from fingerprint_cli.triage import provenance as pv

    fmts, qs = set(), []
    for p in paths:
        pr = images.probe(Path(p).read_bytes(), str(p))
        fmts.add(pr.format)
        if pr.quantization:
            qs.append(pv.estimate_quality(pr.quantization)["quality"])
    return {"formats": sorted(fmts), "jpeg_quality": [min(qs), max(qs)] if qs else None}


def build(data: Path, out: Path, args) -> tuple[dict, dict, list[str]]:
    """Fit + calibrate the fingerprints, build the inbox. Returns (labels by inbox path, fit info, fp paths)."""
    from fingerprint_cli import images
    from fingerprint_cli.dif import detect, extract
    from fingerprint_cli.dif.fingerprint import Fingerprint
    from fingerprint_cli.dif.residuals import ResidualCache

    n_fit, n_in = args.fit, args.per_class
    bsds_train = files(data / "real_bsds500/train")
    real_fit, real_cal = bsds_train[:n_fit], bsds_train[n_fit:n_fit + args.calibration]
    cache = ResidualCache(disk=out / "cache")
    fpdir = out / f"fps-{args.method}-{args.denoiser}-{args.crop}{'-cond' if args.conditions else ''}"
    fpdir.mkdir(parents=True, exist_ok=True)
    inbox = out / "inbox"
    if inbox.exists():
        shutil.rmtree(inbox)
    labels: dict[str, str] = {}
    fit_info = {}
    fp_paths = []

    def add(label: str, paths):
        (inbox / label).mkdir(parents=True, exist_ok=True)
        for p in paths:
            dst = inbox / label / p.name
            shutil.copyfile(p, dst)
            labels[str(dst)] = label

    for name, rel in FITTED.items():
        fs = files(data / rel)
        k = min(n_fit, len(fs) // 2)
        fit, held = fs[:k], fs[k:k + n_in]
        target = fpdir / f"{name}.fpx.safetensors"
        if not target.exists():
            t0 = time.time()
            fp = extract.fit([str(p) for p in fit], [str(p) for p in real_fit], name=name, method=args.method,
                             crop=args.crop, denoiser=args.denoiser, cache=cache, test_fraction=0.0,
                             epochs=args.epochs)
            cal = detect.scores(fp, detect.correlations(fp, [str(p) for p in real_cal], cache=cache))
            fp = Fingerprint(fp.name, fp.method, fp.pattern, dict(fp.meta, calibration={
                "fpr": args.fpr, "scores": [float(s) for s in cal], "n": len(cal),
                "source": f"BSDS500 train photos not used for fitting ({len(cal)})",
                "conditions": conditions(real_cal) if args.conditions else None}))
            fp.save(target)
            fit_info[name] = {"fit_generated": len(fit), "fit_real": len(real_fit), "calibration_real": len(cal),
                              "seconds": round(time.time() - t0, 1)}
            log(f"fitted + calibrated {name}: {fit_info[name]}")
        fp_paths.append(str(target))
        add(name, held)
    for name, rel in UNSEEN.items():
        add(name, files(data / rel)[:n_in])
    for name, rel in REAL.items():
        add(name, files(data / rel)[:max(n_in, 24)])
    # bad files an inbox also holds
    bad = inbox / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("chain of custody form\n")
    (bad / "empty.png").write_bytes(b"")
    some = files(data / FITTED["ldm"])[-1].read_bytes()
    (bad / "truncated.png").write_bytes(some[: len(some) // 3])
    (bad / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(500))
    from PIL import Image

    frames = [Image.fromarray(images.to_uint8(np.full((32, 32, 3), v))) for v in (0.2, 0.5, 0.8)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (bad / "anim.gif").write_bytes(buf.getvalue())
    for p in bad.iterdir():
        labels[str(p)] = "bad"
    return labels, fit_info, fp_paths


def reference_timing(recs, fp_paths, n: int) -> None:
    """Triage's per-file work (``core.analyse``: every stage) on N files vs `fpx detect`'s library code on the
    same files and fingerprints (decode, residual once per image via its cache, ρ per fingerprint), timed
    A-B-B-A so that a change in the machine's load during the run cancels out."""
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.fingerprint import Fingerprint
    from fingerprint_cli.dif.residuals import ResidualCache
    from fingerprint_cli.triage import core, custody

    ok = [r for r in recs if r.ok][:n]
    paths = [r.inputs["image"]["path"] for r in ok]
    fps = [Fingerprint.load(p) for p in fp_paths]
    settings = core.Settings(tuple(fp_paths), thumbnails=True)

    def run_triage():
        t0 = time.perf_counter()
        for p in paths:
            core.analyse(core.Item(p, custody.utc_now(), None, settings))
        return time.perf_counter() - t0

    def run_detect():
        cache = ResidualCache()
        t0 = time.perf_counter()
        for fp in fps:
            detect.correlations_with_info(fp, paths, cache=cache)
        return time.perf_counter() - t0

    run_triage()  # warm: fingerprints loaded, denoiser built
    a1, b1, b2, a2 = run_triage(), run_detect(), run_detect(), run_triage()
    tri, ref = (a1 + a2) / 2, (b1 + b2) / 2
    print(f"\n| on {len(paths)} files, {len(fps)} fingerprints (A-B-B-A, mean of 2) | seconds | ms / file |")
    print("|---|---:|---:|")
    print(f"| reference: fpx detect library code (decode + residual once + ρ per fingerprint) | {ref:.2f} | "
          f"{1000 * ref / max(1, len(paths)):.1f} |")
    print(f"| fpx triage per-file work, all stages (custody, metadata, decode, fingerprints, thumbnail) | {tri:.2f} | "
          f"{1000 * tri / max(1, len(paths)):.1f} |")
    print(f"| ratio triage / detect | {tri / max(ref, 1e-9):.2f} | |")


def _parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default="/work/shared/data")
    ap.add_argument("--out", default="bench/out/triage")
    ap.add_argument("--per-class", type=int, default=30, help="inbox files per class (fewer where a folder has fewer)")
    ap.add_argument("--fit", type=int, default=40, help="images per class to fit each fingerprint on")
    ap.add_argument("--calibration", type=int, default=140, help="held-out real photos for calibration")
    ap.add_argument("--method", default="average", help="dif | average | spectral")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--denoiser", default="gaussian", help="gaussian (no weights) | dncnn (bundled)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--no-thumbnails", action="store_true")
    ap.add_argument("--reference", type=int, default=0,
                    help="also time `fpx detect`'s library code (detect.correlations_with_info, one shared residual "
                         "cache) on the first N analysed files: the reference triage's time is compared with")
    ap.add_argument("--skip-run", action="store_true",
                    help="reuse --out's inbox, fingerprints and run/triage.jsonl (only the reference timing)")
    ap.add_argument("--conditions", action="store_true",
                    help="record the calibration images' formats / JPEG quality range in each fingerprint, so that "
                         "triage treats inputs outside them as uncalibrated")
    return ap


def _reference_only(res_dir: Path, n: int) -> None:
    """--skip-run: reuse the records of an earlier run and time only the reference."""
    from fingerprint_cli.records import read_records

    recs = read_records(res_dir / "triage.jsonl")
    fp_paths = [f["path"] for f in recs[0].provenance.get("fingerprints", [])]
    reference_timing(recs, fp_paths, n)


def _triage(out: Path, res_dir: Path, fp_paths: list[str], args):
    """Run triage over the inbox (dashboard, custody log, records under ``res_dir``): (records, wall seconds)."""
    from fingerprint_cli.triage import core

    if res_dir.exists():
        shutil.rmtree(res_dir)
    t = core.make([str(out / "inbox")], fingerprints=fp_paths, output=str(res_dir / "triage.jsonl"),
                  custody_log=str(res_dir / "custody.jsonl"), report=str(res_dir / "triage.html"), jobs=args.jobs,
                  thumbnails=not args.no_thumbnails)
    t0 = time.perf_counter()
    recs = t.process_all(core.list_inbox([str(out / "inbox")]))
    wall = time.perf_counter() - t0
    t.write()
    return recs, wall


def _stage_table(recs, fp_paths: list[str], wall: float, args) -> tuple[dict, float]:
    """Print seconds per evidence stage and the metadata / pixel ratio: (seconds by stage, that ratio)."""
    from fingerprint_cli.triage import core

    stage = defaultdict(float)
    for r in recs:
        for k, v in (r.details.get("timings") or {}).items():
            stage[k] += v
    total = sum(stage.values())
    meta_t = sum(stage[k] for k in core.METADATA_STAGES)
    pix_t = sum(stage[k] for k in core.PIXEL_STAGES)
    n_ok = sum(r.ok for r in recs)
    print(f"\n### fpx triage throughput ({len(recs)} files, {n_ok} analysed; {len(fp_paths)} fingerprints, "
          f"method {args.method}, denoiser {args.denoiser}, crop {args.crop}; jobs {args.jobs})\n")
    print("| stage | seconds | ms / file | files / s | share of stage time |")
    print("|---|---:|---:|---:|---:|")
    for k in core.STAGES:
        v = stage.get(k, 0.0)
        print(f"| {k} | {v:.2f} | {1000 * v / max(1, len(recs)):.1f} | "
              f"{(len(recs) / v) if v else float('inf'):.1f} | {100 * v / max(total, 1e-9):.1f}% |")
    print(f"| **all (wall, incl. custody log, dedup, writing)** | {wall:.2f} | {1000 * wall / len(recs):.1f} | "
          f"{len(recs) / wall:.2f} | |")
    ratio = meta_t / max(pix_t, 1e-9)
    print(f"\nmetadata stages (custody + metadata) / pixel stages (decode + fingerprints) = {ratio:.3f} "
          f"({'meets' if ratio <= 0.10 else 'MISSES'} the ≤ 0.10 target)")
    return stage, ratio


def _reader_table(recs) -> None:
    """Print each metadata reader's time (a second, timed pass over the analysed files)."""
    from fingerprint_cli import images
    from fingerprint_cli.triage import provenance as pv

    per_reader = defaultdict(float)
    for r in recs:
        if not r.ok:
            continue
        data_b = Path(r.inputs["image"]["path"]).read_bytes()
        fmt = r.details["custody"]["format"]
        a = time.perf_counter()
        pr = images.probe(data_b, "x")
        b = time.perf_counter()
        pv.read_c2pa(data_b, fmt)
        c = time.perf_counter()
        pv.read_xmp(pr.xmp, pr.xmp_error)
        pv.read_exif(pr.exif)
        pv.read_png_text(pr.text, fmt)
        d = time.perf_counter()
        luma = images.jpeg_luma(data_b, "x") if fmt == "JPEG" else None
        pv.read_jpeg(pr.quantization, fmt, luma)
        e = time.perf_counter()
        per_reader["probe (header, XMP, EXIF, tables)"] += b - a
        per_reader["c2pa"] += c - b
        per_reader["xmp + exif + png text"] += d - c
        per_reader["jpeg tables + double-compression"] += e - d
    n_ok = sum(r.ok for r in recs)
    print("\n| metadata reader | ms / analysed file |\n|---|---:|")
    for k, v in per_reader.items():
        print(f"| {k} | {1000 * v / max(1, n_ok):.2f} |")


def _verdict_counts(recs, labels: dict) -> dict[str, Counter]:
    """Verdict (label, with ``:generator`` when one is named; ``error`` for a failed file) counts per folder."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in recs:
        lab = labels.get(r.inputs["image"]["path"], "?")
        if not r.ok:
            v = "error"
        else:
            d = r.decision
            v = d["label"] + (f":{d['generator']}" if d.get("generator") else "")
        table[lab][v] += 1
    return table


def _class_tag(lab: str) -> str:
    """Whether a folder's generator has a fitted fingerprint, is real, or is the bad files."""
    return "fitted" if lab in FITTED else ("real" if lab in REAL else ("—" if lab == "bad" else "not fitted"))


def _verdict_tables(table: dict[str, Counter], fp_paths: list[str], args) -> dict:
    """Print the verdicts against the folder labels and the per-class summary: the summary by class."""
    cols = sorted({c for row in table.values() for c in row})
    print(f"\n### verdicts vs folder labels (stated FPR {args.fpr} per fingerprint)\n")
    print("| folder (fingerprint fitted?) | n | " + " | ".join(cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    order = list(FITTED) + list(UNSEEN) + list(REAL) + ["bad"]
    summary = {}
    for lab in order:
        row = table.get(lab, Counter())
        n = sum(row.values())
        print(f"| {lab} ({_class_tag(lab)}) | {n} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
        gen_any = sum(v for k, v in row.items() if k.startswith("generated"))
        summary[lab] = {"n": n, "called_generated": gen_any, "right_generator": row.get(f"generated:{lab}", 0),
                        "unknown": row.get("unknown", 0), "error": row.get("error", 0)}
    print("\n| class | n | called generated | right generator | unknown |\n|---|---:|---:|---:|---:|")
    for lab in order[:-1]:
        s = summary[lab]
        rate = s["called_generated"] / max(1, s["n"])
        print(f"| {lab} | {s['n']} | {s['called_generated']} ({rate:.1%}) | "
              f"{s['right_generator'] if lab in FITTED else '—'} | {s['unknown']} |")
    real_n = sum(summary[k]["n"] for k in REAL)
    real_fp = sum(summary[k]["called_generated"] for k in REAL)
    print(f"\nreal photos called generated: {real_fp}/{real_n} = {real_fp / max(1, real_n):.3f} "
          f"(nominal: ≤ {args.fpr} per fingerprint, Bonferroni bound {min(1, len(fp_paths) * args.fpr):.2f} over "
          f"{len(fp_paths)}; BSDS val alone {summary['real_bsds_val']['called_generated']}/"
          f"{summary['real_bsds_val']['n']}, Kodak PNG {summary['real_kodak']['called_generated']}/"
          f"{summary['real_kodak']['n']})")
    return summary


def main() -> int:
    args = _parser().parse_args()
    data, out = Path(args.data), Path(args.out)
    if not (data / "generators").is_dir() or not (data / "real_bsds500").is_dir():
        print(f"skip: {data} has no generators/ and real_bsds500/ (shared data absent)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    res_dir = out / "run"
    if args.skip_run:
        _reference_only(res_dir, args.reference)
        return 0
    labels, fit_info, fp_paths = build(data, out, args)
    log(f"inbox: {len(labels)} files in {len(set(labels.values()))} classes; {len(fp_paths)} fingerprints")
    recs, wall = _triage(out, res_dir, fp_paths, args)
    stage, ratio = _stage_table(recs, fp_paths, wall, args)
    _reader_table(recs)
    table = _verdict_counts(recs, labels)
    summary = _verdict_tables(table, fp_paths, args)
    if args.reference:
        reference_timing(recs, fp_paths, args.reference)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "stages": stage, "wall": wall,
                                                   "ratio_meta_pixel": ratio, "fit": fit_info,
                                                   "table": {k: dict(v) for k, v in table.items()},
                                                   "summary": summary}, indent=1))
    log(f"dashboard: {res_dir / 'triage.html'}; records: {res_dir / 'triage.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
