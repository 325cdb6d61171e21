"""The DIF extractor: a U-Net mapping a fixed noise input to the fingerprint (Sinitsa & Fried, WACV 2024).

Input z = z0 + N(0, 0.03²) with z0 = 0.1·U[0, 1) of shape (1, 16, crop, crop), fixed per run; base width 32,
depth 4 (widths 32, 64, 128, 256 and a 512 bottleneck), each level two 3×3 conv + BN + LeakyReLU(0.01),
max-pool down, transposed-conv up, skip connections at every level, 1×1 conv and tanh out → (1, 3, crop, crop).
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01, inplace=True))


class UNet(nn.Module):
    def __init__(self, in_ch: int = 16, out_ch: int = 3, width: int = 32, depth: int = 4):
        super().__init__()
        widths = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList()
        c = in_ch
        for w in widths:
            self.down.append(_pair(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _pair(c, c * 2)
        c = c * 2
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.merge.append(_pair(2 * w, w))
            c = w
        self.out = nn.Conv2d(c, out_ch, 1)
        self.depth = depth

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        skips = []
        x = z
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return torch.tanh(self.out(x))
