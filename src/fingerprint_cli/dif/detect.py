"""Detection with a fingerprint: correlation ρ(r, F), decision, calibrated score.

ρ(a, b) is the mean of the element-wise product of the two standardised tensors (zero mean, unit variance
over all 3·crop² elements) — exactly Pearson's correlation coefficient of the flattened tensors.

Misalignment tolerance (beyond the paper): the published fingerprints are pixel-locked, so a 1-pixel shift
of the image breaks them. fpx takes the best ρ over all cyclic shifts within ±``tolerance`` pixels, from one
FFT cross-correlation per image (``meta["tolerance"]``, default 1; 0 gives the paper's plain ρ). μ_real and
μ_gen are computed with the same statistic at extraction, so the decision stays consistent.

Decision (paper): "generated" when ρ is nearer μ_gen than μ_real. Score (fpx): z = (ρ − μ_real)/σ_real,
oriented so that larger means more like the generator.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.dif.residuals import ResidualCache, compute, get_denoiser
from fingerprint_cli.errors import ArtifactError

EPS = 1e-12


def standardise(t: torch.Tensor, dims=(-3, -2, -1)) -> torch.Tensor:
    """(t − mean) / std over ``dims`` (population std)."""
    m = t.mean(dim=dims, keepdim=True)
    s = t.std(dim=dims, keepdim=True, unbiased=False)
    return (t - m) / (s + EPS)


def rho(residuals: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Plain ρ of each residual (N, 3, H, W) with the pattern (3, H, W): mean of standardised product."""
    return (standardise(residuals) * standardise(pattern)[None]).mean(dim=(1, 2, 3))


def shifted_rho(residuals: torch.Tensor, pattern: torch.Tensor, tolerance: int) -> torch.Tensor:
    """max over cyclic shifts |dy|, |dx| ≤ tolerance of ρ(shift(r), F); tolerance 0 → :func:`rho`."""
    if tolerance <= 0:
        return rho(residuals, pattern)
    h, w = pattern.shape[-2:]
    a = standardise(residuals.to(torch.float64))
    b = standardise(pattern.to(torch.float64))
    spec = (torch.fft.rfft2(a) * torch.conj(torch.fft.rfft2(b))[None]).sum(dim=1)
    cc = torch.fft.irfft2(spec, s=(h, w)) / (3 * h * w)  # cc[n, dy, dx] = mean r(x + d) F(x)
    k = int(tolerance)
    idx_y = torch.tensor([i % h for i in range(-k, k + 1)])
    idx_x = torch.tensor([i % w for i in range(-k, k + 1)])
    win = cc[:, idx_y][:, :, idx_x]
    return win.flatten(1).max(dim=1).values.to(torch.float32)


def features(method: str, residuals: torch.Tensor) -> torch.Tensor:
    """What a fingerprint of ``method`` is correlated with: the residual, or its log-magnitude spectrum."""
    if method == "spectral":
        from fingerprint_cli.dif.baselines import log_spectrum

        return log_spectrum(residuals)
    return residuals


def centre_of(pattern: torch.Tensor, h: int, w: int) -> torch.Tensor:
    H, W = pattern.shape[-2:]
    y, x = (H - h) // 2, (W - w) // 2
    return pattern[..., y:y + h, x:x + w]


def correlate_residuals(fp: Fingerprint, residuals) -> np.ndarray:
    """ρ of precomputed residuals (N, 3, crop, crop) — or a list of (3, h, w) with h, w ≤ crop, correlated
    with the centre of the fingerprint — with the fingerprint's tolerance."""
    if isinstance(residuals, list):
        out = np.zeros(len(residuals), np.float64)
        for i, r in enumerate(residuals):
            r = torch.as_tensor(r, dtype=torch.float32)
            h, w = r.shape[-2:]
            sub = Fingerprint(fp.name, fp.method, centre_of(fp.pattern, h, w), fp.meta)
            if fp.method == "spectral" and (h, w) != tuple(fp.pattern.shape[-2:]):
                raise ArtifactError("a spectral fingerprint needs images of at least its crop size")
            out[i] = correlate_residuals(sub, r[None])[0]
        return out
    r = torch.as_tensor(residuals, dtype=torch.float32)
    if r.shape[0] == 0:
        return np.zeros(0, np.float32)
    tol = int(fp.meta.get("tolerance", 0)) if fp.method != "spectral" else 0
    out = []
    for i in range(0, r.shape[0], 64):
        out.append(shifted_rho(features(fp.method, r[i:i + 64]), fp.pattern, tol))
    return torch.cat(out).numpy().astype(np.float64)


def denoiser_for(fp: Fingerprint):
    """The denoiser the fingerprint was made with; ArtifactError when the installed one differs."""
    d = fp.denoiser
    den = get_denoiser(d.get("id") or d.get("name") or "dncnn")
    if d.get("sha256") and den.sha256 != d["sha256"]:
        raise ArtifactError(f"fingerprint {fp.name!r} was made with denoiser {d.get('id')} "
                            f"(sha256 {d['sha256'][:12]}…) but this fpx has {den.id} "
                            f"(sha256 {den.sha256[:12]}…): its correlations would not be comparable",
                            getattr(fp, "path", None))
    return den


def correlations(fp: Fingerprint, paths: list[str], *, cache: ResidualCache | None = None,
                 on_error: Callable[[str, Exception], None] | None = None,
                 progress: Callable[..., None] | None = None) -> np.ndarray:
    """ρ per image, using the fingerprint's denoiser, crop and misalignment tolerance.

    Residuals already in ``cache`` (image sha256, denoiser sha256, crop) are not recomputed. A bad image
    raises InputError naming it, unless ``on_error`` is given (then it is reported and left out).
    """
    den = denoiser_for(fp)
    res, _ = compute(paths, den, fp.crop, cache=cache, on_error=on_error, progress=progress, allow_smaller=True)
    return correlate_residuals(fp, res)


def correlations_with_info(fp: Fingerprint, paths: Sequence[str], *, cache: ResidualCache | None = None,
                           on_error=None, progress=None) -> tuple[np.ndarray, list[dict]]:
    """Like :func:`correlations`, also returning [{"path", "sha256"}] of the images that succeeded."""
    den = denoiser_for(fp)
    res, infos = compute(list(paths), den, fp.crop, cache=cache, on_error=on_error, progress=progress,
                         allow_smaller=True)
    return correlate_residuals(fp, res), infos


def _orientation(fp: Fingerprint) -> float:
    return 1.0 if float(fp.meta["mu_gen"]) >= float(fp.meta["mu_real"]) else -1.0


def is_generated(fp: Fingerprint, rho: np.ndarray) -> np.ndarray:
    """True where ρ is nearer μ_gen than μ_real (the paper's rule)."""
    rho = np.asarray(rho, dtype=np.float64)
    return np.abs(rho - float(fp.meta["mu_gen"])) < np.abs(rho - float(fp.meta["mu_real"]))


def scores(fp: Fingerprint, rho: np.ndarray) -> np.ndarray:
    """Calibrated z against the real training images' ρ: (ρ − μ_real)/σ_real, larger = more generated."""
    rho = np.asarray(rho, dtype=np.float64)
    sigma = max(float(fp.meta.get("sigma_real") or 0.0), 1e-9)
    return _orientation(fp) * (rho - float(fp.meta["mu_real"])) / sigma


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties count ½)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    from scipy.stats import rankdata

    ranks = rankdata(allv)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
