"""Image embedders for origin retrieval, in a small registry.

Every embedder maps a float RGB image in [0, 1] of any size, shape (H, W, 3), to one L2-normalised float32
vector; similar images (an original and its image-to-image edits) should have a high cosine. Entries:

* ``dct-layout`` (the default; weight-free, works offline out of the box) — a whitened low-resolution colour
  layout: the image is resized to 64 × 64 (bicubic, antialiased, aspect not kept), converted to Y/Cb/Cr
  (BT.601), each channel centred on its own mean and divided by the luma's standard deviation (so a global
  brightness/contrast regrade cancels), chroma scaled by ``chroma``; the orthonormal 2-D DCT-II of each
  channel (``scipy.fft.dctn``) keeps the lowest ``y_keep × y_keep`` luma and ``c_keep × c_keep`` chroma
  coefficients without the DC term, each multiplied by its radial frequency to the power ``alpha`` (a fixed
  partial whitening of the 1/f spectrum of photographs). The defaults were chosen on the training split of
  ``bench/origin.py`` (docs/origin.md).
* ``sd2-vae`` — ID2's embedding (Wang et al., ICML 2025): the posterior mean of Stable Diffusion 2's VAE encoder
  (:mod:`fingerprint_cli.origin.vae`) on the image resized to 256 × 256 and scaled to [-1, 1], latent
  4 × 32 × 32 flattened to 4096. Weights: the pinned artifact ``sd2-vae`` (``fpx models pull sd2-vae`` or
  ``fpx models import FILE --name sd2-vae``); only the encoder half is built.

An embedder is rebuilt from plain data (:meth:`Embedder.spec`) so worker processes of
:mod:`fingerprint_cli.parallel` can make their own copy.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fingerprint_cli import artifacts, images
from fingerprint_cli.anchored import encoders
from fingerprint_cli.errors import UsageError

DEFAULT_EMBEDDER = "dct-layout"


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class Embedder:
    """Base class. Subclasses set ``name``, ``dim``, ``input_size`` and implement :meth:`_embed`."""

    name = "?"
    version = "1"
    dim = 0
    input_size = 0  # the side the image is resized to; a smaller image is upsampled (recorded)
    weights_sha256: str | None = None
    verified: bool | None = None

    def config(self) -> dict[str, Any]:
        return {}

    def spec(self) -> dict[str, Any]:
        """Plain data that :func:`get_embedder` turns back into this embedder (in any process)."""
        return {"name": self.name, "options": self.config()}

    def identity(self) -> dict[str, Any]:
        """What an index records and a query must match: name, version, config, weights sha256."""
        return {"name": self.name, "version": self.version, "dim": self.dim, "input_size": self.input_size,
                "config": self.config(), "weights_sha256": self.weights_sha256}

    def provenance(self) -> dict[str, Any]:
        return {**self.identity(), "verified": self.verified, "preprocessing": self.preprocessing()}

    def preprocessing(self) -> list[str]:
        return []

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """(len(batch), dim) float32, rows L2-normalised."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2n(self._embed(batch))

    def _embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class DctLayout(Embedder):
    name = "dct-layout"
    version = "1"

    def __init__(self, size: int = 64, y_keep: int = 16, c_keep: int = 8, alpha: float = 0.5,
                 chroma: float = 0.5):
        if not (2 <= y_keep <= size and 1 <= c_keep <= size):
            raise UsageError(f"dct-layout: need 2 <= y_keep <= size and 1 <= c_keep <= size (got {y_keep}, {c_keep})")
        self.size, self.y_keep, self.c_keep = int(size), int(y_keep), int(c_keep)
        self.alpha, self.chroma = float(alpha), float(chroma)
        self.input_size = self.size
        self.dim = (self.y_keep ** 2 - 1) + (2 * (self.c_keep ** 2 - 1) if self.c_keep > 1 else 0)
        self._w = {k: self._weights(k) for k in {self.y_keep, self.c_keep}}

    def _weights(self, k: int) -> np.ndarray:
        u, v = np.mgrid[0:k, 0:k]
        w = np.sqrt(u * u + v * v).astype(np.float64) ** self.alpha
        return w.ravel()[1:]  # without DC

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "y_keep": self.y_keep, "c_keep": self.c_keep, "alpha": self.alpha,
                "chroma": self.chroma}

    def preprocessing(self) -> list[str]:
        return [f"resize to {self.size}x{self.size} (bicubic, antialiased, aspect not kept)",
                "BT.601 Y/Cb/Cr, each centred, divided by the luma std",
                (f"orthonormal DCT-II, lowest {self.y_keep}x{self.y_keep} luma and {self.c_keep}x{self.c_keep} "
                 f"chroma coefficients without DC, weighted by radial frequency^{self.alpha}, L2-normalised")]

    def one(self, pixels: np.ndarray) -> np.ndarray:
        from scipy.fft import dctn

        x = images.resize(np.asarray(pixels, np.float32), self.size, self.size).astype(np.float64)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        s = max(float(y.std()), 1e-3)
        parts = []
        for ch, keep, scale in ((y, self.y_keep, 1.0), (cb, self.c_keep, self.chroma), (cr, self.c_keep, self.chroma)):
            if keep < 2:
                continue
            c = dctn((ch - ch.mean()) / s, type=2, norm="ortho")[:keep, :keep].ravel()[1:]
            parts.append(scale * c * self._w[keep])
        return np.concatenate(parts).astype(np.float32)

    def _embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.one(p) for p in batch])


