"""Survival and detection of an ``fpx perturb`` perturbation in a suspect image.

Notation, all in 8-bit levels over every pixel and RGB channel: x the clean reference, p the protected copy
(``fpx perturb`` output), delta = p - x (recovered from the two images — no key needed), y the suspect
*aligned to x*: the :class:`~fingerprint_cli.anchored.score.Scorer` puts the suspect on the reference's pixel grid,
unchanged when the sizes agree and resized with bicubic interpolation when they differ. No shift, crop or
rotation is searched for: a suspect that was cropped or shifted reads as "not derived" (low z).

* ``survival = <y - x, delta> / <delta, delta>`` — the least-squares gain of delta in the suspect's
  departure from the clean image: 1 when the perturbation is intact (y = p), 0 when it is gone, and it can
  exceed 1 or go negative when the processing adds changes correlated with delta by chance.
* ``perturbation_z`` — a self-normalised sign-flip statistic. Tile the image into blocks b of the keyed
  pattern's cell size (from the sidecar; 8x8 when there is no sidecar or for the adversarial method), let
  ``S_b = sum_{i in b, i kept} delta_i (y_i - x_i)``; then ``z = sum_b S_b / sqrt(sum_b S_b^2)``. Kept
  pixel-channels: those whose clean value lies in [m, 255 - m], m = max |delta| (near 0 and 255 clipping makes
  delta's amplitude depend on its sign, and the suspect's departure there one-signed: a real bias found on
  Kodak images). Null hypothesis: y was not made from p, so the keyed signs of the cells are independent of
  y - x and of the mask. Then ``sum_b S_b`` is a Rademacher sum with weights |S_b| and Hoeffding's inequality
  gives ``P(z >= t) <= exp(-t^2 / 2)`` exactly (blocks = cells), whatever the processing did to x — no model
  of JPEG, resizing or image content is needed. When y = p, z is about sqrt(number of blocks).
  With 8x8 blocks over 2x2 cells, or for the adversarial method (whose signs follow the image's own
  gradients), the bound is an approximation (the tests and the bench measure the null on real processing).
* ``perturbation_detected`` = z >= ``Z_THRESHOLD`` = 5: false-alarm probability at most exp(-12.5) = 3.7e-6
  per test under the null above. The record states it (:func:`false_alarm`, ``details.perturbation``:
  ``false_alarm_bound`` and the suspect's own ``p_bound`` = exp(-z^2/2), both null where the bound is only an
  approximation — no sidecar, or the adversarial method — with ``false_alarm_rule`` saying so). 0 reads as
  "not detected", never as "absent": the miss rate is not calibrated and shifted / cropped suspects are not
  searched (``details.perturbation.not_detected_means``).

The sidecar JSON written next to the protected image (``<protected>.json``) is read when present; its
``input.sha256`` must equal the reference's sha256 (else the protected copy was made from another image
and the pair is refused with an error naming the protected file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fingerprint_cli import images
from fingerprint_cli.anchored.perturb import sidecar_path
from fingerprint_cli.images import read_checked
from fingerprint_cli.errors import InputError

Z_THRESHOLD = 5.0
BLOCK = 8
FEATURES: dict[str, tuple[str, str]] = {
    "survival": ("higher = more of the perturbation kept",
                 "<y - x, delta> / <delta, delta>: 1 intact, 0 gone"),
    "perturbation_z": ("higher = more evidence the suspect derives from the protected image",
                       "sign-flip z of the correlation of (suspect - clean) with delta; P(z >= t | null) <= "
                       "exp(-t^2/2)"),
    "perturbation_detected": ("1 = detected: the suspect derives from the protected copy (false alarm <= "
                              "details.perturbation.false_alarm_bound); 0 = not detected, not evidence of absence",
                              f"perturbation_z >= {Z_THRESHOLD:g}"),
}
NOT_DETECTED_MEANS = ("perturbation_detected 0 means not detected, not absent: the miss rate is not calibrated "
                      "(strong processing weakens the perturbation) and a shifted, cropped or rotated suspect is "
                      "not searched for")


def false_alarm(z: float, sidecar: dict | None, block: int) -> dict[str, Any]:
    """The error rate behind ``perturbation_detected``: the Hoeffding bound exp(-t^2/2) at ``Z_THRESHOLD``
    (``false_alarm_bound``) and at the suspect's own z (``p_bound``) where it holds exactly — a keyed
    perturbation with its sidecar, blocks = its cells — else both None and ``false_alarm_rule`` says the bound
    is an approximation, not calibrated."""
    exact = bool(sidecar) and sidecar.get("method") == "keyed" and block == block_for(sidecar)
    if not exact:
        why = "no sidecar (cell size unknown, 8x8 blocks)" if not sidecar else f"method {sidecar.get('method')}"
        return {"false_alarm_bound": None, "p_bound": None,
                "false_alarm_rule": f"not calibrated: {why}; P(z >= t | not derived) <= exp(-t^2/2) is only an "
                                    "approximation here", "not_detected_means": NOT_DETECTED_MEANS}
    bound = math.exp(-Z_THRESHOLD ** 2 / 2)
    return {"false_alarm_bound": bound, "p_bound": min(1.0, math.exp(-max(z, 0.0) ** 2 / 2)),
            "false_alarm_rule": f"Hoeffding (blocks = the keyed cells): P(z >= {Z_THRESHOLD:g} | not derived from "
                                f"the protected copy) <= exp(-{Z_THRESHOLD:g}^2/2) = {bound:.2g}",
            "not_detected_means": NOT_DETECTED_MEANS}


def _block_sums(a: np.ndarray, block: int) -> np.ndarray:
    """Sums of an (H, W) array over block x block tiles (edge tiles may be partial)."""
    h, w = a.shape
    gh, gw = -(-h // block), -(-w // block)
    pad = np.zeros((gh * block, gw * block), dtype=np.float64)
    pad[:h, :w] = a
    return pad.reshape(gh, block, gw, block).sum(axis=(1, 3))


def measure(clean: np.ndarray, protected: np.ndarray, suspect: np.ndarray, block: int = BLOCK) -> dict[str, Any]:
    """Survival and detection numbers for float RGB images in [0, 1] of one shape (suspect already aligned).

    ``block`` is the tile over which delta's sign is shared: the keyed pattern's ``cell`` (the z-score's
    tail bound is then exact), or 8 for perturbations without independent cells (adversarial).
    """
    x = np.asarray(clean, np.float64) * 255.0
    d = np.asarray(protected, np.float64) * 255.0 - x
    r = np.asarray(suspect, np.float64) * 255.0 - x
    dd = float(np.sum(d * d))
    if dd <= 0:
        raise ValueError("the protected image equals the clean reference: there is no perturbation to look for")
    dr = d * r
    survival = float(np.sum(dr) / dd)
    # detection leaves out pixel-channels so close to 0 or 255 that clipping could have made delta's
    # amplitude depend on its sign (and the suspect's departure there one-signed too): the mask depends on
    # the clean image only, so the sign-flip symmetry of the null holds on what is left
    m = float(np.max(np.abs(d)))
    keep = (x >= m) & (x <= 255.0 - m)
    s = _block_sums((dr * keep).sum(axis=2), max(1, int(block))).ravel()
    denom = float(np.sqrt(np.sum(s * s)))
    z = float(np.sum(s) / denom) if denom > 0 else 0.0
    return {"survival": survival, "perturbation_z": z, "perturbation_detected": int(z >= Z_THRESHOLD),
            "delta_rms": float(np.sqrt(dd / d.size)), "residual_rms": float(np.sqrt(np.mean(r * r))),
            "detection_share_used": float(keep.mean()), "block": int(block)}


def block_for(sidecar: dict | None) -> int:
    """Sign-sharing tile for the z-score: the keyed pattern's cell from the sidecar, else ``BLOCK``."""
    if sidecar and sidecar.get("method") == "keyed":
        try:
            cell = int(sidecar.get("cell", BLOCK))
        except (TypeError, ValueError):
            return BLOCK
        return cell if 1 <= cell <= 64 else BLOCK
    return BLOCK


