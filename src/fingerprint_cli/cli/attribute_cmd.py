"""``fpx attribute``: band and system decisions from a thresholds artifact (:func:`fingerprint_cli.api.attribute`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fingerprint_cli import api
from fingerprint_cli.anchored.attribute import TABLE_COLUMNS  # noqa: F401 - the table's columns, kept importable here
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError

ORDER = 30


@common.pair_command
def attribute_cmd(
    run: common.PairRun,
    thresholds_name: Optional[str] = typer.Option(
        None, "--thresholds", "-t",
        help="thresholds artifact: a JSON file or a shipped id (default: the best shipped one whose "
             "features can be computed here)"),
    top_k: int = typer.Option(3, "--top-k", min=1, help="systems listed with their posteriors"),
    alpha: Optional[float] = typer.Option(
        None, "--alpha",
        help="conformal significance level in (0, 0.5]: the prediction set keeps systems with p-value >= "
             "alpha, and `unknown` when none does (default: the artifact's, usually 0.05)"),
    report: Optional[Path] = typer.Option(None, "--report", help="write a self-contained HTML case report"),
    no_aggregate: bool = typer.Option(False, "--no-aggregate",
                                      help="no per-image decision for several suspects of one reference"),
    resolution: Optional[int] = typer.Option(None, "--resolution",
                                             help="encoder resolution (must match the artifact's)"),
    perturbed: Optional[Path] = typer.Option(None, "--perturbed",
                                             help="protected copy of the reference: adds survival features"),
    origin_index: Optional[Path] = typer.Option(
        None, "--index", help="find each suspect's reference in this `fpx origin index` first (every "
                              "positional argument is then a suspect)"),
) -> None:
    """Which kind of image-to-image system processed the suspect: band, system, conformal p-values and
    the prediction set (systems with p >= alpha), `unknown` when no calibrated system fits,
    `inconclusive` when several do, top-k posteriors and the reasons (feature z-scores).

    Examples: fpx attribute ref.png suspect.png; fpx attribute ref.png s1.png s2.png --report case.html;
    fpx attribute --pairs pairs.csv -t my-lab-dinov2-v1.json -o calls.jsonl
    """
    try:
        records = api.attribute(**run.api_kwargs(), thresholds_name=thresholds_name, top_k=top_k, alpha=alpha,
                                report=report, aggregate=not no_aggregate, resolution=resolution,
                                perturbed=perturbed, index=origin_index)
    except FpxError as exc:
        common.die(exc)
    common.finish(records)


def register(app: typer.Typer) -> None:
    app.command("attribute")(attribute_cmd)
