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

Calibrated decision (fpx, :func:`calibrate`): a fingerprint calibrated on n held-out real images (never its
training images) stores their statistics; a suspect's **conformal p-value** against the real class is
p = (1 + #{calibration scores ≥ its score}) / (n + 1), and the suspect is called ``generated`` only when
p ≤ the stated false-positive rate α. For a real image exchangeable with the calibration images,
P(p ≤ α) = ⌊α(n + 1)⌋/(n + 1) ≤ α, so α is a guaranteed upper bound on the false-positive rate for images like
those calibrated on — and only for those: a recompressed or resized real photo is not exchangeable with
unprocessed ones. So a calibration may also hold the same images' statistics under recompression conditions
(``conformal["recompressions"]``, :class:`.condition.Recompression`), and a suspect's p-value is the largest over
the calibration sets its own condition — read from its file header — cannot rule out
(:func:`.condition.calibration_sets`): each set's bound holds for images of its condition, so the maximum keeps
α for a real image whose condition is any of them. Records carry the input's condition and the sets used. n must be at least
⌈1/α⌉ − 1, else no p-value can reach α. A fingerprint without calibration (fpx ≤ 0.1, or fitted without
``--fpr``) keeps the paper's rule and says "not calibrated" in every record; it never claims a rate.

Several fingerprints (:func:`decide`): the claimants are those that call the image generated. None:
``not-detected`` (:data:`NOT_DETECTED`; ``detected`` false, ``generated`` null): no fingerprint of the library
detected it at its stated false-positive rate. That is not a claim that the image is real — the miss rate is not
calibrated, and a generator outside the library is never detected — so no label ``real`` is given; outside the
calibrated conditions of every fingerprint the answer is ``unknown`` (:func:`abstain_outside`), as a claim there
would be, and inside only some of them it names which fingerprints it holds for. One: its generator. Several: the one with the highest score is named only when
it is a **clear winner** — its score exceeds the runner-up claimant's by at least ``margin`` (default
:data:`CLEAR_MARGIN` = 2 real-image standard deviations of z); otherwise the label is ``unknown`` (generated,
by one of the candidates listed, which one is not resolved). With K calibrated fingerprints the chance that a
real image is claimed by any of them is at most Σ α_k (``fpr_any`` in the record).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from fingerprint_cli import artifacts, atomic, batch, guard, images
from fingerprint_cli.anchored.score import base_provenance
import functools

from fingerprint_cli.dif import condition, restore
from fingerprint_cli.dif import route as routing
from fingerprint_cli.dif.baselines import log_spectrum
from fingerprint_cli.dif.condition import AS_DISTRIBUTED, LOSSLESS_SET, Recompression
from fingerprint_cli.dif.fingerprint import (Conformal, Fingerprint, Phases, calibration_summary, load_folder,
                                             load_library, min_calibration_images)
from fingerprint_cli.dif.residuals import ResidualCache, compute_matched, compute_views, get_denoiser, recompressed_window
from fingerprint_cli.errors import ArtifactError, FpxError, InputError, UsageError
from fingerprint_cli.images import sha256_bytes
from fingerprint_cli.records import Record, input_key

EPS = 1e-12
CLEAR_MARGIN = 2.0
#: the label when no fingerprint calls the image generated (never ``real``: absence of a detection is not evidence)
NOT_DETECTED = "not-detected"
NOT_DETECTED_NOTE = ("no fingerprint of the library detected it at its stated false-positive rate; the miss rate "
                     "is not calibrated — this is not evidence that the image is real")


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
            sub = Fingerprint(fp.name, fp.method, centre_of(fp.pattern, h, w), fp.info)
            if fp.method == "spectral" and (h, w) != tuple(fp.pattern.shape[-2:]):
                raise ArtifactError("a spectral fingerprint needs images of at least its crop size")
            out[i] = correlate_residuals(sub, r[None])[0]
        return out
    r = torch.as_tensor(residuals, dtype=torch.float32)
    if r.shape[0] == 0:
        return np.zeros(0, np.float32)
    tol = int(fp.info.tolerance or 0) if fp.method != "spectral" else 0
    # fingerprints written before the cross-fitted search record no "search": they were calibrated with the max
    search = SEARCHES[fp.info.search or "max"]
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
                            f"(sha256 {den.sha256[:12]}…): its correlations would not be comparable", fp.path)
    return den


def correlations(fp: Fingerprint, paths: list[str], *, cache: ResidualCache | None = None,
                 on_error: Callable[[str, Exception], None] | None = None,
                 progress: Callable[..., None] | None = None) -> np.ndarray:
    """ρ per image, using the fingerprint's denoiser, crop and misalignment tolerance.

    Residuals already in ``cache`` (image sha256, denoiser sha256, crop) are not recomputed. A bad image
    raises InputError naming it, unless ``on_error`` is given (then it is reported and left out).
    """
    res, _ = _residuals(fp, paths, cache, on_error, progress, allow_smaller=True)
    return correlate_residuals(fp, res)


def matched_quality(fp: Fingerprint) -> int | None:
    """The JPEG quality a ``format-matched`` fingerprint re-encodes every lossless image at before its residual
    (``meta["augment"]["match_quality"]``), None for every other fingerprint."""
    q = (fp.info.augment or {}).get("match_quality")
    return None if q is None else int(q)


def _residuals(fp: Fingerprint, paths: Sequence[str], cache, on_error, progress, allow_smaller: bool = False):
    """The residuals detection and calibration correlate with ``fp``: its denoiser and crop, with its format
    matching (:func:`matched_quality`, :func:`.residuals.compute_matched`) where it has one."""
    return compute_matched(list(paths), denoiser_for(fp), fp.crop, matched_quality(fp), cache=cache,
                           on_error=on_error, progress=progress, allow_smaller=allow_smaller)


def correlations_with_info(fp: Fingerprint, paths: Sequence[str], *, cache: ResidualCache | None = None,
                           on_error=None, progress=None) -> tuple[np.ndarray, list[dict]]:
    """Like :func:`correlations`, also returning [{"path", "sha256"}] of the images that succeeded."""
    res, infos = _residuals(fp, paths, cache, on_error, progress, allow_smaller=True)
    return correlate_residuals(fp, res), infos


def _orientation(fp: Fingerprint) -> float:
    return fp.info.oriented_sign


def is_generated(fp: Fingerprint, rho: np.ndarray) -> np.ndarray:
    """True where ρ is nearer μ_gen than μ_real (the paper's rule)."""
    rho = np.asarray(rho, dtype=np.float64)
    return np.abs(rho - float(fp.info.mu_gen)) < np.abs(rho - float(fp.info.mu_real))


