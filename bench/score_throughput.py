"""Throughput of `fpx score` against the raw timm forward pass of the same images.

    python bench/score_throughput.py DATA_DIR [--pairs 8] [--resolutions 224 518] [--threads 2]

DATA_DIR: a folder of photos (e.g. ../shared/data/generators/real_kodak24); skipped cleanly when absent.

The DINOv2 ViT-B/14 weights cannot be downloaded on the development machine, so the encoder here is a
*random* ViT-B/14 of exactly the DINOv2 architecture (768 wide, 12 deep, patch 14, layer scale),
imported through `fpx models import --force` like any user file. Speed depends on the architecture,
not on the weight values, so the timings hold for the real weights; no feature value from this script
means anything.

Rows:
* raw, distinct refs — timm `forward_features` on pre-normalised tensors, 2 forwards per pair
  (reference + suspect), batch 8: the floor any tool must pay without a cache;
* fpx, distinct refs — `Scorer.score` on the same pairs (decode + hash + resize + forward + distances +
  SSIM/PSNR), no disk cache;
* raw, shared ref — 1 forward per pair + 1 for the reference;
* fpx, shared ref — all pairs share one reference: its tokens are computed once.
"ratio" = raw time / fpx time (1.0 = no overhead); target ≥ 0.87 (overhead < 15 %), and the shared-ref fpx
rate close to 2× the distinct-ref fpx rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="folder of photos")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[224, 518])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"score_throughput: {data} not found; skipping", file=sys.stderr)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    os.environ["FPX_OFFLINE"] = "1"
    tmp = tempfile.mkdtemp(prefix="fpx-bench-")
    os.environ["FPX_HOME"] = tmp
    from fingerprint_cli import artifacts, images
    from fingerprint_cli.anchored import encoders
    from fingerprint_cli.batch import Pair
    from fingerprint_cli.anchored.score import Scorer

    wfile = Path(tmp) / "vitb14-random.safetensors"
    encoders.make_random_dinov2(wfile, embed_dim=768, depth=12, seed=0)
    artifacts.install_file(wfile, "dinov2-vitb14", force=True)

    photos = images.list_images(data)
    n = args.pairs
    if len(photos) < 2 * n:
        print(f"score_throughput: need {2 * n} images in {data}, found {len(photos)}", file=sys.stderr)
        return 1
    # suspects: JPEG-ish copies written to a temp folder; references: the originals
    sus_dir = Path(tmp) / "suspects"
    sus_dir.mkdir()
    refs = [str(p) for p in photos[:n]]
    sus = []
    for p in photos[n:2 * n]:
        im = images.load_image(p)
        q = sus_dir / (p.stem + ".png")
        images.save_png(np.clip(im.pixels * 0.97 + 0.01, 0, 1), q)
        sus.append(str(q))

    rows = []
    for res in args.resolutions:
        enc = encoders.load_encoder(resolution=res, device="cpu")
        tensors = [torch.from_numpy(enc._prepare(images.load_image(p).pixels)) for p in refs + sus]

        def raw(k):
            with torch.inference_mode():
                for i in range(0, k, 8):
                    enc.model.forward_features(torch.stack(tensors[i:i + 8][: k - i]))

        def fpx(pairs):
            enc._mem_cache.clear()
            Scorer(enc, use_disk_cache=False).score(pairs, batch_size=8)

        distinct = [Pair(r, s) for r, s in zip(refs, sus)]
        shared = [Pair(refs[0], s) for s in sus]
        raw(2)  # warm-up
        # the four cases are interleaved within each repeat so that load drifts hit them alike; best kept
        cases = {"raw2": lambda: raw(2 * n), "fpx2": lambda: fpx(distinct), "raw1": lambda: raw(n + 1),
                 "fpx1": lambda: fpx(shared)}
        t = {k: float("inf") for k in cases}
        for _ in range(args.repeats):
            for k, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                t[k] = min(t[k], time.perf_counter() - t0)
        t_raw2, t_fpx2, t_raw1, t_fpx1 = t["raw2"], t["fpx2"], t["raw1"], t["fpx1"]
        rows.append((res, "distinct refs", n / t_raw2, n / t_fpx2, t_raw2 / t_fpx2))
        rows.append((res, "shared ref", n / t_raw1, n / t_fpx1, t_raw1 / t_fpx1))
        speedup = (n / t_fpx1) / (n / t_fpx2)
        rows.append((res, "fpx shared/distinct", None, None, speedup))

    print(f"# score throughput, {n} pairs, torch threads={args.threads}, CPU, random ViT-B/14 (DINOv2 arch)")
    print("| resolution | case | raw pairs/s | fpx pairs/s | ratio |")
    print("|---:|---|---:|---:|---:|")
    for res, case, r, f, ratio in rows:
        rs = f"{r:.3f}" if r is not None else ""
        fs = f"{f:.3f}" if f is not None else ""
        print(f"| {res} | {case} | {rs} | {fs} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
