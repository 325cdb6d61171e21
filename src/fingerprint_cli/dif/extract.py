"""Fit a generator fingerprint (DIF, or a baseline) from generated and real images.

DIF (Sinitsa & Fried, WACV 2024), as fpx implements it:

1. residuals r = f_D(x) of the centre ``crop`` of every image, computed ONCE (and cached) — the published code
   recomputes the denoiser in every batch of every epoch;
2. a U-Net (:mod:`.unet`) maps a fixed input z = z0 + N(0, 0.03²), z0 = 0.1·U[0,1), to the fingerprint F;
3. loss over pairs of images in a batch: same class → |ρ_a − ρ_b|, generated a vs real b → max(0, m − (ρ_a − ρ_b))
   (signed since issue 15 round 3; the paper's |ρ_a − ρ_b| accepts either order), m = 0.01, divided by m;
   AdamW, lr 5e-4; F is an exponential moving average (0.99) of the U-Net output;
4. F is oriented so that generated images correlate positively; μ_real, μ_gen, σ_real are the training
   correlations (with the detection statistic, see :mod:`.detect`); the threshold is their midpoint.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fingerprint_cli import __version__, atomic, batch, images
from fingerprint_cli.anchored.score import base_provenance
from fingerprint_cli.dif import augment as aug_mod
from fingerprint_cli.dif import baselines, condition, detect
from fingerprint_cli.dif.baselines import log_spectrum
from fingerprint_cli.dif.detect import SEARCHES, correlate_residuals, rho, standardise
from fingerprint_cli.dif.fingerprint import METHODS, Fingerprint, Phases, calibration_summary, min_calibration_images
from fingerprint_cli.dif.residuals import ResidualCache, compute, compute_matched, compute_views, get_denoiser
from fingerprint_cli.dif.unet import UNet
from fingerprint_cli.errors import InputError, UsageError
from fingerprint_cli.images import sha256_file
from fingerprint_cli.records import Record

DEFAULT_EPOCHS = 30
DEFAULT_TOLERANCE = 1
DEFAULT_MIN_IMAGES = 8  # usable images per class below which `fpx dif-extract` refuses to fit (fit(): 2)
MARGIN = 0.01
#: Training profile of `fpx dif-extract` and :func:`fit` (see :mod:`.augment`; docs/benchmarks.md, issue 15)
DEFAULT_PROFILE = "plain"


def screen(paths: Sequence[str], crop: int, label: str,
           on_skip: Callable[[str, str], None] | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Keep the images of one class that can be used: readable image headers at least ``crop`` px on each side
    (sizes, modes and formats may mix). Returns (usable paths, [{"path", "class", "reason"}] of the skipped);
    ``on_skip(path, reason)`` is told about each. Reads headers only, not pixels."""
    keep, skipped = [], []
    for p in dict.fromkeys(str(x) for x in paths):
        try:
            info = images.header(p)
            w, h = info["width"], info["height"]
            if w < crop or h < crop:
                raise InputError(f"image is {w}x{h}, smaller than the {crop}x{crop} crop (use a smaller --crop)", p)
        except InputError as exc:
            skipped.append({"path": p, "class": label, "reason": str(exc)})
            if on_skip:
                on_skip(p, str(exc))
            continue
        keep.append(p)
    return keep, skipped


def refuse_overlap(generated: Sequence[str], real: Sequence[str]) -> None:
    """UsageError when the two classes share an image (the same file, or files with the same content)."""
    def ident(paths):
        out = {}
        for p in paths:
            try:
                out.setdefault(sha256_file(p), p)
            except OSError:
                continue
        return out

    same = [(g, r) for g in generated for r in real if os.path.realpath(g) == os.path.realpath(r)
            or (os.path.exists(g) and os.path.exists(r) and os.path.samefile(g, r))]
    if not same:
        hg, hr = ident(generated), ident(real)
        same = [(hg[h], hr[h]) for h in hg.keys() & hr.keys()]
    if same:
        g, r = same[0]
        raise UsageError(f"{len(same)} image(s) are in both the generated and the real set (both --generated and "
                         f"--real; e.g. {g} and {r} have the same content): a fingerprint cannot separate a "
                         "class from itself")


def split(paths: Sequence[str], n_train: int | None, test_fraction: float, seed: int,
          label: str) -> tuple[list[str], list[str]]:
    """Shuffle (seeded) and split into train / test; at least 2 training images are required."""
    uniq = list(dict.fromkeys(str(p) for p in paths))
    if len(uniq) < 2:
        raise UsageError(f"the {label} class has {len(uniq)} image(s); a fingerprint needs at least 2 "
                         f"(and a few hundred for a good one)")
    order = np.random.default_rng(seed).permutation(len(uniq))
    shuffled = [uniq[i] for i in order]
    n_test = int(round(test_fraction * len(uniq))) if len(uniq) >= 4 else 0
    test, rest = shuffled[:n_test], shuffled[n_test:]
    if n_train is not None:
        if n_train < 2:
            raise UsageError(f"--images must be at least 2 (got {n_train})")
        test = test + rest[n_train:]
        rest = rest[:n_train]
    return rest, test