def scores(fp: Fingerprint, rho: np.ndarray) -> np.ndarray:
    """Calibrated z against the real training images' ρ: (ρ − μ_real)/σ_real, larger = more generated."""
    rho = np.asarray(rho, dtype=np.float64)
    sigma = max(float(fp.info.sigma_real or 0.0), 1e-9)
    return _orientation(fp) * (rho - float(fp.info.mu_real)) / sigma


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties count ½)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    from scipy.stats import rankdata

    ranks = rankdata(allv)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# ------------------------------------------------------------------ calibrated decisions
def check_fpr(fpr: float) -> float:
    if not (isinstance(fpr, (int, float)) and math.isfinite(fpr) and 0 < fpr <= 0.5):
        raise UsageError(f"--fpr must be in (0, 0.5] (got {fpr})")
    return float(fpr)


def calibration_rho(cal: Conformal, set_id: str = AS_DISTRIBUTED) -> list[float]:
    """The calibration statistics of one set: the images as distributed, the lossless real set, or a
    recompression id."""
    if set_id == AS_DISTRIBUTED:
        return list(cal.rho)
    if set_id == LOSSLESS_SET:
        return list(cal.lossless["rho"])
    if set_id.startswith(restore.PREFIX):
        return restore.set_rho(cal, set_id)
    return list(cal.recompressions[set_id]["rho"])


def _conformal_p(fp: Fingerprint, cal_rho: Sequence[float], rho: np.ndarray) -> np.ndarray:
    """(1 + #{s_i ≥ s}) / (n + 1) of each ρ's score s over the calibration scores s_i."""
    s_cal = np.sort(scores(fp, np.asarray(cal_rho, dtype=np.float64)))
    s = scores(fp, np.atleast_1d(np.asarray(rho, dtype=np.float64)))
    ge = len(s_cal) - np.searchsorted(s_cal, s, side="left")
    return (1.0 + ge) / (len(s_cal) + 1.0)


def p_values(fp: Fingerprint, rho: np.ndarray, sets: Sequence[str] | None = None) -> np.ndarray | None:
    """Conformal p-values against the real class, (1 + #{s_i ≥ s}) / (n + 1) over the calibration scores s_i;
    None when the fingerprint is not calibrated. NaN where ρ is not finite.

    ``sets``: the calibration sets to test against (:func:`.condition.calibration_sets`; default the images as
    distributed); with several, the largest p-value — valid whenever the image's true condition is one of
    them."""
    cal = fp.conformal
    if cal is None:
        return None
    p = np.max([_conformal_p(fp, calibration_rho(cal, sid), rho) for sid in (sets or [AS_DISTRIBUTED])], axis=0)
    s = scores(fp, np.atleast_1d(np.asarray(rho, dtype=np.float64)))
    return np.where(np.isfinite(s), p, np.nan)


def rho_threshold(fp: Fingerprint, rho: Sequence[float] | None = None) -> float | None:
    """The calibrated cut on ρ: an image is called generated iff its (oriented) score is strictly above the
    score of this ρ — the (m+1)-th highest calibration score, m = ⌊α(n+1)⌋ − 1. None when not calibrated.
    ``rho``: another calibration set's statistics (default the images as distributed)."""
    cal = fp.conformal
    if cal is None:
        return None
    r = np.asarray(cal.rho if rho is None else rho, dtype=np.float64)
    m = math.floor(float(cal.fpr) * (len(r) + 1) + 1e-9) - 1
    if not 0 <= m < len(r):
        return None
    return float(r[np.argsort(-scores(fp, r), kind="stable")[m]])


def judge(fp: Fingerprint, rho: float, sets: Sequence[str] | None = None) -> dict[str, Any]:
    """One fingerprint's call on one ρ: score, p-value, generated, and the rule that decided. ``sets``: the
    calibration sets the image may belong to (see :func:`p_values`)."""
    rho = float(rho)
    sc = float(scores(fp, np.array([rho]))[0])
    if guard.nonfinite({"rho": rho, "score": sc}):
        return {"rho": rho, "score": None, "p_value": None, "generated": None, "fpr": fp.fpr,
                "rule": "no finite statistic"}
    if fp.calibrated:
        p = float(p_values(fp, np.array([rho]), sets)[0])
        return {"rho": rho, "score": sc, "p_value": p, "generated": bool(p <= fp.fpr), "fpr": fp.fpr,
                "rule": "conformal p <= fpr" if not sets or len(sets) == 1 else
                        "conformal p <= fpr (largest p over the calibration sets it may belong to)"}
    return {"rho": rho, "score": sc, "p_value": None, "generated": bool(is_generated(fp, np.array([rho]))[0]),
            "fpr": None, "rule": "nearest mean (not calibrated)"}


def not_detected() -> dict[str, Any]:
    """The decision fields of an image no fingerprint calls generated: ``not-detected``, ``detected`` false,
    ``generated`` null (no stated miss rate, so no claim either way) and the note saying so."""
    return {"label": NOT_DETECTED, "generated": None, "detected": False, "note": NOT_DETECTED_NOTE}


def claimed(decision: dict[str, Any]) -> bool:
    """Whether a detect decision is anything but a plain non-detection: a generator, ``unknown`` from several
    claimants or a non-finite statistic, or an abstention from a claim outside the calibrated conditions (what
    ``bench/detect_fpr.py`` counts). A non-detection outside the conditions (``unknown`` whose withheld call was
    ``not-detected``) is not a claim."""
    withheld = (decision.get("call_outside_conditions") or {}).get("label")
    return decision.get("label") != NOT_DETECTED and withheld != NOT_DETECTED


def decide(names: Sequence[str], calls: Sequence[dict[str, Any]], margin: float = CLEAR_MARGIN) -> dict[str, Any]:
    """Combine :func:`judge` calls of several fingerprints on one image into one decision (see the module)."""
    if any(c["generated"] is None for c in calls):
        bad = [n for n, c in zip(names, calls) if c["generated"] is None]
        return {"label": "unknown", "generated": None, "detected": None,
                "reason": f"no finite statistic from {', '.join(bad)}", "called_by": [], "clear": None}
    claim = sorted(((n, c) for n, c in zip(names, calls) if c["generated"]), key=lambda x: -x[1]["score"])
    out: dict[str, Any] = {"called_by": [n for n, _ in claim], "detected": True}
    if not claim:
        out.update(not_detected(), clear=None,
                   reason="no fingerprint calls it generated" if len(calls) > 1 else "not called generated")
    elif len(claim) == 1:
        out.update(label=claim[0][0], generated=True, clear=True, reason="one fingerprint calls it generated")
    else:
        gap = claim[0][1]["score"] - claim[1][1]["score"]
        out["score_gap"] = gap
        if gap >= margin:
            out.update(label=claim[0][0], generated=True, clear=True,
                       reason=f"{len(claim)} fingerprints call it generated; {claim[0][0]} leads by "
                              f"{gap:.3g} ≥ {margin:g} (score units)")
        else:
            out.update(label="unknown", generated=True, clear=False,
                       reason=f"{len(claim)} fingerprints call it generated and none leads by {margin:g} score "
                              f"units (best gap {gap:.3g}): generator not resolved")
    out["margin"] = margin
    return out


