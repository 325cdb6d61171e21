"""Every image read and write in fpx goes through this module.

Reading rules (documented in README "Images"):

* formats: PNG, JPEG, WebP, TIFF, BMP (anything Pillow decodes; GIF takes its first frame);
* the file is read once into memory, hashed (sha256 of the bytes on disk) and decoded from those
  same bytes, so the hash always names what was analysed; the file itself is never modified;
* EXIF orientation is applied (the pixels are turned the way a viewer shows them);
* palette images are expanded; 1-bit, grey and CMYK images become RGB;
* 16-bit images keep their precision (scaled by 1/65535), 8-bit by 1/255 — arrays are float32 in [0, 1];
  16-bit RGB(A) TIFFs are decoded with tifffile to keep them; a 16-bit RGB(A) PNG is read at 8 bits (Pillow
  keeps the high byte) and the record says so (``bit_depth`` 8, ``source_bit_depth`` 16, a step); 32-bit
  integer images are scaled by 1/(2^32 - 1) and labelled 32-bit;
* non-finite pixel values (NaN, infinity: float TIFFs) are refused, naming the file;
* alpha: a fully opaque alpha channel is dropped; any transparent pixel is composited over white
  (``alpha="composite"``, the default, recorded as a preprocessing step) or refused (``alpha="refuse"``);
* a pixel-count limit (``FPX_MAX_PIXELS``, default 100 megapixels; Pillow's own bomb limit is set from it)
  refuses decompression bombs from the header, before decoding; truncated or non-image files raise
  :class:`InputError` naming the file;
* before anything is read the path is checked (:func:`check_file`): it must be a regular file (a FIFO,
  a device such as /dev/zero or a folder is refused without being opened) no larger than ``FPX_MAX_FILE_MB``
  (default 1024 MiB).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from fingerprint_cli import atomic
from fingerprint_cli.errors import InputError, UsageError

ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_FILE_MB = 1024


def _positive_int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        n = int(value.replace("_", ""))
    except ValueError:
        n = 0
    if n <= 0:
        raise UsageError(f"{name} must be a positive whole number, not {value!r}")
    return n


def max_pixels() -> int:
    """The pixel-count limit: ``FPX_MAX_PIXELS`` (a positive integer), else 100 megapixels."""
    return _positive_int_env("FPX_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def max_file_bytes() -> int:
    """The file-size limit for any input read whole: ``FPX_MAX_FILE_MB`` MiB (default 1024)."""
    return _positive_int_env("FPX_MAX_FILE_MB", DEFAULT_MAX_FILE_MB) * (1 << 20)


def _a(what: str) -> str:
    """``what`` with its indefinite article ("a file", "an image file")."""
    return f"a{'n' if what[0] in 'aeiou' else ''} {what}"


def _stat(p: str, what: str) -> os.stat_result:
    """``os.stat`` (links followed), an :class:`InputError` naming ``p`` when it fails."""
    import errno

    try:
        return os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("is a symbolic link loop", p) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputError("no such file", p) from exc
        raise InputError(f"cannot read {what} ({exc.strerror or exc})", p) from exc


def _refuse_non_regular(st: os.stat_result, p: str, what: str) -> None:
    """Refuse a folder, FIFO, socket or device (reading those can hang or never end) without opening it."""
    import stat

    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"is a folder, not {_a(what)}", p)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "not a regular file")
        raise InputError(f"is {kind}, not a regular {what}; refusing to read it", p)


def check_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> int:
    """Check that ``path`` is a regular file no larger than the limit, without opening it. Returns its size.

    Refused (:class:`InputError` naming the path): missing, a symbolic-link loop, a folder, a FIFO / socket /
    device (reading those can hang or never end), unreadable, or larger than ``max_bytes``
    (default :func:`max_file_bytes`).
    """
    p = str(path)
    st = _stat(p, what)
    _refuse_non_regular(st, p, what)
    limit = max_file_bytes() if max_bytes is None else max_bytes
    if st.st_size > limit:
        raise InputError(f"is {st.st_size / (1 << 20):.1f} MiB, over the {limit / (1 << 20):.0f} MiB limit for "
                         f"{_a(what)} (FPX_MAX_FILE_MB)", p)
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read {what} (permission denied)", p)
    return int(st.st_size)


def read_checked(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """:func:`check_file`, then read the file whole (never more than the limit, even if it grows)."""
    limit = max_file_bytes() if max_bytes is None else max_bytes
    check_file(path, what, limit)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.strerror or exc})", str(path)) from exc
    if len(data) > limit:
        raise InputError(f"grew past the {limit / (1 << 20):.0f} MiB limit while being read", str(path))
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file (streamed; a FIFO or device is refused by :func:`check_file` first)."""
    check_file(path, max_bytes=1 << 62)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def shape_property(attr: str, axis: int, doc: str) -> property:
    """A read-only property giving ``int(self.<attr>.shape[axis])`` (an image's height, a matrix's rows)."""

    def get(self) -> int:
        return int(getattr(self, attr).shape[axis])

    return property(get, doc=doc)


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
    source_bit_depth: int | None = None  # set when the file had more bits per sample than were kept

    height = shape_property("pixels", 0, "Rows of ``pixels``.")
    width = shape_property("pixels", 1, "Columns of ``pixels``.")

    def describe(self) -> dict:
        d = {"path": self.path, "sha256": self.sha256, "width": self.width, "height": self.height,
             "format": self.format, "mode": self.mode, "bit_depth": self.bit_depth}
        if self.source_bit_depth is not None:
            d["source_bit_depth"] = self.source_bit_depth
        return d


