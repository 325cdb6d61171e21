"""Detection with a fingerprint: correlation ρ(r, F), decision, calibrated score.

ρ(a, b) is the mean of the element-wise product of the two standardised tensors (zero mean, unit variance
over all 3·crop² elements) — exactly Pearson's correlation coefficient of the flattened tensors.

Misalignment tolerance (beyond the paper): the published fingerprints are pixel-locked, so a 1-pixel shift
of the image breaks them. fpx searches the cyclic shifts within ±``tolerance`` pixels (``meta["tolerance"]``,
default 1; 0 gives the paper's plain ρ) with a *cross-fitted* search (:func:`shifted_rho`, ``meta["search"] =
"crossfit"``): the shift is picked on one half of the pixels and ρ read on the other, so unrelated images are
not lifted toward the threshold the way the maximum over shifts lifts them. μ_real and μ_gen are computed
with the same statistic at extraction, so the decision stays consistent.

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


def _shift_window(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Σ_x a(x + d) b(x) for every cyclic shift d with |dy|, |dx| ≤ k, from one FFT per image: (N, (2k+1)²),
    the zero shift at the centre index."""
    h, w = b.shape[-2:]
    spec = (torch.fft.rfft2(a) * torch.conj(torch.fft.rfft2(b))[None]).sum(dim=1)
    cc = torch.fft.irfft2(spec, s=(h, w))
    idx_y = torch.tensor([i % h for i in range(-k, k + 1)])
    idx_x = torch.tensor([i % w for i in range(-k, k + 1)])
    return cc[:, idx_y][:, :, idx_x].flatten(1)


def quadrant_mask(h: int, w: int) -> torch.Tensor:
    """1 on the top-left and bottom-right quadrants, 0 on the other two (a 2×2 checkerboard)."""
    yy = (torch.arange(h) >= h // 2)[:, None]
    xx = (torch.arange(w) >= w // 2)[None, :]
    return (yy == xx).to(torch.float64)


def max_shifted_rho(residuals: torch.Tensor, pattern: torch.Tensor, tolerance: int) -> torch.Tensor:
    """max over cyclic shifts |dy|, |dx| ≤ tolerance of ρ(shift(r), F) (fpx ≤ 0.1 fingerprints' statistic).

    Biased on unrelated images: the maximum of (2k+1)² null correlations sits well above zero, which costs
    accuracy on aligned images. Kept for fingerprints that recorded it and for the benchmark comparison."""
    if tolerance <= 0:
        return rho(residuals, pattern)
    h, w = pattern.shape[-2:]
    a = standardise(residuals.to(torch.float64))
    b = standardise(pattern.to(torch.float64))
    win = _shift_window(a, b, int(tolerance)) / (3 * h * w)
    return win.max(dim=1).values.to(torch.float32)


def shifted_rho(residuals: torch.Tensor, pattern: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Cross-fitted shift search: ρ tolerant to misalignment of up to ``tolerance`` px, unbiased on unrelated
    images. tolerance 0 → :func:`rho`.

    The pixels are split into two halves A and B (a 2×2 checkerboard of quadrants). The shift is chosen on one
    half and ρ is read at that shift on the other: d_A = argmax_d ρ_A(d), d_B = argmax_d ρ_B(d), statistic =
    (ρ_B(d_A) + ρ_A(d_B)) / 2, where ρ_S(d) is the mean of standardised r(x + d)·F(x) over x in S. An image
    that carries F (at any shift within the window) picks the right shift on both halves and scores ≈ its
    aligned ρ; on an unrelated image the shift chosen on A is independent of the noise on B, so the statistic
    stays centred where the plain ρ is — unlike the maximum over shifts (:func:`max_shifted_rho`), which lifts
    every real image toward the threshold.
    """
    if tolerance <= 0:
        return rho(residuals, pattern)
    h, w = pattern.shape[-2:]
    k = int(tolerance)
    a = standardise(residuals.to(torch.float64))
    b = standardise(pattern.to(torch.float64))
    m_a = quadrant_mask(h, w)
    m_b = 1.0 - m_a
    c_a = _shift_window(a, b * m_a, k) / (3 * float(m_a.sum()))
    c_b = _shift_window(a, b * m_b, k) / (3 * float(m_b.sum()))
    d_a = c_a.argmax(dim=1, keepdim=True)
    d_b = c_b.argmax(dim=1, keepdim=True)
    stat = (c_b.gather(1, d_a)[:, 0] + c_a.gather(1, d_b)[:, 0]) / 2
    return stat.to(torch.float32)


SEARCHES = {"crossfit": shifted_rho, "max": max_shifted_rho}


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
    # fingerprints written before the cross-fitted search record no "search": they were calibrated with the max
    search = SEARCHES[fp.meta.get("search", "max")]
    out = []
    for i in range(0, r.shape[0], 64):
        out.append(search(features(fp.method, r[i:i + 64]), fp.pattern, tol))
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