def calibrate(fp: Fingerprint, real_paths: Sequence[str], fpr: float, *, cache: ResidualCache | None = None,
              on_skip: Callable[[str, str], None] | None = None, progress: Callable[..., None] | None = None,
              description: str | None = None, recompressions: Sequence[str] = (),
              on_condition_skip: Callable[[str, str], None] | None = None,
              lossless_paths: Sequence[str] = (), lossless_description: str | None = None,
              restore_scales: Sequence[float] = (), restore_encodings: Sequence[str] = restore.DEFAULT_ENCODINGS,
              restore_method: str = restore.DEFAULT_METHOD) -> Fingerprint:
    """A copy of ``fp`` calibrated at false-positive rate ``fpr`` on the real images ``real_paths``.

    The images must not have trained the fingerprint: training images (matched by sha256 against
    ``meta["train"]``), the fingerprint's own generated images, duplicates, unreadable images and images
    smaller than the crop are skipped, each reported through ``on_skip(path, reason)``. UsageError when fewer
    than :func:`min_calibration_images` remain. The copy stores the calibration images' statistics, their
    hashes, a manifest hash, their condition (JPEG quality, size) and the stated rate in ``meta["conformal"]``,
    and must be saved (sealed) again.

    ``recompressions``: :class:`~.condition.Recompression` ids (``"jpeg75"``, ``"resize0.9"``, …; ``"none"``
    is the images as distributed, always included). The same images are also passed through each, and each
    condition's statistics are stored in ``conformal["recompressions"]``; detection then tests a suspect
    against the sets its own condition cannot rule out (:func:`.condition.calibration_sets`). A condition that
    leaves fewer usable images than the rate needs (e.g. a resize below the crop) is left out, reported
    through ``on_condition_skip(id, reason)`` and listed in ``conformal["recompressions_left_out"]``.

    ``lossless_paths``: lossless real images (PNG photos) calibrated as their own set, see
    :func:`calibrate_lossless`.

    ``restore_scales``: scale bands (e.g. 0.9, 0.75, 0.5) whose suspects detection resamples back to the
    training scale (:mod:`.restore`); the same images are calibrated as such suspects — resized to the band,
    saved as each of ``restore_encodings``, restored with ``restore_method`` — see :func:`_calibrate_restored`."""
    fpr = check_fpr(fpr)
    conditions = _recompressions(recompressions)
    scales = _restoration_args(fp, restore_scales, restore_encodings, restore_method)
    need = min_calibration_images(fpr)
    paths = list(dict.fromkeys(str(p) for p in real_paths))
    if len(paths) < need:
        raise UsageError(f"calibrating at a false-positive rate of {fpr:g} needs at least {need} real images "
                         f"(the smallest conformal p-value is 1/(n+1)); {len(paths)} given")
    skip = on_skip or (lambda p, why: None)
    rho, used = _calibration_statistics(fp, paths, need, fpr, cache, skip, progress)
    new = fp.copy(seal="unsaved", verified=fp.verified, sha256=None)
    new.info.conformal = Conformal(
        fpr=fpr, n=len(used), rho=rho, images=used, manifest_sha256=_manifest(used),
        description=description or "", conditions=condition.summarise(condition.probe_many(u["path"] for u in used)),
        statistic=fp.info.search or "max", created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        pvalue="(1 + #{calibration scores >= score}) / (n + 1)")
    new.info.conformal.rho_threshold = rho_threshold(new)
    if conditions:
        _calibrate_recompressions(new, used, conditions, need, cache, progress, on_condition_skip)
    if scales:
        _calibrate_restored(new, used, scales, restore_encodings, restore_method, need, cache, progress)
    if lossless_paths:
        new = calibrate_lossless(new, lossless_paths, cache=cache, on_skip=on_skip, progress=progress,
                                 description=lossless_description)
    if not fp.verified:
        new.info.calibrated_from_unverified = True
    return new


def _manifest(used: Sequence[dict]) -> str:
    """The manifest hash of a calibration set: sha256 of its images' sorted sha256s, one a line."""
    return sha256_bytes("\n".join(sorted(u["sha256"] for u in used)).encode())


def _calibration_statistics(fp: Fingerprint, paths: Sequence[str], need: int, fpr: float,
                            cache: ResidualCache | None, skip: Callable[[str, str], None], progress,
                            what: str = "real") -> tuple[list[float], list[dict]]:
    """ρ of the usable calibration images among ``paths`` and their {"path", "sha256"} (UsageError when fewer
    than ``need`` remain)."""
    res, infos = _residuals(fp, paths, cache, lambda p, e: skip(p, str(e)), progress)
    keep = _calibration_images(fp, infos, skip)
    if len(keep) < need:
        raise UsageError(f"only {len(keep)} usable {what} image(s) for calibration (of {len(paths)} given); a "
                         f"false-positive rate of {fpr:g} needs at least {need}")
    rho = correlate_residuals(fp, np.asarray(res)[keep])
    return [float(x) for x in rho], [infos[i] for i in keep]


def calibrate_lossless(fp: Fingerprint, lossless_paths: Sequence[str], *, cache: ResidualCache | None = None,
                       on_skip: Callable[[str, str], None] | None = None, progress: Callable[..., None] | None = None,
                       description: str | None = None) -> Fingerprint:
    """A copy of the calibrated ``fp`` with a **lossless real calibration set** added (or replaced):
    ``conformal["lossless"]``, the statistics of lossless real images (PNG photos) at the same stated rate, kept
    as their own set (image list, manifest hash, n). A lossless suspect's p-value is then the largest over the
    images as distributed, the lossless-ending recompression sets and this set
    (:func:`.condition.calibration_sets`), so the stated rate also holds for lossless real photos like these —
    a fingerprint calibrated on JPEG photos only does not state it there. The rest of the calibration is kept.

    The images are screened as :func:`calibrate`'s (training images, duplicates, too small, unreadable:
    ``on_skip``), and a JPEG file is skipped too (not lossless). UsageError when ``fp`` is not calibrated or
    fewer than :func:`min_calibration_images` usable images remain. The copy must be saved (sealed) again."""
    if fp.conformal is None:
        raise UsageError("a lossless calibration set needs a calibrated fingerprint (calibrate it first)")
    fpr = float(fp.conformal.fpr)
    need = min_calibration_images(fpr)
    skip = on_skip or (lambda p, why: None)
    paths = _lossless_only(list(dict.fromkeys(str(p) for p in lossless_paths)), skip)
    rho, used = _calibration_statistics(fp, paths, need, fpr, cache, skip, progress, what="lossless real")
    new = fp.copy(seal="unsaved", verified=fp.verified, sha256=None)
    cal = new.info.conformal
    cal.lossless = {"n": len(used), "rho": rho, "rho_threshold": rho_threshold(new, rho), "images": used,
                    "manifest_sha256": _manifest(used), "description": description or "",
                    "conditions": condition.summarise(condition.probe_many(u["path"] for u in used))}
    return new


