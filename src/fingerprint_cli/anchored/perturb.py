"""Content-adaptive sub-JND perturbation of a clean image (``fpx perturb``).

Both methods produce an 8-bit RGB image ``p`` with, on every pixel and channel,
``|p - x| <= strength * JND`` where x is the input in 8-bit levels (float, so 16-bit inputs are handled too)
and JND is the per-pixel map of :mod:`fingerprint_cli.anchored.jnd` computed on the input's luminance. The bound is
enforced *after* rounding to 8 bits (:func:`quantize_within`): a target value whose rounding would cross the
bound is rounded toward the input instead. It is checked again before anything is written.

``keyed`` (default; no model): a pseudo-random +-1 pattern drawn from the key (SHA-256 of the key seeds
numpy's PCG64), constant over ``cell x cell`` pixel cells (default 2: a little low-frequency energy survives
JPEG and resizing better than pixel noise), identical on R, G and B (so it is a luminance change), scaled
to strength x JND. For an 8-bit input the change per pixel is thus +-floor(strength x JND) levels
(times ``delta_scale`` < 1 when needed to keep the PSNR at or above ``psnr_floor``, default 40 dB: dark
images have JNDs of up to 20 levels).
The same key, image, strength, JND model and cell give the same output, bit for bit.

``adversarial``: projected sign-gradient ascent (PGD, Madry et al. 2018) on delta, maximising the mean over
patches of 1 - cos(token(x + delta), token(x)) of the encoder ``fpx score`` uses (final-layer patch tokens),
with the encoder's own preprocessing (bicubic antialiased resize to its resolution, mean/std normalisation)
done in torch so it is differentiable; after every step delta is projected onto the per-pixel box
|delta| <= strength x JND (each channel). Initialised with a seeded random start inside the box.

Detection never needs the key: delta is recovered as protected - clean (see :mod:`fingerprint_cli.anchored.survival`).
The sidecar therefore stores only a key *id* (the first 16 hex digits of SHA-256("fpx-key:" + key)), never
the key itself, so that a key can be kept to reproduce or prove authorship of the pattern.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fingerprint_cli import __version__, atomic, images
from fingerprint_cli.anchored import jnd as jnd_mod, metrics
from fingerprint_cli.errors import FpxError, InputError, UsageError
from fingerprint_cli.records import Record, json_safe

METHODS = ("keyed", "adversarial")
DEFAULT_STRENGTH = 0.3
MIN_STRENGTH = 0.2
MAX_STRENGTH = 2.0
SIDECAR_VERSION = 1
DEFAULT_PSNR_FLOOR = 40.0


def _psnr255(x255: np.ndarray, q: np.ndarray) -> float:
    mse = float(np.mean((q.astype(np.float64) - x255) ** 2))
    return 100.0 if mse <= 0 else float(10 * np.log10(255.0 ** 2 / mse))


def key_id(key: str) -> str:
    return hashlib.sha256(("fpx-key:" + key).encode("utf-8")).hexdigest()[:16]


def keyed_pattern(key: str, height: int, width: int, cell: int = 2) -> np.ndarray:
    """+-1 float32 pattern (H, W) from ``key``, constant over ``cell x cell`` cells aligned to (0, 0)."""
    if cell < 1:
        raise UsageError("--cell must be at least 1")
    seed = int.from_bytes(hashlib.sha256(("fpx-pattern:" + key).encode("utf-8")).digest()[:16], "little")
    rng = np.random.Generator(np.random.PCG64(seed))
    gh, gw = -(-height // cell), -(-width // cell)
    signs = rng.integers(0, 2, size=(gh, gw), dtype=np.int8) * 2 - 1
    full = np.repeat(np.repeat(signs, cell, axis=0), cell, axis=1)[:height, :width]
    return full.astype(np.float32)


def quantize_within(x255: np.ndarray, target255: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Round ``target255`` to 8-bit levels so that |result - x255| <= bound on every element.

    ``x255`` and ``target255`` are (H, W, 3) float levels, ``bound`` (H, W) or (H, W, 3) levels (>= 0.5
    guarantees a solution: the integer nearest to x is then always allowed). Values crossing the bound
    after rounding are rounded toward x; clipping to [0, 255] only moves values toward x (x is in range).
    """
    x = np.asarray(x255, np.float64)
    t = np.asarray(target255, np.float64)
    b = np.asarray(bound, np.float64)
    if b.ndim == 2:
        b = b[..., None]
    eps = 1e-6
    q = np.clip(np.rint(t), 0, 255)
    bad = np.abs(q - x) > b + eps
    if bad.any():
        toward = np.where(t > x, np.floor(t), np.ceil(t))
        q = np.where(bad, np.clip(toward, 0, 255), q)
        bad = np.abs(q - x) > b + eps
        if bad.any():
            q = np.where(bad, np.clip(np.rint(x), 0, 255), q)
            bad = np.abs(q - x) > b + eps
            if bad.any():
                raise FpxError(f"cannot keep {int(bad.sum())} value(s) within the JND bound after 8-bit "
                               "rounding; raise --strength")
    return q.astype(np.uint8)


