"""Regenerate the example images shipped in examples/ (reproducible, no network).

ref.png — the scikit-image "astronaut" photo (NASA, public domain), 256×256.
suspect_jpeg.jpg — ref re-encoded as JPEG quality 60 (benign processing).
suspect_blur.png — ref blurred (Gaussian σ = 1.2) and re-sharpened: a strong pixel-level change.

    python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage import data

from fingerprint_cli import images

HERE = Path(__file__).resolve().parent


def main() -> None:
    ref = images.resize(data.astronaut().astype(np.float32) / 255.0, 256, 256).clip(0, 1)
    images.save_png(ref, HERE / "ref.png")
    (HERE / "suspect_jpeg.jpg").write_bytes(images.encode(ref, "JPEG", quality=60))
    blur = gaussian_filter(ref, sigma=(1.2, 1.2, 0))
    sharp = np.clip(blur + 0.6 * (blur - gaussian_filter(blur, sigma=(2, 2, 0))), 0, 1)
    images.save_png(sharp, HERE / "suspect_blur.png")


if __name__ == "__main__":
    main()
