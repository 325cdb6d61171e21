"""``fpx origin``: index a reference library, find a suspect's original in it, train the linear head."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

import typer

from fingerprint_cli import batch
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError
from fingerprint_cli.origin import conditions, library
from fingerprint_cli.origin.dense import REGIONS as DENSE_REGIONS
from fingerprint_cli.origin.embedders import EMBEDDERS
from fingerprint_cli.origin.index import DECISIONS, SEARCH_KINDS
from fingerprint_cli.origin.local import INLIER_COUNTS, SUSPECT_WINDOWS

ORDER = 65

QUERY_COLUMNS = ["decision.label", "decision.origin.path", "features.similarity_top1", "decision.threshold",
                 "decision.p_value"]
SchedulerOpt = typer.Option(None, "--scheduler",
                            help="run the embedding on dask.distributed: 'local' (a LocalCluster of --jobs "
                                 "processes) or a scheduler address tcp://host:8786")
# closed option sets: a typo is refused by the parser, before anything is embedded
EmbedderName = Enum("EmbedderName", {n: n for n in EMBEDDERS}, type=str)
SearchKind = Enum("SearchKind", {n: n for n in SEARCH_KINDS}, type=str)
ViewScheme = Enum("ViewScheme", {n: n for n in library.REF_VIEW_SETS}, type=str)
DecisionRule = Enum("DecisionRule", {n: n for n in DECISIONS}, type=str)
InlierCount = Enum("InlierCount", {n: n for n in INLIER_COUNTS}, type=str)
DenseRegion = Enum("DenseRegion", {n: n for n in DENSE_REGIONS}, type=str)
SuspectWindows = Enum("SuspectWindows", {n: n for n in SUSPECT_WINDOWS}, type=str)


def _progress(label: str, quiet: bool):
    state = {"bar": None, "done": 0}

    def cb(done: int, total: int) -> None:
        if state["bar"] is None:
            state["cm"] = batch.progress_bar(total, label, quiet)
            state["bar"] = state["cm"].__enter__()
        state["bar"](done - state["done"])
        state["done"] = done

    def close() -> None:
        if state["bar"] is not None:
            state["cm"].__exit__(None, None, None)

    return cb, close


def _run(label: str, quiet: bool, call: Callable[[Callable[[int, int], None]], object]):
    """``call(progress)`` under a progress bar on stderr; an fpx error becomes its one-line message and exit code."""
    cb, close = _progress(label, quiet)
    try:
        return call(cb)
    except FpxError as exc:
        common.die(exc)
    finally:
        close()


def _emit(records, fmt, output, columns, inputs=()):
    sink = batch.RecordSink(str(output) if output else None, fmt, False, columns, list(inputs))
    for r in records:
        sink.add(r)
    sink.close()


def _embedder_options(embedder: str, device: str) -> dict[str, str]:
    return {"device": device} if not EMBEDDERS[embedder].weight_free else {}


def _stated_rate(calibration: dict, requested: float) -> str:
    """The false-match rate the index states (its calibration's), and the requested one when it could not be
    reached (too few impostor scores for it)."""
    got = calibration.get("false_match_rate")
    if got is None or abs(float(got) - requested) < 1e-9:
        return f"{requested:g}"
    return f"{float(got):.4g} (requested {requested:g}: {calibration.get('n_impostor')} impostor scores cannot reach it)"


def register(app: typer.Typer) -> None:
    origin = typer.Typer(help="Find a suspect's original in a reference library (ID2-style origin retrieval): "
                              "index, query, train.", no_args_is_help=True)
    app.add_typer(origin, name="origin")

    @origin.command("index")
    def index_cmd(
        refs: list[str] = typer.Argument(..., help="reference images or folders of them (searched recursively)"),
        out: Path = typer.Option(..., "--output", "-o", help="the index file to write, e.g. LIB.fpxindex"),
        embedder: EmbedderName = typer.Option("dct-layout", "--embedder", "-e",
                                              help="dct-layout (weight-free default) | sd2-vae (needs its weights)"),
        head: Path | None = typer.Option(None, "--head", help="linear head from `fpx origin train`"),
        add: bool = typer.Option(False, "--add", help="grow the existing index at --output"),
        resume: bool = typer.Option(False, "--resume", help="reuse the chunks an interrupted build journalled"),
        fmr: float = typer.Option(0.01, "--false-match-rate",
                                  help="target false-match rate of the `found` decision"),
        n_calib: int = typer.Option(200, "--calibration-refs", min=0,
                                    help="references whose transformed copies calibrate the threshold"),
        search: SearchKind = typer.Option("flat", "--search", help="flat (exact) | ivf | ivfpq (approximate, huge N)"),
        views: ViewScheme | None = typer.Option(None, "--views",
                                                help="reference views indexed as extra rows: full (default) | crops "
                                                     "(+ centre and four corners at 80%: crop-robust, 6x memory) | "
                                                     "crops-deep (+ the same at 65%, 11x) | crops-grid (80% crops "
                                                     "on a 5x5 grid of offsets, 26x); --add keeps the index's own"),
        dim: int | None = typer.Option(None, "--dim", min=0,
                                       help="seal a projection to this many dimensions, learned on the references "
                                            "(faster search, less memory); default: the embedder's (128 for "
                                            "dct-layout, none with --head); 0 = none; --add keeps the index's own"),
        decision: DecisionRule | None = typer.Option(
            None, "--decision", help="similarity+local (default with --local: the similarity OR the local "
                                     "stage's RANSAC inliers, each at half the rate) | similarity+verify (default "
                                     "with --no-local: OR a pixel check that the suspect sits inside the top "
                                     "candidate; reads its file) | similarity+distinct (OR a ratio test against "
                                     "the best other origin) | similarity; --add keeps the index's own"),
        local: bool | None = typer.Option(None, "--local/--no-local",
                                          help="store every reference's ORB keypoints: crops, zooms and rotations "
                                               "are found by them and verified geometrically (default on, ~25 kB "
                                               "per reference); --add keeps the index's own"),
        overlays: bool = typer.Option(False, "--calibration-overlays",
                                      help="also calibrate the local test on overlay crops (caption band, meme "
                                           "bands, frame, sticker) of the calibration references; opt-in: not "
                                           "shown to hold the stated rate better (docs/benchmarks.md, round 6)"),
        inlier_count: InlierCount | None = typer.Option(
            None, "--inlier-count", help="what the local test counts among the RANSAC inliers: suspect (distinct "
                                         "suspect keypoints) | one-to-one (the fewer of distinct suspect and "
                                         "reference keypoints); default: this fpx's; --add keeps the index's own"),
        dense: bool | None = typer.Option(
            None, "--dense/--no-dense", help="the local test also needs the candidate's pixels to agree with the "
                                             "suspect's at the fitted map (dense verification, its own calibrated "
                                             "threshold; reads the top candidates' files); default: this fpx's; "
                                             "--add keeps the index's own"),
        dense_region: DenseRegion | None = typer.Option(
            None, "--dense-region", help="where the dense verification compares pixels (implies --dense): "
                                         "overlap (the whole overlap, round 8) | hull (inside the convex hull of "
                                         "the RANSAC inliers: overlays and an inset's background do not count); "
                                         "default: this fpx's; --add keeps the index's own"),
        suspect_windows: SuspectWindows | None = typer.Option(
            None, "--suspect-windows", help="the local stage also detects a suspect's keypoints on fixed "
                                            "sub-windows of its frame (composites: banners, collages, insets): "
                                            "none | halves-thirds (ten windows; the calibration queries get "
                                            "them too); default: this fpx's; --add keeps the index's own"),
        records_out: Path | None = typer.Option(None, "--records", help="write the per-reference records here"),
        fmt: str | None = common.FormatOpt,
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        scheduler: str | None = SchedulerOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Embed a reference library into a sealed index (safetensors + JSON), with its calibrated threshold.

        Examples: fpx origin index archive/ -o lib.fpxindex; fpx origin index new/ -o lib.fpxindex --add;
        fpx origin index archive/ -o lib.fpxindex --jobs 8 --scheduler local;
        fpx origin index archive/ -o lib.fpxindex --views crops-grid (finds cropped edits)
        """
        for r in refs:  # what a folder holds that the index does not read (by suffix, recursively, as build_index)
            if Path(r).is_dir():
                batch.say_left_out(r, recursive=True, quiet=quiet)
        _, records = _run("embed", quiet, lambda cb: library.build_index(
            refs, str(out), embedder=embedder.value, embedder_options=_embedder_options(embedder.value, device),
            head=str(head) if head else None, add=add, resume=resume, false_match_rate=fmr, n_calibration=n_calib,
            search=search.value, ref_views=common.value(views), dim="auto" if dim is None else dim, decision=common.value(decision), local=local,
            calibration_overlays=overlays, inlier_count=common.value(inlier_count), dense=dense,
            dense_region=common.value(dense_region), suspect_windows=common.value(suspect_windows),
            jobs=jobs,
            scheduler=scheduler, progress=cb))
        _emit(records, fmt, records_out, ["features.n_references", "features.threshold", "details.skipped"],
              inputs=refs)
        summary = records[-1]
        det = summary.details
        batch.warn(f"index {out}: {int(summary.features['n_references'])} references, threshold "
                   f"{summary.features['threshold']} at false-match rate {_stated_rate(det['calibration'], fmr)}; "
                   f"{det['memory_bytes_per_reference']:.0f} bytes per reference"
                   + (f" ({det['local_bytes_per_reference']:.0f} of them local features, local-inliers threshold "
                      f"{det['calibration'].get('local_threshold')}"
                      + (f", dense threshold {det['calibration']['dense_threshold']:.3f}"
                         if det["calibration"].get("dense_threshold") is not None else "") + ")"
                      if det.get("local_bytes_per_reference") else ""),
                   quiet)
        common.print_failures(records, quiet)
        raise typer.Exit(batch.exit_code_for(records, batch=True))

    @origin.command("query")
    def query_cmd(
        suspects: list[str] = typer.Argument(..., help="suspect image(s) or folders of them"),
        index: Path = typer.Option(..., "--index", "-i", help="an index from `fpx origin index`"),
        k: int = typer.Option(5, "-k", "--top-k", min=1, help="candidates listed per suspect"),
        head: Path | None = typer.Option(None, "--head", help="check that the index uses this head"),
        fmt: str | None = common.FormatOpt,
        output: Path | None = common.OutputOpt,
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        scheduler: str | None = SchedulerOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Ranked candidate originals of each suspect and a decision: found (the top candidate) or
        not-in-library, at the false-match rate the index was calibrated for.

        Examples: fpx origin query suspect.png --index lib.fpxindex; fpx origin query inbox/ -i lib.fpxindex -k 10 -f json
        """
        records = _run("query", quiet, lambda cb: library.query(
            suspects, str(index), k=k, head=str(head) if head else None, device=device, jobs=jobs,
            scheduler=scheduler, progress=cb, quiet=quiet))
        try:
            _emit(records, fmt, output, QUERY_COLUMNS, inputs=[*suspects, str(index)])
        except FpxError as exc:
            common.die(exc)
        conditions.say_outside(records, quiet)
        common.print_failures(records, quiet)
        raise typer.Exit(batch.exit_code_for(records, batch=len(records) > 1))

    @origin.command("train")
    def train_cmd(
        pairs: Path = typer.Argument(..., help="CSV with columns reference,suspect: (origin, generated) pairs"),
        out: Path = typer.Option(..., "--output", "-o", help="head file to write (W.safetensors)"),
        embedder: EmbedderName = typer.Option("dct-layout", "--embedder", "-e", help="embedder the head is for"),
        out_dim: int | None = typer.Option(None, "--dim", help="output dimension (default: the embedder's)"),
        epochs: int = typer.Option(30, "--epochs", min=1),
        seed: int = typer.Option(0, "--seed"),
        fmt: str | None = common.FormatOpt,
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        scheduler: str | None = SchedulerOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Fit the linear head W with the ID2 recipe (CosFace s=64 m=0.35, Adam 3.5e-4, warm-up + cosine).

        Example: fpx origin train pairs.csv -o W.safetensors; then fpx origin index refs/ -o lib.fpxindex --head W.safetensors
        """
        _, records = _run("embed", quiet, lambda cb: library.train(
            str(pairs), str(out), embedder=embedder.value,
            embedder_options=_embedder_options(embedder.value, device), out_dim=out_dim, epochs=epochs, seed=seed,
            jobs=jobs, scheduler=scheduler, progress=cb))
        _emit(records, fmt, None, ["features.final_loss", "features.origins", "features.samples"])
        common.print_failures(records, quiet)
        raise typer.Exit(batch.exit_code_for(records, batch=True))
