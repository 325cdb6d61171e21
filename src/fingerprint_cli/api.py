"""The Python API of fpx: one function per job, each returning :class:`~fingerprint_cli.records.Record` objects —
the same records the command line prints (the ``fpx`` commands are thin layers over these functions).

Reference-anchored evidence:

* :func:`score` — features of (reference, suspect) pairs (``fpx score``);
* :func:`attribute` — band and system decisions from a thresholds artifact (``fpx attribute``);
* :func:`calibrate` — fit a thresholds artifact on a labelled corpus (``fpx calibrate``);
* :func:`perturb` — protect clean images with a sub-JND perturbation (``fpx perturb``).

Deep Image Fingerprints and lineage (pass-throughs documented here; their modules own them):

* :func:`extract` — fit a generator fingerprint (:func:`fingerprint_cli.dif.extract.fit`, ``fpx dif-extract``);
* :func:`detect` — test images against fingerprints (``fpx detect``);
* :func:`lineage` — cross-detection matrix and families (:func:`fingerprint_cli.lineage.run`, ``fpx lineage``).

Pairs are named as on the command line, one way per call: ``reference`` and ``suspects`` (files or folders),
``pairs`` (a CSV with columns reference,suspect[,perturbed]), or ``ref_dir`` and ``suspect_dir`` (matched by file
stem). Bad input raises :class:`~fingerprint_cli.errors.FpxError` (``UsageError``, ``InputError``,
``ArtifactError``: each carries the path at fault and the CLI's exit code) before any work; during a batch a
failing item becomes an error record (``record.ok`` is false) and the batch goes on. By default the records are
only returned; ``output=FILE`` also writes them (atomically, format from ``fmt`` or the file's suffix,
``resume=True`` keeps the records already there and skips their items). Warnings go to stderr unless
``quiet=True``; a progress bar is drawn only when stderr is a terminal.

See docs/api.md for a worked example (examples/api_example.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fingerprint_cli import artifacts, atomic, batch, images, pair_conditions, plots
from fingerprint_cli.anchored import blind as blind_mod, encoders
from fingerprint_cli.anchored import perturb as perturb_mod, report as report_mod
from fingerprint_cli.anchored import attribute as attribute_mod
from fingerprint_cli.anchored import calibrate as calibrate_mod
from fingerprint_cli.anchored import discriminative as discriminative_mod
from fingerprint_cli.anchored import naming as naming_mod
from fingerprint_cli.anchored import score as score_mod
from fingerprint_cli.anchored import survival, thresholds
from fingerprint_cli.batch import Pair, Results
from fingerprint_cli.dif import condition as dif_condition  # torch-free (dif.detect is not)
from fingerprint_cli.dif import restore as dif_restore  # torch-free too
from fingerprint_cli.errors import UsageError
from fingerprint_cli.lineage.job import lineage_job
from fingerprint_cli.origin import library as origin_lib
from fingerprint_cli.records import Record, input_key, render

PathLike = str | os.PathLike

__all__ = ["score", "attribute", "calibrate", "Calibration", "perturb", "extract", "detect", "dif_calibrate", "lineage",
           "Results", "Record"]


# ---------------------------------------------------------------- shared steps
@dataclass
class _PairJob:
    """What a score/attribute run was given and what it reads."""

    plist: list[Pair]
    orphans: list[str]
    inputs: list[str] = field(default_factory=list)
    retrieved_out: int = 0  # suspects of an origin-index run with no reference found (records of their own)

    @property
    def items(self) -> int:
        return len(self.plist) + len(self.orphans) + self.retrieved_out


def _pair_job(reference, suspects, pairs, ref_dir, suspect_dir, perturbed, quiet: bool = True) -> _PairJob:
    """Resolve the pairs and list what the run reads (paths as strings, as records hold them); ``quiet=False``:
    what a folder holds that is not read says so on stderr."""
    reference = str(reference) if reference is not None else None
    suspects = [str(s) for s in suspects or []]
    plist, orphans = batch.resolve_pairs(reference, suspects, pairs, ref_dir, suspect_dir, quiet)
    job = _PairJob(plist, orphans)
    job.inputs = batch.pair_run_inputs(reference, suspects, pairs, ref_dir, suspect_dir, plist, perturbed)
    return job


def _survival_hooks(perturbed: PathLike | None, plist: Sequence[Pair]) -> list:
    """The survival feature hook when a protected copy is given (``perturbed`` for every pair, else each pairs-CSV
    row's own ``perturbed`` column)."""
    if perturbed is None and not any(p.get("perturbed") for p in plist):
        return []
    return [survival.feature_fn(str(perturbed) if perturbed is not None else None)]


def _score_encoder(encoder: str, resolution: int | None, device: str, quiet: bool):
    if encoders.resolve_encoder(encoder) is not None:
        return encoders.load_encoder(encoder, resolution, device)
    if resolution is not None:
        batch.warn("--resolution is ignored with --encoder none", quiet)
    return None


def _run_scorer(scorer, todo: Sequence[Pair], label: str, quiet: bool, batch_size: int, keep_pixels: bool,
                on_result) -> list:
    with batch.progress_bar(len(todo), label, quiet) as advance:
        return scorer.score(todo, batch_size=batch_size, keep_pixels=keep_pixels,
                            on_result=lambda r: (on_result(r), advance()))


# ---------------------------------------------------------------- score
def score(reference: PathLike | None = None, suspects: Sequence[PathLike] = (), *, pairs: PathLike | None = None,
          ref_dir: PathLike | None = None, suspect_dir: PathLike | None = None,
          encoder: str = "dinov2-vitb14", resolution: int | None = None, perturbed: PathLike | None = None,
          maps: PathLike | None = None, batch_size: int = 8, use_cache: bool = True, device: str = "auto",
          jobs: int = 1, output: PathLike | None = None, fmt: str | None = None, resume: bool = False,
          quiet: bool = False, stdout: bool = False) -> Results:
    """Reference-anchored features of (reference, suspect) pairs: one ``score`` record per pair.

    Features (each with its direction in ``record.directions``): DINOv2 ViT-B/14 patch-token distances
    (``patch_mean``, ``patch_median``, ``patch_p90``, ``patch_max``, ``cls_distance``; skipped with
    ``encoder="none"``), pixel SSIM and PSNR of the suspect against the reference (``ssim_clean``,
    ``psnr_clean``), and with ``perturbed`` (the reference's ``fpx perturb`` output) the survival and
    detection features. ``maps=FOLDER`` writes one heatmap PNG per pair. ``stdout=True`` streams the records
    to stdout as the CLI does. Returns the records in output order (unmatched ``suspect_dir`` files first).
    """
    job = _pair_job(reference, suspects, pairs, ref_dir, suspect_dir, perturbed, quiet)
    extra = _survival_hooks(perturbed, job.plist)
    enc = _score_encoder(encoder, resolution, device, quiet)
    atomic.check_outputs({}, job.inputs, folders={"--maps": maps})
    sink = batch.open_sink(output, fmt, resume, stdout, score_mod.TABLE_COLUMNS, job.inputs, "score")
    scorer = score_mod.Scorer(enc, use_disk_cache=use_cache, jobs=jobs, extra_features=extra)
    todo = batch.pending_pairs("score", job.plist, sink.done, sink.output, quiet)
    out = batch.orphan_records("score", job.orphans, scorer.provenance)
    for r in out:
        sink.add(r)
    write_map = score_mod.MapWriter(maps, job.inputs) if maps is not None else None

    def done(result) -> None:
        if write_map is not None:
            write_map(result)
        sink.add(result.record)
        out.append(result.record)

    try:
        _run_scorer(scorer, todo, "score", quiet, batch_size, maps is not None, done)
    except BaseException:
        sink.abandon()
        raise
    sink.close()
    return Results(out, items=job.items)


# ---------------------------------------------------------------- attribute
def attribute(reference: PathLike | None = None, suspects: Sequence[PathLike] = (), *,
              pairs: PathLike | None = None, ref_dir: PathLike | None = None, suspect_dir: PathLike | None = None,
              thresholds_name: str | None = None, top_k: int = 3, alpha: float | None = None,
              report: PathLike | None = None, aggregate: bool = True, resolution: int | None = None,
              perturbed: PathLike | None = None, batch_size: int = 8, use_cache: bool = True,
              device: str = "auto", jobs: int = 1, output: PathLike | None = None, fmt: str | None = None,
              resume: bool = False, quiet: bool = False, stdout: bool = False,
              index: PathLike | None = None) -> Results:
    """Band and system decisions for (reference, suspect) pairs from a thresholds artifact.

    ``index``: an ``fpx origin`` index; every positional image is then a suspect whose reference is retrieved
    from it first (the record's ``details.origin`` names it and its similarity; a suspect whose origin is not in
    the library gets a ``not-in-library`` record, kept out of the per-image aggregates).

    ``thresholds_name``: a thresholds JSON file or a shipped id (default: the best shipped artifact whose
    features can be computed here). Each pair's ``attribute`` record carries its features, the decision (label,
    band, system, conformal p-values and the prediction set at ``alpha`` — ``unknown`` when no calibrated
    system fits, ``inconclusive`` when several do —, ``top_k`` posteriors) and the reasons (feature z-scores).
    With ``aggregate`` (default), a reference with two or more suspects also gets a per-image record (inputs:
    the reference only). ``report=FILE.html`` writes a self-contained case report. Returns the records in
    output order: unmatched suspects, the pairs, then the per-image aggregates.
    """
    job, retrieved, not_found = _attribute_job(reference, suspects, pairs, ref_dir, suspect_dir, perturbed, index,
                                               device, quiet)
    doc, enc, why = attribute_mod.load_thresholds(str(thresholds_name) if thresholds_name else None, resolution,
                                                  device, quiet)
    decider = attribute_mod.make_decider(doc, alpha, quiet)
    extra = _survival_hooks(perturbed, job.plist)
    scorer = attribute_mod.make_scorer(decider.features, enc, use_disk_cache=use_cache, jobs=jobs, extra=extra)
    if doc.user_path:
        job.inputs.append(doc.user_path)
    atomic.check_outputs({"--report": report, "--output": output}, job.inputs)
    sink = batch.open_sink(output, fmt, resume, stdout, attribute_mod.TABLE_COLUMNS, job.inputs, "attribute")
    provenance = attribute_mod.run_provenance(scorer.provenance, doc, why)
    todo = batch.pending_pairs("attribute", job.plist, sink.done, sink.output, quiet)
    out = batch.orphan_records("attribute", job.orphans, provenance)
    out += [r for r in not_found if not r.ok]  # --index: unreadable suspects count as failures
    for r in out + [r for r in not_found if r.ok]:  # not-in-library: a decision, kept out of the aggregates
        sink.add(r)
    sections: list[str] = []

    def done(result) -> None:
        rec = _decided(result, retrieved, decider, top_k, why, provenance)
        pair_conditions.apply(rec)
        if rec.ok and rec.decision.get("outside_conditions"):
            batch.warn(f"{rec.inputs['suspect']['path']}: outside the calibrated conditions: "
                       f"{rec.decision['outside_conditions']}", quiet)
        out.append(rec)
        sink.add(rec)
        if report is not None:
            sections.append(_case_section(len(sections) + 1, rec, result, doc))

    _run_scorer(scorer, todo, "attribute", quiet, batch_size, report is not None, done)
    aggregates = attribute_mod.aggregate_by_reference(out, decider, top_k, why, provenance, sink.done) \
        if aggregate else []
    for r in aggregates:
        sink.add(r)
    sink.close()
    if report is not None:
        _write_report(report, sections, doc, provenance, aggregates, job.inputs, quiet)
    return Results(out + [r for r in not_found if r.ok] + aggregates, items=job.items)


def _attribute_job(reference, suspects, pairs, ref_dir, suspect_dir, perturbed, index,
                   device: str, quiet: bool = True) -> tuple[_PairJob, dict[str, Any], list[Record]]:
    """(the pairs, {suspect: its retrieved origin}, records of suspects with no origin found): from the origin
    ``index`` when one is given (issue 12: each suspect's reference comes from the index), else as named."""
    if index is None:
        return _pair_job(reference, suspects, pairs, ref_dir, suspect_dir, perturbed, quiet), {}, []
    named = [str(s) for s in ([reference] if reference is not None else []) + list(suspects or [])]
    plist, retrieved, not_found = origin_lib.pairs_from_index(named, str(index), device=device)
    job = _PairJob(plist, [], retrieved_out=len(not_found))
    job.inputs = batch.pair_run_inputs(None, named, None, None, None, plist, perturbed) + [str(index)]
    return job, retrieved, not_found


def _decided(result, retrieved: dict[str, Any], decider, top_k: int, why: str, provenance: dict) -> Record:
    """The attribute record of one scored pair (its retrieved origin in ``details.origin`` with --index)."""
    sus = result.record.inputs.get("suspect", {}).get("path")
    if sus in retrieved:
        result.record.details["origin"] = retrieved[sus]
    return attribute_mod.decide_record(decider, result.record, top_k, why, provenance)


def _write_report(report: PathLike, sections: list[str], doc: thresholds.Thresholds, provenance: dict,
                  aggregates: list[Record], inputs: list[str], quiet: bool) -> None:
    report_mod.write(str(report), sections, doc, provenance,
                     [attribute_mod.aggregate_summary(a) for a in aggregates], inputs)
    batch.warn(f"report written to {report}", quiet)


def _case_section(n: int, rec: Record, result, doc: thresholds.Thresholds) -> str:
    dmap, label = result.heatmap()
    return report_mod.case_section(n, rec, result.reference.pixels if result.reference else None,
                                   result.suspect_aligned, dmap, label, doc)


# ---------------------------------------------------------------- perturb
def perturb(inputs: Sequence[PathLike], *, out: PathLike | None = None, method: str = "keyed",
            strength: float = perturb_mod.DEFAULT_STRENGTH, jnd_model: str = "chou-li", key: str | None = None,
            psnr_floor: float = perturb_mod.DEFAULT_PSNR_FLOOR, cell: int = 2, steps: int = 10, seed: int = 0,
            encoder: str = "dinov2-vitb14", resolution: int | None = None, jnd_map: PathLike | None = None,
            records: PathLike | None = None, fmt: str | None = None, resume: bool = False, device: str = "auto",
            quiet: bool = False, stdout: bool = False) -> Results:
    """Protect clean images with an invisible perturbation bounded by ``strength`` × JND on every pixel.

    ``inputs``: image files or folders. One input is written to ``out`` (a ``.png``; default
    ``IMAGE_protected.png`` beside it), several to the folder ``out``; each protected PNG gets a sidecar
    ``OUT.png.json`` (method, alpha, JND model, key id or seed, hashes, PSNR, SSIM, |delta|/JND).
    ``method="adversarial"`` pushes the ``encoder``'s tokens away within the same bound. ``jnd_map`` also (or,
    without ``out``, only) writes the JND map as a grey PNG. ``records=FILE`` writes the records. One
    ``perturb`` record per image.
    """
    perturb_mod._check_common(method, strength, jnd_model)
    perturb_mod.check_psnr_floor(psnr_floor)
    files, plan, is_batch = _perturb_plan(inputs, out, jnd_map, records, quiet)
    making = any(o is not None for _, o, _ in plan)
    enc = encoders.load_encoder(encoder, resolution, device) if method == "adversarial" and making else None
    perturb_mod.make_output_dirs(plan, is_batch)
    sink = batch.open_sink(records, fmt, resume, stdout, perturb_mod.TABLE_COLUMNS, files, "perturb")
    job = perturb_mod.FileJob(method=method, strength=strength, jnd_model=jnd_model, key=key, cell=cell,
                              steps=steps, seed=seed, psnr_floor=psnr_floor, encoder=enc, inputs=files,
                              provenance=score_mod.base_provenance(enc))
    if method == "keyed" and key is None and making:
        batch.warn("no --key: a fresh random key was used (its id is in the sidecar); the pattern cannot "
                   "be regenerated, which detection does not need", quiet)
    todo = [t for t in plan if input_key("perturb", image=t[0]) not in sink.done]
    if len(todo) < len(plan):
        batch.warn(f"--resume: {len(plan) - len(todo)} image(s) already in {records}, skipped", quiet)
    done = _perturb_files(job, todo, sink, quiet)
    sink.close()
    return Results(done, items=len(plan), batch=is_batch)


def _perturb_plan(inputs: Sequence[PathLike], out: PathLike | None, jnd_map: PathLike | None,
                  records: PathLike | None, quiet: bool = True):
    """(files, plan, is_batch), every output checked against every input before any work; ``quiet=False``: what a
    folder holds that is not read says so on stderr."""
    out = Path(out) if out is not None else None
    jnd_map = Path(jnd_map) if jnd_map is not None else None
    given_dirs = any(Path(i).is_dir() for i in inputs)
    files = batch.expand_paths([str(i) for i in inputs], quiet=quiet)
    if not files:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}: nothing to do")
    plan, is_batch = perturb_mod.plan_outputs(files, given_dirs, out, jnd_map)
    run_in = batch.run_inputs(files, [i for i in inputs if Path(i).is_dir()])
    atomic.check_outputs(perturb_mod.planned_outputs(plan, records), run_in, create=is_batch)
    return files, plan, is_batch


