"""``fpx lineage``: cross-detection among generator fingerprints, families, and a picture of them
(:func:`fingerprint_cli.api.lineage`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli import api, batch
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError
from fingerprint_cli.lineage.stats import CONTROLS, METRICS

ORDER = 60
Metric = Enum("Metric", {m: m for m in METRICS}, type=str)
Control = Enum("Control", {c: c for c in CONTROLS}, type=str)


def lineage(
    fingerprints: List[Path] = typer.Argument(..., help="two or more fingerprint artifacts (fpx dif-extract)"),
    images: List[str] = typer.Option([], "--images", metavar="NAME=DIR",
                                     help="held-out images of the generator whose fingerprint is NAME "
                                          "(adds to or replaces the artifact's recorded test split); repeatable"),
    real: List[str] = typer.Option([], "--real", metavar="[NAME=]DIR",
                                   help="held-out real photos: DIR for every fingerprint, NAME=DIR for one "
                                        "(e.g. the control its fingerprint was fitted against); repeatable. "
                                        "Default: each artifact's own real test split"),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0,
                                    help="cut on 1 - relatedness; 0.5 = mean cross-detection (AUC or accuracy) of 0.75"),
    max_shift: int = typer.Option(2, "--max-shift", min=0, max=16,
                                  help="fingerprint correlation: best over cyclic shifts up to this many pixels"),
    metric: Metric = typer.Option("grid", "--metric",
                               help="what relatedness is built from: grid (default: AUC of the fingerprint's "
                                    "grid-periodic component, position-locked upsampler/decoder traces) | "
                                    "accuracy (the paper's: each fingerprint's own decision rule on the whole "
                                    "pattern) | auc (threshold-free, whole pattern)"),
    period: int = typer.Option(16, "--period", min=1, max=256,
                               help="grid period in pixels for --metric grid (16 covers 2, 4, 8 and 16)"),
    equalise: str = typer.Option("none", "--equalise", metavar="jpegQ|none",
                                 help="re-save every test image (generated and real alike) as JPEG at quality "
                                      "Q before its residual, so a link cannot come from a format difference "
                                      "(lossless generators vs JPEG photos); e.g. jpeg90"),
    control: Control = typer.Option("none", "--control",
                                    help="none | format: test each generator's images against the real photos "
                                         "re-saved in that generator's own format (JPEG at the quality its images "
                                         "carry; as they are for lossless ones), so a link cannot come from a "
                                         "shared format alone (JPEG-served generators vs lossless photos)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a heatmap + dendrogram PNG here"),
    fmt: Optional[str] = common.FormatOpt,
    output: Optional[Path] = common.OutputOpt,
    device: str = typer.Option("auto", "--device", hidden=True,
                               help="no effect: the DIF denoiser runs on the CPU (kept so scripts keep working)"),
    quiet: bool = common.QuietOpt,
) -> None:
    """Which generators share a fingerprint: cross-detection matrix, relatedness and families.

    For every ordered pair (i, j): how well fingerprint i detects generator j's held-out images against
    held-out real images — by its grid trace (AUC, drives the families by default) and by its whole
    pattern (the paper's balanced accuracy, and AUC) — the fingerprint correlations, and families from
    average-linkage clustering. A fingerprint that cannot detect its own images is reported as
    unresolved. Records: one per ordered pair, then a summary with the families.

    Examples: fpx lineage ldm.fpx.safetensors glid3.fpx.safetensors disco.fpx.safetensors --plot lineage.png;
    fpx lineage a.fpx.safetensors b.fpx.safetensors --images b=new_b_images/ --real photos/ -f json;
    fpx lineage sr.fpx.safetensors dn.fpx.safetensors --real sr=bicubic_x2/ --real dn=photos/
    """
    if device != "auto":
        batch.warn("--device has no effect on fpx lineage (the DIF denoiser runs on the CPU)", quiet)
    try:
        records = api.lineage(fingerprints, images=images, real=real, threshold=threshold, max_shift=max_shift,
                              metric=common.value(metric), period=period, equalise=equalise,
                              control=common.value(control), plot=plot, output=output, fmt=fmt,
                              device=device, quiet=quiet, stdout=True)
    except FpxError as exc:
        common.die(exc)
    common.finish(records)


def register(app: typer.Typer) -> None:
    app.command("lineage")(lineage)
