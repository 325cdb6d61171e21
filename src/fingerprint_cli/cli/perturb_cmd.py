"""``fpx perturb``: protect clean images with a content-adaptive sub-JND perturbation (or write JND maps);
:func:`fingerprint_cli.api.perturb`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli import api
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError
from fingerprint_cli.anchored.perturb import FEATURE_DIRECTIONS, METHODS, TABLE_COLUMNS, plan_outputs  # noqa: F401 - kept importable

ORDER = 10

Method = Enum("Method", {m: m for m in METHODS}, type=str)


def perturb_command(
    inputs: List[str] = typer.Argument(..., help="clean image(s) or folders of them"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="protected PNG (one input) or output folder (several inputs); "
                                            "default IMAGE_protected.png beside the input"),
    method: Method = typer.Option(Method("keyed"), "--method", "-m", help="keyed (no model) | adversarial (encoder)"),
    strength: float = typer.Option(0.3, "--strength", "-a",
                                   help="alpha: every pixel stays within alpha x JND (0.2 .. 2)"),
    jnd_model: str = typer.Option("chou-li", "--jnd", help="JND model: chou-li | namm"),
    key: Optional[str] = typer.Option(None, "--key", envvar="FPX_PERTURB_KEY",
                                      help="secret for the keyed pattern (or env FPX_PERTURB_KEY); "
                                           "default: a fresh random key. Only its id is recorded"),
    psnr_floor: float = typer.Option(40.0, "--psnr-floor",
                                     help="scale delta down when needed so PSNR stays >= this (dB; 0 = off)"),
    cell: int = typer.Option(2, "--cell", min=1, max=16, help="keyed pattern cell size in pixels"),
    steps: int = typer.Option(10, "--steps", min=1, help="adversarial: projected gradient steps"),
    seed: int = typer.Option(0, "--seed", help="adversarial: seed of the random start"),
    encoder: str = typer.Option("dinov2-vitb14", "--encoder", help="adversarial: encoder (as fpx score)"),
    resolution: Optional[int] = typer.Option(None, "--resolution",
                                             help="adversarial: encoder input size (multiple of 14)"),
    jnd_map: Optional[Path] = typer.Option(None, "--jnd-map",
                                           help="also write the JND map as a grey PNG (grey = 8 x JND "
                                                "levels); without -o only the map is written"),
    records: Optional[Path] = typer.Option(None, "--records",
                                           help="write the result records to this file instead of stdout"),
    fmt: Optional[common.RecordFormat] = common.RecordFormatOpt,
    resume: bool = typer.Option(False, "--resume",
                                help="keep records already in --records FILE and skip their images"),
    device: str = common.DeviceOpt,
    quiet: bool = common.QuietOpt,
) -> None:
    """Protect clean images with an invisible perturbation bounded by alpha x JND on every pixel.

    Writes OUT.png (lossless) and OUT.png.json (sidecar: method, alpha, JND model, key id or seed,
    encoder, sha256 of input and output, PSNR, SSIM, mean/max |delta|/JND). Later,
    `fpx score CLEAN SUSPECT --perturbed OUT.png` measures survival and detection.

    Examples: fpx perturb cat.png -o cat_protected.png --key "$SECRET";
    fpx perturb photos/ -o protected/ --jnd namm; fpx perturb cat.png --jnd-map cat_jnd.png;
    fpx perturb cat.png -o cat_adv.png --method adversarial --steps 20
    """
    try:
        results = api.perturb(inputs, out=out, method=common.value(method), strength=strength, jnd_model=jnd_model, key=key,
                              psnr_floor=psnr_floor, cell=cell, steps=steps, seed=seed, encoder=encoder,
                              resolution=resolution, jnd_map=jnd_map, records=records, fmt=common.value(fmt),
                              resume=resume, device=device, quiet=quiet, stdout=True)
    except FpxError as exc:
        common.die(exc)
    common.finish(results)


def register(app: typer.Typer) -> None:
    app.command("perturb")(perturb_command)