def _perturb_files(job: perturb_mod.FileJob, todo, sink, quiet: bool) -> list[Record]:
    """Protect each planned file in turn (progress per gradient step for the adversarial method)."""
    stepwise = job.encoder is not None
    done = []
    with batch.progress_bar(len(todo) * (job.steps if stepwise else 1), "perturb", quiet) as advance:
        for src, o, m in todo:
            rec = perturb_mod.protect_file(job, src, o, m, on_step=(lambda i: advance()) if stepwise else None)
            if not stepwise:
                advance()
            sink.add(rec)
            done.append(rec)
    return done


# ---------------------------------------------------------------- calibrate
@dataclass
class Calibration:
    """What :func:`calibrate` made: the sealed thresholds artifact (``doc``, as written to ``output``), the PNG of
    the plane (``plot``), every scored pair's ``score`` record (``scored``) and the pairs left out (``failed``:
    error records; the corpus is calibrated without them)."""

    doc: thresholds.Thresholds
    output: Path
    plot: Path
    scored: list[Record]
    failed: list[Record]

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0


def calibrate(corpus: PathLike, output: PathLike, *, features: str = "auto", artifact_id: str | None = None,
              version: str = "1", description: str = "", bootstrap: int = 2000, seed: int = 0,
              min_posterior: float = 0.5, alpha: float = 0.05, conformal: bool = True,
              nonconformity: str = "robust-top3", gate_weight: float = 0.2, discriminative: str = "none",
              guard: str | None = None, blind: bool = True,
              plot: PathLike | None = None, scores: PathLike | None = None, reuse_scores: PathLike | None = None,
              resolution: int | None = None, batch_size: int = 8, use_cache: bool = True, device: str = "auto",
              jobs: int = 1, quiet: bool = False) -> Calibration:
    """Fit a thresholds artifact on a labelled corpus and measure it: leave-one-image-out accuracy with a
    cluster-bootstrap 95% CI, confusion matrix, band purity, eta^2 (system vs domain), a blind baseline
    (``blind``), conformal p-values at ``alpha`` (``conformal``; off: a v1-style artifact with the
    ``min_posterior`` rule), and a PNG of the plane (``plot``, default OUTPUT with .png).

    ``corpus``: CSV ``reference,suspect,system,image_id[,domain,rep,band]``. ``features``: a named set
    (``pixel-v2``, ``pixel``, ``ssim-psnr``, ``dinov2``, ``plane``, ``all``), a comma list, or ``auto``
    (dinov2 when its weights are installed, else pixel-v2). ``scores`` also writes the scored pairs (jsonl);
    ``reuse_scores`` takes such a file and scores again only the pairs that changed. ``gate_weight``: the
    Bonferroni weight w of the kNN gate (``robust-top3+knn``), in (0, 1). ``discriminative``: ``none`` (default:
    the density p-values alone, as every artifact up to v7) or a classifier (``lda``, ``qda``, ``logistic``) whose
    cross-fitted p-value is combined with them (:mod:`fingerprint_cli.anchored.discriminative`). ``guard``: a
    decision guard (``tau_band=…,tau_system=…[,tau_gate=…][,band_rule=all|best]``, :mod:`.anchored.naming`)
    stored with the conformal part: what a prediction set may name (the sets are unchanged).
    """
    corpus, output = Path(corpus), Path(output)
    guard_ = _parse_guard(guard, conformal)
    if not 0.0 <= min_posterior <= 1.0:
        raise UsageError(f"--min-posterior is a probability in [0, 1], not {min_posterior:g}")
    attribute_mod.check_alpha(alpha)
    if nonconformity not in calibrate_mod.SCORES:
        raise UsageError(f"--nonconformity is one of {', '.join(calibrate_mod.SCORES)}, not {nonconformity!r}")
    if not 0.0 < gate_weight < 1.0:
        raise UsageError(f"--gate-weight is in (0, 1), not {gate_weight:g}")
    _check_discriminative(discriminative, nonconformity, conformal)
    rows, bands = calibrate_mod.read_corpus(corpus)
    names = attribute_mod.resolve_features(_auto_features(features, quiet))
    enc = encoders.load_encoder("dinov2-vitb14", resolution, device) if attribute_mod.needs_encoder(names) else None
    out_inputs = [r["reference"] for r in rows] + [r["suspect"] for r in rows] + [str(corpus)]
    plot_path = Path(plot) if plot is not None else output.with_suffix(".png")
    atomic.check_outputs({"--output": output, "--plot": plot_path, "--scores": scores},
                         batch.run_inputs(out_inputs))
    scorer = attribute_mod.make_scorer(names, enc, use_disk_cache=use_cache, jobs=jobs)
    results = _score_corpus(scorer, rows, names, reuse_scores, batch_size, quiet)
    keep, failed, hashes = calibrate_mod.usable_pairs(rows, results, names)
    batch.print_failures(failed)
    if scores:
        atomic.write_text(scores, render([res.record for res in results], "jsonl"))
    blind_X = _blind_features(keep, quiet) if blind and keep else None
    doc = _fit(corpus, keep, names, bands, blind_X, hashes, failed, enc, artifact_id or output.stem, version,
               description, bootstrap, seed, min_posterior, alpha if conformal else None, nonconformity, gate_weight,
               discriminative)
    doc = thresholds.save(_with_guard(doc, guard_), output, inputs=out_inputs)
    _warn_small_classes(doc, alpha, quiet)
    atomic.write_bytes(plot_path, plots.plane(doc))
    return Calibration(doc, output, plot_path, [res.record for res in results], failed)