def read_sidecar(protected_path: str) -> tuple[dict | None, str]:
    """The sidecar JSON of a protected image (or None) and its path. A damaged sidecar is an InputError."""
    sp = sidecar_path(protected_path)
    if not Path(sp).is_file():
        return None, sp
    try:
        data = json.loads(read_checked(sp, "sidecar", max_bytes=16 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable perturbation sidecar JSON ({exc.__class__.__name__})", sp) from exc
    if not isinstance(data, dict) or "fpx_perturb_sidecar" not in data:
        raise InputError("is not an fpx perturb sidecar (no fpx_perturb_sidecar field)", sp)
    return data, sp


class _Protected:
    def __init__(self, path: str):
        self.path = path
        self.image = images.load_image(path)
        self.sidecar, self.sidecar_path = read_sidecar(path)
        if self.sidecar is not None:
            out_sha = (self.sidecar.get("output") or {}).get("sha256")
            if out_sha and out_sha != self.image.sha256:
                raise InputError(f"does not match its sidecar {Path(self.sidecar_path).name} (sha256 differs: "
                                 "the protected file was modified after fpx perturb wrote it)", path)


def feature_fn(protected_path: str | None) -> Callable:
    """A Scorer extra-feature function: ``fn(pair, ref, suspect_aligned) -> (features, directions, details)``.

    ``protected_path`` applies to every pair; when it is None each pair's ``perturbed`` CSV column is used
    (pairs without one get no survival features).
    """
    cache: dict[str, _Protected] = {}

    def load(path: str) -> _Protected:
        if path not in cache:
            if len(cache) > 16:
                cache.clear()
            cache[path] = _Protected(path)
        return cache[path]

    if protected_path is not None:
        load(protected_path)  # fail fast (exit 2) on an unreadable protected image or sidecar

    def fn(pair, ref: images.LoadedImage, suspect_aligned: np.ndarray):
        path = protected_path or (pair.get("perturbed") if hasattr(pair, "get") else None)
        if not path:
            return {}, {}, {}
        prot = load(path)
        if prot.image.pixels.shape != ref.pixels.shape:
            raise InputError(f"protected copy is {prot.image.width}x{prot.image.height} but the reference "
                             f"{ref.path} is {ref.width}x{ref.height}; it must be fpx perturb output of the "
                             "reference", path)
        sc = prot.sidecar
        if sc is not None:
            in_sha = (sc.get("input") or {}).get("sha256")
            if in_sha and in_sha != ref.sha256:
                raise InputError(f"sidecar says the protected copy was made from sha256 {in_sha[:12]}…, not from "
                                 f"the reference {ref.path} (sha256 {ref.sha256[:12]}…)", path)
        try:
            m = measure(ref.pixels, prot.image.pixels, suspect_aligned, block_for(sc))
        except ValueError as exc:
            raise InputError(str(exc), path) from exc
        feats = {k: m[k] for k in ("survival", "perturbation_z", "perturbation_detected")}
        dirs = {k: FEATURES[k][0] for k in feats}
        details = {"perturbation": {
            "protected": {"path": path, "sha256": prot.image.sha256},
            "sidecar": prot.sidecar_path if sc is not None else None,
            "method": sc.get("method") if sc else None, "strength": sc.get("strength") if sc else None,
            "jnd_model": sc.get("jnd_model") if sc else None,
            "z_threshold": Z_THRESHOLD, "block": m["block"], **false_alarm(m["perturbation_z"], sc, m["block"]),
            "detection_share_used": m["detection_share_used"],
            "delta_rms": m["delta_rms"], "residual_rms": m["residual_rms"],
            "alignment": "suspect on the reference grid (bicubic resize when sizes differ), no shift search",
        }}
        return feats, dirs, details

    return fn