@dataclass
class Perturbation:
    """Result of :func:`perturb`: the 8-bit output, the JND map and the numbers for the sidecar."""

    protected: np.ndarray            # uint8 (H, W, 3)
    jnd: np.ndarray                  # float32 (H, W), levels
    stats: dict[str, float]
    params: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def bound_stats(x255: np.ndarray, protected: np.ndarray, jnd: np.ndarray, strength: float) -> dict[str, float]:
    """Invisibility numbers of an 8-bit output against the input (levels)."""
    d = np.abs(protected.astype(np.float64) - x255)
    ratio = d / np.asarray(jnd, np.float64)[..., None]
    x = x255 / 255.0
    p = protected.astype(np.float64) / 255.0
    return {"psnr": metrics.psnr(x, p), "ssim": metrics.ssim(x.astype(np.float32), p.astype(np.float32)),
            "mean_abs_delta": float(d.mean()), "max_abs_delta": float(d.max()),
            "mean_delta_over_jnd": float(ratio.mean()), "max_delta_over_jnd": float(ratio.max()),
            "share_within_jnd": float(np.mean(ratio <= 1.0 + 1e-9)),
            "share_within_bound": float(np.mean(ratio <= strength + 1e-6)),
            "share_changed": float(np.mean(d.max(axis=2) > 0))}


MIN_SIDE = 11
MAX_PSNR_FLOOR = 100.0


def check_psnr_floor(psnr_floor: float | None) -> None:
    """``--psnr-floor`` is 0 / None (off) or a PSNR in dB in (0, 100] (fpx caps PSNR at 100)."""
    if psnr_floor is None:
        return
    f = float(psnr_floor)
    if not np.isfinite(f) or f < 0 or f > MAX_PSNR_FLOOR:
        raise UsageError(f"--psnr-floor is a PSNR in dB between 0 (off) and {MAX_PSNR_FLOOR:g}, not {psnr_floor:g}")


def _check_common(method: str, strength: float, jnd_model: str) -> str:
    if method not in METHODS:
        near = difflib.get_close_matches(method, METHODS, n=1)
        raise UsageError(f"unknown --method {method!r}" + (f" (did you mean {near[0]}?)" if near else "")
                         + f"; choose one of {', '.join(METHODS)}")
    if not (MIN_STRENGTH <= strength <= MAX_STRENGTH):
        raise UsageError(f"--strength must be between {MIN_STRENGTH} and {MAX_STRENGTH} (got {strength:g})")
    jnd_mod.jnd_map(np.zeros((1, 1, 3), np.float32), jnd_model)  # validates the name
    return method