def _parse_guard(spec: str | None, conformal: bool = True):
    """``--guard``'s :class:`~fingerprint_cli.anchored.naming.Guard` (None when not given); a UsageError when
    malformed or without conformal p-values."""
    if spec is None:
        return None
    if not conformal:
        raise UsageError("--guard needs conformal p-values (not --no-conformal)")
    try:
        return naming_mod.parse(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _with_guard(doc: dict, guard) -> dict:
    """``doc`` with the decision guard ``guard`` in its conformal part; ``doc`` itself when there is none."""
    return doc if guard is None else naming_mod.with_guard(doc, guard)


def regard(artifact: str | PathLike, output: PathLike, guard: str | None, *, artifact_id: str | None = None,
           version: str | None = None, description: str | None = None) -> Calibration:
    """Rewrite only the decision guard of an existing conformal artifact (``guard`` None: remove it) into a new
    sealed artifact at ``output`` (id default: the output's stem); the class model, p-values and sets are the
    source's, so no corpus is scored (``fpx calibrate --regard``)."""
    output = Path(output)
    src = thresholds.find(str(artifact))
    g = _parse_guard(guard) if guard is not None else None
    try:
        doc = naming_mod.with_guard(src.to_dict(), g, source=f"{src.id} (sha256 {src.sha256[:16]})")
    except ValueError as exc:
        raise UsageError(f"{artifact}: {exc}") from exc
    doc.update(id=artifact_id or output.stem, **({"version": version} if version is not None else {}),
               **({"description": description} if description is not None else {}))
    inputs = [src.path] if src.path else []
    atomic.check_outputs({"--output": output}, inputs)
    saved = thresholds.save(doc, output, inputs=inputs)
    return Calibration(saved, output, None, [], [])


def _check_discriminative(kind: str, nonconformity: str, conformal: bool) -> None:
    """``--discriminative`` is a known model, and (unless ``none``) goes with a conformal robust-top3 score."""
    if kind not in discriminative_mod.KINDS:
        raise UsageError(f"--discriminative is one of {', '.join(discriminative_mod.KINDS)}, not {kind!r}")
    if kind != "none" and (not conformal or not nonconformity.startswith("robust-top3")):
        raise UsageError("--discriminative needs conformal p-values with a robust-top3 nonconformity "
                         f"(not {'--no-conformal' if not conformal else nonconformity})")


def _auto_features(features: str, quiet: bool) -> str:
    if features != "auto":
        return features
    if artifacts.installed("dinov2-vitb14") is not None:
        return "dinov2"
    batch.warn("DINOv2 weights not installed: calibrating on tone-corrected pixel features "
               "(--features pixel-v2)", quiet)
    return "pixel-v2"


def _score_corpus(scorer, rows, names, reuse_scores, batch_size: int, quiet: bool) -> list:
    """Every corpus pair's PairResult, in row order; with ``reuse_scores`` the unchanged pairs are not scored."""
    pairs = [Pair(r["reference"], r["suspect"]) for r in rows]
    reused = calibrate_mod.reused_results(reuse_scores, pairs, names) if reuse_scores else {}
    if reuse_scores:
        batch.warn(f"--reuse-scores: {len(reused)} of {len(pairs)} pair(s) reused from {reuse_scores}", quiet)
    todo = [p for i, p in enumerate(pairs) if i not in reused]
    with batch.progress_bar(len(todo), "score", quiet) as advance:
        fresh = iter(scorer.score(todo, batch_size=batch_size, on_result=lambda r: advance()))
    return [reused[i] if i in reused else next(fresh) for i in range(len(pairs))]


def _blind_features(keep, quiet: bool) -> np.ndarray:
    bx = []
    with batch.progress_bar(len(keep), "blind", quiet) as advance:
        for r, _ in keep:
            bx.append(blind_mod.features(images.load_image(r["suspect"]).pixels))
            advance()
    return np.stack(bx)


def _fit(corpus: Path, keep, names, bands, blind_X, hashes, failed, enc, artifact_id: str, version: str,
         description: str, bootstrap: int, seed: int, min_posterior: float, alpha: float | None,
         nonconformity: str = "robust-top3", gate_weight: float = 0.2, discriminative: str = "none") -> dict:
    """The (unsealed) artifact; a corpus the statistics cannot use is a UsageError naming it."""
    try:
        corp = calibrate_mod.corpus_from_pairs(keep, names, bands, blind_X)
        info = calibrate_mod.corpus_info(corpus, keep, hashes, len(failed), description, bands is not None,
                                         corp.domains is not None)
        if len(keep) < 4:
            raise UsageError(f"only {len(keep)} pair(s) scored; calibration needs a real corpus")
        return calibrate_mod.calibrate(corp, artifact_id=artifact_id, version=version, description=description,
                                       corpus_info=info, encoder=_encoder_info(enc), B=bootstrap, seed=seed,
                                       min_posterior=min_posterior, alpha=alpha, nonconformity=nonconformity,
                                       gate_weight=gate_weight, disc=discriminative)
    except ValueError as exc:
        raise UsageError(f"{corpus}: {exc}") from exc


def _encoder_info(enc) -> dict[str, Any] | None:
    if enc is None:
        return None
    p = enc.provenance()
    return {"id": p["encoder"], "weights_sha256": p["weights_sha256"], "resolution": p["resolution"],
            "verified": p["verified"]}


def _warn_small_classes(doc: dict[str, Any], alpha: float, quiet: bool) -> None:
    small = calibrate_mod.small_classes(doc, alpha)
    if small:
        batch.warn(f"with alpha {alpha:g} a system needs at least {int(np.ceil(1 / alpha))} calibration "
                   f"calls to ever be left out of a prediction set; "
                   + ", ".join(f"{c} has {n}" for c, n in small.items())
                   + " (its p-value is never below alpha, so the answer for it is never `unknown`)", quiet)


# ---------------------------------------------------------------- DIF and lineage
# dif.extract and dif.detect import torch at their top: imported when called, so `fpx --help` loads no torch.
def extract(generated: PathLike, real: PathLike, out: PathLike, *, name: str | None = None,
            n_images: int | None = None, crop: int = 256, epochs: int | None = None, seed: int = 0,
            method: str = "dif", denoiser: str = "dncnn", test_fraction: float = 0.2, batch_size: int = 64,
            tolerance: int = 1, profile: str | None = None, views: int | None = None, plot: PathLike | None = None,
            evaluate: bool = True, use_cache: bool = True, fpr: float | None = None,
            calibration_real: PathLike | None = None, min_images: int | None = None,
            conditions: Sequence[str] = (), fmt: str | None = None, quiet: bool = False,
            stdout: bool = False) -> Results:
    """Fit the Deep Image Fingerprint of the generator whose images are in the folder ``generated`` against the
    real photographs in ``real`` and write it to ``out`` (a sealed ``.fpx.safetensors``; ``fpx dif-extract``).

    ``method``: ``dif`` (the U-Net of Sinitsa & Fried), ``average`` (Marra 2018) or ``spectral``; ``profile``
    ``robust`` fits on JPEG/rescaled views (``views`` per image); ``fpr`` calibrates the detection threshold at
    that false-positive rate on held-out real images (the real test split, or ``calibration_real``), as
    distributed and under each recompression id in ``conditions`` (``jpeg75``, ``resize0.9``, …);
    ``evaluate=False`` skips scoring the held-out test split; ``plot`` writes a PNG of the pattern and its
    spectrum. A class with fewer than ``min_images`` usable images, overlapping classes, or an output that is an
    input raise before any work. Returns one ``dif-extract`` record (test accuracy/AUC, calibration, counts);
    :func:`fingerprint_cli.dif.extract.fit` is the lower-level call that returns the ``Fingerprint`` itself.
    """
    from fingerprint_cli.dif import extract as dif_extract

    return dif_extract.run(generated, real, out, name=name, n_images=n_images, crop=crop, epochs=epochs, seed=seed,
                           method=method, denoiser=denoiser, test_fraction=test_fraction, batch_size=batch_size,
                           tolerance=tolerance, profile=profile, views=views, plot=plot, evaluate=evaluate,
                           use_cache=use_cache, fpr=fpr, calibration_real=calibration_real,
                           min_images=dif_extract.DEFAULT_MIN_IMAGES if min_images is None else min_images,
                           conditions=conditions, fmt=fmt, quiet=quiet, stdout=stdout)


def detect(fingerprints: Sequence[Any], paths: Sequence[PathLike], *, fingerprint_dir: PathLike | None = None,
           margin: float = 2.0, force: bool = False, use_cache: bool = True, output: PathLike | None = None,
           fmt: str | None = None, resume: bool = False, quiet: bool = False, stdout: bool = False,
           restore_scale: bool | None = None) -> Results:
    """Test images (files or folders) against fingerprints (artifact paths or loaded
    :class:`~fingerprint_cli.dif.fingerprint.Fingerprint` objects, plus those in ``fingerprint_dir``; none: the
    shipped library): one ``detect`` record per image (``fpx detect``), an unreadable image an error record.

    A calibrated fingerprint calls an image generated only when its conformal p-value against held-out real images
    is at most its stated false-positive rate; with several, the label is the claimant with the highest score when
    it leads the others by ``margin`` (real-image standard deviations), ``unknown`` when several claim it
    without a clear winner, ``not-detected`` (``detected: false``, ``generated: null``) when none does — not a
    claim that the image is real: the miss rate is not calibrated — and ``unknown`` outside the conditions a
    fingerprint was calibrated on (``call_outside_conditions`` keeps the withheld call). ``force`` uses fingerprints whose seal or pin fails (records
    then say ``verified: false``). ``restore_scale``: resample a resized suspect back to the training scale where a
    fingerprint holds calibration sets for its scale band (records say ``scale_restored``); None: the default
    (``fingerprint_cli.dif.restore.DETECT_DEFAULT``).
    """
    from fingerprint_cli.dif import detect as dif_detect

    restore_scale = dif_restore.DETECT_DEFAULT if restore_scale is None else bool(restore_scale)
    return dif_detect.run(list(fingerprints), list(paths), restore_scale=restore_scale,
                          fingerprint_dir=str(fingerprint_dir) if fingerprint_dir is not None else None,
                          margin=margin, force=force, use_cache=use_cache, output=output, fmt=fmt, resume=resume,
                          quiet=quiet, stdout=stdout)


def dif_calibrate(fingerprint: PathLike, real: Sequence[PathLike], out: PathLike, *, fpr: float = 0.01,
                  description: str | None = None, dtype: str = "float32", force: bool = False,
                  conditions: Sequence[str] | None = None, use_cache: bool = True, fmt: str | None = None,
                  quiet: bool = False, stdout: bool = False, lossless_real: Sequence[PathLike] = (),
                  restore_scales: Sequence[float] | str = (),
                  restore_method: str = dif_restore.DEFAULT_METHOD) -> Results:
    """Calibrate a fingerprint's detection threshold at the false-positive rate ``fpr`` (0 < FPR <= 0.5) on the
    held-out real images in the folders ``real`` and write the sealed calibrated fingerprint to ``out`` (never an
    input; ``fpx dif-calibrate``). ``dtype`` ``float16`` stores (and calibrates) the half-precision pattern.
    ``conditions``: the recompressions (``jpeg90``, ``jpeg75``, ``resize0.9``, ``resize0.9+jpeg75``, …) the same
    images are also calibrated under, so the stated rate holds on such copies (default
    ``fingerprint_cli.dif.condition.DEFAULT_RECOMPRESSIONS``; ``["none"]``: as distributed only).
    ``lossless_real``: folders of lossless real photos (PNG) calibrated as their own set, so the stated rate
    also holds for lossless suspects. ``restore_scales``: scale bands (e.g. ``[0.9, 0.75, 0.5]``, or
    ``"default"``) whose resized suspects `fpx detect` resamples back to the training scale, calibrated on the same
    images as such suspects with kernel ``restore_method`` (:mod:`fingerprint_cli.dif.restore`). Returns one ``dif-calibrate`` record (the stated FPR, n, the ρ thresholds, the images skipped)."""
    from fingerprint_cli.dif import detect as dif_detect

    return dif_detect.run_calibrate(fingerprint, list(real), out, fpr=fpr, description=description, dtype=dtype,
                                    force=force, use_cache=use_cache, fmt=fmt, quiet=quiet, stdout=stdout,
                                    lossless_real=list(lossless_real), restore_scales=restore_scales,
                                    restore_method=restore_method, conditions=dif_condition.DEFAULT_RECOMPRESSIONS if conditions is None
                                    else list(conditions))


def lineage(fingerprints: Sequence[PathLike], *, images: Sequence[str] = (), real: Sequence[str] = (),
            threshold: float = 0.5, max_shift: int = 2, metric: str = "grid", period: int = 16,
            equalise: str = "none", control: str = "none", plot: PathLike | None = None,
            output: PathLike | None = None, fmt: str | None = None, device: str = "auto", quiet: bool = False,
            stdout: bool = False) -> Results:
    """Cross-detection matrix, relatedness and families of generator fingerprints (artifact paths; ``fpx
    lineage``). ``images``: ``NAME=DIR`` held-out images of the generator whose fingerprint is NAME; ``real``:
    ``DIR`` (every fingerprint) or ``NAME=DIR`` held-out real photos (default: each artifact's own test split);
    ``metric`` ``grid`` | ``accuracy`` | ``auc``; ``threshold`` the cut on 1 - relatedness; ``equalise``
    ``jpegQ`` re-saves every test image as JPEG first; ``control`` ``format`` tests each generator's images
    against the real photos re-saved in that generator's format; ``plot`` a heatmap + dendrogram PNG. Returns one
    ``lineage`` record per ordered pair, then the summary with the families
    (:func:`fingerprint_cli.lineage.run` + :func:`~fingerprint_cli.lineage.to_records`). ``stdout=True`` prints
    as the CLI does (the matrix text for a table)."""
    return lineage_job(list(fingerprints), images=list(images), real=list(real), threshold=threshold,
                       max_shift=max_shift, metric=metric, period=period, equalise=equalise, control=control,
                       plot=plot, output=output, fmt=fmt, device=device, quiet=quiet, stdout=stdout)
