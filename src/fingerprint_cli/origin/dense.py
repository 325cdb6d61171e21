"""Dense verification of a local match: do the two images' pixels agree at the geometry RANSAC fitted?

The local stage (:mod:`fingerprint_cli.origin.local`) counts keypoints that an affine map lays onto a
candidate's; an unrelated photo with regular structure (a caption bar's text blocks, a façade's windows) can
collect a dozen such inliers. This test looks at every pixel both images share instead: the candidate's luma is
warped into the suspect's frame with the fitted map (``cv2.warpAffine``; the suspect's mirror when the match
was on its mirrored view), both are band-passed (a difference of Gaussians, σ = :data:`SIGMAS` px at
:data:`WORK` px on the suspect's long side: the smooth layout any two photographs share, and JPEG's finest
scale, are removed; masked so the warp's border adds no edge), and the score is the **energy-weighted local
normalised cross-correlation** over the overlap,

    Σ G_ρ(S·R) / Σ √(G_ρ(S²) · G_ρ(R²))        (sums over the pixels where the warped candidate exists)

with G_ρ a Gaussian window (ρ = :data:`RHO` px). Each pixel's local correlation is weighted by the local
contrast of both images, so flat or padded regions (a caption band, letterbox bars, a plain sky) weigh nothing;
it lies in [-1, 1]; a genuine crop — tinted, JPEG'd, mildly blurred — correlates high, an unrelated photo that
an affine map happens to match a few corners of correlates near 0. An overlap below :data:`MIN_OVERLAP` of
the suspect's frame gives no evidence (0).

Its threshold is calibrated like the local test's (:func:`fingerprint_cli.origin.index.calibrate`, the index's
local settings ``dense``): on the local calibration queries' best impostor candidates, at the local test's
share of the false-match rate, and the local test passes only when both the inliers and this score pass (an
AND of two tests each calibrated at that share holds it). ``WORK``, ``SIGMAS``, ``RHO`` and ``MIN_OVERLAP``
were fixed a priori (issue 12 round 8), not tuned on a benchmark family. ``cv2`` and ``scipy`` are imported
inside the functions.
"""

from __future__ import annotations

import numpy as np

from fingerprint_cli import images

WORK = 160  # px: the suspect's long side in the comparison
SIGMAS = (1.0, 4.0)  # px at WORK: the band-pass (difference of Gaussians)
RHO = 4.0  # px at WORK: the local correlation's window
MIN_OVERLAP = 0.1  # share of the suspect's frame the warped candidate must cover
MAX_REF_SIDE = 2048  # px: the candidate is never resampled above this long side
TOP = 3  # candidates (most inliers first, above the inlier threshold) checked per suspect
HULL_MARGIN = 4  # px at WORK: the inliers' hull is dilated by this (= RHO, the correlation window; a priori)
REGIONS = ("overlap", "hull")  # where the correlation is summed (local.Settings.dense_region)


def luma(px: np.ndarray, side: float) -> np.ndarray:
    """Float luma in [0, 1] of a float RGB image resized so that its long side is ``side`` px (not above ×1 of
    an image already smaller — the caller asks for what it needs)."""
    return np.ascontiguousarray(images.luma(images.resize_long_side(np.asarray(px, np.float32), side)), np.float32)


