"""Frozen feature encoders (DINOv2 ViT-B/14) and their token cache.

The encoder is built with timm (``vit_base_patch14_dinov2`` family, ``pretrained=False``: timm never
downloads anything) and loaded from the safetensors artifact installed by :mod:`fingerprint_cli.artifacts`.
The architecture (width, depth, patch size, native grid) is read from the weights' shapes, so the real
ViT-B/14 and a small random model of the same design saved the same way go through identical code.

Preprocessing (timm's pretrained config for DINOv2, carried with the encoder spec): the float RGB image
in [0, 1] is resized to ``resolution × resolution`` (bicubic, antialiased when shrinking, aspect ratio not
kept so both images of a pair land on the same patch grid), normalised with the ImageNet mean/std, and
passed through the ViT at that resolution (position embeddings interpolated by timm's
``dynamic_img_size``). Tokens are the final-layer, final-norm tokens; prefix tokens (CLS) are split off.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fingerprint_cli import artifacts, batch, images
from fingerprint_cli.errors import ArtifactError, UsageError


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    artifact: str
    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    default_resolution: int


ENCODERS: dict[str, EncoderSpec] = {
    "dinov2-vitb14": EncoderSpec(
        name="dinov2-vitb14", artifact="dinov2-vitb14", timm_name="vit_base_patch14_dinov2",
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
        default_resolution=224),
}
NO_ENCODER = "none"


def resolve_encoder(name: str) -> EncoderSpec | None:
    if name == NO_ENCODER:
        return None
    if name in ENCODERS:
        return ENCODERS[name]
    spec = artifacts.resolve(name)  # raises with a did-you-mean
    for enc in ENCODERS.values():
        if enc.artifact == spec.name:
            return enc
    raise UsageError(f"{name!r} is not an encoder (encoders: {', '.join(ENCODERS)}, {NO_ENCODER})")


def select_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def architecture_from_state(state: dict[str, Any]) -> dict[str, int | bool]:
    """Read ViT hyper-parameters from a DINOv2-style state dict; raise ArtifactError if it is not one."""
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise ArtifactError(f"not a DINOv2 ViT state dict (missing {', '.join(missing)})")
    embed = int(state["cls_token"].shape[-1])
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    n_pos = int(state["pos_embed"].shape[1]) - 1
    grid = int(round(n_pos ** 0.5))
    if grid * grid != n_pos:
        raise ArtifactError(f"position embedding of {n_pos} tokens is not a square grid")
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    return {"embed_dim": embed, "depth": depth, "num_heads": max(1, embed // 64), "patch_size": patch,
            "img_size": grid * patch, "mlp_ratio": hidden / embed,
            "layer_scale": "blocks.0.ls1.gamma" in state, "reg_tokens": int(state["reg_token"].shape[1])
            if "reg_token" in state else 0}


def build_vit(state: dict[str, Any], timm_name: str):
    """A timm DINOv2 ViT shaped after ``state`` with ``state`` loaded strictly."""
    import timm

    arch = architecture_from_state(state)
    kwargs = dict(pretrained=False, num_classes=0, dynamic_img_size=True, img_size=arch["img_size"],
                  patch_size=arch["patch_size"], embed_dim=arch["embed_dim"], depth=arch["depth"],
                  num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"],
                  init_values=1e-5 if arch["layer_scale"] else None)
    if arch["reg_tokens"]:
        kwargs["reg_tokens"] = arch["reg_tokens"]
    model = timm.create_model(timm_name, **kwargs)
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("head")]
    if result.missing_keys or unexpected:
        raise ArtifactError(f"weights do not fit the {timm_name} architecture (missing: "
                            f"{result.missing_keys[:3]}, unexpected: {unexpected[:3]})")
    model.eval()
    return model, arch


@dataclass
class Tokens:
    """Final-layer tokens of one image: ``patches`` (P, D) float32, ``cls`` (D,), grid (gh, gw)."""

    patches: np.ndarray
    cls: np.ndarray
    grid: tuple[int, int]


class Encoder:
    """A loaded frozen encoder. ``encode`` batches images through it under ``torch.inference_mode``."""

    def __init__(self, spec: EncoderSpec, model, arch: dict, installed: artifacts.Installed, resolution: int,
                 device: str):
        self.spec = spec
        self.model = model
        self.arch = arch
        self.installed = installed
        self.resolution = resolution
        self.device = device
        self._mem_cache: dict[str, Tokens] = {}

    @property
    def weights_sha256(self) -> str:
        return self.installed.sha256

    def provenance(self) -> dict[str, Any]:
        return {"encoder": self.spec.name, "weights_sha256": self.installed.sha256,
                "verified": self.installed.verified, "resolution": self.resolution, "device": self.device,
                "architecture": {k: self.arch[k] for k in ("embed_dim", "depth", "patch_size", "img_size")},
                "preprocessing": self.preprocessing_steps()}

    def preprocessing_steps(self) -> list[str]:
        return [f"resize to {self.resolution}x{self.resolution} ({self.spec.interpolation}, antialiased, "
                "aspect not kept)",
                f"normalise mean={list(self.spec.mean)} std={list(self.spec.std)}",
                f"final-layer tokens after final norm; {1 + self.arch['reg_tokens']} prefix token(s) dropped"]

    def _prepare(self, pixels: np.ndarray) -> np.ndarray:
        r = self.resolution
        x = images.resize(pixels, r, r)
        x = (x - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def encode(self, batch: Sequence[np.ndarray], batch_size: int = 8) -> list[Tokens]:
        """Tokens of each float RGB image in ``batch`` (any size; each resized to the resolution)."""
        import torch

        out: list[Tokens] = []
        grid = (self.resolution // self.arch["patch_size"],) * 2
        n_prefix = 1 + self.arch["reg_tokens"]
        with torch.inference_mode():
            for i in range(0, len(batch), batch_size):
                x = torch.from_numpy(np.stack([self._prepare(p) for p in batch[i:i + batch_size]]))
                feats = self.model.forward_features(x.to(self.device)).float().cpu().numpy()
                for f in feats:
                    out.append(Tokens(patches=f[n_prefix:], cls=f[0], grid=grid))
        return out

    # -------------------------------------------------------- cache
    def cache_key(self, sha256: str) -> str:
        return f"{sha256}_{self.spec.name}_{self.installed.sha256[:16]}_{self.resolution}"

    def cache_path(self, sha256: str) -> Path:
        return artifacts.home() / "cache" / "tokens" / f"{self.cache_key(sha256)}.safetensors"

    def cached(self, sha256: str, use_disk: bool = True) -> Tokens | None:
        key = self.cache_key(sha256)
        if key in self._mem_cache:
            return self._mem_cache[key]
        path = self.cache_path(sha256)
        if use_disk and path.exists():
            try:
                tensors, meta = artifacts.read_tensors(path)
                tok = Tokens(tensors["patches"].numpy(), tensors["cls"].numpy(),
                             (int(meta["gh"]), int(meta["gw"])))
            except Exception:
                return None  # a damaged cache entry is recomputed
            self._mem_cache[key] = tok
            return tok
        return None

    def store(self, sha256: str, tok: Tokens, use_disk: bool = True) -> None:
        import torch

        key = self.cache_key(sha256)
        self._mem_cache[key] = tok
        if use_disk and not self.cache_path(sha256).exists():
            try:
                artifacts.write_tensors(self.cache_path(sha256),
                                        {"patches": torch.from_numpy(tok.patches), "cls": torch.from_numpy(tok.cls)},
                                        {"gh": str(tok.grid[0]), "gw": str(tok.grid[1]), "key": key})
            except OSError as exc:  # an unusable cache only costs speed
                batch.cache_unusable("token", exc)


def load_encoder(name: str = "dinov2-vitb14", resolution: int | None = None, device: str = "auto",
                 progress=None) -> Encoder:
    """Load the installed encoder weights (pulling them first when allowed) into a timm ViT."""
    spec = resolve_encoder(name)
    if spec is None:
        raise UsageError("no encoder was asked for")
    if resolution is not None and int(resolution) <= 0:
        raise UsageError(f"--resolution must be a positive multiple of the patch size (14), not {resolution}")
    inst = artifacts.ensure(spec.artifact, progress=progress)  # re-hashed: inst.sha256 is the file read below
    state, _ = artifacts.read_tensors(inst.path)
    model, arch = build_vit(state, spec.timm_name)
    res = spec.default_resolution if resolution is None else int(resolution)
    if res % arch["patch_size"] != 0 or res < arch["patch_size"]:
        raise UsageError(f"--resolution {res} is not a positive multiple of the patch size {arch['patch_size']}")
    dev = select_device(device)
    model.to(dev)
    return Encoder(spec, model, arch, inst, res, dev)


def make_random_dinov2(path: str | os.PathLike, *, embed_dim: int = 64, depth: int = 2, img_size: int = 518,
                       seed: int = 0) -> str:
    """Save a small random DINOv2-architecture ViT (patch 14, layer scale) as safetensors, for tests.

    Returns the sha256 of the file. Width and depth are small so tests run fast; the design (patch
    embedding, CLS token, interpolated position embeddings, layer-scaled pre-norm blocks) is DINOv2's.
    """
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=img_size,
                              embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // 64),
                              init_values=1e-5)
    # random layer-scale of a realistic size so that blocks actually change the tokens
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return artifacts.write_tensors(path, dict(model.state_dict()), {"note": "random test model"})
