#!/usr/bin/env python
"""Train the DnCNN denoiser that fpx's DIF residuals use (bundled artifact ``dncnn-fpx``).

Data: real photographs only, from ``bench/out/photos/train`` (built offline by ``bench/photos.py``; its fixed
sha256-based split keeps ``bench/out/photos/eval`` apart for evaluation). Each photo is used at full size and
at half size (bicubic, antialiased), 48×48 random crops with flips and 90° turns, additive white Gaussian
noise with σ ~ U[5, 15]/255, residual learning (the net predicts the noise), MSE loss, Adam with a cosine
learning-rate schedule over a wall-clock budget (2 shared CPU cores: train under ``nice``).

Evaluation: PSNR of the noisy input and of the denoised output at σ = 5, 10, 15 on held-out photos
(``bench/out/photos/eval`` and ``/work/shared/data/generators/real_kodak24`` when present), fixed noise seed.

Output: a safetensors file whose metadata records architecture, steps, wall time, data provenance (folder,
file count, a sha256 over the sorted per-file sha256s) and the evaluation. Example:

    nice -n 10 python scripts/train_denoiser.py --train bench/out/photos/train \
        --eval bench/out/photos/eval --eval /work/shared/data/generators/real_kodak24 \
        --minutes 15 --out src/fingerprint_cli/assets/dncnn-fpx.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fingerprint_cli import __version__, artifacts, images
from fingerprint_cli.dif.denoise import DnCNN


def load_set(folder: str, half: bool = True) -> tuple[list[np.ndarray], list[str]]:
    pics, shas = [], []
    for p in images.list_images(folder):
        im = images.load_image(p)
        pics.append(im.pixels)
        shas.append(im.sha256)
        if half:
            h, w = im.height // 2, im.width // 2
            pics.append(np.clip(images.resize(im.pixels, h, w), 0, 1))
    return pics, shas


def sample_batch(pics, rng: np.random.Generator, n: int, size: int = 48) -> np.ndarray:
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = pics[rng.integers(len(pics))]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        patch = img[y:y + size, x:x + size].transpose(2, 0, 1)
        patch = np.rot90(patch, k=int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        out[i] = patch
    return out


def deepen(shallow: DnCNN, deep: DnCNN, probe: torch.Tensor) -> None:
    """Net2DeeperNet for DnCNN: copy ``shallow``'s layers into ``deep`` and make every extra middle layer an
    identity on the (non-negative) activations it receives — a Dirac convolution, then batch norm with
    γ = the per-channel std and β = the mean of those activations (measured on ``probe``), so BN(h) ≈ h and
    ReLU(h) = h. In eval mode (running statistics) the deep net computes exactly the shallow one."""
    if shallow.width != deep.width or shallow.depth > deep.depth:
        raise SystemExit("--deepen-from needs a net of the same width and at most the target depth")
    s_layers, d_layers = list(shallow.body), list(deep.body)
    n_mid_s = shallow.depth - 2
    # body layout: [conv, relu] + (depth-2) * [conv, bn, relu] + [conv]
    d_layers[0].load_state_dict(s_layers[0].state_dict())
    for i in range(n_mid_s):
        for k in range(3):
            d_layers[2 + 3 * i + k].load_state_dict(s_layers[2 + 3 * i + k].state_dict())
    d_layers[-1].load_state_dict(s_layers[-1].state_dict())
    shallow.eval()
    with torch.no_grad():
        h = shallow.body[:-1](probe)  # activations entering the last convolution
    mean = h.mean(dim=(0, 2, 3))
    var = h.var(dim=(0, 2, 3), unbiased=False)
    for i in range(n_mid_s, deep.depth - 2):
        conv, bn = d_layers[2 + 3 * i], d_layers[2 + 3 * i + 1]
        with torch.no_grad():
            torch.nn.init.dirac_(conv.weight)  # zeros everywhere but the centre tap of channel i -> i
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.copy_(mean)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def eval_crops(folder: str, size: int = 128) -> list[np.ndarray]:
    """Centre crops (size×size) of each photo at half resolution (full resolution for small images)."""
    crops = []
    for p in images.list_images(folder):
        px = images.load_image(p).pixels
        if min(px.shape[:2]) >= 2 * size + 64:
            px = np.clip(images.resize(px, px.shape[0] // 2, px.shape[1] // 2), 0, 1)
        h, w = px.shape[:2]
        s = min(size, h, w)
        crops.append(px[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
    return crops


def evaluate(denoise_fn, crops: list[np.ndarray], sigmas=(5, 10, 15), seed: int = 1234) -> dict:
    """Mean PSNR (dB) of noisy input and denoised output per σ; ``denoise_fn`` maps (1,3,H,W) -> clean."""
    res = {}
    for s in sigmas:
        rng = np.random.default_rng(seed + s)
        pn, pd = [], []
        for c in crops:
            clean = c.transpose(2, 0, 1)[None].astype(np.float32)
            noisy = clean + rng.standard_normal(clean.shape).astype(np.float32) * (s / 255.0)
            with torch.inference_mode():
                out = denoise_fn(torch.from_numpy(noisy), s).numpy()
            pn.append(psnr(noisy.clip(0, 1), clean))
            pd.append(psnr(out.clip(0, 1), clean))
        res[str(s)] = {"noisy": round(float(np.mean(pn)), 3), "denoised": round(float(np.mean(pd)), 3)}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="folder of real training photos")
    ap.add_argument("--eval", action="append", default=[], help="folder(s) of held-out photos")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=17, help="convolution layers (DnCNN-S: 17)")
    ap.add_argument("--width", type=int, default=64, help="channels (DnCNN-S: 64)")
    ap.add_argument("--init", help="continue from these DnCNN weights (a file this script wrote)")
    ap.add_argument("--deepen-from", help="start from a SHALLOWER DnCNN written by this script: its layers are "
                    "copied and the missing middle layers inserted as identities (Net2DeeperNet), so training "
                    "begins at the shallow net's quality instead of at zero")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pics, shas = load_set(args.train)
    data_digest = hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()
    print(f"train: {len(shas)} photos ({len(pics)} with half-size copies) from {args.train}", file=sys.stderr)

    net = DnCNN(depth=args.depth, width=args.width)
    # start from "no noise predicted" (output = input, PSNR = the noisy input's): the last layer begins at
    # zero, so the short CPU budget is spent improving on the identity rather than undoing a random start
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    prior = {"steps": 0, "seconds": 0.0}
    if args.init:
        tensors, init_meta = artifacts.read_tensors(args.init)
        net.load_state_dict(tensors, strict=False)
        prior = {"steps": int(init_meta.get("steps", 0)), "seconds": float(init_meta.get("train_seconds", 0))}
        print(f"continuing from {args.init} ({prior['steps']} steps)", file=sys.stderr)
    if args.deepen_from:
        tensors, init_meta = artifacts.read_tensors(args.deepen_from)
        shallow = DnCNN(depth=int(init_meta["depth"]), width=int(init_meta["width"]))
        shallow.load_state_dict(tensors, strict=False)
        deepen(shallow, net, torch.from_numpy(sample_batch(pics, np.random.default_rng(args.seed + 1), 64)))
        prior = {"steps": int(init_meta.get("steps", 0)), "seconds": float(init_meta.get("train_seconds", 0))}
        print(f"deepened {args.deepen_from} (depth {shallow.depth}, {prior['steps']} steps) to depth {net.depth}",
              file=sys.stderr)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    budget = args.minutes * 60
    t0 = time.time()
    step, ema = 0, None
    net.train()
    while step < args.max_steps:
        frac = (time.time() - t0) / budget
        if frac >= 1:
            break
        lr = 1e-5 + 0.5 * (args.lr - 1e-5) * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        clean = torch.from_numpy(sample_batch(pics, rng, args.batch))
        sig = torch.from_numpy(rng.uniform(5, 15, size=(args.batch, 1, 1, 1)).astype(np.float32)) / 255.0
        noise = torch.randn_like(clean) * sig
        loss = torch.nn.functional.mse_loss(net(clean + noise), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 20 == 0:
            rmse = math.sqrt(ema) * 255
            print(f"step {step} t={time.time() - t0:.0f}s lr={lr:.2e} noise-rmse-err={rmse:.3f}/255",
                  file=sys.stderr, flush=True)
    train_s = time.time() - t0
    net.eval()

    def run(noisy, s):
        return noisy - net(noisy)

    evaluation = {}
    for folder in args.eval:
        if Path(folder).is_dir():
            evaluation[folder] = evaluate(run, eval_crops(folder))
            print(f"eval {folder}: {json.dumps(evaluation[folder])}", file=sys.stderr)
    meta = {
        "format": "fpx-dncnn", "architecture": "DnCNN-S", "depth": str(args.depth), "width": str(args.width),
        "input": "float RGB in [0,1], (B,3,H,W); output: noise estimate",
        "noise": "AWGN sigma~U[5,15]/255", "patch": "48", "batch": str(args.batch),
        "steps": str(step + prior["steps"]), "train_seconds": f"{train_s + prior['seconds']:.0f}",
        "continued_from": json.dumps({"steps": prior["steps"], "file": args.init or args.deepen_from,
                                      "how": "deepened (identity layers)" if args.deepen_from else "continued"})
        if (args.init or args.deepen_from) else "", "threads": str(args.threads),
        "optimizer": f"Adam lr {args.lr} cosine to 1e-5 over the budget", "seed": str(args.seed),
        "train_data": json.dumps({"folder": args.train, "photos": len(shas), "sha256_of_sorted_sha256s":
                                  data_digest, "built_by": "bench/photos.py (offline Debian/PyPI photos)",
                                  "augment": "full + half size, flips, rot90"}),
        "eval": json.dumps(evaluation), "fpx_version": __version__,
        "trained_by": "scripts/train_denoiser.py",
    }
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    digest = artifacts.write_tensors(args.out, state, meta)
    print(f"wrote {args.out} sha256={digest} steps={step} seconds={train_s:.0f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