class SD2VAE(Embedder):
    name = "sd2-vae"
    version = "1"

    def __init__(self, device: str = "cpu", batch_size: int = 8, weights: str | None = None):
        from fingerprint_cli.origin import vae  # torch: loaded only when this embedder is built

        if weights is None:
            inst = artifacts.ensure("sd2-vae")
            path, self.weights_sha256, self.verified = inst.path, inst.sha256, inst.verified
        else:  # an explicit file (tests, timing with random weights): never verified against the pin
            path, self.weights_sha256, self.verified = weights, images.sha256_file(weights), False
        state, _ = artifacts.read_tensors(path)
        self.model = vae.build(state)
        del state
        self.device = encoders.select_device(device)
        self.model.to(self.device)
        self.batch_size = int(batch_size)
        self.input_size = 256
        factor = self.model.arch["downsample_factor"]
        self.dim = self.model.latent * (256 // factor) ** 2
        self._weights_arg = weights

    def config(self) -> dict[str, Any]:
        return {"resolution": 256, "architecture": self.model.arch}

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "options": {"device": self.device, "weights": self._weights_arg}}

    def preprocessing(self) -> list[str]:
        return ["resize to 256x256 (bicubic, antialiased, aspect not kept)", "scale to [-1, 1]",
                "VAE encoder posterior mean, flattened, L2-normalised"]

    def _embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                x = np.stack([images.resize(np.asarray(p, np.float32), 256, 256).transpose(2, 0, 1)
                              for p in batch[i:i + self.batch_size]])
                t = torch.from_numpy(np.ascontiguousarray(x) * 2.0 - 1.0).to(self.device)
                out.append(self.model(t).flatten(1).float().cpu().numpy())
        return np.concatenate(out)


@dataclass(frozen=True)
class EmbedderEntry:
    name: str
    factory: Callable[..., Embedder]
    weight_free: bool
    description: str
    default_dim: int | None = None  # the sealed projection an index gets by default (None: none)


EMBEDDERS: dict[str, EmbedderEntry] = {
    "dct-layout": EmbedderEntry("dct-layout", DctLayout, True,
                                "whitened low-resolution colour layout (DCT of 64x64 Y/Cb/Cr); weight-free default",
                                default_dim=128),
    "sd2-vae": EmbedderEntry("sd2-vae", SD2VAE, False,
                             "Stable Diffusion 2 VAE encoder posterior mean at 256x256 (ID2); needs the sd2-vae "
                             "weights"),
}

_CACHE: dict[str, Embedder] = {}


def get_embedder(name: str = DEFAULT_EMBEDDER, **options: Any) -> Embedder:
    """Build (or reuse, per process) the embedder ``name`` with ``options``; unknown names get a suggestion."""
    if name not in EMBEDDERS:
        close = difflib.get_close_matches(name, list(EMBEDDERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown embedder {name!r}{hint} (known: {', '.join(EMBEDDERS)})")
    key = repr((name, sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = EMBEDDERS[name].factory(**options)
    return _CACHE[key]


def from_spec(spec: dict[str, Any]) -> Embedder:
    return get_embedder(spec["name"], **(spec.get("options") or {}))