def perturb(pixels: np.ndarray, method: str = "keyed", strength: float = DEFAULT_STRENGTH,
            jnd_model: str = "chou-li", key: str | None = None, cell: int = 2, encoder=None,
            steps: int = 10, seed: int = 0, on_step: Callable[[int], None] | None = None,
            psnr_floor: float | None = DEFAULT_PSNR_FLOOR) -> Perturbation:
    """Perturb a float RGB image (H, W, 3) in [0, 1]; see the module docstring for the two methods.

    ``psnr_floor`` (dB, None/0 = off): when the full alpha x JND perturbation would bring the PSNR below it,
    delta is scaled down (factors 0.9^k, recorded as ``delta_scale``) until it does not.
    """
    _check_common(method, strength, jnd_model)
    check_psnr_floor(psnr_floor)
    t0 = time.perf_counter()
    x, x255 = _checked_input(pixels)
    jmap = jnd_mod.jnd_map(x, jnd_model)
    bound = strength * jmap.astype(np.float64)
    params: dict[str, Any] = {"method": method, "strength": float(strength), "jnd_model": jnd_model}
    extra: dict[str, Any] = {}
    if method == "keyed":
        target = _keyed_target(x255, bound, key, cell, params, extra)
    else:
        target = _adversarial_target(x, x255, bound, encoder, steps, seed, on_step, params)
    q, scale = _within_psnr_floor(x255, target, bound, psnr_floor)
    params["psnr_floor"] = float(psnr_floor) if psnr_floor else None
    params["delta_scale"] = round(scale, 6)
    _check_result(x255, q, psnr_floor, scale)
    stats = bound_stats(x255, q, jmap, strength)
    if stats["share_within_bound"] < 1.0:  # pragma: no cover - quantize_within guarantees it
        raise FpxError("internal error: the JND bound does not hold after rounding")
    return Perturbation(q, jmap, stats, params, time.perf_counter() - t0, extra)


def _checked_input(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 image, the same in 0..255 with 8-bit values snapped back to integers); too small: InputError."""
    x = np.asarray(pixels, np.float32)
    if x.ndim != 3 or min(x.shape[:2]) < MIN_SIDE:
        raise InputError(f"image is {x.shape[1]}x{x.shape[0]}: too small to perturb (needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE} for the SSIM check)")
    x255 = x.astype(np.float64) * 255.0
    near = np.rint(x255)
    x255 = np.where(np.abs(x255 - near) < 1e-3, near, x255)  # 8-bit inputs: undo float32 representation noise
    return x, x255


def _keyed_target(x255: np.ndarray, bound: np.ndarray, key: str | None, cell: int, params: dict[str, Any],
                  extra: dict[str, Any]) -> np.ndarray:
    """The keyed ±bound pattern added to the image (a fresh key when none is given: kept in ``extra``)."""
    generated = key is None
    if generated:
        key = secrets.token_hex(16)
    pat = keyed_pattern(key, x255.shape[0], x255.shape[1], cell)
    params.update({"key_id": key_id(key), "key_generated": generated, "cell": int(cell)})
    if generated:
        extra["key"] = key
    return x255 + (pat.astype(np.float64) * bound)[..., None]


def _adversarial_target(x: np.ndarray, x255: np.ndarray, bound: np.ndarray, encoder, steps: int, seed: int,
                        on_step: Callable[[int], None] | None, params: dict[str, Any]) -> np.ndarray:
    """The image pushed away in the encoder's token space within the bound (:func:`adversarial_delta`)."""
    if encoder is None:
        raise UsageError("--method adversarial needs an encoder")
    delta = adversarial_delta(x, bound.astype(np.float32), encoder, steps=steps, seed=seed, on_step=on_step)
    params.update({"steps": int(steps), "seed": int(seed), "encoder": encoder.spec.name,
                   "encoder_weights_sha256": encoder.weights_sha256,
                   "encoder_verified": bool(encoder.installed.verified), "resolution": encoder.resolution})
    return x255 + delta.astype(np.float64) * 255.0