def _masked_blur(x: np.ndarray, m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``x`` over the pixels where ``m`` is 1 (normalised convolution), 0 elsewhere."""
    from scipy.ndimage import gaussian_filter

    num = gaussian_filter(x * m, sigma, mode="constant")
    den = gaussian_filter(m, sigma, mode="constant")
    return np.where(m > 0, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def band(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The difference-of-Gaussians band (:data:`SIGMAS`) of ``x`` inside the mask ``m`` (0 outside)."""
    return (_masked_blur(x, m, SIGMAS[0]) - _masked_blur(x, m, SIGMAS[1])) * m


def weighted_ncc(s: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    """Energy-weighted local NCC of two band images over the mask ``m``: Σ G(S·R) / Σ √(G(S²) G(R²)), in
    [-1, 1] (Cauchy–Schwarz holds per pixel for the Gaussian window); 0 without contrast."""
    from scipy.ndimage import gaussian_filter

    s, r = s * m, r * m
    c = gaussian_filter(s * r, RHO, mode="constant")
    e = np.sqrt(np.maximum(gaussian_filter(s * s, RHO, mode="constant"), 0)
                * np.maximum(gaussian_filter(r * r, RHO, mode="constant"), 0))
    sel = m > 0
    den = float(e[sel].sum())
    return float(c[sel].sum() / den) if den > 1e-12 else 0.0


def work_map(A: np.ndarray, k: float, g: float) -> np.ndarray:
    """The inverse map (work pixel → candidate pixel) of an affine ``A`` (suspect → candidate, both at the local
    stage's frame) when the suspect is shown ``k`` × and the candidate ``g`` × that frame (pixel centres kept)."""
    L, t = np.asarray(A, np.float64)[:, :2], np.asarray(A, np.float64)[:, 2]
    off = g * (L @ np.full(2, 0.5 / k - 0.5)) + g * t + (0.5 * g - 0.5)
    return np.concatenate([(g / k) * L, off[:, None]], axis=1)


def hull_mask(xy: np.ndarray, shape: tuple[int, int], k: float) -> np.ndarray:
    """1 inside the convex hull of the keypoints ``xy`` (suspect view, frame px; shown ``k`` × at work scale),
    dilated by :data:`HULL_MARGIN` px, 0 elsewhere (issue 12 round 9: the part of the suspect the match is
    about; fewer than one point: empty)."""
    import cv2

    m = np.zeros(shape, np.uint8)
    if len(xy):
        pts = np.round((np.asarray(xy, np.float64) + 0.5) * k - 0.5).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
        size = 2 * HULL_MARGIN + 1
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return m.astype(np.float32)


def score(suspect: np.ndarray, reference: np.ndarray, A: np.ndarray, mirrored: bool, frame: float,
          hull: np.ndarray | None = None) -> float:
    """Dense agreement of a suspect and a candidate at the affine ``A`` the local stage fitted (suspect view →
    candidate, in the frame of long side ``frame`` px each, :data:`fingerprint_cli.origin.local.SIDE`):
    the energy-weighted local NCC of their band-passed luma over the overlap (module docstring); ``suspect``
    and ``reference`` are float RGB images at any size, ``mirrored`` when ``A`` was fitted on the suspect's
    mirrored view. 0 when the overlap is below :data:`MIN_OVERLAP`. ``hull`` (the ``hull`` region, round 9):
    the RANSAC inliers' suspect keypoints (that view's frame px): the band is taken over the overlap as
    before and the correlation summed only inside their convex hull (:func:`hull_mask`)."""
    import cv2

    s = luma(suspect, WORK)
    if mirrored:
        s = np.ascontiguousarray(s[:, ::-1])
    k = WORK / frame  # work px per frame px of the suspect
    sv = float(np.sqrt(abs(np.linalg.det(np.asarray(A, np.float64)[:, :2]))))
    native = max(reference.shape[:2])
    side = float(np.clip(frame * k / max(sv, 1e-6), 16, min(native, MAX_REF_SIDE)))
    ref = luma(reference, side)
    g = max(ref.shape) / frame  # candidate px per frame px
    M = work_map(A, k, g)
    h, w = s.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    r = cv2.warpAffine(ref, M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m = cv2.warpAffine(np.ones_like(ref), M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m = (m > 0.999).astype(np.float32)
    if m.mean() < MIN_OVERLAP:
        return 0.0
    sel = m if hull is None else m * hull_mask(hull, m.shape, k)
    return weighted_ncc(band(s, m), band(r, m), sel)


def rgb(px: np.ndarray) -> np.ndarray:
    """A suspect's float RGB pixels at the comparison's scale (:data:`WORK` px on the long side): all that
    :func:`score` reads of it (a small copy to carry instead of the whole image)."""
    return images.resize_long_side(np.asarray(px, np.float32), WORK).astype(np.float32)
