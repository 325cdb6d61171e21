"""``fpx score``: reference-anchored features of (reference, suspect) pairs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli.cli import common

ORDER = 20

TABLE_COLUMNS = ["features.patch_mean", "features.patch_p90", "features.cls_distance", "features.ssim_clean",
                 "features.psnr_clean"]


def resolve_pairs(reference: Optional[str], suspects: List[str], pairs_csv: Optional[Path],
                  ref_dir: Optional[Path], suspect_dir: Optional[Path]):
    """Turn the three ways of naming pairs into (pairs, orphan suspects). Shared by score and attribute."""
    from fingerprint_cli import batch
    from fingerprint_cli.errors import UsageError

    ways = sum([bool(reference), pairs_csv is not None, ref_dir is not None or suspect_dir is not None])
    if ways != 1:
        raise UsageError("name pairs one way: REF SUSPECT [SUSPECT ...], --pairs FILE.csv, "
                         "or --ref-dir DIR --suspect-dir DIR")
    if reference:
        if not suspects:
            raise UsageError("give at least one SUSPECT after the reference")
        return batch.pairs_from_args(reference, suspects), []
    if pairs_csv is not None:
        return batch.pairs_from_csv(pairs_csv), []
    if ref_dir is None or suspect_dir is None:
        raise UsageError("--ref-dir and --suspect-dir go together")
    return batch.pairs_from_dirs(ref_dir, suspect_dir)


def orphan_records(command: str, orphans: List[str], provenance: dict):
    from fingerprint_cli.errors import InputError
    from fingerprint_cli.records import Record

    return [Record.failure(command, {"reference": {"path": None, "sha256": None},
                                     "suspect": {"path": o, "sha256": None}},
                           InputError("no reference in --ref-dir has a matching file stem", o), provenance)
            for o in orphans]


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score(
        reference: Optional[str] = common.ReferenceArg,
        suspects: List[str] = common.SuspectsArg,
        pairs: Optional[Path] = common.PairsOpt,
        ref_dir: Optional[Path] = common.RefDirOpt,
        suspect_dir: Optional[Path] = common.SuspectDirOpt,
        encoder: str = typer.Option("dinov2-vitb14", "--encoder",
                                    help="dinov2-vitb14, or 'none' for pixel features only (no weights needed)"),
        resolution: Optional[int] = typer.Option(None, "--resolution",
                                                 help="square size the encoder sees (multiple of 14; default 224)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="images per encoder forward pass"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk token cache"),
        perturbed: Optional[Path] = typer.Option(None, "--perturbed",
                                                 help="protected copy of the reference (fpx perturb output): "
                                                      "adds survival and detection features"),
        maps: Optional[Path] = typer.Option(None, "--maps",
                                            help="folder for one heatmap PNG per pair (token distances, or the "
                                                 "block luma difference with --encoder none)"),
        fmt: Optional[str] = common.FormatOpt,
        output: Optional[Path] = common.OutputOpt,
        resume: bool = common.ResumeOpt,
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Reference-anchored features: DINOv2 patch-token distances, SSIM and PSNR against the reference.

        Examples: fpx score ref.png suspect.png; fpx score --pairs pairs.csv -o scores.jsonl;
        fpx score --ref-dir refs/ --suspect-dir suspects/ --format csv
        """
        from fingerprint_cli import batch, encoders, score as score_mod
        from fingerprint_cli.errors import FpxError
        from fingerprint_cli.records import input_key

        try:
            plist, orphans = resolve_pairs(reference, suspects or [], pairs, ref_dir, suspect_dir)
            extra = []
            if perturbed is not None or any(p.get("perturbed") for p in plist):
                from fingerprint_cli import survival

                # --perturbed for every pair, else each --pairs row's own `perturbed` column
                extra.append(survival.feature_fn(str(perturbed) if perturbed is not None else None))
            enc = None
            if encoders.resolve_encoder(encoder) is not None:
                enc = encoders.load_encoder(encoder, resolution, device)
            elif resolution is not None:
                batch.warn("--resolution is ignored with --encoder none", quiet)
            inputs = [p.reference for p in plist] + [p.suspect for p in plist]
            sink = batch.RecordSink(str(output) if output else None, fmt, resume, TABLE_COLUMNS, inputs)
            scorer = score_mod.Scorer(enc, use_disk_cache=not no_cache, jobs=jobs, extra_features=extra)
        except FpxError as exc:
            common.die(exc)
        todo = [p for p in plist if input_key("score", reference=p.reference, suspect=p.suspect) not in sink.done]
        if resume and len(todo) < len(plist):
            batch.warn(f"--resume: {len(plist) - len(todo)} pair(s) already in {output}, skipped", quiet)
        orphaned = orphan_records("score", orphans, scorer.provenance)
        for r in orphaned:
            sink.add(r)

        def done(r) -> None:
            if maps is not None and r.record.ok:
                r.record.details["map"] = score_mod.write_heatmap(r, str(maps), inputs)
            sink.add(r.record)
            advance()

        with batch.progress_bar(len(todo), "score", quiet) as advance:
            results = scorer.score(todo, batch_size=batch_size, on_result=done, keep_pixels=maps is not None)
        sink.close()
        records = [r.record for r in results] + orphaned
        common.print_failures(records, quiet)
        code = batch.exit_code_for(records, batch=len(plist) + len(orphans) > 1)
        raise typer.Exit(code)