def _within_psnr_floor(x255: np.ndarray, target: np.ndarray, bound: np.ndarray,
                       psnr_floor: float | None) -> tuple[np.ndarray, float]:
    """(the quantised result, the factor delta was scaled by to keep the PSNR at or above ``psnr_floor``).

    Dark images have large JNDs (20 levels on black): delta shrinks toward x by factors of 0.9 until the floor
    holds (at most to 0.05); shrinking keeps every pixel inside its bound."""
    q = quantize_within(x255, target, bound)
    scale = 1.0
    if psnr_floor and _psnr255(x255, q) < psnr_floor:
        while scale > 0.05:
            scale *= 0.9
            q = quantize_within(x255, x255 + scale * (target - x255), bound)
            if _psnr255(x255, q) >= psnr_floor:
                break
    return q, scale


def _check_result(x255: np.ndarray, q: np.ndarray, psnr_floor: float | None, scale: float) -> None:
    """Refuse a result below the PSNR floor, or one that rounds back to the input."""
    if psnr_floor and _psnr255(x255, q) < psnr_floor:
        raise FpxError(f"cannot keep the PSNR at or above --psnr-floor {psnr_floor:g} dB (best "
                       f"{_psnr255(x255, q):.1f} dB with delta scaled by {scale:.3f}); lower --psnr-floor")
    if np.array_equal(q, np.clip(np.rint(x255), 0, 255)) and np.allclose(x255, np.rint(x255)):
        raise FpxError("the perturbation rounds to nothing on this image (the protected copy would equal the "
                       "input); raise --strength or lower --psnr-floor")


