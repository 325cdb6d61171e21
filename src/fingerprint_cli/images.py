"""Every image read and write in fpx goes through this module.

Reading rules (documented in README "Images"):

* formats: PNG, JPEG, WebP, TIFF, BMP (anything Pillow decodes; GIF takes its first frame);
* the file is read once into memory, hashed (sha256 of the bytes on disk) and decoded from those
  same bytes, so the hash always names what was analysed; the file itself is never modified;
* EXIF orientation is applied (the pixels are turned the way a viewer shows them);
* palette images are expanded; 1-bit, grey and CMYK images become RGB;
* 16-bit images keep their precision (scaled by 1/65535), 8-bit by 1/255 — arrays are float32 in [0, 1];
* alpha: a fully opaque alpha channel is dropped; any transparent pixel is composited over white
  (``alpha="composite"``, the default, recorded as a preprocessing step) or refused (``alpha="refuse"``);
* a pixel-count limit (``FPX_MAX_PIXELS``, default 100 megapixels) refuses decompression bombs before
  decoding; truncated or non-image files raise :class:`InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from fingerprint_cli import atomic
from fingerprint_cli.errors import InputError

ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
DEFAULT_MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    value = os.environ.get("FPX_MAX_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class LoadedImage:
    """A decoded image: ``pixels`` is float32, shape (H, W, 3), values in [0, 1]."""

    path: str
    sha256: str
    pixels: np.ndarray
    format: str | None
    mode: str
    bit_depth: int
    steps: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "width": self.width, "height": self.height,
                "format": self.format, "mode": self.mode, "bit_depth": self.bit_depth}


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a folder, not an image file", str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", str(path)) from exc


def _to_float_rgb(im: Image.Image, alpha: str, steps: list[str], path: str) -> tuple[np.ndarray, int]:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        steps.append("palette expanded")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        depth = 16
        scale = 65535.0
        arr = np.clip(arr / scale, 0.0, 1.0)
        rgb = np.repeat(arr[..., None], 3, axis=2)
        steps.append("16-bit grey scaled by 1/65535 to RGB")
        return rgb.astype(np.float32), depth
    if mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0)
        steps.append("float grey clipped to [0,1] to RGB")
        return np.repeat(arr[..., None], 3, axis=2).astype(np.float32), 32
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
        if mode != "RGBX":
            steps.append(f"{mode} converted to RGB")
    elif mode == "LA" or mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if "A" in mode else "RGB")
            steps.append(f"{mode} converted to {im.mode}")
        except Exception as exc:  # pragma: no cover - exotic modes
            raise InputError(f"unsupported image mode {mode}", path) from exc
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if im.mode == "RGBA":
        a = arr[..., 3:4]
        rgb = arr[..., :3]
        if np.all(a >= 1.0):
            steps.append("opaque alpha dropped")
        elif alpha == "refuse":
            raise InputError("has transparent pixels and --alpha refuse was given", path)
        else:
            rgb = rgb * a + (1.0 - a) * 1.0
            steps.append("alpha composited over white")
        arr = rgb
    return np.ascontiguousarray(arr[..., :3], dtype=np.float32), 8


def decode(data: bytes, path: str, *, alpha: str = "composite", limit: int | None = None) -> LoadedImage:
    """Decode image bytes (already read from ``path``) following the module's rules."""
    limit = max_pixels() if limit is None else limit
    steps: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > limit:
                raise InputError(f"image is {w}x{h} = {w * h} pixels, over the limit of {limit} "
                                 "(FPX_MAX_PIXELS)", path)
            fmt = im.format
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
                steps.append("first frame of a multi-frame file")
            transposed = ImageOps.exif_transpose(im)
            if transposed is not None and transposed is not im:
                orientation = im.getexif().get(0x0112, 1)
                if orientation not in (None, 1):
                    steps.append(f"EXIF orientation {orientation} applied")
                im = transposed
            original_mode = im.mode
            pixels, depth = _to_float_rgb(im, alpha, steps, path)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError("not a recognised image file" if isinstance(exc, UnidentifiedImageError)
                         else "refused as a possible decompression bomb", path) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"corrupt or truncated image ({reason})", path) from exc
    return LoadedImage(path=path, sha256=sha256_bytes(data), pixels=pixels, format=fmt,
                       mode=original_mode, bit_depth=depth, steps=steps)


def load_image(path: str | os.PathLike, *, alpha: str = "composite", limit: int | None = None) -> LoadedImage:
    """Read, hash and decode one image file. Raises :class:`InputError` naming the file on failure."""
    p = Path(path)
    return decode(_read_bytes(p), str(path), alpha=alpha, limit=limit)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 1] to uint8 (round half to even, clipped)."""
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def resize(pixels: np.ndarray, height: int, width: int, box: tuple[float, float, float, float] | None = None
           ) -> np.ndarray:
    """Bicubic resize of a float (H, W, C) image, antialiased when shrinking (Pillow's filter).

    Each channel is resampled in 32-bit float (no 8-bit rounding); output is not clipped. ``box`` = (left,
    upper, right, lower) in source pixels (floats) resamples only that region to (height, width), reading the
    filter's support from the whole image — so a window of a resized image costs only the window.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if box is None and pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
                        .resize((width, height), Image.BICUBIC, box=box)) for c in range(pixels.shape[2])]
    return np.stack(chans, axis=2).astype(np.float32)


def save_png(pixels: np.ndarray, path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (),
             bits: int = 8) -> str:
    """Write ``pixels`` (float in [0,1] or uint8/uint16) losslessly as PNG, atomically.

    Refuses to write over any path in ``inputs``. Returns the sha256 of the written file.
    """
    atomic.refuse_overwrite_of_inputs(path, inputs)
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 and bits == 8:
        arr = to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = buf.getvalue()
    atomic.write_bytes(path, data)
    return sha256_bytes(data)


def encode(pixels: np.ndarray, fmt: str, **params) -> bytes:
    """Encode an image to bytes in ``fmt`` (e.g. JPEG with quality=85) — for test corpora and benchmarks."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **params)
    return buf.getvalue()


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix), sorted by path. Raises InputError if not a folder."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError("is not a folder", str(d))
    it: Iterable[Path] = d.rglob("*") if recursive else d.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))