def _search_name(search: str) -> str:
    """The shift-search statistic recorded in the fingerprint (:data:`..detect.SEARCHES`)."""
    if search not in SEARCHES:
        raise UsageError(f"unknown shift search {search!r} (choose {', '.join(SEARCHES)})")
    return search


#: keep the shift search only if it retains at least this share of the plain ρ's training separation
SEARCH_KEEP = 0.5


def _dprime(g: torch.Tensor, r: torch.Tensor) -> float:
    """(mean_g − mean_r) / pooled standard deviation."""
    pooled = math.sqrt((float(g.var()) + float(r.var())) / 2) or 1e-12
    return (float(g.mean()) - float(r.mean())) / pooled


def shift_search_check(gen: torch.Tensor, real: torch.Tensor, pattern: torch.Tensor, tolerance: int,
                       search: str) -> tuple[int, dict[str, Any]]:
    """The shift tolerance a DIF fingerprint can afford. A ±1 px search reads each suspect at the shift its
    own noise picks; when the trace is weak per image (small crops, few images) the shift is mostly picked
    wrong, the search loses the signal the zero-shift ρ has (LDM at crop 128: 0.625 vs 0.859 held-out; issue 15
    round 3), and the fingerprint would detect nothing. On the TRAINING residuals: if the search keeps less
    than :data:`SEARCH_KEEP` of the plain ρ's separation d', fall back to tolerance 0 (pixel-locked; recorded).
    Returns (tolerance to use, the check for ``meta["tolerance_check"]``)."""
    if tolerance <= 0:
        return tolerance, {"requested": int(tolerance), "used": int(tolerance)}
    fn = SEARCHES[search]
    d_plain = _dprime(rho(gen, pattern), rho(real, pattern))
    d_search = _dprime(fn(gen, pattern, tolerance), fn(real, pattern, tolerance))
    keep = d_search >= SEARCH_KEEP * d_plain
    return (tolerance if keep else 0), {
        "requested": int(tolerance), "used": int(tolerance if keep else 0), "search": search,
        "dprime_plain": round(d_plain, 3), "dprime_search": round(d_search, 3), "keep_share": SEARCH_KEEP}


def default_margin(crop: int) -> float:
    """m = 0.01 at crop 256 (the paper); scaled by 256/crop elsewhere, because the spread of ρ between
    unrelated tensors grows as 1/crop (1/sqrt(3·crop²))."""
    return MARGIN * 256.0 / float(crop)