def _torch_resize(x, size: int):
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def adversarial_delta(x: np.ndarray, bound255: np.ndarray, encoder, steps: int = 10, seed: int = 0,
                      step_frac: float = 0.25, on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """PGD delta (H, W, 3), float in image units ([0, 1] scale), |delta| <= bound255/255 per pixel."""
    import torch

    if steps < 1:
        raise UsageError("--steps must be at least 1")
    dev = getattr(encoder, "device", "cpu")
    model = encoder.model
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    n_prefix = 1 + int(encoder.arch.get("reg_tokens", 0))
    mean = torch.tensor(encoder.spec.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(encoder.spec.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    res = int(encoder.resolution)

    def tokens(img):
        z = (_torch_resize(img, res) - mean) / std
        return model.forward_features(z)[:, n_prefix:]

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(dev)
    b = torch.from_numpy(np.ascontiguousarray(bound255 / 255.0))[None, None].to(dev).expand_as(xt)
    with torch.no_grad():
        clean_tok = tokens(xt)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    delta = ((torch.rand(xt.shape, generator=g) * 2 - 1).to(dev) * b).clone()
    step = step_frac * b
    for i in range(steps):
        delta.requires_grad_(True)
        adv = (xt + delta).clamp(0.0, 1.0)
        tok = tokens(adv)
        loss = (1.0 - torch.nn.functional.cosine_similarity(tok, clean_tok, dim=-1)).mean()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step * grad.sign()
            delta = torch.maximum(torch.minimum(delta, b), -b)
            delta = (xt + delta).clamp(0.0, 1.0) - xt
        if on_step:
            on_step(i + 1)
    return delta.detach()[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def sidecar_path(output: str) -> str:
    """Where the sidecar JSON of a protected image lives: ``<output>.json`` (e.g. ``cat.png.json``)."""
    return str(output) + ".json"


def make_sidecar(result: Perturbation, source: images.LoadedImage, output_path: str, output_sha: str) -> dict:
    return {"fpx_perturb_sidecar": SIDECAR_VERSION, **result.params,
            "input": {"path": source.path, "sha256": source.sha256, "width": source.width,
                      "height": source.height},
            "output": {"path": str(output_path), "sha256": output_sha},
            **{k: result.stats[k] for k in ("psnr", "ssim", "mean_abs_delta", "max_abs_delta",
                                            "mean_delta_over_jnd", "max_delta_over_jnd", "share_within_jnd")},
            "seconds": round(result.seconds, 4), "fpx_version": __version__,
            "utc_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ---------------------------------------------------------------- a run over files (fpx perturb)
TABLE_COLUMNS = ["inputs.image.path", "details.output", "features.psnr", "features.ssim",
                 "features.max_delta_over_jnd", "features.share_within_jnd"]
FEATURE_DIRECTIONS = {
    "psnr": "higher = less visible", "ssim": "higher = less visible",
    "mean_abs_delta": "lower = less visible", "max_abs_delta": "lower = less visible",
    "mean_delta_over_jnd": "lower = less visible", "max_delta_over_jnd": "must be <= strength",
    "share_within_jnd": "1 = every pixel and channel within its JND",
    "jnd_mean": "levels", "jnd_p10": "levels", "jnd_p90": "levels",
}
STAT_KEYS = ("psnr", "ssim", "mean_abs_delta", "max_abs_delta", "mean_delta_over_jnd", "max_delta_over_jnd",
             "share_within_jnd")


def plan_outputs(inputs: Sequence[str], given_dirs: bool, out: Path | None, jnd_map: Path | None):
    """([(input, output png or None, jnd map png or None)], is_batch) following the naming rules in
    docs/perturb.md: several inputs (or a folder) need an output folder; one input defaults to
    ``IMAGE_protected.png`` beside it."""
    is_batch = len(inputs) > 1 or given_dirs
    if is_batch and out is None and jnd_map is None:
        raise UsageError("several images: name an output folder with -o OUTDIR (or --jnd-map DIR)")
    plan = []
    for src in inputs:
        p = Path(src)
        if is_batch:
            o = (out / f"{p.stem}.png") if out is not None else None
            m = (jnd_map / f"{p.stem}_jnd.png") if jnd_map is not None else None
        else:
            o, m = _single_output(p, out, jnd_map), jnd_map
            if m is not None and m.suffix.lower() != ".png":
                raise UsageError("--jnd-map is written as a PNG picture: name it *.png", str(m))
        plan.append((src, o, m))
    return plan, is_batch


def _single_output(p: Path, out: Path | None, jnd_map: Path | None) -> Path | None:
    if out is None:
        return None if jnd_map is not None else p.with_name(f"{p.stem}_protected.png")
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / f"{p.stem}.png"
    if out.suffix.lower() != ".png":
        raise UsageError("the protected image is written losslessly as PNG: name it *.png", str(out))
    return out


def planned_outputs(plan, records: Path | None) -> dict:
    """Every output of a plan (images, sidecars, maps, records) by label, for the up-front check
    (:func:`fingerprint_cli.atomic.check_outputs`). In a batch two inputs with one stem share an output: the
    second becomes an error record at run time, so each path is listed once here."""
    outs: dict = {"--records": records}
    planned: set = set()
    for n, (_, o, m) in enumerate(plan):
        for label, target in ((f"output {n + 1}", o), (f"--jnd-map {n + 1}", m)):
            if target is None or Path(target).resolve() in planned:
                continue
            planned.add(Path(target).resolve())
            outs[label] = target
            if label.startswith("output"):
                outs[f"sidecar {n + 1}"] = sidecar_path(str(target))
    return outs


def make_output_dirs(plan, is_batch: bool) -> None:
    """A batch creates its output folders; a single output's folder must exist."""
    for d in {o.parent for _, o, _ in plan if o is not None} | {m.parent for _, _, m in plan if m is not None}:
        if is_batch:
            d.mkdir(parents=True, exist_ok=True)
        elif not d.is_dir():
            raise UsageError("output folder does not exist", str(d))


@dataclass
class FileJob:
    """How :func:`protect_file` protects each file of a run (the options of ``fpx perturb``)."""

    method: str = "keyed"
    strength: float = DEFAULT_STRENGTH
    jnd_model: str = "chou-li"
    key: str | None = None
    cell: int = 2
    steps: int = 10
    seed: int = 0
    psnr_floor: float | None = DEFAULT_PSNR_FLOOR
    encoder: Any = None
    inputs: Sequence[str] = ()  # never written over
    provenance: dict = field(default_factory=dict)
    seen: dict = field(default_factory=dict)  # output path -> the input it was written for


def protect_file(job: FileJob, src: str, out: Path | None, jnd_out: Path | None,
                 on_step: Callable[[int], None] | None = None) -> Record:
    """Protect one image file (``out``: the PNG, with its sidecar) and/or write its JND map (``jnd_out``); the
    ``perturb`` record, or the item's error record (a failure never aborts the batch)."""
    inputs_rec = {"image": {"path": src, "sha256": None}}
    try:
        img = images.load_image(src)
        inputs_rec["image"]["sha256"] = img.sha256
        _claim_outputs(job, src, (out, jnd_out))
        feats, details, jmap = {}, {}, None
        if out is not None:
            jmap = _write_protected(job, img, out, feats, details, on_step)
        else:
            jmap = jnd_mod.jnd_map(img.pixels, job.jnd_model)
        feats.update({"jnd_mean": float(jmap.mean()), "jnd_p10": float(np.percentile(jmap, 10)),
                      "jnd_p90": float(np.percentile(jmap, 90))})
        details["jnd_model"] = job.jnd_model
        if jnd_out is not None:
            details["jnd_map"] = str(jnd_out)
            details["jnd_map_sha256"] = images.save_png(jnd_mod.to_picture(jmap), jnd_out, inputs=job.inputs)
            details["jnd_map_scale"] = "grey = min(255, round(8 x JND levels))"
        return Record(command="perturb", inputs=inputs_rec, features=feats,
                      directions={k: FEATURE_DIRECTIONS[k] for k in feats}, provenance=job.provenance,
                      details=details)
    except FpxError as exc:
        if exc.path is None:
            exc.path = src
        return Record.failure("perturb", inputs_rec, exc, job.provenance)
    except Exception as exc:  # noqa: BLE001 - one item's failure never aborts the batch
        return Record.failure("perturb", inputs_rec,
                              FpxError(f"unexpected failure: {type(exc).__name__}: {exc}", src), job.provenance)


def _claim_outputs(job: FileJob, src: str, targets) -> None:
    for target in targets:
        if target is None:
            continue
        k = str(target.resolve())
        if k in job.seen:
            raise InputError(f"would overwrite {target}, already written for {job.seen[k]} "
                             "(two inputs with one file stem)", src)
        job.seen[k] = src


def _write_protected(job: FileJob, img: images.LoadedImage, out: Path, feats: dict, details: dict,
                     on_step) -> np.ndarray:
    """Perturb, write the PNG and its sidecar; fills the record's features and details; returns the JND map."""
    res = perturb(img.pixels, method=job.method, strength=job.strength, jnd_model=job.jnd_model, key=job.key,
                  cell=job.cell, encoder=job.encoder, steps=job.steps, seed=job.seed,
                  psnr_floor=job.psnr_floor or None, on_step=on_step)
    sidecar_file = sidecar_path(str(out))
    atomic.refuse_overwrite_of_inputs(sidecar_file, job.inputs)
    sha = images.save_png(res.protected, out, inputs=job.inputs)
    sidecar = make_sidecar(res, img, str(out), sha)
    atomic.write_text(sidecar_file, json.dumps(json_safe(sidecar), indent=2) + "\n")
    feats.update({k: res.stats[k] for k in STAT_KEYS})
    details.update({"output": str(out), "output_sha256": sha, "sidecar": sidecar_file,
                    **res.params, "seconds": round(res.seconds, 4)})
    return res.jnd
