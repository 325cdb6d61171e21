"""Baseline fingerprints, fitted from the same cached residuals as DIF.

* ``average`` — Marra et al., "Do GANs leave artificial fingerprints?" (MIPR 2019, arXiv 2018): the
  fingerprint is the mean residual of the generator's training images; detection by Pearson correlation
  (fpx's ρ, with the same shift tolerance as DIF).
* ``spectral`` — a Fourier-magnitude fingerprint: the mean log-magnitude spectrum of the generator's residuals
  minus that of the real residuals (so the shared spectral shape of the denoiser cancels); detection by
  Pearson correlation of an image's residual log-magnitude spectrum with it. Magnitude spectra do not move
  with a shift, so no shift search is needed.
"""

from __future__ import annotations

import torch


def log_spectrum(residuals: torch.Tensor) -> torch.Tensor:
    """log |FFT2| per channel, centred (fftshift), same shape as the input (N, 3, H, W)."""
    mag = torch.fft.fft2(residuals.to(torch.float64)).abs()
    return torch.fft.fftshift(torch.log(mag + 1e-8), dim=(-2, -1)).to(torch.float32)


def average_pattern(gen: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Marra et al.: mean residual of the generated training images (3, H, W)."""
    return gen.mean(dim=0)


def spectral_pattern(gen: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean residual log-spectrum of generated minus that of real training images (3, H, W)."""
    g = torch.cat([log_spectrum(gen[i:i + 64]) for i in range(0, gen.shape[0], 64)]).mean(dim=0)
    r = torch.cat([log_spectrum(real[i:i + 64]) for i in range(0, real.shape[0], 64)]).mean(dim=0)
    return g - r


PATTERNS = {"average": average_pattern, "spectral": spectral_pattern}
