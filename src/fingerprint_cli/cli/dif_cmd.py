"""``fpx dif-extract``, ``fpx detect`` and ``fpx dif-calibrate``: Deep Image Fingerprints of generators
(:func:`fingerprint_cli.api.extract`, :func:`~fingerprint_cli.api.detect`, :func:`~fingerprint_cli.api.dif_calibrate`;
the library behind them is ``fingerprint_cli.dif``, imported when a command runs, so torch stays out of ``fpx --help``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli import api
from fingerprint_cli.cli import common
from fingerprint_cli.dif import augment  # no torch: the training profiles are plain data
from fingerprint_cli.dif import restore  # no torch either
from fingerprint_cli.errors import FpxError

ORDER = 50

# closed option sets (tests/test_dif_conditions.py checks them against fingerprint_cli.dif: METHODS, DTYPES)
Method = Enum("Method", {m: m for m in ("dif", "average", "spectral")}, type=str)
Dtype = Enum("Dtype", {d: d for d in ("float32", "float16")}, type=str)
RestoreMethod = Enum("RestoreMethod", {m: m for m in restore.METHODS}, type=str)
#: = fingerprint_cli.dif.condition.DEFAULT_RECOMPRESSIONS (tested), spelled here so `fpx --help` loads no torch
DEFAULT_CONDITIONS = "none,jpeg90,jpeg75,jpeg50,resize0.9"


def _conditions(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _profile(value: Optional[str]) -> Optional[str]:
    """--profile is one of the training profiles (refused by the parser, with the close names, before any work)."""
    if value is not None:
        try:
            augment.get_profile(value)
        except FpxError as exc:
            raise typer.BadParameter(exc.message) from exc
    return value



def dif_extract(
    generated: Path = typer.Option(..., "--generated", help="folder of the generator's images"),
    real: Path = typer.Option(..., "--real", help="folder of real photographs"),
    out: Path = typer.Option(..., "--out", "-o", help="fingerprint file to write (.fpx.safetensors)"),
    name: Optional[str] = typer.Option(None, "--name", help="generator name (default: --generated folder)"),
    n_images: Optional[int] = typer.Option(None, "--images", help="training images per class (default all)"),
    crop: int = typer.Option(256, "--crop", help="centre crop in pixels (multiple of 16)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="U-Net training epochs (default 30)"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, the U-Net input and its training"),
    method: Method = typer.Option("dif", "--method", help="dif | average (Marra 2018) | spectral"),
    denoiser: str = typer.Option("dncnn", "--denoiser", help="dncnn (bundled) | gaussian (no weights)"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.9,
                                        help="share of each class held out as the test split"),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="images per training step"),
    tolerance: int = typer.Option(1, "--tolerance", min=0, max=8,
                                  help="detection searches shifts up to this many pixels, cross-fitted (shift "
                                       "picked on one half of the image, ρ read on the other); 0 = the paper's "
                                       "plain ρ: best on aligned images, breaks on a 1-px shift"),
    profile: Optional[str] = typer.Option(None, "--profile", callback=_profile,
                                help="robust: both classes pass through random JPEG (q 60-100) and rescaling "
                                     "(0.5-1.5x) before their residuals, so the fingerprint survives "
                                     "recompression; robust-jpeg: each image as it is plus JPEG q 70-95 "
                                     "views, no rescaling; format-matched: every lossless image re-encoded as "
                                     "JPEG at the JPEG training images' quality (in fitting, calibration and "
                                     "detection); plain: the images as they are (the paper). "
                                     "Default: plain (see docs/dif.md)"),
    views: Optional[int] = typer.Option(None, "--views", min=1, max=8,
                                        help="augmented views per training image with --profile robust / robust-jpeg "
                                             "(default 2; each costs one residual per image, cached)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the fingerprint and its spectrum"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip scoring the held-out test split"),
    no_cache: bool = common.NoResidualCacheOpt,
    fpr: Optional[float] = typer.Option(None, "--fpr",
                                        help="calibrate the detection threshold at this false-positive rate "
                                             "on held-out real images (the real test split, or "
                                             "--calibration-real); recorded in the fingerprint"),
    calibration_real: Optional[Path] = typer.Option(None, "--calibration-real",
                                                    help="folder of held-out real images for --fpr"),
    conditions: str = typer.Option("none", "--conditions",
                                   help="with --fpr: the copies the stated rate must also hold on, comma-separated "
                                        "(none = as distributed only; e.g. " + DEFAULT_CONDITIONS + "; each costs "
                                        "one residual per calibration image; `fpx dif-calibrate` does it later)"),
    min_images: int = typer.Option(8, "--min-images",  # = dif.extract.DEFAULT_MIN_IMAGES (tested)
                                   help="fail when fewer usable images remain in a class (unusable ones are "
                                        "skipped with a warning)"),
    fmt: Optional[str] = common.FormatOpt,
    quiet: bool = common.QuietOpt,
) -> None:
    """Fit a generator's fingerprint from its images and real photos; writes a .fpx.safetensors artifact.

    Example: fpx dif-extract --generated ldm/ --real photos/ -o ldm.fpx.safetensors --plot ldm.png
    """
    try:
        records = api.extract(generated, real, out, name=name, n_images=n_images, crop=crop, epochs=epochs,
                              seed=seed, method=common.value(method), denoiser=denoiser, test_fraction=test_fraction,
                              batch_size=batch_size, tolerance=tolerance, profile=profile, views=views,
                              plot=plot,
                              evaluate=not no_eval, use_cache=not no_cache, fpr=fpr,
                              calibration_real=calibration_real, min_images=min_images,
                              conditions=_conditions(conditions), fmt=fmt, quiet=quiet, stdout=True)
    except FpxError as exc:
        common.die(exc)
    raise typer.Exit(records.exit_code)


def detect_cmd(
    args: List[str] = typer.Argument(..., help="[FINGERPRINT.fpx.safetensors ...] IMAGE|DIR ..."),
    fingerprints: List[Path] = typer.Option([], "--fingerprint", "-F",
                                            help="a fingerprint (repeatable; else the leading .safetensors "
                                                 "args; else the shipped library)"),
    fingerprint_dir: Optional[Path] = typer.Option(None, "--fingerprints",
                                                   help="a folder of fingerprints (other files are skipped "
                                                        "with a warning)"),
    margin: float = typer.Option(2.0, "--margin", min=0.0,
                                 help="with several claimants, the winner must lead the runner-up by this "
                                      "many score units (real-image standard deviations), else 'unknown'"),
    force: bool = typer.Option(False, "--force", help="use fingerprints whose seal or pinned sha256 does not "
                                                      "match (every record then says verified: false)"),
    no_cache: bool = common.NoResidualCacheOpt,
    fmt: Optional[str] = common.FormatOpt,
    output: Optional[Path] = common.OutputOpt,
    resume: bool = common.ResumeOpt,
    quiet: bool = common.QuietOpt,
    restore_scale: Optional[bool] = typer.Option(None, "--restore-scale/--no-restore-scale",
                                                 help="resample a resized suspect back to the fingerprint's "
                                                      "training scale where the fingerprint is calibrated for "
                                                      "its scale band (dif-calibrate --restore-scales); records "
                                                      "say scale_restored. Default: "
                                                      + ("on" if restore.DETECT_DEFAULT else "off")),
) -> None:
    """Detect generators' images with their fingerprints: one record per image with ρ, score, p-value.

    A calibrated fingerprint calls an image generated only when its conformal p-value against held-out real
    images is at most the fingerprint's stated false-positive rate. With several fingerprints the label is
    the claimant with the highest score when it leads the others by --margin, 'unknown' when several claim
    it without a clear winner, 'not-detected' when none does (no fingerprint detected it at its stated rate; the
    miss rate is not calibrated, so this is not evidence that the image is real) and 'unknown' when the image lies
    outside the conditions a fingerprint was calibrated on. Without any fingerprint argument the shipped library
    is used (`fpx models list`). Examples: fpx detect suspects/; fpx detect ldm.fpx.safetensors img.png;
    fpx detect -F ldm.fpx.safetensors -F dalle.fpx.safetensors img1.png img2.jpg --format csv
    """
    fp_paths = [str(p) for p in fingerprints]
    rest = list(args)
    if not fp_paths:  # the leading .safetensors arguments are the fingerprints
        while rest and rest[0].endswith(".safetensors"):
            fp_paths.append(rest.pop(0))
    try:
        records = api.detect(fp_paths, rest, fingerprint_dir=fingerprint_dir, margin=margin, force=force,
                             use_cache=not no_cache, output=output, fmt=fmt, resume=resume, quiet=quiet,
                             stdout=True, restore_scale=restore_scale)
    except FpxError as exc:
        common.die(exc)
    common.finish(records)


def dif_calibrate(
    fingerprint: Path = typer.Argument(..., help="the fingerprint to calibrate (.fpx.safetensors)"),
    real: List[Path] = typer.Option(..., "--real", help="folder of held-out real images (repeatable); never "
                                                        "the fingerprint's training images"),
    fpr: float = typer.Option(0.01, "--fpr", help="the false-positive rate to state (0 < FPR <= 0.5)"),
    out: Path = typer.Option(..., "--out", "-o", help="calibrated fingerprint to write (never the input)"),
    description: Optional[str] = typer.Option(None, "--description", help="what the calibration images are"),
    dtype: Dtype = typer.Option("float32", "--dtype", help="storage of the pattern: float32 | float16"),
    conditions: str = typer.Option(DEFAULT_CONDITIONS, "--conditions",
                                   help="the copies of the real images the stated rate must hold on, "
                                        "comma-separated: none (as distributed), jpegQ, resizeS, resizeS+jpegQ; "
                                        "detect tests a suspect against those its own JPEG quality cannot rule "
                                        "out. none alone = as distributed only"),
    force: bool = typer.Option(False, "--force", help="calibrate a fingerprint whose seal does not match "
                                                      "(the output then stays verified: false)"),
    lossless_real: List[Path] = typer.Option([], "--lossless-real",
                                             help="folder of held-out lossless real photos (PNG; repeatable), "
                                                  "calibrated as their own set so the stated rate also holds "
                                                  "for lossless suspects"),
    restore_scales: str = typer.Option("", "--restore-scales",
                                       help="scale bands (comma-separated downscales, e.g. 0.9,0.75,0.5, or "
                                            "'default') whose resized suspects detect resamples back to the "
                                            "training scale: the real images are also calibrated resized to "
                                            "each band (lossless and JPEG 95/85/75) and restored"),
    restore_method: RestoreMethod = typer.Option(restore.DEFAULT_METHOD, "--restore-method",
                                                 help="the restoration's resampling kernel"),
    no_cache: bool = common.NoResidualCacheOpt,
    fmt: Optional[str] = common.FormatOpt,
    quiet: bool = common.QuietOpt,
) -> None:
    """Calibrate a fingerprint's detection threshold at a stated false-positive rate on held-out real images.

    Writes a new sealed fingerprint whose detections carry conformal p-values and call an image generated
    only when p <= FPR — also on JPEG and resized copies of real photos (--conditions). Example: fpx dif-calibrate ldm.fpx.safetensors --real photos_val/ --fpr 0.01
    -o ldm-cal.fpx.safetensors
    """
    try:
        records = api.dif_calibrate(fingerprint, real, out, fpr=fpr, description=description,
                                    dtype=common.value(dtype), conditions=_conditions(conditions), force=force,
                                    lossless_real=lossless_real, restore_scales=restore_scales,
                                    restore_method=common.value(restore_method), use_cache=not no_cache, fmt=fmt,
                                    quiet=quiet, stdout=True)
    except FpxError as exc:
        common.die(exc)
    raise typer.Exit(records.exit_code)


def register(app: typer.Typer) -> None:
    app.command("dif-extract")(dif_extract)
    app.command("detect")(detect_cmd)
    app.command("dif-calibrate")(dif_calibrate)
