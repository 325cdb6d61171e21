"""Per-pixel just-noticeable-difference (JND) maps in 8-bit luminance levels.

Input: luminance ``Y`` as a float (H, W) array in 8-bit levels [0, 255] (see :func:`luminance`, BT.601
weights 0.299 R + 0.587 G + 0.114 B of the RGB image scaled to 0..255). Output: float32 (H, W), the
largest change of that pixel (in levels) the model predicts an observer will not notice. Everything is
vectorised with 5x5 correlations (``scipy.ndimage.correlate``, borders reflected).

``chou-li`` — C.-H. Chou and Y.-C. Li, "A perceptually tuned subband image coder based on the measure of
just-noticeable-distortion profile", IEEE TCSVT 5(6), 1995:

* background luminance ``bg`` = (1/32) sum of the 5x5 neighbourhood weighted by
  ``B = [[1,1,1,1,1],[1,2,2,2,1],[1,2,0,2,1],[1,2,2,2,1],[1,1,1,1,1]]``;
* maximum weighted gradient ``mg`` = max over the four directional 5x5 operators G1..G4 of |(1/16) sum p*G_k|;
* luminance adaptation ``f2(bg) = T0 (1 - sqrt(bg/127)) + 3`` for bg <= 127, ``gamma (bg - 127) + 3`` above,
  with T0 = 17, gamma = 3/128 (so 20 levels at bg = 0, 3 at bg = 127, 5.98 at bg = 255);
* spatial masking ``f1(bg, mg) = mg * alpha(bg) + beta(bg)``, alpha = 0.0001 bg + 0.115, beta = 1/2 - 0.01 bg;
* ``JND = max(f1, f2)``.

``namm`` — X. K. Yang, W. S. Lin, Z. K. Lu, E. P. Ong, S. S. Yao, "Just noticeable distortion model and its
applications in video coding", Signal Processing: Image Communication 20(7), 2005 — the nonlinear
additivity model for masking:

* ``T_l`` = the luminance adaptation f2 above;
* ``T_t = eta * mg * W_e`` with eta = 0.117, ``mg`` the Chou–Li maximum gradient and ``W_e`` the edge-protection
  weight: a Canny edge map E of the luminance (Gaussian sigma = sqrt 2, high threshold 0.5 x the largest
  smoothed gradient, low = 0.4 x high — the MATLAB ``edge(Y, 'canny', 0.5)`` convention Yang et al. used),
  edge pixels weighted 0.1 and the rest 1, smoothed by a 7x7 Gaussian (sigma 0.8). Edges therefore get a
  smaller texture-masking term than texture of the same gradient: the eye sees changes on clean edges;
* ``JND = T_l + T_t - C * min(T_l, T_t)`` with C = 0.3.

Flat patches (mg = 0) give the luminance-adaptation threshold under both models (tests check the published
values by hand).
"""

from __future__ import annotations

import numpy as np

from fingerprint_cli.errors import UsageError

MODELS = ("chou-li", "namm")

T0 = 17.0
GAMMA = 3.0 / 128.0
BG_REF = 127.0

B_KERNEL = np.array([[1, 1, 1, 1, 1],
                     [1, 2, 2, 2, 1],
                     [1, 2, 0, 2, 1],
                     [1, 2, 2, 2, 1],
                     [1, 1, 1, 1, 1]], dtype=np.float64)
G_KERNELS = np.array([
    [[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]],
    [[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]],
], dtype=np.float64)

NAMM_ETA = 0.117
NAMM_C = 0.3
EDGE_WEIGHT = 0.1


def luminance(pixels: np.ndarray) -> np.ndarray:
    """BT.601 luma of a float RGB image in [0, 1], in 8-bit levels [0, 255] (float64, not rounded)."""
    p = np.asarray(pixels, dtype=np.float64)
    if p.ndim == 2:
        return p * 255.0
    return (0.299 * p[..., 0] + 0.587 * p[..., 1] + 0.114 * p[..., 2]) * 255.0


def _corr(y: np.ndarray, k: np.ndarray) -> np.ndarray:
    from scipy.ndimage import correlate

    return correlate(y, k, mode="reflect")


def background_luminance(y: np.ndarray) -> np.ndarray:
    """Chou–Li weighted 5x5 mean luminance (centre excluded), levels."""
    return _corr(np.asarray(y, np.float64), B_KERNEL) / 32.0