def _pair_loss(r: torch.Tensor, y: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Contrast over all pairs of a batch: same class → |ρ_a − ρ_b|; generated a vs real b → max(0, m − (ρ_a −
    ρ_b)), i.e. SIGNED: generated must sit above real by m (an unsigned |ρ_a − ρ_b| is satisfied by a pair on the
    wrong side too, which cancels the coherent pull at the start and pushes outliers further the wrong way;
    docs/benchmarks.md, issue 15 round 3). Divided by m."""
    d = r[:, None] - r[None, :]
    s = y[:, None] - y[None, :]  # +1: a generated, b real; −1: the reverse; 0: same class
    loss = torch.where(s == 0, d.abs(), torch.relu(margin - s * d)) / margin
    iu = torch.triu_indices(len(r), len(r), offset=1)
    return loss[iu[0], iu[1]].mean()


def train_dif(gen: torch.Tensor, real: torch.Tensor, *, epochs: int, seed: int, batch_size: int = 32,
              lr: float = 5e-4, ema_decay: float = 0.99, width: int = 32, depth: int = 4,
              margin: float = MARGIN, progress: Callable[..., None] | None = None,
              views: int = 1) -> tuple[torch.Tensor, dict[str, Any]]:
    """Train the U-Net on standardised residuals; returns the EMA fingerprint (3, H, W) and stats.

    With ``views`` = K > 1, ``gen`` and ``real`` hold K augmented views per image, image-major (rows
    i·K … i·K + K − 1 are image i): every epoch each image takes part once, through one of its views drawn at
    random, so the number of steps (and the fit time) is that of the plain fit on the same images."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    crop = gen.shape[-1]
    data = torch.cat([standardise(gen), standardise(real)])
    y = torch.cat([torch.ones(len(gen)), torch.zeros(len(real))])
    z0 = 0.1 * torch.rand((1, 16, crop, crop), generator=g)
    net = UNet(width=width, depth=depth)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    k = max(1, int(views))
    if len(gen) % k or len(real) % k:
        raise ValueError(f"{len(gen)} / {len(real)} residuals are not whole sets of {k} views")
    n = len(data) // k
    bs = min(batch_size, n)
    steps_per_epoch = max(1, math.ceil(n / bs))
    ema: torch.Tensor | None = None
    losses = []
    net.train()
    for _epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        if k > 1:  # image index -> one of its views, drawn anew every epoch
            perm = perm * k + torch.randint(0, k, (n,), generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * bs:(s + 1) * bs]
            if len(idx) < 2:
                continue
            z = z0 + 0.03 * torch.randn(z0.shape, generator=g)
            f = net(z)[0]
            r = (data[idx] * standardise(f)[None]).mean(dim=(1, 2, 3))
            loss = _pair_loss(r, y[idx], margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                # EMA with the usual warm-up (decay grows to ema_decay) so short runs are not dominated
                # by the untrained first outputs
                t = len(losses)
                d = min(ema_decay, (1 + t) / (10 + t))
                ema = f.detach().clone() if ema is None else d * ema + (1 - d) * f.detach()
            losses.append(float(loss.detach()))
            if progress:
                rg = r.detach()[y[idx] == 1]
                rr = r.detach()[y[idx] == 0]
                progress(1, loss=float(loss.detach()), mu_real=float(rr.mean()) if len(rr) else float("nan"),
                         mu_gen=float(rg.mean()) if len(rg) else float("nan"))
    assert ema is not None
    return ema, {"steps": len(losses), "final_loss": float(np.mean(losses[-steps_per_epoch:]))}


def fit(generated_paths: Sequence[str], real_paths: Sequence[str], *, name: str, method: str = "dif",
        crop: int = 256, epochs: int | None = None, seed: int = 0, denoiser: str = "dncnn",
        images: int | None = None, progress: Callable[..., None] | None = None,
        test_fraction: float = 0.2, batch_size: int = 32, tolerance: int = DEFAULT_TOLERANCE,
        search: str = "crossfit", cache: ResidualCache | None = None, lr: float = 5e-4, margin: float | None = None,
        unet_width: int = 32, profile: str = DEFAULT_PROFILE, views: int | None = None,
        on_phase: Callable[[str, int], None] | None = None,
        min_images: int = 2, on_skip: Callable[[str, str], None] | None = None,
        fpr: float | None = None, calibration_paths: Sequence[str] | None = None,
        augment: dict[str, Any] | None = None, recompressions: Sequence[str] = ()) -> Fingerprint:
    """Fit a fingerprint of one generator.

    ``generated_paths`` / ``real_paths``: image files of each class (at least 2 each). Each class is shuffled
    with ``seed``; ``test_fraction`` of it is held out, then at most ``images`` of the rest train; everything
    not trained on is recorded as the test split in ``meta["test"]``. ``progress(n, **fields)`` is called per
    residual computed and per training step (fields loss, mu_real, mu_gen); ``on_phase(label, total)``
    announces each phase. Returns the :class:`Fingerprint` (not yet saved).

    Unusable images (unreadable, smaller than ``crop``) are skipped, each reported through
    ``on_skip(path, reason)`` and listed in ``meta["skipped"]``; UsageError when fewer than ``min_images``
    usable images remain in a class, or when the two classes share an image. ``fpr``: calibrate the
    detection threshold at this false-positive rate (:func:`..detect.calibrate`) on ``calibration_paths`` —
    by default the held-out real test split — as distributed and under each of ``recompressions``.
    ``augment``: the conditions a training profile covered ({"jpeg_quality", "scale", "lossless"}, see
    :func:`..condition.training_conditions`).

    ``profile`` (:data:`.augment.PROFILES`): ``"plain"`` fits on the images as they are; ``"robust"`` passes
    both classes' training images through ``views`` random recompressions/rescalings each (fixed per image and
    seed, residuals cached per view) — see :mod:`.augment`. Calibration (μ, σ) then uses all the views.

    ``tolerance`` / ``search`` (:data:`..detect.SEARCHES`): the shift-tolerant detection statistic of a DIF
    fingerprint; it is kept only if it keeps the trace on the training images (:func:`shift_search_check`),
    else the fingerprint is pixel-locked (tolerance 0) and ``meta["tolerance_check"]`` says why.
    """
    epochs, margin, fpr = _check_fit_options(method, crop, epochs, margin, min_images, fpr)
    search = _search_name(search)
    den = get_denoiser(denoiser)
    usable, skipped = _usable_classes(generated_paths, real_paths, crop, min_images, on_skip)
    gen_train, gen_test = split(usable["generated"], images, test_fraction, seed, "generated")
    real_train, real_test = split(usable["real"], images, test_fraction, seed + 1, "real")
    cal_paths = _calibration_plan(fpr, calibration_paths, real_test, real_train)
    cache = cache if cache is not None else ResidualCache()
    t0 = time.time()

    def skip_late(p: str, e: Exception, label: str) -> None:
        skipped.append({"path": p, "class": label, "reason": str(e)})
        if on_skip:
            on_skip(p, str(e))

    rg, rr, info_g, info_r, aug_meta, k_views, augment = _training_residuals(
        gen_train, real_train, den, crop, cache, progress, on_phase, profile, views, seed, augment, skip_late)
    t_res = time.time() - t0
    gen_t, real_t = torch.from_numpy(rg), torch.from_numpy(rr)
    t1 = time.time()
    pattern, stats, tolerance = _fit_pattern(method, gen_t, real_t, epochs=epochs, seed=seed,
                                             batch_size=batch_size, lr=lr, margin=margin, unet_width=unet_width,
                                             progress=progress, k_views=k_views, on_phase=on_phase,
                                             tolerance=tolerance, search=search)
    t_fit = time.time() - t1
    meta: dict[str, Any] = {
        "denoiser": {"id": den.id, "sha256": den.sha256, "verified": den.verified},
        "crop": int(crop), "seed": int(seed), "method": method, "tolerance": int(tolerance),
        "search": search,
        "epochs": epochs if method == "dif" else 0, "batch_size": int(batch_size), "lr": lr,
        "margin": margin, "unet_width": int(unet_width) if method == "dif" else None, "fpx_version": __version__,
        "train": {"generated": info_g, "real": info_r},
        "test": {"generated": [{"path": p, "sha256": None} for p in gen_test],
                 "real": [{"path": p, "sha256": None} for p in real_test]},
        "counts": {"train_generated": len(info_g), "train_real": len(info_r),
                   "test_generated": len(gen_test), "test_real": len(real_test)},
        "seconds": {"residuals": round(t_res, 2), "fit": round(t_fit, 2)},
        "augment": aug_meta,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "skipped": skipped,
    }
    meta["conditions"] = condition.training_conditions(
        condition.probe_many([d["path"] for d in info_g]), condition.probe_many([d["path"] for d in info_r]),
        augment)
    meta.update({k: v for k, v in stats.items() if k in ("steps", "final_loss", "tolerance_check")})
    fp = Fingerprint(name=name, method=method, pattern=pattern.to(torch.float32).contiguous(), meta=meta)
    _calibrate(fp, rg, rr, views=k_views)
    _fill_test_hashes(fp)
    if fpr is not None:
        if on_phase:
            on_phase("calibration", len(cal_paths) * (1 + len(recompressions)))
        fp = detect.calibrate(fp, cal_paths, fpr, cache=cache, progress=progress,
                              on_skip=lambda p, why: skip_late(p, Exception(why), "calibration"),
                              description="the held-out real test split" if calibration_paths is None
                              else "the --calibration-real images", recompressions=recompressions,
                              on_condition_skip=lambda cid, why: skip_late(cid, Exception(why), "condition"))
    return fp


def _check_fit_options(method: str, crop: int, epochs: int | None, margin: float | None, min_images: int,
                       fpr: float | None) -> tuple[int, float, float | None]:
    """Refuse impossible options before any work (UsageError); returns (epochs, margin, fpr) with defaults."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r} (choose {', '.join(METHODS)})")
    if crop < 16 or crop % 16:
        raise UsageError(f"--crop must be a multiple of 16 and at least 16 (got {crop})")
    epochs = DEFAULT_EPOCHS if epochs is None else int(epochs)
    margin = default_margin(crop) if margin is None else float(margin)
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1 (got {epochs})")
    if min_images < 2:
        raise UsageError(f"--min-images must be at least 2 (got {min_images})")
    if fpr is not None:
        fpr = detect.check_fpr(fpr)
    return epochs, margin, fpr


def _usable_classes(generated_paths, real_paths, crop: int, min_images: int, on_skip):
    """Each class's usable images (:func:`screen`), UsageError when fewer than ``min_images`` remain or the
    classes share an image; returns ({"generated": [...], "real": [...]}, skipped)."""
    skipped: list[dict[str, str]] = []
    usable = {}
    for label, ps in (("generated", generated_paths), ("real", real_paths)):
        keep, sk = screen(ps, crop, label, on_skip)
        skipped += sk
        if len(keep) < min_images and len(set(map(str, ps))) >= 2:
            why = f"; {len(sk)} skipped, e.g. {sk[0]['reason']}" if sk else ""
            raise UsageError(f"the {label} class has {len(keep)} usable image(s), fewer than the minimum of "
                             f"{min_images} (--min-images){why}")
        usable[label] = keep
    refuse_overlap(usable["generated"], usable["real"])
    return usable, skipped


def _calibration_plan(fpr: float | None, calibration_paths, real_test: list[str],
                      real_train: list[str]) -> list[str] | None:
    """The images ``--fpr`` calibrates on (None without it): enough of them, none a real training image."""
    if fpr is None:
        return None
    cal_paths = list(calibration_paths) if calibration_paths is not None else real_test
    need = min_calibration_images(fpr)
    if len(cal_paths) < need:
        raise UsageError(f"--fpr {fpr:g} needs at least {need} held-out real images to calibrate on, but "
                         f"{'the calibration folder has' if calibration_paths is not None else 'the real test split has'}"
                         f" {len(cal_paths)} (give more real images, a larger --test-fraction, or "
                         f"--calibration-real DIR)")
    overlap = set(map(str, cal_paths)) & set(real_train)
    if overlap:
        raise UsageError(f"{len(overlap)} calibration image(s) are also real training images "
                         f"(e.g. {sorted(overlap)[0]}): calibrate on held-out images")
    return cal_paths


def _training_residuals(gen_train, real_train, den, crop, cache, progress, on_phase, profile, views, seed,
                        augment, skip_late):
    """The training residuals of both classes, plain or through the profile's views; returns
    (rg, rr, info_g, info_r, aug_meta, k_views, augment)."""
    prof = aug_mod.get_profile(profile)
    k_views = 1 if prof.name == "plain" or prof.match_format else (prof.views if views is None else int(views))
    if on_phase:
        on_phase("residuals", (len(gen_train) + len(real_train)) * k_views)
    aug_meta: dict[str, Any] = {"profile": prof.name, "views": k_views}
    err_g, err_r = (lambda p, e: skip_late(p, e, "generated")), (lambda p, e: skip_late(p, e, "real"))
    if prof.match_format:
        rg, rr, info_g, info_r, augment = _matched_training_residuals(
            gen_train, real_train, den, crop, cache, progress, (err_g, err_r), prof, aug_meta, augment)
    elif prof.name == "plain":
        rg, info_g = compute(gen_train, den, crop, cache=cache, progress=progress, on_error=err_g)
        rr, info_r = compute(real_train, den, crop, cache=cache, progress=progress, on_error=err_r)
    else:
        draw = lambda sha: aug_mod.draw_views(prof, sha, seed, k_views)  # noqa: E731
        vg, info_g, views_g = compute_views(gen_train, draw, den, crop, cache=cache, progress=progress,
                                            on_error=err_g)
        vr, info_r, views_r = compute_views(real_train, draw, den, crop, cache=cache, progress=progress,
                                            on_error=err_r)
        rg, rr = vg.reshape(-1, *vg.shape[2:]), vr.reshape(-1, *vr.shape[2:])
        aug_meta.update({"description": prof.description, "seed": int(seed),
                         "generated": aug_mod.describe(views_g), "real": aug_mod.describe(views_r)})
        if augment is None and prof.covers:  # the conditions the profile's views cover (detect checks them)
            augment = dict(prof.covers)
    for label, info in (("generated", info_g), ("real", info_r)):
        if len(info) < 2:
            raise UsageError(f"the {label} class has {len(info)} decodable training image(s); a fingerprint "
                             f"needs at least 2")
    return rg, rr, info_g, info_r, aug_meta, k_views, augment


def match_quality(paths: Sequence[str]) -> int:
    """The JPEG quality format matching re-encodes lossless images at: the median of the quality estimates
    (:func:`.condition.estimate_quality`, from the quantisation tables) of the JPEG images among ``paths``
    (both training classes); UsageError when none is JPEG (nothing to match)."""
    qs = [c["jpeg_quality"] for c in condition.probe_many(paths) if c.get("jpeg_quality") is not None]
    if not qs:
        raise UsageError("--profile format-matched re-encodes lossless training images at the JPEG training "
                         "images' quality, but no training image of either class is JPEG (nothing to match)")
    return int(np.median(qs))


def _matched_training_residuals(gen_train, real_train, den, crop, cache, progress, errors, prof, aug_meta,
                                augment):
    """The ``format-matched`` profile's training residuals (:func:`.residuals.compute_matched`): every lossless
    image of either class re-encoded as JPEG at :func:`match_quality`; ``aug_meta`` gets the quality and
    how many images of each class were matched. Returns (rg, rr, info_g, info_r, augment)."""
    q = match_quality(list(gen_train) + list(real_train))
    rg, info_g = compute_matched(gen_train, den, crop, q, cache=cache, progress=progress, on_error=errors[0])
    rr, info_r = compute_matched(real_train, den, crop, q, cache=cache, progress=progress, on_error=errors[1])
    n_lossless = {label: sum(1 for c in condition.probe_many(d["path"] for d in info) if c.get("lossless"))
                  for label, info in (("generated", info_g), ("real", info_r))}
    aug_meta.update({"description": prof.description, "match_quality": q, "matched": n_lossless})
    if augment is None:  # covered: JPEG at the matched quality, and lossless suspects (matched at detection)
        augment = {"jpeg_quality": [q, q], "scale": None, "lossless": True}
    return np.asarray(rg), np.asarray(rr), info_g, info_r, augment


def _fit_pattern(method, gen_t, real_t, *, epochs, seed, batch_size, lr, margin, unet_width, progress, k_views,
                 on_phase, tolerance, search):
    """The pattern of ``method`` (the U-Net for dif, oriented so generated images correlate positively; a
    baseline's average otherwise); returns (pattern, stats, tolerance)."""
    if method == "dif":
        n = len(gen_t) + len(real_t)
        steps = epochs * max(1, math.ceil(n / min(batch_size, n)))
        if on_phase:
            on_phase("training", steps)
        pattern, stats = train_dif(gen_t, real_t, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                                   margin=margin, width=unet_width, progress=progress, views=k_views)
        if float(rho(gen_t, pattern).mean()) < float(rho(real_t, pattern).mean()):
            pattern = -pattern  # orient: generated images correlate positively
        tolerance, stats["tolerance_check"] = shift_search_check(gen_t, real_t, pattern, tolerance, search)
    else:
        pattern = baselines.PATTERNS[method](gen_t, real_t)
        stats = {"steps": 0}
        tolerance = tolerance if method == "average" else 0
    return pattern, stats, tolerance


def _loo_correlations(fp: Fingerprint, rg: np.ndarray, rr: np.ndarray,
                      views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Training correlations of a baseline fingerprint, each image against the fingerprint fitted WITHOUT it.

    A mean-of-residuals fingerprint contains each training image's own residual, so its training
    correlations are inflated by that self-term (≈ 1/√N) and μ_gen would sit far above any unseen image;
    leaving the image out removes the bias. With ``views`` = K augmented views per image (image-major rows),
    all K views of the image are left out together.
    """
    g, r = torch.from_numpy(np.asarray(rg)), torch.from_numpy(np.asarray(rr))
    if fp.method == "spectral":
        fg = torch.cat([log_spectrum(g[i:i + 64]) for i in range(0, len(g), 64)])
        fr = torch.cat([log_spectrum(r[i:i + 64]) for i in range(0, len(r), 64)])
    else:
        fg, fr = g, r
    mg, mr = fg.mean(0), fr.mean(0)
    ng, nr = len(fg), len(fr)
    k = max(1, int(views))
    if ng // k < 2 or nr // k < 2:
        k = 1
    sg = fg.reshape(ng // k, k, *fg.shape[1:]).sum(1) if k > 1 else fg
    sr = fr.reshape(nr // k, k, *fr.shape[1:]).sum(1) if k > 1 else fr

    def one(pattern: torch.Tensor, x: torch.Tensor) -> float:
        sub = Fingerprint(fp.name, fp.method, pattern, fp.info)
        return float(correlate_residuals(sub, x[None])[0])

    cg = np.empty(ng)
    cr = np.empty(nr)
    for i in range(ng):
        mg_i = (ng * mg - sg[i // k]) / (ng - k)
        cg[i] = one(mg_i - mr if fp.method == "spectral" else mg_i, g[i])
    for j in range(nr):
        if fp.method == "spectral":
            cr[j] = one(mg - (nr * mr - sr[j // k]) / (nr - k), r[j])
        else:
            cr[j] = one(mg, r[j])  # real images are not part of the average fingerprint
    return cg, cr


def _calibrate(fp: Fingerprint, rg: np.ndarray, rr: np.ndarray, views: int = 1) -> None:
    if fp.method in ("average", "spectral") and len(rg) > 1 and len(rr) > 1:
        cg, cr = _loo_correlations(fp, rg, rr, views)
        fp.info.calibration = "leave-one-out training correlations"
    else:
        cg = correlate_residuals(fp, rg)
        cr = correlate_residuals(fp, rr)
        fp.info.calibration = "training correlations"
    mu_g, mu_r = float(cg.mean()), float(cr.mean())
    fp.info.mu_gen, fp.info.mu_real, fp.info.sigma_gen = mu_g, mu_r, float(cg.std())
    fp.info.sigma_real = float(cr.std()) if len(cr) > 1 else 0.0
    fp.info.threshold = (mu_g + mu_r) / 2
    acc = (detect.is_generated(fp, cg).sum() + (~detect.is_generated(fp, cr)).sum()) / max(1, len(cg) + len(cr))
    fp.info.train_accuracy = float(acc)


def _fill_test_hashes(fp: Fingerprint) -> None:
    for cls in ("generated", "real"):
        for item in fp.info.test[cls]:
            try:
                item["sha256"] = sha256_file(item["path"])
            except OSError:
                item["sha256"] = None


def default_name(folder: str | Path) -> str:
    return Path(folder).resolve().name


# ---------------------------------------------------------------- the `fpx dif-extract` job (api.extract)
EXTRACT_COLUMNS = ["features.mu_gen", "features.mu_real", "features.train_accuracy", "features.test_accuracy",
                   "features.test_auc", "features.seconds"]


def plot_fingerprint(fp: Fingerprint, path: str, inputs=()) -> str:
    """One PNG: the fingerprint (each channel min–max scaled) beside its log-magnitude spectrum (grey)."""
    pat = fp.pattern.numpy().astype(np.float64)
    vis = np.stack([(c - c.min()) / (np.ptp(c) + 1e-12) for c in pat], axis=2)
    spec = np.log(np.abs(np.fft.fftshift(np.fft.fft2(pat), axes=(-2, -1))) + 1e-8).mean(axis=0)
    lo, hi = np.percentile(spec, [1, 99.9])
    spec = np.clip((spec - lo) / (hi - lo + 1e-12), 0, 1)
    gap = np.ones((vis.shape[0], 8, 3))
    canvas = np.concatenate([vis, gap, np.repeat(spec[..., None], 3, axis=2)], axis=1)
    return images.save_png(canvas, path, inputs=inputs)


def _extract_inputs(generated, real, out, plot, fpr, calibration_real, open_sink):
    """The images of each class (a class with none is a UsageError), the calibration images, and every input,
    checked against the outputs before any work; ``open_sink()`` is called once the classes are listed."""
    gen_paths = [str(p) for p in images.list_images(generated)]
    real_paths = [str(p) for p in images.list_images(real)]
    all_inputs = gen_paths + real_paths
    sink = open_sink()
    for folder, found in ((generated, gen_paths), (real, real_paths)):
        if not found:
            raise UsageError(f"no images found in {folder} (0 images): nothing to fit")
    refuse_overlap(gen_paths, real_paths)
    cal_paths = None
    if calibration_real is not None:
        if fpr is None:
            raise UsageError("--calibration-real needs --fpr (the false-positive rate to calibrate at)")
        cal_paths = [str(p) for p in images.list_images(calibration_real)]
        all_inputs += cal_paths
    atomic.check_outputs({"--out": out, "--plot": plot},
                         batch.run_inputs(all_inputs, [generated, real]
                                          + ([calibration_real] if calibration_real is not None else [])))
    return sink, gen_paths, real_paths, cal_paths, all_inputs


def _warn_skipped(fp: Fingerprint, quiet: bool) -> None:
    if fp.info.skipped:
        by: dict[str, int] = {}
        for d in fp.info.skipped:
            by[d["class"]] = by.get(d["class"], 0) + 1
        batch.warn(f"{len(fp.info.skipped)} image(s) skipped (" +
                   ", ".join(f"{v} {k}" for k, v in by.items()) + ")", quiet)


def _warn_tolerance(fp: Fingerprint, quiet: bool) -> None:
    chk = fp.meta.get("tolerance_check") or {}
    if chk.get("used", chk.get("requested")) != chk.get("requested"):
        batch.warn(f"--tolerance {chk['requested']} dropped to 0: the shift search kept d' {chk['dprime_search']} "
                   f"of the zero-shift {chk['dprime_plain']} on the training images (the trace is too weak per "
                   "image to find its shift); the fingerprint is pixel-locked", quiet)


def _evaluate(fp: Fingerprint, feats: dict, cache, phases, quiet: bool) -> None:
    """Score the held-out test split: test accuracy, AUC and (calibrated) TPR at the stated FPR, into ``feats``
    and the fingerprint's metadata."""
    test_g = [d["path"] for d in fp.info.split("test", "generated")]
    test_r = [d["path"] for d in fp.info.split("test", "real")]
    if not (test_g and test_r):
        return
    phases.phase("test split", len(test_g) + len(test_r))
    warn = lambda p, e: batch.warn(f"test split: {e}", quiet)  # noqa: E731
    cg = detect.correlations(fp, test_g, cache=cache, on_error=warn, progress=phases.progress)
    cr = detect.correlations(fp, test_r, cache=cache, on_error=warn, progress=phases.progress)
    phases.close()
    acc = (detect.is_generated(fp, cg).sum() + (~detect.is_generated(fp, cr)).sum()) / max(1, len(cg) + len(cr))
    fp.info.test_accuracy = feats["test_accuracy"] = float(acc)
    fp.info.test_auc = feats["test_auc"] = detect.auc(detect.scores(fp, cg), detect.scores(fp, cr))
    if fp.calibrated:
        pg = detect.p_values(fp, cg)
        fp.info.test_tpr_at_fpr = feats["test_tpr_at_fpr"] = float((pg <= fp.fpr).mean())


def _extract_record(fp: Fingerprint, generated, real, out, digest: str, feats: dict, cache, seed: int,
                    plot=None, inputs=()):
    details = {"fingerprint": {"path": str(out), "sha256": digest}, "name": fp.name, "method": fp.method,
               "crop": fp.crop, "counts": fp.info.counts, "epochs": fp.info.epochs,
               "augment": fp.info.augment,
               "steps": fp.info.steps, "seconds": fp.info.seconds,
               "residual_cache": {"hits": cache.hits, "misses": cache.misses},
               "skipped": fp.info.skipped or [], "conditions": fp.info.conditions,
               "calibration": calibration_summary(fp)}
    if plot is not None:
        details["plot"] = {"path": str(plot), "sha256": plot_fingerprint(fp, str(plot), inputs=inputs)}
    prov = base_provenance(None, seed)
    prov["denoiser"] = fp.info.denoiser
    return Record("dif-extract", {"generated": {"path": str(generated), "sha256": None},
                                  "real": {"path": str(real), "sha256": None}},
                  features=feats, directions={"mu_gen": "higher=more generator-specific",
                                              "test_accuracy": "higher=better", "test_auc": "higher=better"},
                  provenance=prov, details=details)


def run(generated, real, out, *, name: str | None = None, n_images: int | None = None, crop: int = 256,
        epochs: int | None = None, seed: int = 0, method: str = "dif", denoiser: str = "dncnn",
        test_fraction: float = 0.2, batch_size: int = 64, tolerance: int = 1, profile: str | None = None,
        views: int | None = None, plot=None, evaluate: bool = True, use_cache: bool = True,
        fpr: float | None = None, calibration_real=None, min_images: int = DEFAULT_MIN_IMAGES,
        conditions: Sequence[str] = (), fmt: str | None = None, quiet: bool = False, stdout: bool = False):
    """Fit the fingerprint of the generator whose images are in the folder ``generated`` against the real photos
    in ``real`` (:func:`fit`), score its held-out test split (unless ``evaluate=False``), write it to ``out``
    (sealed safetensors) and, with ``plot``, a PNG of it. With ``fpr``, ``conditions`` are the recompressions
    the calibration also covers (see :func:`..detect.calibrate`; default as distributed only). Returns :class:`~fingerprint_cli.batch.Results` with
    one ``dif-extract`` record."""
    with Phases(quiet) as phases:
        sink, gen_paths, real_paths, cal_paths, all_inputs = _extract_inputs(
            generated, real, out, plot, fpr, calibration_real,
            lambda: detect.single_sink(fmt, stdout, EXTRACT_COLUMNS))
        cache = ResidualCache(disk=use_cache)
        t0 = time.time()
        skipped_warn = lambda p, why: batch.warn(f"{p}: skipped ({why})", quiet)  # noqa: E731
        fp = fit(gen_paths, real_paths, name=name or default_name(generated), method=method,
                 crop=crop, epochs=epochs, seed=seed, denoiser=denoiser, images=n_images,
                 progress=phases.progress, on_phase=phases.phase, test_fraction=test_fraction,
                 batch_size=batch_size, cache=cache, tolerance=tolerance, min_images=min_images,
                 on_skip=lambda p, why: (phases.close(), skipped_warn(p, why)), fpr=fpr,
                 calibration_paths=cal_paths, profile=profile or DEFAULT_PROFILE, views=views,
                 recompressions=conditions)
        phases.close()
        _warn_skipped(fp, quiet)
        _warn_tolerance(fp, quiet)
        feats = {"mu_gen": fp.info.mu_gen, "mu_real": fp.info.mu_real,
                 "sigma_real": fp.info.sigma_real, "train_accuracy": fp.info.train_accuracy,
                 "test_accuracy": None, "test_auc": None}
        if evaluate:
            _evaluate(fp, feats, cache, phases, quiet)
        if fp.calibrated:
            feats["fpr"] = fp.fpr
            feats["calibration_n"] = fp.conformal.n
        feats["seconds"] = round(time.time() - t0, 1)
        digest = fp.save(out, inputs=all_inputs)
        rec = _extract_record(fp, generated, real, out, digest, feats, cache, seed, plot, all_inputs)
    return detect.finish_single(sink, rec)