def _lossless_only(paths: list[str], skip: Callable[[str, str], None]) -> list[str]:
    """The paths whose header says lossless (each JPEG one reported through ``skip``; unreadable ones are kept
    for the residual step to report)."""
    out = []
    for p in paths:
        c = image_condition(p)
        if c and not c.get("lossless"):
            skip(p, "is JPEG, not lossless (the lossless calibration set takes lossless images only)")
        else:
            out.append(p)
    return out


def _recompressions(ids: Sequence[str]) -> list[Recompression]:
    """The distinct recompression conditions named (UsageError for a malformed id), without ``none``."""
    out: dict[str, Recompression] = {}
    for cid in ids:
        r = Recompression.parse(cid)
        if r.id != "none":
            out.setdefault(r.id, r)
    return list(out.values())


def _calibration_images(fp: Fingerprint, infos: list[dict], skip: Callable[[str, str], None]) -> list[int]:
    """Indices of the decoded images that may calibrate ``fp``: not its training images, not its own generated
    test images, no duplicates (each other one reported through ``skip``)."""
    train = {d.get("sha256") for cls in ("generated", "real") for d in fp.info.split("train", cls)}
    own_gen = {d.get("sha256") for d in fp.info.split("test", "generated")}
    train.discard(None)
    own_gen.discard(None)
    keep, seen = [], set()
    for i, info in enumerate(infos):
        sha = info["sha256"]
        if sha in train:
            skip(info["path"], "was a training image of this fingerprint (its statistic is biased)")
        elif sha in own_gen:
            skip(info["path"], "is one of this fingerprint's generated test images, not a real image")
        elif sha in seen:
            skip(info["path"], "duplicate of another calibration image")
        else:
            seen.add(sha)
            keep.append(i)
    return keep


def _calibrate_recompressions(fp: Fingerprint, used: list[dict], conditions: list[Recompression], need: int,
                              cache: ResidualCache | None, progress, on_condition_skip) -> None:
    """Each condition's statistics of the calibration images ``used`` into ``fp.info.conformal``."""
    cal = fp.info.conformal
    den = denoiser_for(fp)
    sets: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    q = matched_quality(fp)
    for r in conditions:
        errors: list[str] = []
        # a copy that ends lossless is format-matched like a lossless suspect (resize0.9 -> resize0.9+jpegQ)
        view = Recompression(r.scale, q) if q is not None and r.lossless else r
        res, infos, _ = compute_views([u["path"] for u in used], lambda _sha, v=view: [v], den, fp.crop, cache=cache,
                                      progress=progress, window=recompressed_window,
                                      on_error=lambda p, e, errors=errors: errors.append(f"{p}: {e}"))
        if len(infos) < need:
            left_out[r.id] = (f"{len(infos)} of {len(used)} images usable after {r.id}, fewer than the {need} "
                              f"the rate needs" + (f" (e.g. {errors[0]})" if errors else ""))
            if on_condition_skip:
                on_condition_skip(r.id, left_out[r.id])
            continue
        rho = [float(x) for x in correlate_residuals(fp, res[:, 0])]
        sets[r.id] = {"n": len(rho), "rho": rho, "rho_threshold": rho_threshold(fp, rho)}
    cal.recompressions = sets
    if left_out:
        cal.recompressions_left_out = left_out


def _restoration_args(fp: Fingerprint, scales: Sequence[float], encodings: Sequence[str], method: str) -> list[float]:
    """The band scales to calibrate (UsageError, before any work, for a bad scale / encoding / kernel, a
    fingerprint whose generated training images have several sizes, or a format-matched one)."""
    scales = restore.parse_scales(scales)
    if not scales:
        return []
    restore.check_method(method)
    if not encodings or any(Recompression.parse(e).scale != 1.0 for e in encodings):
        raise UsageError(f"restoration encodings must be none or jpegQ (got {', '.join(encodings) or 'none'})")
    if restore.reference_side(fp.info) is None:
        raise UsageError("scale restoration needs a fingerprint whose generated training images have one size "
                         "(it records their short sides): this one has several, or records none")
    if matched_quality(fp) is not None:
        raise UsageError("scale restoration is not available for format-matched fingerprints")
    return scales


def _calibrate_restored(fp: Fingerprint, used: list[dict], scales: Sequence[float], encodings: Sequence[str],
                        method: str, need: int, cache: ResidualCache | None, progress) -> None:
    """``conformal["restored"]``: per scale band s, the calibration images ``used`` as a suspect of that band
    arrives (short side round(s · training short side), each of ``encodings``) and is restored
    (:class:`.restore.BandCopy`); each image is decoded once for all its copies. UsageError when fewer than
    ``need`` images survive."""
    ref = restore.reference_side(fp.info)
    quals = [Recompression.parse(e).quality for e in encodings]
    views = [restore.BandCopy(s, ref, q, method) for s in scales for q in quals]
    errors: list[str] = []
    res, infos, _ = compute_views([u["path"] for u in used], lambda _sha: views, denoiser_for(fp), fp.crop,
                                  cache=cache, progress=progress, window=recompressed_window,
                                  on_error=lambda p, e: errors.append(f"{p}: {e}"))
    if len(infos) < need:
        raise UsageError(f"only {len(infos)} calibration images usable for scale restoration, fewer than the "
                         f"{need} the rate needs" + (f" (e.g. {errors[0]})" if errors else ""))
    bands: dict[str, dict[str, Any]] = {}
    for k, v in enumerate(views):
        rho = [float(x) for x in correlate_residuals(fp, res[:, k])]
        band = bands.setdefault(f"{v.scale:g}", {"scale": v.scale, "n": len(rho), "sets": {}})
        band["sets"][v.encoding] = {"n": len(rho), "rho": rho, "rho_threshold": rho_threshold(fp, rho)}
    fp.info.conformal.restored = {"to": int(ref), "method": method, "slack": condition.SCALE_SLACK,
                                  "bands": bands}


# ------------------------------------------------------------------ detection records
def image_condition(path: str) -> dict[str, Any]:
    """The suspect's condition (format, size, JPEG quality estimate) from its header; {} when unreadable."""
    try:
        return condition.describe(images.header(path))
    except InputError:
        return {}


def labels(fps: Sequence[Fingerprint]) -> list[str]:
    """The generator labels a detection decides between: one per group of members (:func:`.route.groups`)."""
    return [g[0].name for g in routing.groups(fps)]


