"""images.py: every format and mode rule, limits, hashing, and that inputs are never touched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.errors import InputError


def _u8(seed=0, h=40, w=56):
    return images.to_uint8(natural_image(h, w, seed))


@pytest.mark.parametrize("fmt,suffix,lossless", [("PNG", ".png", True), ("BMP", ".bmp", True),
                                                   ("TIFF", ".tif", True), ("WEBP", ".webp", False),
                                                   ("JPEG", ".jpg", False)])
def test_formats_decode_to_same_pixels(tmp_path, fmt, suffix, lossless):
    arr = _u8()
    p = tmp_path / f"x{suffix}"
    Image.fromarray(arr).save(p, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    im = images.load_image(p)
    assert im.pixels.dtype == np.float32 and im.pixels.shape == (40, 56, 3)
    assert im.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    err = np.abs(im.pixels * 255 - arr).max()
    assert err < 0.51 if lossless else err < 40


def test_exif_orientation_applied(tmp_path):
    arr = _u8(h=30, w=50)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif.tobytes(), quality=95)
    im = images.load_image(p)
    assert im.pixels.shape[:2] == (50, 30)
    assert any("EXIF orientation 6" in s for s in im.steps)


def test_palette_and_grey_and_16bit(tmp_path):
    arr = _u8()
    pal = Image.fromarray(arr).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    im = images.load_image(tmp_path / "p.png")
    assert im.pixels.shape == (40, 56, 3) and "palette expanded" in im.steps
    expected = np.asarray(pal.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(im.pixels, expected, atol=1e-6)

    g16 = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    im16 = images.load_image(tmp_path / "g16.png")
    assert im16.bit_depth == 16
    np.testing.assert_allclose(im16.pixels[..., 0], g16 / 65535.0, atol=1e-6)
    # 16-bit precision kept: more distinct levels than 8 bits could hold
    assert len(np.unique(im16.pixels[..., 0])) > 256


def test_alpha_rules(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    im = images.load_image(tmp_path / "opaque.png")
    assert "opaque alpha dropped" in im.steps
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "half.png")
    im = images.load_image(tmp_path / "half.png")
    assert np.allclose(im.pixels[:10], 1.0)  # transparent over white
    assert np.allclose(im.pixels[10:, :, 0], 200 / 255)
    with pytest.raises(InputError, match="transparent"):
        images.load_image(tmp_path / "half.png", alpha="refuse")


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(InputError, match="missing.png: no such file"):
        images.load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="notes.png: not a recognised image"):
        images.load_image(tmp_path / "notes.png")
    data = images.encode(_u8(h=200, w=200), "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg: corrupt or truncated"):
        images.load_image(tmp_path / "cut.jpg")
    with pytest.raises(InputError, match="folder"):
        images.load_image(tmp_path)


def test_pixel_limit_refuses_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(_u8(h=100, w=100)).save(tmp_path / "big.png")
    monkeypatch.setenv("FPX_MAX_PIXELS", "5000")
    with pytest.raises(InputError, match="over the limit"):
        images.load_image(tmp_path / "big.png")


def test_every_reader_refuses_an_image_over_the_limit_with_one_message(tmp_path, monkeypatch):
    """decode, the metadata probe (fpx triage) and the header reader (fpx detect) name the same fpx limit,
    never Pillow's own."""
    Image.fromarray(_u8(h=100, w=100)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    monkeypatch.setenv("FPX_MAX_PIXELS", "5000")
    want = "over the limit of 5000 pixels (FPX_MAX_PIXELS); refused as a possible decompression bomb"
    for read in (lambda: images.load_image(tmp_path / "big.png"), lambda: images.probe(data, str(tmp_path / "big.png")),
                 lambda: images.header(tmp_path / "big.png")):
        with pytest.raises(InputError) as ei:
            read()
        assert want in str(ei.value) and "big.png: image is" in str(ei.value)


def test_inputs_never_modified_and_save_refuses_overwrite(tmp_path):
    p = tmp_path / "in.png"
    Image.fromarray(_u8()).save(p)
    before = p.read_bytes()
    im = images.load_image(p)
    im.pixels[:] = 0
    assert p.read_bytes() == before
    from fingerprint_cli.errors import UsageError

    with pytest.raises(UsageError, match="refusing to write over the input"):
        images.save_png(im.pixels, p, inputs=[p])
    assert p.read_bytes() == before


def test_save_png_roundtrip_and_atomic(tmp_path):
    arr = natural_image(32, 32)
    sha = images.save_png(arr, tmp_path / "o.png")
    back = images.load_image(tmp_path / "o.png")
    assert back.sha256 == sha
    np.testing.assert_allclose(back.pixels, images.to_uint8(arr) / 255.0, atol=1e-7)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_list_images_sorted_and_filtered(tmp_path):
    for n in ["b.png", "a.JPG", "c.txt", ".hidden.png"]:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in images.list_images(tmp_path)] == ["a.JPG", "b.png"]
    with pytest.raises(InputError):
        images.list_images(tmp_path / "nope")


def test_resize_short_side_sets_the_short_side_and_keeps_the_aspect():
    x = np.random.default_rng(3).random((321, 481, 3)).astype(np.float32)
    y = images.resize_short_side(x, 256, kernel="lanczos")
    assert y.shape == (256, 384, 3) and y.min() >= 0 and y.max() <= 1
    assert np.array_equal(y, np.clip(images.resize(x, 256, 384, kernel="lanczos"), 0, 1))
    assert images.resize_short_side(x.transpose(1, 0, 2), 128).shape == (192, 128, 3)