def _read_bytes(path: Path) -> bytes:
    return read_checked(path, "image file")


def _png_bit_depth(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None when ``data`` is not a PNG."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 26:
        return data[24], data[25]
    return None


def _tiff_samples(im: Image.Image) -> tuple[int, int, int]:
    """(bits per sample, samples per pixel, sample format) of a TIFF frame (0s when unknown)."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return 0, 0, 0
    bits = tags.get(258, 0)
    bits = int(bits[0] if isinstance(bits, tuple) and bits else bits or 0)
    fmt = tags.get(339, 1)
    fmt = int(fmt[0] if isinstance(fmt, tuple) and fmt else fmt or 1)
    return bits, int(tags.get(277, 1) or 1), fmt


_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1],
           8: lambda a: np.rot90(a, 1)}


def _drop_or_composite_alpha(x: np.ndarray, alpha: str, steps: list[str], path: str) -> np.ndarray:
    """RGB of an RGBA float array: an opaque alpha is dropped, transparency composited over white (or refused
    when ``alpha == "refuse"``)."""
    a = x[..., 3:4]
    rgb = x[..., :3]
    if np.all(a >= 1.0):
        steps.append("opaque alpha dropped")
        return rgb
    if alpha == "refuse":
        raise InputError("has transparent pixels and --alpha refuse was given", path)
    steps.append("alpha composited over white")
    return rgb * a + (1.0 - a)


def _tiff_high_depth(data: bytes, im: Image.Image, path: str, steps: list[str]) -> tuple[np.ndarray, int] | None:
    """A 16-bit RGB(A) TIFF decoded with tifffile (Pillow would keep 8 bits); None when not one."""
    bits, spp, fmt = _tiff_samples(im)
    if im.format != "TIFF" or bits != 16 or spp not in (3, 4) or fmt != 1:
        return None
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(io.BytesIO(data), key=0))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt file
        raise InputError(f"corrupt 16-bit TIFF ({type(exc).__name__})", path) from exc
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint16:
        return None
    orientation = im.getexif().get(0x0112, 1)
    if orientation in _ORIENT:
        arr = _ORIENT[orientation](arr)
        if f"EXIF orientation {orientation} applied" not in steps:
            steps.append(f"EXIF orientation {orientation} applied")
    x = arr.astype(np.float32) / 65535.0
    steps.append("16-bit RGB kept (scaled by 1/65535)")
    if x.shape[2] == 4:  # this path never refuses transparency: it is composited whatever ``alpha`` says
        x = _drop_or_composite_alpha(x, "composite", steps, path)
    return np.ascontiguousarray(x, dtype=np.float32), 16


_INT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _int_grey(im: Image.Image, tiff: tuple[int, int, int], steps: list[str]) -> tuple[np.ndarray, int]:
    """16- and 32-bit integer grey (modes ``I;16*`` and ``I``) scaled to [0, 1] and repeated to RGB."""
    arr = np.asarray(im)
    bits, _, fmt = tiff
    if im.mode == "I" and bits == 32:
        arr = arr.astype(np.int64)
        if fmt != 2:  # unsigned 32-bit samples arrive as int32: undo the wrap-around
            arr = np.where(arr < 0, arr + (1 << 32), arr)
            scale, depth, what = float(2 ** 32 - 1), 32, "32-bit unsigned grey scaled by 1/(2^32 - 1)"
        else:
            arr = arr - int(arr.min()) if arr.min() < 0 else arr
            scale, depth, what = float(2 ** 31 - 1), 32, "32-bit signed grey scaled by 1/(2^31 - 1)"
    else:
        scale, depth, what = 65535.0, 16, "16-bit grey scaled by 1/65535"
    arr = np.clip(arr.astype(np.float64) / scale, 0.0, 1.0)
    rgb = np.repeat(arr[..., None], 3, axis=2)
    steps.append(f"{what} to RGB")
    return rgb.astype(np.float32), depth


def _float_grey(im: Image.Image, steps: list[str], path: str) -> tuple[np.ndarray, int]:
    """32-bit float grey (mode ``F``): non-finite values refused, the rest clipped to [0, 1], repeated to RGB."""
    arr = np.asarray(im, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise InputError(f"has {bad} non-finite (NaN or infinite) pixel value(s); refusing it", path)
    arr = np.clip(arr, 0.0, 1.0)
    steps.append("float grey clipped to [0,1] to RGB")
    return np.repeat(arr[..., None], 3, axis=2).astype(np.float32), 32


def _to_rgb_or_rgba(im: Image.Image, steps: list[str], path: str) -> Image.Image:
    """An 8-bit image in mode RGB or RGBA (grey, CMYK, YCbCr, LAB, HSV, RGBX, LA, PA and the rest converted)."""
    mode = im.mode
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
    return im


def _to_float_rgb(im: Image.Image, alpha: str, steps: list[str], path: str,
                  tiff: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, int]:
    """Pillow image → (float32 (H, W, 3) in [0, 1], bit depth kept), appending what was done to ``steps``."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        steps.append("palette expanded")
    if im.mode in _INT_GREY_MODES:
        return _int_grey(im, tiff, steps)
    if im.mode == "F":
        return _float_grey(im, steps, path)
    im = _to_rgb_or_rgba(im, steps, path)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if im.mode == "RGBA":
        arr = _drop_or_composite_alpha(arr, alpha, steps, path)
    return np.ascontiguousarray(arr[..., :3], dtype=np.float32), 8


def too_many_pixels(path: str, limit: int, size: tuple[int, int] | None = None) -> InputError:
    """The one refusal of an image over ``limit`` pixels (``size`` = (w, h) when the header was read)."""
    dims = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels, " if size else ""
    return InputError(f"image is {dims}over the limit of {limit} pixels (FPX_MAX_PIXELS); refused as a possible "
                      "decompression bomb", path)


def _open_within_limit(data: bytes, path: str, limit: int) -> Image.Image:
    """Open (not yet decode) image bytes, refusing from the header an image over ``limit`` pixels."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if w * h > limit:
        raise too_many_pixels(path, limit, (w, h))
    return im


def _upright_first_frame(im: Image.Image, steps: list[str]) -> Image.Image:
    """The first frame, turned by its EXIF orientation (a copy; ``im`` keeps its format's tags)."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
        steps.append("first frame of a multi-frame file")
    transposed = ImageOps.exif_transpose(im)
    if transposed is None or transposed is im:
        return im
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        steps.append(f"EXIF orientation {orientation} applied")
    return transposed


def _bits_lost(data: bytes, fmt: str | None, tiff: tuple[int, int, int], depth: int, steps: list[str]) -> int | None:
    """The file's bits per sample when an RGB image was read at 8 bits from more (noted in ``steps``), else None."""
    source_depth = None
    png = _png_bit_depth(data) if fmt == "PNG" else None
    if png is not None and png[0] == 16 and png[1] in (2, 6) and depth == 8:
        source_depth = 16
        steps.append("16-bit RGB PNG read at 8 bits (the decoder keeps the high byte of each sample)")
    bits, spp, _ = tiff
    if bits > 8 and spp in (3, 4) and depth == 8:
        source_depth = bits
        steps.append(f"{bits}-bit RGB TIFF read at 8 bits")
    return source_depth


def _decode_pixels(data: bytes, path: str, alpha: str, limit: int) -> LoadedImage:
    """The decoding proper (Pillow, or tifffile for 16-bit RGB TIFF); decoder exceptions pass through."""
    steps: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        raw = _open_within_limit(data, path, limit)  # the frame as decoded, with its format's tags
        fmt = raw.format
        raw.load()
        im = _upright_first_frame(raw, steps)
        tiff = _tiff_samples(raw) if fmt == "TIFF" else (0, 0, 0)
        high = _tiff_high_depth(data, raw, path, steps) if tiff[0] == 16 else None
        source_depth = None
        if high is not None:
            pixels, depth = high
        else:
            pixels, depth = _to_float_rgb(im, alpha, steps, path, tiff)
            source_depth = _bits_lost(data, fmt, tiff, depth, steps)
    return LoadedImage(path=path, sha256="", pixels=pixels, format=fmt, mode=im.mode, bit_depth=depth,
                       steps=steps, source_bit_depth=source_depth)


def _decode_error(exc: Exception, path: str, limit: int) -> InputError:
    """The one-line :class:`InputError` for an exception a decoder raised on a malformed file."""
    if isinstance(exc, UnidentifiedImageError):
        return InputError("not a recognised image file", path)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return too_many_pixels(path, limit)
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return InputError(f"corrupt or truncated image ({reason})", path)
    if isinstance(exc, MemoryError):
        return InputError("too large to decode in the memory available", path)
    reason = str(exc).splitlines()[0][:120] if str(exc) else ""
    return InputError(f"cannot be decoded ({type(exc).__name__}{': ' + reason if reason else ''})", path)


def decode(data: bytes, path: str, *, alpha: str = "composite", limit: int | None = None) -> LoadedImage:
    """Decode image bytes (already read from ``path``) following the module's rules."""
    limit = max_pixels() if limit is None else limit
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check is then the documented limit, not its 89.5 MP
    if not data:
        raise InputError("is an empty file, not an image", path)
    try:
        img = _decode_pixels(data, path, alpha, limit)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed file can make any decoder fail; it is still bad input
        raise _decode_error(exc, path, limit) from exc
    if img.pixels.shape[0] < 1 or img.pixels.shape[1] < 1:
        raise InputError("has no pixels", path)
    bad = int(np.count_nonzero(~np.isfinite(img.pixels)))
    if bad:
        raise InputError(f"has {bad} non-finite (NaN or infinite) pixel value(s); refusing it", path)
    img.sha256 = sha256_bytes(data)
    return img


def load_image(path: str | os.PathLike, *, alpha: str = "composite", limit: int | None = None) -> LoadedImage:
    """Read, hash and decode one image file. Raises :class:`InputError` naming the file on failure."""
    p = Path(path)
    return decode(_read_bytes(p), str(path), alpha=alpha, limit=limit)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 1] to uint8 (round half to even, clipped)."""
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def luma(pixels: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Rec. 601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` of a float (H, W, 3) RGB image, computed in ``dtype``."""
    x = np.asarray(pixels, dtype=dtype)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


#: the resampling kernels :func:`resize` offers (Pillow's filters, antialiased when shrinking)
RESAMPLING = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def resize(pixels: np.ndarray, height: int, width: int, box: tuple[float, float, float, float] | None = None,
           kernel: str = "bicubic") -> np.ndarray:
    """Resize of a float (H, W, C) image with ``kernel`` (:data:`RESAMPLING`; bicubic by default), antialiased
    when shrinking (Pillow's filter).

    Each channel is resampled in 32-bit float (no 8-bit rounding); output is not clipped. ``box`` = (left,
    upper, right, lower) in source pixels (floats) resamples only that region to (height, width), reading the
    filter's support from the whole image — so a window of a resized image costs only the window.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if box is None and pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
                        .resize((width, height), RESAMPLING[kernel], box=box)) for c in range(pixels.shape[2])]
    return np.stack(chans, axis=2).astype(np.float32)


def resize_long_side(pixels: np.ndarray, side: float, min_side: int = 8, kernel: str = "bicubic") -> np.ndarray:
    """:func:`resize` so that the long side is ``side`` px (each side at least ``min_side``), clipped to [0, 1];
    an image already at that size is only clipped."""
    h, w = pixels.shape[:2]
    return _resize_by(pixels, side / max(h, w), min_side, kernel)


def resize_short_side(pixels: np.ndarray, side: int, min_side: int = 1, kernel: str = "bicubic") -> np.ndarray:
    """:func:`resize` by one factor so that the short side is ``side`` px (the other at least ``min_side``),
    clipped to [0, 1]."""
    h, w = pixels.shape[:2]
    return _resize_by(pixels, side / min(h, w), min_side, kernel)


def _resize_by(pixels: np.ndarray, s: float, min_side: int, kernel: str) -> np.ndarray:
    """:func:`resize` of both sides by the factor ``s`` (rounded, each at least ``min_side``), clipped to [0, 1]."""
    h, w = pixels.shape[:2]
    return np.clip(resize(pixels, max(min_side, round(h * s)), max(min_side, round(w * s)), kernel=kernel), 0, 1)


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
        if not os.path.lexists(d):
            raise InputError("no such folder", str(d))
        raise InputError("is not a folder", str(d))
    it: Iterable[Path] = d.rglob("*") if recursive else d.iterdir()
    out = []
    for p in it:
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            if p.is_dir():
                continue
        except OSError:
            pass
        # files, and also FIFOs, devices, broken links and link loops with an image suffix: listed, so that
        # reading them reports the problem as a failed item instead of silently skipping it
        out.append(p)
    return sorted(out)


# ---------------------------------------------------------------- read-only metadata probe (fpx triage)
@dataclass
class Probe:
    """What the container says about an image, without decoding its pixels (``fpx triage``).

    ``text``: PNG text chunks (tEXt/iTXt/zTXt) and other string ``info`` entries; ``xmp``: Pillow's
    ``getxmp()`` dictionary (parsed with defusedxml; ``{}`` when there is no packet); ``exif``: tag name →
    value of IFD0 and the Exif sub-IFD (strings, numbers); ``quantization``: JPEG tables in natural order
    (``{}`` for other formats); ``xmp_error``: why the XMP packet could not be parsed, if it could not.
    """

    format: str | None
    width: int
    height: int
    mode: str
    n_frames: int
    text: dict[str, str] = field(default_factory=dict)
    xmp: dict = field(default_factory=dict)
    xmp_error: str | None = None
    exif: dict[str, object] = field(default_factory=dict)
    quantization: dict[int, list[int]] = field(default_factory=dict)


def _exif_value(v: object) -> object:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v.strip("\x00 ")[:500]
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)  # IFDRational
    except (TypeError, ValueError):
        return str(v)[:200]


_PNG_TEXT_LIMIT = 1 << 20  # bytes of one decompressed text chunk kept (a zTXt/iTXt bomb is cut there)


def _png_text_chunks(data: bytes) -> tuple[dict[str, str], bytes | None]:
    """tEXt / zTXt / iTXt chunks of a PNG and its eXIf chunk, wherever they are (also after the image data),
    read from the chunk headers without decoding the image — Pillow's ``PngImageFile.text`` and ``getexif`` decode
    the whole image to find late chunks. Compressed text is inflated up to 1 MiB."""
    import zlib

    def inflate(b: bytes) -> bytes:
        d = zlib.decompressobj()
        try:
            return d.decompress(b, _PNG_TEXT_LIMIT)
        except zlib.error:
            return b""

    out: dict[str, str] = {}
    exif = None
    pos = 8
    while pos + 12 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IEND" or len(body) < n:
            break
        if kind == b"eXIf":
            exif = body
            continue
        try:
            if kind == b"tEXt":
                k, _, v = body.partition(b"\0")
                out[k.decode("latin-1")] = v.decode("latin-1")
            elif kind == b"zTXt":
                k, _, v = body.partition(b"\0")
                out[k.decode("latin-1")] = inflate(v[1:]).decode("latin-1")
            elif kind == b"iTXt":
                k, _, rest = body.partition(b"\0")
                compressed, rest = rest[:1] == b"\1", rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _tkey, _, text = rest.partition(b"\0")
                out[k.decode("latin-1")] = (inflate(text) if compressed else text).decode("utf-8", "replace")
        except (UnicodeDecodeError, ValueError):
            continue
    return out, exif


def _probe_text(im: Image.Image, data: bytes) -> tuple[dict[str, str], bytes | None]:
    """Text metadata (PNG chunks wherever they are, then Pillow's string ``info``), each cut at 200,000
    characters, and a PNG's eXIf chunk."""
    png_exif = None
    text: dict[str, str] = {}
    if im.format == "PNG":
        chunks, png_exif = _png_text_chunks(data)
        text = {k: v[:200_000] for k, v in chunks.items()}
    for k, v in im.info.items():
        if isinstance(v, str) and k not in text:
            text[str(k)] = v[:200_000]
    return text, png_exif


def _probe_xmp(im: Image.Image) -> tuple[dict, str | None]:
    """(the XMP packet as Pillow's ``getxmp()`` parses it, why it could not be parsed or None)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns (instead of failing) when defusedxml is missing
            return (im.getxmp() if hasattr(im, "getxmp") else {}) or {}, None
    except Exception as exc:  # noqa: BLE001 - a malformed packet is a finding, not a crash
        return {}, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def _probe_exif(im: Image.Image, png_exif: bytes | None) -> dict[str, object]:
    """EXIF tag name → value of IFD0 and the Exif sub-IFD (``{}`` when there is none or it is unreadable)."""
    from PIL import ExifTags

    exif: dict[str, object] = {}
    try:
        if im.format == "PNG":
            ex = Image.Exif()
            if png_exif:
                ex.load(png_exif)
        else:
            ex = im.getexif()
        for tag, v in [*ex.items(), *ex.get_ifd(0x8769).items()]:
            exif[ExifTags.TAGS.get(tag, str(tag))] = _exif_value(v)
        exif.pop("ExifOffset", None)
    except Exception:  # noqa: BLE001 - unreadable EXIF reads as none
        exif = {}
    return exif


def probe(data: bytes, path: str) -> Probe:
    """Read an image's header and metadata from its bytes (never its pixels). InputError when Pillow cannot
    identify the file."""
    limit = max_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check is then the documented limit (as in decode)
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > limit:
            raise too_many_pixels(path, limit, (w, h))
        text, png_exif = _probe_text(im, data)
        xmp, xmp_error = _probe_xmp(im)
        exif = _probe_exif(im, png_exif)
        q = {int(k): [int(x) for x in v] for k, v in (getattr(im, "quantization", None) or {}).items()}
        return Probe(format=im.format, width=int(w), height=int(h), mode=im.mode,
                     n_frames=int(getattr(im, "n_frames", 1) or 1), text=text, xmp=xmp, xmp_error=xmp_error,
                     exif=exif, quantization=q)
    except UnidentifiedImageError as exc:
        raise InputError("not a recognised image file", path) from exc
    except Image.DecompressionBombError as exc:
        raise too_many_pixels(path, limit) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct_error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"corrupt or truncated image header ({reason})", path) from exc


def jpeg_luma(data: bytes, path: str) -> np.ndarray:
    """The decoded luma (Y) plane of a JPEG as float64 (H, W), straight from the decoder (no RGB round trip)."""
    try:
        im = Image.open(io.BytesIO(data))
        if im.format != "JPEG":
            raise InputError("is not a JPEG", path)
        im.draft("L", im.size)
        if im.mode != "L":
            im = im.convert("L")
        return np.asarray(im, dtype=np.float64)
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"corrupt or truncated image ({str(exc).splitlines()[0] if str(exc) else exc})",
                         path) from exc


def header(path: str | os.PathLike) -> dict:
    """Header facts of an image file without reading its body (``fpx detect``'s input condition; :func:`probe`
    is the metadata reader of ``fpx triage``): ``format``, ``width``, ``height`` (as a viewer
    shows it: EXIF orientations 5–8 swap them) and, for JPEG, ``quantization`` — the quantisation tables as
    Pillow reads them ({table id: 64 values in natural row-major order}). InputError naming the file when it is
    not a readable image."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file" if not p.exists() else "is not a regular file", str(p))
    try:
        with Image.open(p) as im:
            w, h = im.size
            try:
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
            except Exception:  # a broken EXIF block does not change the size
                pass
            if w * h > max_pixels():
                raise too_many_pixels(str(p), max_pixels(), (w, h))
            q = getattr(im, "quantization", None) if im.format == "JPEG" else None
            return {"format": im.format, "width": int(w), "height": int(h),
                    "quantization": {int(k): [int(x) for x in v] for k, v in q.items()} if q else None}
    except Image.DecompressionBombError as exc:
        raise too_many_pixels(str(p), max_pixels()) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError("not a recognised image file", str(p)) from exc