def max_gradient(y: np.ndarray) -> np.ndarray:
    """Chou–Li maximum weighted average luminance difference over the four directions, levels."""
    y = np.asarray(y, np.float64)
    return np.max(np.stack([np.abs(_corr(y, g) / 16.0) for g in G_KERNELS]), axis=0)


def luminance_adaptation(bg: np.ndarray | float) -> np.ndarray:
    """Visibility threshold f2(bg) of Chou & Li (1995) for background luminance ``bg`` (levels)."""
    bg = np.asarray(bg, dtype=np.float64)
    low = T0 * (1.0 - np.sqrt(np.clip(bg, 0.0, BG_REF) / BG_REF)) + 3.0
    high = GAMMA * (bg - BG_REF) + 3.0
    return np.where(bg <= BG_REF, low, high)


def spatial_masking(bg: np.ndarray | float, mg: np.ndarray | float) -> np.ndarray:
    """Chou–Li spatial masking f1(bg, mg) = mg * (0.0001 bg + 0.115) + (1/2 - 0.01 bg)."""
    bg = np.asarray(bg, dtype=np.float64)
    return np.asarray(mg, np.float64) * (0.0001 * bg + 0.115) + (0.5 - 0.01 * bg)


def chou_li(y: np.ndarray) -> np.ndarray:
    """Chou & Li (1995) JND of luminance ``y`` (levels, (H, W)); float32 levels."""
    bg = background_luminance(y)
    mg = max_gradient(y)
    return np.maximum(spatial_masking(bg, mg), luminance_adaptation(bg)).astype(np.float32)


def edge_weight(y: np.ndarray) -> np.ndarray:
    """Yang et al. (2005) edge-protection weight W_e: 0.1 on Canny edges, 1 elsewhere, Gaussian-smoothed."""
    from scipy.ndimage import gaussian_filter, sobel
    from skimage.feature import canny

    y = np.asarray(y, np.float64) / 255.0
    sigma = np.sqrt(2.0)
    sm = gaussian_filter(y, sigma, mode="reflect")
    mag = np.hypot(sobel(sm, 0, mode="reflect"), sobel(sm, 1, mode="reflect"))
    top = float(mag.max())
    if top <= 1e-12:
        edges = np.zeros(y.shape, dtype=bool)
    else:
        # skimage's canny measures its gradient with the same Sobel-of-Gaussian, so thresholds carry over
        high = 0.5 * top
        edges = canny(y, sigma=sigma, low_threshold=0.4 * high, high_threshold=high)
    w = np.where(edges, EDGE_WEIGHT, 1.0)
    # 7x7 Gaussian, sigma 0.8: truncate so that the radius is 3 pixels
    return gaussian_filter(w, 0.8, truncate=3.0 / 0.8, mode="reflect")


def namm(y: np.ndarray) -> np.ndarray:
    """Yang et al. (2005) NAMM JND with edge protection of luminance ``y`` (levels); float32 levels."""
    bg = background_luminance(y)
    tl = luminance_adaptation(bg)
    tt = NAMM_ETA * max_gradient(y) * edge_weight(y)
    return (tl + tt - NAMM_C * np.minimum(tl, tt)).astype(np.float32)


_FUNCS = {"chou-li": chou_li, "namm": namm}


def jnd_map(pixels: np.ndarray, model: str = "chou-li") -> np.ndarray:
    """JND map (H, W) in 8-bit levels of a float RGB image in [0, 1] (or a luminance plane in [0, 1])."""
    key = model.lower().replace("_", "-")
    if key in ("chouli", "chou"):
        key = "chou-li"
    if key not in _FUNCS:
        import difflib

        near = difflib.get_close_matches(key, MODELS, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise UsageError(f"unknown JND model {model!r}{hint}; choose one of {', '.join(MODELS)}")
    return _FUNCS[key](luminance(pixels))


def to_picture(jnd: np.ndarray, scale: float = 8.0) -> np.ndarray:
    """The map as an 8-bit grey picture: grey = min(255, round(scale x JND)) (default 8: 255 ~ 32 levels)."""
    return np.clip(np.rint(np.asarray(jnd, np.float64) * scale), 0, 255).astype(np.uint8)
