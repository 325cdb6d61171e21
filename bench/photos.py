"""Assemble the offline real-photo set used by benchmarks and by the denoiser training script.

Sources (all install offline; see ../shared/data/README.md): photographs shipped inside the
scikit-image wheel, and Debian packages `opencv-doc` (examples/data), `mate-backgrounds`,
`lomiri-wallpapers-16.04`, `lomiri-wallpapers-20.04`, `palapeli-data` (fetched with `apt-get download`,
unpacked with `dpkg-deb -x`, never installed). Digital-art wallpapers (plasma) and diagrams, logos, text,
charts and grey test patterns are left out: only colour photographs of at least 256 px on the short side.

Every photo is converted to RGB, its longer side capped at 1536 px (Lanczos), and written as PNG to
OUT/<split>/<source>__<stem>.png, where the split (``train`` 60% / ``eval`` 40%) is fixed by the sha256
of the original file — so the denoiser never trains on the photos the benchmarks evaluate on, on every
machine. OUT/manifest.csv lists source package, original path, sha256 and split.

    python bench/photos.py --out bench/out/photos        # idempotent; prints counts per split
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DEBIAN = ["opencv-doc", "mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "palapeli-data"]
SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
           "retina.jpg"]
EXCLUDE_WORDS = ("logo", "text", "sudoku", "chess", "gradient", "mask", "notes", "blob", "board", "templ", "box",
                 "pca_", "ellipses", "cards", "ml.png", "licenseplate", "graf", "lena", "imagetext", "digits",
                 "butterfly", "pic", "suzanne", "starry", "hubble", "retina", "smarties", "tsukuba",
                 "left0", "left1", "right0", "right1", "aloe", "stuff")
MAX_SIDE = 1536
MIN_SIDE = 256


def _split(sha: str) -> str:
    return "train" if int(sha[:8], 16) % 10 < 6 else "eval"


def _is_photo(im: Image.Image, name: str) -> bool:
    n = name.lower()
    if any(w in n for w in EXCLUDE_WORDS):
        return False
    if min(im.size) < MIN_SIDE:
        return False
    rgb = np.asarray(im.convert("RGB").resize((128, 128)), dtype=np.float32)
    if np.abs(rgb[..., 0] - rgb[..., 1]).mean() < 2 and np.abs(rgb[..., 1] - rgb[..., 2]).mean() < 2:
        return False  # grey
    q = (rgb // 8).astype(np.int32)
    colours = len(np.unique(q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2]))
    return colours > 150


def _candidates(tmp: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    import skimage

    data = Path(skimage.__file__).parent / "data"
    out += [("skimage", data / n) for n in SKIMAGE if (data / n).exists()]
    for pkg in DEBIAN:
        d = tmp / pkg
        d.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=d, check=True, capture_output=True, timeout=600)
            deb = next(d.glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(d / "x")], check=True, capture_output=True)
        except (subprocess.SubprocessError, StopIteration, FileNotFoundError) as exc:
            print(f"photos: skipping {pkg}: {exc}", file=sys.stderr)
            continue
        root = d / "x"
        if pkg == "opencv-doc":
            files = [p for p in root.rglob("*") if "/examples/data/" in str(p)]
        else:
            files = list(root.rglob("*"))
        out += [(pkg, p) for p in sorted(files) if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()]
    return out


def build(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    with tempfile.TemporaryDirectory() as t:
        for source, path in _candidates(Path(t)):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if sha in seen:
                continue
            try:
                im = Image.open(path)
                im.load()
            except Exception:  # noqa: BLE001
                continue
            if not _is_photo(im, path.name):
                continue
            seen.add(sha)
            im = im.convert("RGB")
            if max(im.size) > MAX_SIDE:
                s = MAX_SIDE / max(im.size)
                im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS)
            split = _split(sha)
            name = f"{source}__{path.stem}.png".replace(" ", "_")
            dest = out / split / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                im.save(dest)
            rows.append({"split": split, "file": f"{split}/{name}", "source": source,
                         "original": f"skimage/data/{path.name}" if source == "skimage" else str(path).split("/x/", 1)[-1],
                         "sha256": sha, "width": im.size[0], "height": im.size[1]})
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "eval")}
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/photos")
    args = ap.parse_args()
    if shutil.which("apt-get") is None:
        print("photos: apt-get not found; only scikit-image photos will be used", file=sys.stderr)
    counts = build(Path(args.out))
    print(f"photos: {counts['train']} train, {counts['eval']} eval -> {args.out}")


if __name__ == "__main__":
    main()