def route(fps: Sequence[Fingerprint], cond: dict[str, Any], grouped: Sequence[Sequence[Fingerprint]] | None = None
          ) -> tuple[list[Fingerprint], list[dict[str, Any]]]:
    """For a suspect in condition ``cond`` (:func:`image_condition`): the one fingerprint per generator label
    that scores it — the member whose coverage contains the condition (:func:`.route.route`) — and each
    label's route entry (member, reason, suspect condition). ``grouped``: ``fps`` already grouped by
    :func:`.route.groups` (computed here when None). UsageError when members cannot be routed."""
    picks = [routing.route(g, cond) for g in (routing.groups(fps) if grouped is None else grouped)]
    return [fp for fp, _ in picks], [entry for _, entry in picks]


def errs_append(errs: list) -> Callable[[str, Exception], None]:
    """An ``on_error`` hook that collects the exceptions into ``errs``."""
    return lambda _path, exc: errs.append(exc)


def _judge_all(fps: Sequence[Fingerprint], path: str, cache: ResidualCache | None,
               checks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Every fingerprint's :func:`judge` call on the image (against the calibration sets its condition check
    kept) and the image's sha256; InputError when it cannot be read."""
    calls, sha = [], None
    for fp, ch in zip(fps, checks):
        errs: list[Exception] = []
        if ch.get("scale_restored"):
            rho, infos = restored_correlations(fp, [path], ch["scale_restored"], cache=cache, on_error=errs_append(errs))
        else:
            rho, infos = correlations_with_info(fp, [path], cache=cache, on_error=errs_append(errs))
        if errs:
            raise errs[0]
        sha = infos[0]["sha256"]
        calls.append(judge(fp, float(rho[0]), ch.get("calibration_sets")))
    return calls, sha


def restored_correlations(fp: Fingerprint, paths: Sequence[str], plan: dict[str, Any], *,
                          cache: ResidualCache | None = None, on_error=None) -> tuple[np.ndarray, list[dict]]:
    """ρ of images restored as ``plan`` says (:func:`.restore.plan`: resampled so that the short side is
    ``to_short_side`` px with ``method``), then centre-cropped as any suspect, and [{"path", "sha256"}]. The
    restored residual is cached under the view id :attr:`.restore.Restore.id`."""
    view = restore.Restore(int(plan["to_short_side"]), plan["method"])
    window = functools.partial(recompressed_window, allow_smaller=True)
    rho, infos = [], []
    for p in paths:  # restored windows may differ in size: one image per call
        res, inf, _ = compute_views([p], lambda _sha: [view], denoiser_for(fp), fp.crop, cache=cache,
                                    on_error=on_error, window=window)
        if inf:
            rho.append(float(correlate_residuals(fp, [res[0, 0]])[0]))
            infos += inf
    return np.asarray(rho, dtype=np.float64), infos


def _features(names: Sequence[str], calls: Sequence[dict], single: bool) -> tuple[dict, dict]:
    """The record's features (ρ, score, p-value per fingerprint) and their directions."""
    feats: dict[str, Any] = {}
    dirs: dict[str, str] = {}
    for nm, c in zip(names, calls):
        sfx = "" if single else f".{nm}"
        feats[f"rho{sfx}"] = c["rho"]
        feats[f"score{sfx}"] = c["score"]
        feats[f"p_value{sfx}"] = c["p_value"]
        dirs[f"rho{sfx}"] = "higher=more like the generator"
        dirs[f"score{sfx}"] = "higher=more like the generator (z vs real images)"
        dirs[f"p_value{sfx}"] = "lower=less like the real calibration images"
    return feats, dirs


def _condition_warnings(names: Sequence[str], checks: Sequence[dict], single: bool) -> tuple[list[str], Any]:
    """The checks' warnings (each text once, prefixed with the fingerprints it concerns when several) and
    ``within_conditions`` (None when some fingerprint records no training conditions)."""
    by_text: dict[str, list[str]] = {}
    for nm, ch in zip(names, checks):
        for w in ch["warnings"]:
            by_text.setdefault(w, []).append(nm)
    warnings = [w if single else f"{', '.join(nms)}: {w}" for w, nms in by_text.items()]
    within = None if any(ch["within"] is None for ch in checks) else not warnings
    return warnings, within


def _calibration_text(names: Sequence[str], fps: Sequence[Fingerprint]) -> str:
    if all(fp.calibrated for fp in fps):
        return "conformal p-values against held-out real images"
    if not any(fp.calibrated for fp in fps):
        return "p-values: not calibrated"
    return "p-values: not calibrated for " + ", ".join(nm for nm, fp in zip(names, fps) if not fp.calibrated)


def _decision(fps: Sequence[Fingerprint], names: Sequence[str], calls: Sequence[dict], margin: float,
              within: Any) -> dict[str, Any]:
    """The image's decision from the fingerprints' calls, guarded against non-finite numbers (guard.py)."""
    single = len(fps) == 1
    decision = _single_call(names[0], calls[0]["generated"]) if single else decide(names, calls, margin)
    all_cal = all(fp.calibrated for fp in fps)
    decision.update({
        "p_value": calls[0]["p_value"] if single else _lead_p_value(names, calls, decision),
        "fpr": fps[0].fpr if single else None,
        "fpr_any": None if single or not all_cal else min(1.0, sum(fp.fpr for fp in fps)),
        "calibration": _calibration_text(names, fps),
        "verified": all(fp.verified for fp in fps),
        "within_conditions": within,
    })
    # the one guard (guard.py): no label but `unknown` from a non-finite ρ or fingerprint statistic
    decision = guard.guard_decision(decision, {
        "rho": [c["rho"] for c in calls],
        "fingerprint statistics": [[fp.info.mu_gen, fp.info.mu_real, fp.info.sigma_real] for fp in fps]},
        probabilities=("p_value",))
    _withdrawn(decision)
    if single:
        decision["rule"] = calls[0]["rule"]
    else:
        decision["fingerprints"] = {nm: {"generated": c["generated"], "p_value": c["p_value"], "fpr": c["fpr"],
                                         "rule": c["rule"]} for nm, c in zip(names, calls)}
    return decision


def _single_call(name: str, gen: bool | None) -> dict[str, Any]:
    """One fingerprint's call as a decision: its generator, ``not-detected``, or ``unknown`` (no finite call)."""
    if gen is False:
        return not_detected()
    return {"label": "unknown" if gen is None else name, "generated": gen, "detected": None if gen is None else True}


def _withdrawn(decision: dict[str, Any]) -> None:
    """Where the guard withdrew the call (``inconclusive``), nothing was detected or missed: ``detected`` None,
    no not-detected note."""
    if decision.get("inconclusive"):
        decision["detected"] = None
        decision.pop("note", None)


