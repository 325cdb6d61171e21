"""Training-time augmentations for robust fingerprints: recompression and rescaling before the residual.

A fingerprint fitted on pristine outputs learns everything that tells them from the real photos, including
what one JPEG re-save or a small resize destroys (the decoder's fine periodic trace) and what is only a
format difference (a lossless generator against JPEG photos). The *robust* profile passes BOTH classes
through random recompression and mild rescaling before their residuals, so the fingerprint lives in what
survives and the "not JPEG" contrast is gone from the training signal: each training image gets a fixed small
set of ``views`` (augmentations) drawn with a seed, and each view's residual is cached per (image sha256,
augmentation id, denoiser, crop) like the plain residual — so a re-fit, or a second fingerprint sharing the
real photos, recomputes nothing.

An :class:`Augmentation` is ``scale`` (bicubic, antialiased when shrinking, via :func:`images.resize`) then
``quality`` (one JPEG encode/decode through :mod:`fingerprint_cli.images`), applied to the centre window the
crop needs; the result is exactly ``crop``×``crop``. Its ``id`` is a stable string (``"none"``,
``"s0.731"``, ``"q72"``, ``"s1.204-q88"``) that keys the residual cache.

Profiles (:data:`PROFILES`): ``plain`` (no augmentation — the paper), ``robust`` (fpx: every view drawn from
scale = 1 with probability ½, else log-uniform in [0.5, 1.5]; JPEG with probability 0.8 at a quality uniform in
60…100, else none), ``robust-jpeg`` (issue 15 round 4: the image itself plus views re-saved as JPEG at a quality
uniform in 70…95, the range analysts receive, and no rescaling — a resized view carries the periodic trace at
another period, so it cannot help one fixed pattern), ``format-matched`` (issue 15: no random views; every lossless image — training, calibration or suspect — is
re-encoded as JPEG at the JPEG training images' quality before its residual, so "lossless or JPEG" carries no
label information; :func:`.residuals.compute_matched`), and the single conditions of the paper's Fig. 6 used as baselines by ``bench/dif.py``:
``jpeg75``, ``jpeg50``, ``resize`` (scale 0.5) and ``mixed`` (one of none / JPEG 75 / JPEG 50 / resize 0.5 per
image, uniformly).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fingerprint_cli import images
from fingerprint_cli.errors import InputError, UsageError
from fingerprint_cli.registry import suggest

__all__ = ["Augmentation", "Profile", "PROFILES", "get_profile", "draw_views", "apply", "IDENTITY"]

#: Bounds of the robust profile (documented in docs/dif.md).
ROBUST_SCALE = (0.5, 1.5)
ROBUST_QUALITY = (60, 100)
ROBUST_P_RESIZE = 0.5
ROBUST_P_JPEG = 0.8
#: The JPEG qualities of the ``robust-jpeg`` profile: the range analysts receive (camera / web re-saves)
RECEIVED_QUALITY = (70, 95)


@dataclass(frozen=True)
class Augmentation:
    """Rescale by ``scale`` (1 = none), then JPEG at ``quality`` (None = none)."""
    scale: float = 1.0
    quality: int | None = None

    # how the id spells each part (a subclass, :class:`.condition.Recompression`, spells them its own way)
    SCALE_ID, QUALITY_ID, JOIN = "s{:.3f}", "q{}", "-"

    @property
    def id(self) -> str:
        parts = []
        if abs(self.scale - 1.0) > 1e-9:
            parts.append(self.SCALE_ID.format(self.scale))
        if self.quality is not None:
            parts.append(self.QUALITY_ID.format(int(self.quality)))
        return self.JOIN.join(parts) or "none"

    @property
    def is_identity(self) -> bool:
        return self.id == "none"

    def to_json(self) -> dict:
        return {"scale": round(float(self.scale), 3), "quality": self.quality}


IDENTITY = Augmentation()


@dataclass(frozen=True)
class Profile:
    """A named distribution of augmentations: ``draw(rng)`` gives one; ``views`` per image by default."""
    name: str
    draw: Callable[[np.random.Generator], Augmentation]
    views: int
    description: str
    #: the first view of every image is the image itself (the other views are drawn)
    keep_original: bool = False
    #: the suspect conditions the views cover ({"jpeg_quality", "scale", "lossless"}, recorded in the
    #: fingerprint's training conditions; see :func:`..condition.training_conditions`), None = as trained
    covers: dict | None = None
    #: format matching (``format-matched``): no drawn views; every lossless training image of either class is
    #: re-encoded as JPEG at the JPEG training images' quality (:func:`.residuals.compute_matched`), and so is
    #: every lossless image the fingerprint is calibrated on or detects
    match_format: bool = False


def _robust(rng: np.random.Generator) -> Augmentation:
    scale = 1.0
    if rng.random() < ROBUST_P_RESIZE:
        lo, hi = ROBUST_SCALE
        scale = float(round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 3))
    q = int(rng.integers(ROBUST_QUALITY[0], ROBUST_QUALITY[1] + 1)) if rng.random() < ROBUST_P_JPEG else None
    return Augmentation(scale, q)


def _received_jpeg(rng: np.random.Generator) -> Augmentation:
    return Augmentation(quality=int(rng.integers(RECEIVED_QUALITY[0], RECEIVED_QUALITY[1] + 1)))


_MIXED = (IDENTITY, Augmentation(quality=75), Augmentation(quality=50), Augmentation(scale=0.5))

PROFILES: dict[str, Profile] = {
    "plain": Profile("plain", lambda rng: IDENTITY, 1, "no augmentation (the paper)"),
    "robust": Profile("robust", _robust, 2,
                      "both classes: rescale ×U_log[0.5, 1.5] with p 0.5, then JPEG q U[60, 100] with p 0.8; "
                      "2 views per image",
                      covers={"jpeg_quality": list(ROBUST_QUALITY), "scale": list(ROBUST_SCALE), "lossless": True}),
    "robust-jpeg": Profile("robust-jpeg", _received_jpeg, 2,
                           "both classes: the image itself plus JPEG q U[70, 95] views (no rescaling); 2 views "
                           "per image", keep_original=True,
                           covers={"jpeg_quality": list(RECEIVED_QUALITY), "scale": None, "lossless": True}),
    "format-matched": Profile("format-matched", lambda rng: IDENTITY, 1,
                              "every lossless image of either class re-encoded whole as JPEG at the median quality of "
                              "the JPEG training images (JPEG images as they are); lossless suspects and lossless "
                              "calibration photos are matched the same way", match_format=True),
    "jpeg75": Profile("jpeg75", lambda rng: Augmentation(quality=75), 1, "JPEG q75 (Fig. 6 condition)"),
    "jpeg50": Profile("jpeg50", lambda rng: Augmentation(quality=50), 1, "JPEG q50 (Fig. 6 condition)"),
    "resize": Profile("resize", lambda rng: Augmentation(scale=0.5), 1, "resize ×0.5 (Fig. 6 condition)"),
    "mixed": Profile("mixed", lambda rng: _MIXED[int(rng.integers(len(_MIXED)))], 1,
                     "one of none / JPEG 75 / JPEG 50 / resize 0.5 per image (the paper's mixed protocol)"),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        hint = suggest(str(name), PROFILES, n=1)
        raise UsageError(f"unknown --profile {name!r} (choose {', '.join(PROFILES)}){hint}")
    return PROFILES[name]


def draw_views(profile: Profile | str, image_sha256: str, seed: int, views: int | None = None) -> list[Augmentation]:
    """The fixed views of one image: drawn from ``profile`` with a generator seeded by (seed, image sha256),
    so the same image gets the same augmentations in every fit with that seed (the residual cache is reused
    across fingerprints that share images) and different images get independent ones."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    k = prof.views if views is None else int(views)
    if k < 1:
        raise UsageError(f"--views must be at least 1 (got {k})")
    if prof.name == "plain":
        return [IDENTITY]
    h = hashlib.sha256(f"{int(seed)}:{image_sha256}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    first = [IDENTITY] if prof.keep_original else []
    return first + [prof.draw(rng) for _ in range(k - len(first))]


def apply(pixels: np.ndarray, aug: Augmentation, crop: int, path: str = "") -> np.ndarray:
    """The ``crop``×``crop`` centre window of the image after ``aug`` (float32 (crop, crop, 3) in [0, 1]).

    The rescaled view is the centre crop of the whole image resized to (round(h·s), round(w·s)) — only the
    crop is resampled (Pillow's ``box``), with the filter support read from the whole image; a scale that
    would leave fewer than ``crop`` pixels is raised to the smallest that fits (an image exactly the crop's
    size is only ever enlarged). JPEG is applied to the
    final window (its 8×8 grid is aligned with the crop, as with a re-saved image whose centre crop starts on a
    multiple of 8). An image smaller than the crop is an InputError naming it.
    """
    px = np.asarray(pixels, dtype=np.float32)
    h, w = px.shape[:2]
    if h < crop or w < crop:
        raise InputError(f"image is {w}x{h}, smaller than the {crop}x{crop} crop (use a smaller --crop)", path)
    s = max(float(aug.scale), crop / min(h, w))
    if abs(s - 1.0) > 1e-9:
        # the centre crop of the whole image resized to (round(h·s), round(w·s)), resampling only the crop
        nh, nw = max(crop, int(round(h * s))), max(crop, int(round(w * s)))
        y, x = (nh - crop) // 2, (nw - crop) // 2
        sy, sx = nh / h, nw / w
        box = (x / sx, y / sy, (x + crop) / sx, (y + crop) / sy)
        out = np.clip(images.resize(px, crop, crop, box=box), 0.0, 1.0)
    else:
        y, x = (h - crop) // 2, (w - crop) // 2
        out = px[y:y + crop, x:x + crop]
    if aug.quality is not None:
        data = images.encode(out, "JPEG", quality=int(aug.quality))
        out = images.decode(data, path or "<augmented>").pixels
    return np.ascontiguousarray(out, dtype=np.float32)


def describe(views: Sequence[Sequence[Augmentation]]) -> dict:
    """Summary of the views actually used (for the artifact's metadata)."""
    flat = [a for vs in views for a in vs]
    if not flat:
        return {"views": 0}
    q = [a.quality for a in flat if a.quality is not None]
    s = [a.scale for a in flat if abs(a.scale - 1) > 1e-9]
    return {"views": len(flat), "identity": sum(a.is_identity for a in flat), "jpeg": len(q),
            "jpeg_quality": [min(q), max(q)] if q else None, "resized": len(s),
            "scale": [min(s), max(s)] if s else None}
