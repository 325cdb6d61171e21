"""The encoder half of Stable Diffusion's AutoencoderKL, written in plain torch (no diffusers at run time).

Architecture (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"; the
layout and parameter names of ``diffusers.AutoencoderKL`` with ``DownEncoderBlock2D`` blocks, the SD2 VAE
config: ``block_out_channels=(128, 256, 512, 512)``, ``layers_per_block=2``, ``latent_channels=4``,
GroupNorm with 32 groups and eps 1e-6, SiLU):

``conv_in`` 3×3 → per down block: ``layers_per_block`` ResNet blocks (GroupNorm, SiLU, 3×3 conv, twice; a 1×1
``conv_shortcut`` when the width changes) and, except in the last block, a stride-2 3×3 conv after a
(0, 1, 0, 1) zero pad → mid block: ResNet, single-head self-attention over the H·W positions (GroupNorm,
q/k/v/out linear maps, residual), ResNet → GroupNorm, SiLU, ``conv_out`` to 2·latent channels →
``quant_conv`` 1×1. The first ``latent_channels`` output channels are the posterior mean (deterministic;
the log-variance half is dropped).

The hyper-parameters are read from the weights' shapes (widths, blocks, layers, latent channels), so the
real SD2 VAE and a small random model of the same design go through identical code. Attention keys are
accepted under both names diffusers has used: current ``to_q/to_k/to_v/to_out.0`` and legacy
``query/key/value/proj_attn`` (also as 1×1-conv shaped weights). Only ``encoder.*`` and ``quant_conv.*``
tensors are used; the decoder is ignored.

Tested against ``diffusers.AutoencoderKL`` built from the SD2 config with random weights (agreement 1e-5).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fingerprint_cli.errors import ArtifactError

EPS = 1e-6
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, down: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample(cout)]) if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class Attention(nn.Module):
    """Single-head self-attention over spatial positions with a residual (diffusers' VAE mid-block)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=EPS)
        self.to_q = nn.Linear(ch, ch)
        self.to_k = nn.Linear(ch, ch)
        self.to_v = nn.Linear(ch, ch)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        a = torch.softmax((q @ k.transpose(1, 2)) * (c ** -0.5), dim=-1)
        o = self.to_out[0](a @ v)
        return x + o.transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, groups), ResnetBlock(ch, ch, groups)])
        self.attentions = nn.ModuleList([Attention(ch, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    def __init__(self, widths: tuple[int, ...], layers: int, latent: int, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        blocks, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks.append(DownBlock(cin, cout, layers, groups, down=i < len(widths) - 1))
            cin = cout
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(widths[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * latent, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VAEEncoder(nn.Module):
    """``encoder`` + ``quant_conv``; :meth:`forward` returns the posterior mean (B, latent, H/f, W/f)."""

    def __init__(self, widths: tuple[int, ...], layers: int, latent: int, groups: int = 32):
        super().__init__()
        self.encoder = Encoder(widths, layers, latent, groups)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.latent = latent
        self.arch = {"block_out_channels": list(widths), "layers_per_block": layers, "latent_channels": latent,
                     "norm_num_groups": groups, "downsample_factor": 2 ** (len(widths) - 1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))[:, :self.latent]


def encoder_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder-side tensors of an AutoencoderKL state dict, with attention keys in current names."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not k.startswith(("encoder.", "quant_conv.")):
            continue
        m = re.match(r"(encoder\.mid_block\.attentions\.0\.)(query|key|value|proj_attn)\.(weight|bias)$", k)
        if m:
            k = f"{m.group(1)}{LEGACY_ATTENTION[m.group(2)]}.{m.group(3)}"
        if ".attentions." in k and k.endswith(".weight") and v.ndim == 4:
            v = v[:, :, 0, 0]  # legacy 1x1-conv shaped attention projections
        out[k] = v
    return out


def architecture(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Widths, layers per block and latent channels from the encoder tensors' shapes."""
    need = ["encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight",
            "encoder.mid_block.attentions.0.to_q.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise ArtifactError(f"not an AutoencoderKL (SD VAE) state dict (missing {', '.join(missing)})")
    n_blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k)))
    widths = tuple(int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n_blocks))
    layers = 1 + max(int(m.group(1)) for k in state
                     if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k)))
    latent = int(state["quant_conv.weight"].shape[0]) // 2
    return {"widths": widths, "layers": layers, "latent": latent}


def build(state: dict[str, Any], groups: int = 32) -> VAEEncoder:
    """A :class:`VAEEncoder` shaped after ``state`` (an AutoencoderKL state dict) and loaded strictly."""
    enc = encoder_state(state)
    arch = architecture(enc)
    model = VAEEncoder(arch["widths"], arch["layers"], arch["latent"], groups)
    try:
        model.load_state_dict(enc, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"weights do not fit the AutoencoderKL encoder ({str(exc).splitlines()[0]})") from exc
    return model.eval()


def sd2_config(small: bool = False) -> dict[str, Any]:
    """The diffusers ``AutoencoderKL`` config of SD2's VAE (``small``: the same four blocks and ×8 downsampling,
    32/32/64/64 wide, one ResNet per block — for fast tests)."""
    cfg = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
           "norm_num_groups": 32, "act_fn": "silu", "sample_size": 768,
           "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
           "block_out_channels": [128, 256, 512, 512]}
    if small:
        cfg.update(block_out_channels=[32, 32, 64, 64], layers_per_block=1, sample_size=64)
    return cfg


def random_state(small: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random encoder state dict of the SD2 VAE architecture (for tests and timing; never for accuracy).

    Conv and linear weights are drawn with PyTorch's default initialisation; GroupNorm weights and biases are
    perturbed from (1, 0) so that every parameter matters in comparisons.
    """
    cfg = sd2_config(small)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = VAEEncoder(tuple(cfg["block_out_channels"]), cfg["layers_per_block"], cfg["latent_channels"],
                       cfg["norm_num_groups"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
