"""``fpx calibrate``: fit a thresholds artifact from a labelled corpus and measure it (LOO, CI, η², blind)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fingerprint_cli.cli import common

ORDER = 40


def summary_text(doc: dict) -> str:
    cal = doc["calibration"]
    loo, band = cal["loo"], cal["band_loo"]
    lines = [f"thresholds {doc['id']} v{doc['version']}  sha256 {doc['sha256'][:16]}…",
             f"corpus: {cal['corpus']['n_images']} images, {cal['corpus']['n_calls']} calls, "
             f"{len(doc['systems'])} systems; features: {', '.join(doc['features'])}",
             f"LOO system accuracy  {loo['accuracy']:.3f}  95% CI [{loo['ci95'][0]:.3f}, {loo['ci95'][1]:.3f}]"
             f"  (chance {loo['chance']:.3f}, majority {loo['majority']:.3f}; cluster bootstrap over images, "
             f"B={loo['bootstrap']['B']})",
             f"LOO band accuracy    {band['accuracy']:.3f}  95% CI [{band['ci95'][0]:.3f}, {band['ci95'][1]:.3f}]"
             f"  purity " + ", ".join(f"{b} {p:.3f}" if p is not None else f"{b} -" for b, p in band["purity"].items()),
             f"inconclusive under the artifact's rule: {loo['inconclusive_rate']:.3f} of calls; accuracy when "
             f"decided {loo['accuracy_when_decided'] if loo['accuracy_when_decided'] is None else round(loo['accuracy_when_decided'], 3)}"]
    eta = cal["eta_squared"]
    dom = "n/a (no domain column)" if eta["domain"] is None else f"{eta['domain']:.3f}"
    lines.append(f"eta^2 of features: system {eta['system']:.3f}, image domain {dom}, image {eta['image']:.3f}")
    bl = cal.get("blind_baseline")
    if bl:
        lines.append(f"blind baseline (no reference): system {bl['loo']['accuracy']:.3f} "
                     f"[{bl['loo']['ci95'][0]:.3f}, {bl['loo']['ci95'][1]:.3f}], band {bl['band_loo']['accuracy']:.3f} "
                     f"[{bl['band_loo']['ci95'][0]:.3f}, {bl['band_loo']['ci95'][1]:.3f}]")
    lines.append(f"bands: {doc['band_rule']['how']}: " +
                 ", ".join(f"{s}={b}" for s, b in doc["band_rule"]["bands"].items()))
    conf = cal.get("conformal")
    if conf:
        score_ = {"robust-top3": "per-class robust top-3 |z|"}.get(conf.get("score"), "per-class Ledoit-Wolf Mahalanobis")
        lines.append(f"conformal (Mondrian, {score_}, LOO) at alpha {conf['alpha']:g}: "
                     f"coverage {conf['coverage']:.3f} (target {conf['target_coverage']:.3f}; per system "
                     f"{conf['coverage_min_system']:.3f}-{conf['coverage_max_system']:.3f}), mean set size "
                     f"{conf['mean_set_size']:.2f}, unknown {conf['unknown_rate']:.3f}, one system "
                     f"{conf['singleton_rate']:.3f} (accuracy {conf['singleton_accuracy'] if conf['singleton_accuracy'] is None else round(conf['singleton_accuracy'], 3)})")
        wn = max(len(c) for c in conf["per_system"]) + 2
        for c, v in conf["per_system"].items():
            lines.append(f"    {c:<{wn}} coverage {v['coverage']:.3f}  n {v['n']:>5d}  mean set size {v['mean_set_size']:.2f}")
    else:
        lines.append("conformal: none (p-values: not calibrated)")
    labels = loo["labels"]
    w = max(len(x) for x in labels) + 2
    lines.append("confusion (rows true, columns predicted, LOO):")
    cw = max(5, max(len(str(v)) for row in loo["confusion"] for v in row) + 1)
    lines.append(" " * (w + 5) + "".join(f"{f'[{i + 1}]':>{cw}}" for i in range(len(labels))))
    for i, (lab, row) in enumerate(zip(labels, loo["confusion"])):
        lines.append(f"{f'[{i + 1}]':>4} {lab:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines) + "\n"


def _reused(path: Path, pairs, names) -> dict:
    """{pair index: PairResult} for pairs of ``path`` (an earlier ``--scores`` jsonl) whose reference and
    suspect paths and sha256 match the files now and that carry every feature in ``names``."""
    import json as _json

    from fingerprint_cli import images
    from fingerprint_cli.errors import InputError
    from fingerprint_cli.records import Record
    from fingerprint_cli.score import PairResult

    if not path.is_file():
        raise InputError("no such scores file", str(path))
    old = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = _json.loads(line)
                if d.get("status") == "ok":
                    old[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])] = d
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"is not a --scores jsonl file ({exc.__class__.__name__})", str(path)) from exc
    sha: dict[str, str] = {}

    def digest(p):
        if p not in sha:
            sha[p] = images.sha256_file(p)
        return sha[p]

    out = {}
    for i, pair in enumerate(pairs):
        d = old.get((pair.reference, pair.suspect))
        if d is None or any(d["features"].get(f) is None for f in names):
            continue
        try:
            same = (d["inputs"]["reference"]["sha256"] == digest(pair.reference)
                    and d["inputs"]["suspect"]["sha256"] == digest(pair.suspect))
        except OSError:
            continue
        if same:
            out[i] = PairResult(Record.from_dict(d))
    return out


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate_cmd(
        corpus: Path = typer.Argument(..., help="CSV: reference,suspect,system,image_id[,domain,rep,band]"),
        output: Path = typer.Option(..., "--output", "-o", help="thresholds artifact to write (JSON)"),
        features: str = typer.Option("auto", "--features",
                                     help="feature set: pixel-v2 (tone-corrected, no weights needed), pixel (v1), "
                                          "ssim-psnr, dinov2, plane, all, or a comma list; auto = dinov2 if its "
                                          "weights are installed, else pixel-v2"),
        artifact_id: Optional[str] = typer.Option(None, "--id", help="artifact id (default: output file stem)"),
        version: str = typer.Option("1", "--version", help="artifact version"),
        description: str = typer.Option("", "--description", help="what the corpus is and what it is not"),
        bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="cluster-bootstrap resamples (>= 2000 "
                                                                         "for published numbers)"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and of plotted subsamples"),
        min_posterior: float = typer.Option(0.5, "--min-posterior",
                                            help="(with --no-conformal) inconclusive below this top posterior"),
        alpha: float = typer.Option(0.05, "--alpha", help="conformal significance level stored in the artifact, "
                                                           "in (0, 0.5]"),
        conformal: bool = typer.Option(True, "--conformal/--no-conformal",
                                       help="fit conformal p-values (open-set `unknown`); --no-conformal makes a "
                                            "v1-style artifact"),
        nonconformity: str = typer.Option("robust-top3", "--nonconformity",
                                          help="conformal score: robust-top3 (v3: mean of the 3 largest per-feature "
                                               "robust z-scores per system) or mahalanobis (v2)"),
        blind: bool = typer.Option(True, "--blind/--no-blind", help="also measure the blind (no reference) baseline"),
        plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the plane (default: OUTPUT with .png)"),
        scores: Optional[Path] = typer.Option(None, "--scores", help="also write the scored pairs (jsonl)"),
        reuse_scores: Optional[Path] = typer.Option(
            None, "--reuse-scores",
            help="a --scores jsonl of an earlier run: pairs whose paths and sha256 match and that have every "
                 "feature are not scored again (recalibrate with another --alpha without rescoring)"),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="encoder resolution (default 224)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk token cache"),
        fmt: Optional[str] = typer.Option(None, "--format", "-f", help="text (default) | json: the summary on stdout"),
        device: str = common.DeviceOpt,
        jobs: int = common.JobsOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Fit a thresholds artifact on a labelled corpus: leave-one-image-out accuracy with a cluster-bootstrap
        95% CI, confusion matrix, band purity, eta^2 (system vs domain), a blind baseline, and a PNG of the plane.

        Example: fpx calibrate corpus.csv -o thresholds/my-lab-v1.json --features pixel
        """
        import numpy as np

        from fingerprint_cli import artifacts, atomic, batch, blind as blind_mod, encoders, images, plots, thresholds
        from fingerprint_cli import attribute as attr
        from fingerprint_cli import calibrate as cal
        from fingerprint_cli.batch import Pair
        from fingerprint_cli.errors import FpxError, InputError, UsageError
        from fingerprint_cli import guard
        from fingerprint_cli.records import Record, render

        try:
            if fmt not in (None, "text", "json"):
                raise UsageError("--format is text or json for calibrate")
            if not 0.0 <= min_posterior <= 1.0:
                raise UsageError(f"--min-posterior is a probability in [0, 1], not {min_posterior:g}")
            attr.check_alpha(alpha)
            if nonconformity not in cal.SCORES:
                raise UsageError(f"--nonconformity is one of {', '.join(cal.SCORES)}, not {nonconformity!r}")
            rows = batch.read_csv_rows(corpus, ["reference", "suspect", "system", "image_id"])
            if not rows:
                raise InputError("corpus has no rows", str(corpus))
            for i, r in enumerate(rows, 2):
                if not r["system"] or not r["image_id"]:
                    raise InputError(f"line {i}: system and image_id must not be empty", str(corpus))
            has_band = any(r.get("band") for r in rows)
            bands = None
            if has_band:
                bands = {}
                for i, r in enumerate(rows, 2):
                    b = r.get("band", "")
                    if not b:
                        raise InputError(f"line {i}: band is empty while other rows name one", str(corpus))
                    if bands.setdefault(r["system"], b) != b:
                        raise InputError(f"line {i}: system {r['system']} is in band {bands[r['system']]} "
                                         f"elsewhere, not {b}", str(corpus))
            if features == "auto":
                inst = artifacts.installed("dinov2-vitb14")
                features = "dinov2" if inst is not None else "pixel-v2"
                if inst is None:
                    batch.warn("DINOv2 weights not installed: calibrating on tone-corrected pixel features "
                               "(--features pixel-v2)", quiet)
            names = attr.resolve_features(features)
            enc = None
            if attr.needs_encoder(names):
                enc = encoders.load_encoder("dinov2-vitb14", resolution, device)
            out_inputs = [r["reference"] for r in rows] + [r["suspect"] for r in rows] + [str(corpus)]
            plot_path = plot or output.with_suffix(".png")
            atomic.check_outputs({"--output": output, "--plot": plot_path, "--scores": scores},
                                 batch.run_inputs(out_inputs))
            scorer = attr.make_scorer(names, enc, use_disk_cache=not no_cache, jobs=jobs)
        except FpxError as exc:
            common.die(exc)

        pairs = [Pair(r["reference"], r["suspect"]) for r in rows]
        try:
            reused = _reused(reuse_scores, pairs, names) if reuse_scores else {}
        except FpxError as exc:
            common.die(exc)
        if reuse_scores:
            batch.warn(f"--reuse-scores: {len(reused)} of {len(pairs)} pair(s) reused from {reuse_scores}", quiet)
        todo = [p for i, p in enumerate(pairs) if i not in reused]
        with batch.progress_bar(len(todo), "score", quiet) as advance:
            fresh = iter(scorer.score(todo, batch_size=batch_size, on_result=lambda r: advance()))
        results = [reused[i] if i in reused else next(fresh) for i in range(len(pairs))]
        keep, failed = [], []
        hashes: dict[str, str] = {}
        for r, res in zip(rows, results):
            rec = res.record
            if not rec.ok:
                failed.append(rec)
                continue
            bad = guard.nonfinite({f: rec.features.get(f) for f in names}) + \
                [f for f in names if rec.features.get(f) is None]
            if bad:  # a pair without usable features is a failed pair, not a reason to refuse the corpus
                failed.append(Record.failure("score", rec.inputs, InputError(
                    f"feature(s) {', '.join(bad)} missing or not finite", rec.inputs["suspect"]["path"]),
                    rec.provenance))
                continue
            hashes[r["reference"]] = rec.inputs["reference"]["sha256"]
            hashes[r["suspect"]] = rec.inputs["suspect"]["sha256"]
            keep.append((r, rec))
        common.print_failures(failed, quiet)
        if scores:
            atomic.write_text(scores, render([res.record for res in results], "jsonl"))
        blind_X = None
        if blind and keep:
            bx = []
            with batch.progress_bar(len(keep), "blind", quiet) as advance:
                for r, _ in keep:
                    try:
                        bx.append(blind_mod.features(images.load_image(r["suspect"]).pixels))
                    except FpxError as exc:  # pragma: no cover - it just loaded fine
                        common.die(exc)
                    advance()
            blind_X = np.stack(bx)
        try:
            X = np.array([[rec.features[f] for f in names] for _, rec in keep], dtype=np.float64)
            domains = None
            if keep and all(r.get("domain") for r, _ in keep):
                domains = np.array([r["domain"] for r, _ in keep])
            directions = {}
            for _, rec in keep:
                directions.update(rec.directions)
            enc_info = None
            if enc is not None:
                p = enc.provenance()
                enc_info = {"id": p["encoder"], "weights_sha256": p["weights_sha256"],
                            "resolution": p["resolution"], "verified": p["verified"]}
            info = {"path": str(corpus), "sha256": cal.corpus_sha256([r for r, _ in keep], hashes),
                    "description": description or f"corpus {corpus.name}", "failed_pairs": len(failed),
                    "has_band_column": has_band, "has_domain_column": domains is not None,
                    "reps": max((int(r["rep"]) for r, _ in keep if r.get("rep", "").isdigit()), default=0) + 1
                    if any(r.get("rep") for r, _ in keep) else 1}
            corp = cal.Corpus(X=X, features=names, directions=directions,
                              systems=np.array([r["system"] for r, _ in keep]),
                              images=np.array([r["image_id"] for r, _ in keep]), domains=domains,
                              bands=bands, blind_X=blind_X)
            if len(keep) < 4:
                raise UsageError(f"only {len(keep)} pair(s) scored; calibration needs a real corpus")
            doc = cal.calibrate(corp, artifact_id=artifact_id or output.stem, version=version,
                                description=description, corpus_info=info, encoder=enc_info, B=bootstrap,
                                seed=seed, min_posterior=min_posterior, alpha=alpha if conformal else None,
                                nonconformity=nonconformity)
        except ValueError as exc:
            common.die(UsageError(f"{corpus}: {exc}"))
        except FpxError as exc:
            common.die(exc)
        doc = thresholds.save(doc, output, inputs=out_inputs)
        if doc.get("conformal"):
            small = {c: len(v) for c, v in doc["conformal"]["calibration_scores"].items()
                     if 1.0 / (len(v) + 1) >= alpha}
            if small:
                batch.warn(f"with alpha {alpha:g} a system needs at least {int(np.ceil(1 / alpha))} calibration "
                           f"calls to ever be left out of a prediction set; "
                           + ", ".join(f"{c} has {n}" for c, n in small.items())
                           + " (its p-value is never below alpha, so the answer for it is never `unknown`)", quiet)
        atomic.write_bytes(plot_path, plots.plane(doc))
        if fmt == "json":
            sys.stdout.write(json.dumps({"id": doc["id"], "sha256": doc["sha256"], "output": str(output),
                                         "plot": str(plot_path), "calibration": doc["calibration"] | {
                                             "plane": {"features": doc["calibration"]["plane"]["features"]}}},
                                        indent=1) + "\n")
        else:
            sys.stdout.write(summary_text(doc))
        batch.warn(f"wrote {output} and {plot_path}", quiet)
        raise typer.Exit(3 if failed else 0)
