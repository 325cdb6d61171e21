"""``fpx score``: reference-anchored features of (reference, suspect) pairs (:func:`fingerprint_cli.api.score`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fingerprint_cli import api
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError
from fingerprint_cli.anchored.score import TABLE_COLUMNS  # noqa: F401 - the table's columns, kept importable here

ORDER = 20


@common.pair_command
def score(
    run: common.PairRun,
    encoder: str = typer.Option("dinov2-vitb14", "--encoder",
                                help="dinov2-vitb14, or 'none' for pixel features only (no weights needed)"),
    resolution: Optional[int] = typer.Option(None, "--resolution",
                                             help="square size the encoder sees (multiple of 14; default 224)"),
    perturbed: Optional[Path] = typer.Option(None, "--perturbed",
                                             help="protected copy of the reference (fpx perturb output): "
                                                  "adds survival and detection features"),
    maps: Optional[Path] = typer.Option(None, "--maps",
                                        help="folder for one heatmap PNG per pair (token distances, or the "
                                             "block luma difference with --encoder none)"),
) -> None:
    """Reference-anchored features: DINOv2 patch-token distances, SSIM and PSNR against the reference.

    Examples: fpx score ref.png suspect.png; fpx score --pairs pairs.csv -o scores.jsonl;
    fpx score --ref-dir refs/ --suspect-dir suspects/ --format csv
    """
    try:
        records = api.score(**run.api_kwargs(), encoder=encoder, resolution=resolution, perturbed=perturbed,
                            maps=maps)
    except FpxError as exc:
        common.die(exc)
    common.finish(records)


def register(app: typer.Typer) -> None:
    app.command("score")(score)