def abstain_outside(decision: dict[str, Any], names: Sequence[str], checks: Sequence[dict]) -> dict[str, Any]:
    """No generator claim where the claiming fingerprint's stated false-positive rate does not hold.

    A claim (``generated`` true) by a fingerprint whose condition check found the image outside the conditions
    it was trained and calibrated on (``within`` false: another JPEG quality, scale or encoding — e.g. a lossless
    suspect against a calibration on JPEG photos only, where the shipped LDM entry called 27% of lossless real
    tiles generated at a stated 1%) is not an answer with an error rate: the label becomes ``unknown``,
    ``generated`` None, and the fingerprint's call is kept in ``call_outside_conditions`` with the reason.
    A ``not-detected`` outside the conditions of every fingerprint abstains the same way (label ``unknown``,
    ``detected`` None, the withheld ``not-detected`` in ``call_outside_conditions``): a non-detection there means
    even less than within them. Fingerprints without recorded conditions (``within`` None) decide as before."""
    if decision.get("label") == NOT_DETECTED:
        return _abstain_not_detected(decision, names, checks)
    if decision.get("generated") is not True:
        return decision
    claimants = decision.get("called_by") or [names[0]]
    outside = [nm for nm, ch in zip(names, checks) if nm in claimants and ch.get("within") is False]
    if not outside:
        return decision
    return _withhold(decision, outside,
                     f"{', '.join(outside)} {'calls' if len(outside) == 1 else 'call'} it generated, but the image "
                     "lies outside the conditions the stated false-positive rate was calibrated on (see "
                     "details.condition.warnings): no claim is made")


def _abstain_not_detected(decision: dict[str, Any], names: Sequence[str], checks: Sequence[dict]) -> dict[str, Any]:
    """A non-detection outside the conditions of EVERY fingerprint is ``unknown`` (no fingerprint's stated rate covers
    it). When some fingerprints found the image inside their conditions, it stays ``not-detected`` for those only:
    ``not_detected_by`` lists them, ``outside_conditions`` the others, and the note says the non-detection says
    nothing about the generators of the latter."""
    outside = [nm for nm, ch in zip(names, checks) if ch.get("within") is False]
    if not outside:
        return decision
    inside = [nm for nm in names if nm not in outside]
    if inside:
        decision.update(not_detected_by=inside, outside_conditions=outside,
                        note=f"{NOT_DETECTED_NOTE}; it holds for {', '.join(inside)} only — the image lies outside the "
                             f"conditions {', '.join(outside)} {'was' if len(outside) == 1 else 'were'} calibrated on "
                             "(see details.condition.warnings), so it says nothing about "
                             f"{'that generator' if len(outside) == 1 else 'those generators'}")
        return decision
    decision.pop("note", None)
    return _withhold(decision, outside,
                     f"not detected, but the image lies outside the conditions {', '.join(outside)} "
                     f"{'was' if len(outside) == 1 else 'were'} calibrated on (see details.condition.warnings): "
                     "a non-detection there has neither a stated false-positive nor a miss rate; no answer is given")


def _withhold(decision: dict[str, Any], outside: Sequence[str], reason: str) -> dict[str, Any]:
    """Replace the call by ``unknown`` (abstained outside the calibrated conditions), keeping it in
    ``call_outside_conditions`` with the fingerprints whose conditions the image lies outside."""
    call = {k: decision.get(k) for k in ("label", "generated", "detected", "p_value", "reason") if k in decision}
    decision.update(label="unknown", generated=None, detected=None, abstained="outside the calibrated conditions",
                    call_outside_conditions={**call, "fingerprints": list(outside)}, reason=reason)
    return decision


def _lead_p_value(names: Sequence[str], calls: Sequence[dict], decision: dict) -> float | None:
    """The p-value a multi-fingerprint decision reports: the named generator's; for real / unknown the
    smallest (the most suspicious fingerprint's, among the claimants when unknown)."""
    best = next((c for nm, c in zip(names, calls) if nm == decision["label"]), None)
    if best is not None:
        return best.get("p_value")
    ps = [c["p_value"] for nm, c in zip(names, calls) if c["p_value"] is not None
          and (decision["label"] != "unknown" or nm in decision.get("called_by", []))]
    return min(ps) if ps else None


def _reasons(names: Sequence[str], calls: Sequence[dict], single: bool) -> list[dict[str, Any]]:
    ranked = sorted(zip(names, calls), key=lambda x: -(x[1]["score"] if x[1]["score"] is not None else -math.inf))
    return [{"feature": "score" if single else f"score.{nm}", "z": c["score"], "p_value": c["p_value"],
             "generated": c["generated"]} for nm, c in ranked]


def detect_one(fps: Sequence[Fingerprint], path: str, *, names: Sequence[str] | None = None,
               cache: ResidualCache | None = None, margin: float = CLEAR_MARGIN,
               provenance: dict[str, Any] | None = None, restore_scale: bool = restore.DETECT_DEFAULT):
    """The detection Record of one image against one or several fingerprints (InputError when unreadable).

    The image's condition (JPEG quality, size; :mod:`.condition`) is read first: it picks, among several
    members of one generator's fingerprint, the one that scores the image (:func:`route`; the record's
    ``details["route"]`` says which and why), says which of each fingerprint's calibration sets the p-value is
    taken over, and which warnings the record carries. ``restore_scale``: a resized suspect is resampled back to
    the training scale where a fingerprint holds calibration sets for its scale band (:func:`.restore.check`;
    ``details["condition"]["scale_restored"]`` says what was done); False: never (the scale only warns)."""
    cond = image_condition(path)
    grouped = routing.groups(fps)
    routed = len(grouped) < len(fps)
    fps, routes = route(fps, cond, grouped)
    names = list(names or (g[0].name for g in grouped))
    single = len(fps) == 1
    checks = [(restore.check if restore_scale else _unrestored_check)(cond, fp.info, fp.crop) for fp in fps]
    calls, sha = _judge_all(fps, path, cache, checks)
    feats, dirs = _features(names, calls, single)
    warnings, within = _condition_warnings(names, checks, single)
    decision = abstain_outside(_decision(fps, names, calls, margin, within), names, checks)
    cond_out = dict(cond)
    cond_out["scale"] = checks[0]["scale"] if single else {nm: ch["scale"] for nm, ch in zip(names, checks)}
    cond_out["calibration_sets"] = (checks[0]["calibration_sets"] if single else
                                    {nm: ch["calibration_sets"] for nm, ch in zip(names, checks)})
    cond_out["scale_restored"] = (checks[0]["scale_restored"] if single else
                                  {nm: ch["scale_restored"] for nm, ch in zip(names, checks)})
    cond_out["warnings"] = warnings
    details: dict[str, Any] = {"condition": cond_out}
    if routed:  # several members of one generator's fingerprint: which one scored it, and why
        details["route"] = routes[0] if single else dict(zip(names, routes))
    return Record("detect", {"image": {"path": path, "sha256": sha}}, features=feats, directions=dirs,
                  decision=decision, reasons=_reasons(names, calls, single), provenance=dict(provenance or {}),
                  details=details)


