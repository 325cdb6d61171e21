#!/usr/bin/env python
"""A synthetic demo inbox for ``fpx triage`` (the docs screenshot): every kind of evidence on images made here —
a C2PA-signed JPEG (throwaway offline test certificate), the same file edited after signing, XMP and PNG-chunk
declarations, EXIF camera tags, a planted-pattern "generator" with a calibrated fingerprint, bad files.

    python bench/triage_demo.py bench/out/triage-demo && fpx triage bench/out/triage-demo/inbox \\
        -F bench/out/triage-demo/planted.fpx.safetensors -o bench/out/triage-demo/t.jsonl \\
        --report bench/out/triage-demo/triage.html

Needs the test helpers (tests/test_triage.py) and pytest installed (the dev extra). No shared data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import natural_image  # noqa: E402
from PIL import Image, PngImagePlugin  # noqa: E402
from test_triage import AI_DST, S, c2pa_jpeg, planted, save, u8, xmp_packet  # noqa: E402

from fingerprint_cli import images  # noqa: E402
from fingerprint_cli.dif import detect, extract  # noqa: E402
from fingerprint_cli.dif.fingerprint import Fingerprint  # noqa: E402


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/triage-demo")
    inbox = root / "inbox"
    for d in ("fit/gen", "fit/real", "fit/cal", "inbox"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(12):
        images.save_png(np.clip(natural_image(S, S, seed=i) + planted(), 0, 1), root / "fit/gen" / f"g{i}.png")
        images.save_png(natural_image(S, S, seed=100 + i), root / "fit/real" / f"r{i}.png")
    for i in range(40):
        images.save_png(natural_image(S, S, seed=300 + i), root / "fit/cal" / f"c{i}.png")
    fp = extract.fit([str(p) for p in images.list_images(root / "fit/gen")],
                     [str(p) for p in images.list_images(root / "fit/real")], name="planted-gen",
                     method="average", crop=S, denoiser="gaussian", test_fraction=0.0)
    cal = detect.scores(fp, detect.correlations(fp, [str(p) for p in images.list_images(root / "fit/cal")]))
    Fingerprint(fp.name, fp.method, fp.pattern, dict(fp.meta, calibration={"fpr": 0.05, "scores": [
        float(s) for s in cal], "conditions": {"formats": ["PNG"]}})).save(root / "planted.fpx.safetensors")

    signed = c2pa_jpeg(11, AI_DST)
    (inbox / "press_photo_signed.jpg").write_bytes(signed)
    bad = bytearray(signed)
    bad[-200] ^= 0xFF
    (inbox / "press_photo_edited_after_signing.jpg").write_bytes(bytes(bad))
    save(u8(2, 64, 64), inbox / "upload_xmp.jpg", "JPEG", quality=88, xmp=xmp_packet(AI_DST, "ImageGen 4"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 6, Seed: 7, "
                                "Model: sdxl_base_1.0")
    save(u8(3, 64, 64), inbox / "forum_post.png", "PNG", pnginfo=info)
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Nikon", "D750"
    save(u8(4, 64, 64), inbox / "witness_camera.jpg", "JPEG", quality=93, exif=ex.tobytes())
    for i in range(2):
        images.save_png(np.clip(natural_image(S, S, seed=900 + i) + planted(), 0, 1), inbox / f"scraped_{i}.png")
    images.save_png(natural_image(S, S, seed=950), inbox / "scraped_2.png")
    (inbox / "readme.txt").write_text("case 2026-114\n")
    (inbox / "cut_short.png").write_bytes((inbox / "scraped_2.png").read_bytes()[:300])
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
