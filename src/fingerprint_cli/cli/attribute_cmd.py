"""``fpx attribute``: band and system decisions from a thresholds artifact."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli.cli import common

ORDER = 30

TABLE_COLUMNS = ["decision.label", "decision.band", "decision.p_value", "decision.set_size",
                 "decision.calls", "decision.thresholds.id"]


def load_thresholds(name: Optional[str], resolution: Optional[int], device: str, quiet: bool):
    """(artifact, encoder or None, why chosen). Refuses an artifact whose encoder/resolution differs."""
    from fingerprint_cli import artifacts, attribute, encoders, thresholds
    from fingerprint_cli.errors import ArtifactError

    if name:
        doc = thresholds.find(name)
        why = f"given with --thresholds ({doc.get('_path')})"
    else:
        inst = None
        try:
            inst = artifacts.installed("dinov2-vitb14")
        except ArtifactError:
            inst = None
        doc, why = attribute.choose_default(inst is not None, inst.sha256 if inst else None)
    enc = None
    want = doc["encoder"]
    if want is not None:
        enc = encoders.load_encoder(want.get("id", "dinov2-vitb14"), resolution or want.get("resolution"), device)
    elif resolution is not None:
        from fingerprint_cli import batch

        batch.warn(f"--resolution is ignored: thresholds {doc['id']} use pixel features only", quiet)
    thresholds.check_encoder(doc, enc)
    return doc, enc, why


def register(app: typer.Typer) -> None:
    @app.command("attribute")
    def attribute_cmd(
        reference: Optional[str] = common.ReferenceArg,
        suspects: List[str] = common.SuspectsArg,
        pairs: Optional[Path] = common.PairsOpt,
        ref_dir: Optional[Path] = common.RefDirOpt,
        suspect_dir: Optional[Path] = common.SuspectDirOpt,
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
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="images per encoder forward pass"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk token cache"),
        origin_index: Optional[Path] = typer.Option(
            None, "--index", help="find each suspect's reference in this `fpx origin index` first (every "
                                  "positional argument is then a suspect)"),
        fmt: Optional[str] = common.FormatOpt,
        output: Optional[Path] = common.OutputOpt,
        resume: bool = common.ResumeOpt,
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Which kind of image-to-image system processed the suspect: band, system, conformal p-values and
        the prediction set (systems with p >= alpha), `unknown` when no calibrated system fits,
        `inconclusive` when several do, top-k posteriors and the reasons (feature z-scores).

        Examples: fpx attribute ref.png suspect.png; fpx attribute ref.png s1.png s2.png --report case.html;
        fpx attribute --pairs pairs.csv -t my-lab-dinov2-v1.json -o calls.jsonl
        """
        from fingerprint_cli import batch
        from fingerprint_cli import attribute as attr
        from fingerprint_cli.cli.score_cmd import orphan_records, resolve_pairs
        from fingerprint_cli.errors import FpxError
        from fingerprint_cli.records import Record, input_key

        try:
            retrieved, not_found = {}, []
            if origin_index is not None:  # issue 12: the reference comes from an origin index
                from fingerprint_cli.origin import library as origin_lib

                plist, retrieved, not_found = origin_lib.pairs_from_index(
                    [reference, *(suspects or [])] if reference else list(suspects or []), str(origin_index),
                    device=device)
                orphans = []
            else:
                plist, orphans = resolve_pairs(reference, suspects or [], pairs, ref_dir, suspect_dir)
            doc, enc, why = load_thresholds(thresholds_name, resolution, device, quiet)
            if alpha is not None:
                attr.check_alpha(alpha)
            decider = attr.Decider(doc, alpha)
            if decider.conformal is None:
                batch.warn(f"thresholds {doc['id']} have no conformal calibration: {attr.NOT_CALIBRATED}"
                           + ("; --alpha is ignored" if alpha is not None else ""), quiet)
            extra = []
            if perturbed is not None or any(p.get("perturbed") for p in plist):
                from fingerprint_cli import survival

                # --perturbed for every pair, else each --pairs row's own `perturbed` column
                extra.append(survival.feature_fn(str(perturbed) if perturbed is not None else None))
            scorer = attr.make_scorer(decider.features, enc, use_disk_cache=not no_cache, jobs=jobs, extra=extra)
            from fingerprint_cli import atomic
            from fingerprint_cli.cli.score_cmd import run_inputs

            inputs = run_inputs(reference, suspects or [], pairs, ref_dir, suspect_dir, plist, perturbed)
            if doc.get("_path") and not str(doc["_path"]).startswith("fingerprint_cli/"):
                inputs.append(doc["_path"])
            atomic.check_outputs({"--report": report, "--output": output}, inputs)
            sink = batch.RecordSink(str(output) if output else None, fmt, resume, TABLE_COLUMNS, inputs,
                                    command="attribute")
        except FpxError as exc:
            common.die(exc)
        provenance = {**scorer.provenance, "thresholds": {"id": doc["id"], "version": doc["version"],
                                                          "sha256": doc["sha256"], "chosen": why}}
        todo = [p for p in plist
                if input_key("attribute", reference=p.reference, suspect=p.suspect) not in sink.done]
        if resume and len(todo) < len(plist):
            batch.warn(f"--resume: {len(plist) - len(todo)} pair(s) already in {output}, skipped", quiet)
        records: list[Record] = orphan_records("attribute", orphans, provenance)
        records += [r for r in not_found if not r.ok]  # --index: unreadable suspects count as failures
        for r in records + [r for r in not_found if r.ok]:  # not-in-library: a decision, kept out of aggregates
            sink.add(r)
        sections: list[str] = []

        def on_result(res) -> None:
            rec = res.record
            if rec.inputs.get("suspect", {}).get("path") in retrieved:
                rec.details["origin"] = retrieved[rec.inputs["suspect"]["path"]]
            if rec.ok:
                try:
                    decision, reasons = decider.decide(rec.features, top_k, where=rec.inputs["suspect"]["path"])
                    decision["chosen"] = why
                    rec = Record(command="attribute", inputs=rec.inputs, features=rec.features,
                                 directions=rec.directions, decision=decision, reasons=reasons,
                                 provenance=provenance, details=rec.details)
                except FpxError as exc:
                    rec = Record.failure("attribute", rec.inputs, exc, provenance)
                except Exception as exc:  # noqa: BLE001 - one pair's failure never aborts the batch
                    rec = Record.failure("attribute", rec.inputs, FpxError(
                        f"unexpected failure: {type(exc).__name__}: {exc}", rec.inputs["suspect"]["path"]),
                        provenance)
            else:
                rec = Record(command="attribute", inputs=rec.inputs, status="error", error=rec.error,
                             provenance=provenance)
            records.append(rec)
            sink.add(rec)
            if report is not None:
                from fingerprint_cli import report as report_mod

                dmap, label = res.heatmap()
                sections.append(report_mod.case_section(
                    len(sections) + 1, rec, res.reference.pixels if res.reference else None,
                    res.suspect_aligned, dmap, label, doc))

        with batch.progress_bar(len(todo), "attribute", quiet) as advance:
            scorer.score(todo, batch_size=batch_size, keep_pixels=report is not None,
                         on_result=lambda r: (on_result(r), advance()))
        aggregates = []
        if not no_aggregate:
            by_ref: dict[str, list[Record]] = {}
            for r in records:
                if r.ok and r.decision and r.inputs.get("suspect"):
                    by_ref.setdefault(r.inputs["reference"]["path"], []).append(r)
            for ref_path, group in by_ref.items():
                if len(group) < 2 or input_key("attribute", reference=ref_path) in sink.done:
                    continue
                d = decider.aggregate([g.features for g in group], top_k)
                d["chosen"] = why
                agg = Record(command="attribute", inputs={"reference": group[0].inputs["reference"]},
                             decision=d, provenance=provenance,
                             details={"suspects": [g.inputs["suspect"] for g in group],
                                      "per_call": [g.decision["label"] for g in group]})
                sink.add(agg)
                aggregates.append({"reference": ref_path, **{k: d[k] for k in ("calls", "band", "system")}})
        sink.close()
        if report is not None:
            from fingerprint_cli import report as report_mod

            try:
                report_mod.write(str(report), sections, doc, provenance, aggregates, inputs)
            except FpxError as exc:
                common.die(exc)
            batch.warn(f"report written to {report}", quiet)
        common.print_failures(records, quiet)
        code = batch.exit_code_for(records, batch=len(plist) + len(orphans) > 1)
        raise typer.Exit(code)