def _unrestored_check(cond: dict[str, Any], meta: Any, crop: int) -> dict[str, Any]:
    """:func:`.condition.check` with ``scale_restored`` None (restoration switched off)."""
    return {**condition.check(cond, meta, crop), "scale_restored": None}


def detection_provenance(fps: Sequence[Fingerprint]) -> dict[str, Any]:
    prov = base_provenance(None, None)
    prov["fingerprints"] = [fp.provenance() for fp in fps]
    prov["verified"] = all(fp.verified for fp in fps)
    return prov


def detect_many(fps: Sequence[Fingerprint], paths: Sequence[str], *, cache: ResidualCache | None = None,
                margin: float = CLEAR_MARGIN, restore_scale: bool = restore.DETECT_DEFAULT) -> Iterator:
    """One detection Record per path, in order; an unreadable image gives an error Record (the batch goes on)."""
    names = labels(fps)
    prov = detection_provenance(fps)
    for p in paths:
        try:
            yield detect_one(fps, p, names=names, cache=cache, margin=margin, provenance=prov,
                             restore_scale=restore_scale)
        except FpxError as exc:
            yield Record.failure("detect", {"image": {"path": p, "sha256": None}}, exc, prov)
        except Exception as exc:  # a runtime failure on one item: the batch goes on
            yield Record.failure("detect", {"image": {"path": p, "sha256": None}},
                                 InputError(f"{type(exc).__name__}: {exc}", p), prov)


# ---------------------------------------------------------------- the `fpx detect` job (api.detect)
DETECT_COLUMNS = ["features.rho", "features.score", "features.p_value", "decision.label", "decision.fpr"]
MULTI_COLUMNS = ["decision.label", "decision.called_by", "decision.p_value", "decision.fpr_any"]


def gather_fingerprints(fingerprints: Sequence[Any] = (), fingerprint_dir: str | None = None, *,
                        force: bool = False, quiet: bool = False) -> list[Fingerprint]:
    """The fingerprints a detection uses: those named (artifact paths or loaded :class:`Fingerprint` objects),
    then a folder's (other files skipped with a warning), else the shipped library (a UsageError when there is
    none)."""
    fps = [fp if isinstance(fp, Fingerprint) else Fingerprint.load(str(fp), force=force) for fp in fingerprints]
    if fingerprint_dir is not None:
        fps += load_folder(fingerprint_dir, force=force,
                           on_skip=lambda f, why: batch.warn(f"{f}: skipped ({why})", quiet))
    if fps:
        return fps
    fps = load_library(force=force)
    if not fps:
        raise UsageError("no fingerprint given and no shipped library in this installation: name "
                         "one (FILE.fpx.safetensors, -F FILE or --fingerprints DIR)")
    batch.warn(f"using the shipped fingerprint library ({len(fps)} fingerprints: "
               f"{', '.join(fp.name for fp in fps)})", quiet)
    return fps


def screen_fingerprints(fps: Sequence[Fingerprint], quiet: bool = False) -> None:
    """Fail early when a fingerprint's denoiser is missing or differs; warn (stderr) about each fingerprint that
    is not verified, not calibrated (or calibrated as distributed only), or records no training conditions."""
    for fp in fps:
        denoiser_for(fp)
        if not fp.verified:
            pinned = (fp.library or {}).get("pinned", True)
            batch.warn(f"{fp.path}: fingerprint not verified ({fp.seal} seal"
                       f"{'' if pinned else ', sha256 differs from the pin'}"
                       f"): every record says verified: false", quiet)
        if not fp.calibrated:
            batch.warn(f"{fp.path}: fingerprint not calibrated: no stated false-positive rate, the "
                       f"nearest-mean rule decides (calibrate it with `fpx dif-calibrate`)", quiet)
        elif not fp.conformal.recompressions:
            batch.warn(f"{fp.path}: fingerprint calibrated as distributed only: its stated false-positive rate "
                       f"is not measured on recompressed or resized copies (recalibrate it with "
                       f"`fpx dif-calibrate`)", quiet)
        if not fp.info.conditions:
            batch.warn(f"{fp.path}: fingerprint records no training conditions: the suspects' JPEG "
                       f"quality and scale cannot be checked against them", quiet)


def _announce_routes(fps: Sequence[Fingerprint], quiet: bool) -> None:
    """One stderr line per generator with several members: which members, what each covers."""
    for members in routing.groups(fps):
        if len(members) > 1:
            covers = [f"{routing.member_id(fp)} ({routing.Coverage.of(fp.info).describe()})" for fp in members]
            batch.warn(f"{members[0].name}: {len(members)} members, each suspect is scored by the one that "
                       f"covers its condition: {'; '.join(covers)}", quiet)


def _usable_cache(cache: ResidualCache) -> None:
    """The on-disk residual cache is optional: when it cannot be used, say so once and go on without it."""
    if cache.root is None:
        return
    problem = artifacts.cache_problem()
    if problem:
        batch.warn_once("cache:residual", f"the residual cache cannot be used ({problem}); going on "
                                          "without it (set FPX_HOME to a writable folder, or --no-cache)")
        cache.root = None


def _warn_conditions(rec, quiet: bool) -> None:
    cond = (rec.details or {}).get("condition") or {}
    if rec.ok and cond.get("warnings"):
        batch.warn(f"{rec.inputs['image']['path']}: outside the fingerprint's trained/calibrated "
                   f"conditions: {'; '.join(cond['warnings'])}", quiet)


def run(fingerprints: Sequence[Any], targets: Sequence[Any], *, fingerprint_dir: str | None = None,
        margin: float = CLEAR_MARGIN, force: bool = False, use_cache: bool = True, output: Any = None,
        fmt: str | None = None, resume: bool = False, quiet: bool = False, stdout: bool = False,
        restore_scale: bool = restore.DETECT_DEFAULT):
    """Test images (``targets``: files or folders) against fingerprints (:func:`gather_fingerprints`): one
    ``detect`` record per image, in order (:func:`detect_many`), an unreadable image an error record; written to
    ``output`` / stdout like every batch command. ``restore_scale``: see :func:`detect_one`. Returns
    :class:`~fingerprint_cli.batch.Results`."""
    rest = [str(t) for t in targets]
    if not rest:
        raise UsageError("give at least one IMAGE or folder (after the fingerprint(s), if any)")
    fps = gather_fingerprints(fingerprints, fingerprint_dir, force=force, quiet=quiet)
    screen_fingerprints(fps, quiet)
    n_labels = len(labels(fps))  # UsageError here when members of one label cannot be routed between
    _announce_routes(fps, quiet)
    paths = batch.expand_paths(rest, quiet=quiet)  # says what a folder holds that is not read
    if not paths:
        raise UsageError(f"no images found in {', '.join(rest)}: nothing to do")
    fp_files = [fp.path for fp in fps if fp.path]
    atomic.check_outputs({}, batch.run_inputs(paths + fp_files, [r for r in rest if Path(r).is_dir()]))
    sink = batch.open_sink(output, fmt, resume, stdout, DETECT_COLUMNS if n_labels == 1 else MULTI_COLUMNS,
                           paths + fp_files, "detect")
    cache = ResidualCache(disk=use_cache)
    todo = [p for p in paths if input_key("detect", image=p) not in sink.done]
    if resume and len(todo) < len(paths):
        batch.warn(f"--resume: {len(paths) - len(todo)} image(s) already in {output}, skipped", quiet)
    _usable_cache(cache)
    records = []
    try:
        with batch.progress_bar(len(todo), "detect", quiet) as advance:
            for rec in detect_many(fps, todo, cache=cache, margin=margin, restore_scale=restore_scale):
                _warn_conditions(rec, quiet)
                sink.add(rec)
                records.append(rec)
                advance()
    except BaseException:
        sink.abandon()
        raise
    sink.close()
    return batch.Results(records, items=len(paths))


