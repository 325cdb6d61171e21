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
    from fingerprint_cli.errors import InputError

    if reference:
        if not suspects:
            raise UsageError("give at least one SUSPECT after the reference")
        plist = batch.pairs_from_args(reference, suspects)
        if not plist:
            raise UsageError(f"no images found in {', '.join(map(str, suspects))}: nothing to do")
        return plist, []
    if pairs_csv is not None:
        plist = batch.pairs_from_csv(pairs_csv)
        if not plist:
            raise InputError("has no rows (only a header?): nothing to do", str(pairs_csv))
        return plist, []
    if ref_dir is None or suspect_dir is None:
        raise UsageError("--ref-dir and --suspect-dir go together")
    plist, orphans = batch.pairs_from_dirs(ref_dir, suspect_dir)
    if not plist and not orphans:
        raise UsageError(f"no images found in {suspect_dir}: nothing to do")
    return plist, orphans


def run_inputs(reference: Optional[str], suspects: List[str], pairs_csv: Optional[Path], ref_dir: Optional[Path],
               suspect_dir: Optional[Path], plist, perturbed: Optional[Path] = None) -> List[str]:
    """Everything a score/attribute run reads (files, folders, protected copies and their sidecars), for the
    up-front output check. Shared by score and attribute."""
    from fingerprint_cli import batch
    from fingerprint_cli.perturb import sidecar_path

    given = [reference, pairs_csv] + [s for s in suspects if not Path(s).is_dir()]
    prot = [str(perturbed)] if perturbed is not None else []
    prot += [p.get("perturbed") for p in plist if p.get("perturbed")]
    files = given + [p.reference for p in plist] + [p.suspect for p in plist] + prot + \
        [sidecar_path(p) for p in prot]
    folders = [s for s in suspects if Path(s).is_dir()] + [ref_dir, suspect_dir]
    return batch.run_inputs(files, folders)


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
        from fingerprint_cli import atomic, batch, encoders, score as score_mod
        from fingerprint_cli.errors import FpxError, UsageError
        from fingerprint_cli.records import Record, input_key

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
            inputs = run_inputs(reference, suspects or [], pairs, ref_dir, suspect_dir, plist, perturbed)
            atomic.check_outputs({}, inputs, folders={"--maps": maps})
            sink = batch.RecordSink(str(output) if output else None, fmt, resume, TABLE_COLUMNS, inputs,
                                    command="score")
            scorer = score_mod.Scorer(enc, use_disk_cache=not no_cache, jobs=jobs, extra_features=extra)
        except FpxError as exc:
            common.die(exc)
        todo = [p for p in plist if input_key("score", reference=p.reference, suspect=p.suspect) not in sink.done]
        if resume and len(todo) < len(plist):
            batch.warn(f"--resume: {len(plist) - len(todo)} pair(s) already in {output}, skipped", quiet)
        orphaned = orphan_records("score", orphans, scorer.provenance)
        for r in orphaned:
            sink.add(r)

        map_owner: dict[str, str] = {}

        def done(r) -> None:
            if maps is not None and r.record.ok:
                try:
                    target = score_mod.heatmap_path(r, str(maps))
                    if target is not None:
                        key = str(Path(target).resolve())
                        if key in map_owner:
                            raise UsageError(f"--maps: {target} was already written for {map_owner[key]} (two "
                                             "suspects with one file stem); this pair's record is an error",
                                             r.record.inputs["suspect"]["path"])
                        map_owner[key] = r.record.inputs["suspect"]["path"]
                    r.record.details["map"] = score_mod.write_heatmap(r, str(maps), inputs)
                except FpxError as exc:
                    r.record = Record.failure("score", r.record.inputs, exc, r.record.provenance)
                except OSError as exc:
                    r.record = Record.failure("score", r.record.inputs, UsageError(
                        f"--maps: cannot write the heatmap ({exc.strerror or exc})", str(maps)), r.record.provenance)
            sink.add(r.record)
            advance()

        try:
            with batch.progress_bar(len(todo), "score", quiet) as advance:
                results = scorer.score(todo, batch_size=batch_size, on_result=done, keep_pixels=maps is not None)
        except BaseException:
            sink.abandon()
            raise
        sink.close()
        records = [r.record for r in results] + orphaned
        common.print_failures(records, quiet)
        code = batch.exit_code_for(records, batch=len(plist) + len(orphans) > 1)
        raise typer.Exit(code)
