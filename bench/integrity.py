"""What the integrity checks of issue 14 cost (re-hashing weights at load, checking files and outputs).

Prints one table: for a weights-sized file, the time of a plain sha256 (the named reference, hashlib over the
file in 1 MiB blocks), of ``artifacts.file_sha256`` the first time (hashes and stores the digest) and again
(the file unchanged: served from the size+mtime+ctime+inode cache), each with its ratio to the plain hash; and
per image, the up-front checks a run adds (``images.check_file`` and ``atomic.check_outputs`` of one output
per input), against decoding the same image with ``images.load_image``.

    nice -n 10 python bench/integrity.py --mb 330 --images 2000 --out bench/out/integrity

``--mb 330`` is the size of the DINOv2 ViT-B/14 safetensors file; use less on a small machine (and say so).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=330, help="size of the weights-like file in MiB")
    ap.add_argument("--images", type=int, default=2000, help="images for the per-image checks")
    ap.add_argument("--out", default="bench/out/integrity", help="scratch folder (git-ignored)")
    args = ap.parse_args(argv)

    import numpy as np

    from fingerprint_cli import artifacts, atomic, images

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["FPX_HOME"] = str(out / "home")
    weights = out / "weights.bin"
    if not weights.exists() or weights.stat().st_size != args.mb << 20:
        rng = np.random.default_rng(0)
        with open(weights, "wb") as f:
            for _ in range(args.mb):
                f.write(rng.bytes(1 << 20))

    def plain():
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    ref_digest = plain()
    t_plain = _time(plain)
    cache = artifacts._hash_cache_file()

    def first():
        cache.unlink(missing_ok=True)
        artifacts._HASH_MEMO.clear()
        assert artifacts.file_sha256(weights) == ref_digest

    t_first = _time(first)

    def again():
        artifacts._HASH_MEMO.clear()  # a new process: only the on-disk cache
        assert artifacts.file_sha256(weights) == ref_digest

    first()
    t_again = _time(again, repeat=10)

    imgdir = out / "imgs"
    imgdir.mkdir(exist_ok=True)
    n = args.images
    paths = []
    arr = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    data = images.encode(arr, "PNG")
    for i in range(n):
        p = imgdir / f"i{i:05d}.png"
        if not p.exists():
            p.write_bytes(data)
        paths.append(str(p))
    outs = {f"o{i}": out / "res" / f"i{i:05d}.png" for i in range(n)}
    t_check = _time(lambda: [images.check_file(p) for p in paths], repeat=3) / n
    t_outputs = _time(lambda: atomic.check_outputs(outs, paths), repeat=3) / n
    t_decode = _time(lambda: [images.load_image(p) for p in paths[:200]], repeat=3) / min(n, 200)

    rows = [
        ("sha256 of the weights file (hashlib, reference)", t_plain, 1.0),
        ("artifacts.file_sha256, first load (hash + store)", t_first, t_first / t_plain),
        ("artifacts.file_sha256, file unchanged (cache)", t_again, t_again / t_plain),
        ("images.load_image of a 64x64 PNG (reference)", t_decode, 1.0),
        ("images.check_file, per input", t_check, t_check / t_decode),
        ("atomic.check_outputs, per output", t_outputs, t_outputs / t_decode),
    ]
    print(f"weights-like file: {args.mb} MiB; per-image checks over {n} images")
    print(f"{'what':52} {'seconds':>12} {'ratio':>8}")
    for name, t, r in rows:
        print(f"{name:52} {t:12.6f} {r:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