# ---------------------------------------------------------------- the `fpx dif-calibrate` job (api.dif_calibrate)
CALIBRATE_COLUMNS = ["features.fpr", "features.n", "features.rho_threshold"]


def run_calibrate(fingerprint: Any, real: Sequence[Any], out: Any, *, fpr: float = 0.01,
                  description: str | None = None, dtype: str = "float32", force: bool = False,
                  conditions: Sequence[str] = condition.DEFAULT_RECOMPRESSIONS,
                  use_cache: bool = True, fmt: str | None = None, quiet: bool = False, stdout: bool = False,
                  lossless_real: Sequence[Any] = (), restore_scales: Sequence[float] = (),
                  restore_encodings: Sequence[str] = restore.DEFAULT_ENCODINGS,
                  restore_method: str = restore.DEFAULT_METHOD):
    """Calibrate ``fingerprint``'s detection threshold at ``fpr`` on the held-out real images in the folders
    ``real`` (:func:`calibrate`), as distributed and under each of ``conditions`` (recompression ids, default
    :data:`.condition.DEFAULT_RECOMPRESSIONS`; ``["none"]``: as distributed only), plus the lossless real images
    in the folders ``lossless_real`` as their own set (:func:`calibrate_lossless`), plus the scale-restoration
    sets of ``restore_scales`` (:func:`_calibrate_restored`), and write the sealed result
    to ``out`` (never an input). Returns :class:`~fingerprint_cli.batch.Results` with one ``dif-calibrate``
    record."""
    if dtype not in ("float32", "float16"):
        raise UsageError(f"--dtype must be float32 or float16 (got {dtype!r})")
    check_fpr(fpr)
    _recompressions(conditions)  # a malformed condition is refused before any work
    restore.parse_scales(restore_scales)
    restore.check_method(restore_method)
    sink = single_sink(fmt, stdout, CALIBRATE_COLUMNS)
    with Phases(quiet) as phases:
        fp = Fingerprint.load(fingerprint, force=force)
        if dtype != "float32":
            fp = fp.quantized(dtype)  # calibrate the pattern that will be stored
        paths = [str(p) for d in real for p in images.list_images(d)]
        lossless = [str(p) for d in lossless_real for p in images.list_images(d)]
        atomic.refuse_overwrite_of_inputs(out, paths + lossless + [str(fingerprint)])
        if Path(out).is_dir():
            raise UsageError("is a folder; --out names the fingerprint file to write", str(out))
        skipped: list[dict] = []

        def skip(p, why):
            skipped.append({"path": p, "reason": why})
            batch.warn(f"{p}: skipped ({why})", quiet)

        n_restored = len(restore.parse_scales(restore_scales)) * len(restore_encodings)
        phases.phase("calibration", len(paths) * (1 + len(_recompressions(conditions)) + n_restored) + len(lossless))
        new = calibrate(fp, paths, fpr, cache=ResidualCache(disk=use_cache), on_skip=skip,
                        progress=phases.progress, description=description or ", ".join(str(d) for d in real),
                        recompressions=conditions, lossless_paths=lossless,
                        lossless_description=", ".join(str(d) for d in lossless_real) or None,
                        restore_scales=restore_scales, restore_encodings=restore_encodings,
                        restore_method=restore_method,
                        on_condition_skip=lambda cid, why: batch.warn(f"condition {cid} left out: {why}", quiet))
        phases.close()
        if skipped:
            batch.warn(f"{len(skipped)} image(s) skipped", quiet)
        digest = new.save(out, inputs=paths + lossless + [str(fingerprint)], dtype=dtype)
        new.verified = fp.verified
        rec = _calibrate_record(fingerprint, real, out, fp, new, digest, skipped)
    return finish_single(sink, rec)


def single_sink(fmt: str | None, stdout: bool, columns: Sequence[str]):
    """Where the one record of a single-artifact job (dif-extract, dif-calibrate) goes: stdout when asked, else
    memory. Opened before any work, so a bad ``--format`` is refused first."""
    return batch.RecordSink(None, fmt, False, list(columns)) if stdout else batch.MemorySink()


def finish_single(sink, rec: Record):
    """Hand the job's one record to its :func:`single_sink` and close it; the job's Results."""
    sink.add(rec)
    sink.close()
    return batch.Results([rec], items=1)


def _calibrate_record(fingerprint, real, out, fp: Fingerprint, new: Fingerprint, digest: str, skipped: list):
    cal = new.conformal
    prov = base_provenance(None, None)
    prov["fingerprint"] = fp.provenance()
    feats = {"fpr": cal.fpr, "n": cal.n, "rho_threshold": cal.rho_threshold, "mu_real": new.info.mu_real,
             "mu_gen": new.info.mu_gen}
    for cid, entry in (cal.recompressions or {}).items():
        feats[f"rho_threshold.{cid}"] = entry["rho_threshold"]
    if cal.lossless:
        feats["n.lossless"] = cal.lossless["n"]
        feats[f"rho_threshold.{LOSSLESS_SET}"] = cal.lossless["rho_threshold"]
    for key, band in ((cal.restored or {}).get("bands") or {}).items():
        for enc, entry in band["sets"].items():
            feats[f"rho_threshold.{restore.set_id(key, enc)}"] = entry["rho_threshold"]
    return Record("dif-calibrate", {"fingerprint": {"path": str(fingerprint), "sha256": fp.sha256},
                                    "real": {"path": ", ".join(str(d) for d in real),
                                             "sha256": cal.manifest_sha256}},
                  features=feats,
                  directions={"fpr": "stated false-positive rate (upper bound for exchangeable real "
                                     "images)"},
                  provenance=prov,
                  details={"fingerprint": {"path": str(out), "sha256": digest, "verified": fp.verified},
                           "calibration": calibration_summary(new), "skipped": skipped,
                           "conditions_left_out": cal.recompressions_left_out or {}})
