"""``fpx dif-extract`` and ``fpx detect``: Deep Image Fingerprints of generators."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli.cli import common

ORDER = 50

EXTRACT_COLUMNS = ["features.mu_gen", "features.mu_real", "features.train_accuracy", "features.test_accuracy",
                   "features.test_auc", "features.seconds"]
DETECT_COLUMNS = ["features.rho", "features.score", "features.p_value", "decision.label", "decision.fpr"]
MULTI_COLUMNS = ["decision.label", "decision.called_by", "decision.p_value", "decision.fpr_any"]


class _Phases:
    """Opens one progress bar per phase announced by ``extract.fit`` (residuals, training)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.stack = ExitStack()
        self.advance = lambda n=1, **kw: None

    def phase(self, label: str, total: int) -> None:
        from fingerprint_cli import batch

        self.stack.close()
        self.stack = ExitStack()
        self.advance = self.stack.enter_context(batch.progress_bar(total, label, self.quiet))

    def progress(self, n: int = 1, **fields) -> None:
        self.advance(n, **fields)

    def close(self) -> None:
        self.stack.close()


def plot_fingerprint(fp, path: str, inputs=()) -> str:
    """One PNG: the fingerprint (each channel min–max scaled) beside its log-magnitude spectrum (grey)."""
    import numpy as np

    from fingerprint_cli import images

    pat = fp.pattern.numpy().astype(np.float64)
    vis = np.stack([(c - c.min()) / (np.ptp(c) + 1e-12) for c in pat], axis=2)
    spec = np.log(np.abs(np.fft.fftshift(np.fft.fft2(pat), axes=(-2, -1))) + 1e-8).mean(axis=0)
    lo, hi = np.percentile(spec, [1, 99.9])
    spec = np.clip((spec - lo) / (hi - lo + 1e-12), 0, 1)
    gap = np.ones((vis.shape[0], 8, 3))
    canvas = np.concatenate([vis, gap, np.repeat(spec[..., None], 3, axis=2)], axis=1)
    return images.save_png(canvas, path, inputs=inputs)


def register(app: typer.Typer) -> None:
    @app.command("dif-extract")
    def dif_extract(
        generated: Path = typer.Option(..., "--generated", help="folder of the generator's images"),
        real: Path = typer.Option(..., "--real", help="folder of real photographs"),
        out: Path = typer.Option(..., "--out", "-o", help="fingerprint file to write (.fpx.safetensors)"),
        name: Optional[str] = typer.Option(None, "--name", help="generator name (default: --generated folder)"),
        n_images: Optional[int] = typer.Option(None, "--images", help="training images per class (default all)"),
        crop: int = typer.Option(256, "--crop", help="centre crop in pixels (multiple of 16)"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="U-Net training epochs (default 30)"),
        seed: int = typer.Option(0, "--seed", help="seed of the split, the U-Net input and its training"),
        method: str = typer.Option("dif", "--method", help="dif | average (Marra 2018) | spectral"),
        denoiser: str = typer.Option("dncnn", "--denoiser", help="dncnn (bundled) | gaussian (no weights)"),
        test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.9,
                                            help="share of each class held out as the test split"),
        batch_size: int = typer.Option(64, "--batch-size", min=2, help="images per training step"),
        tolerance: int = typer.Option(1, "--tolerance", min=0, max=8,
                                      help="detection searches shifts up to this many pixels, cross-fitted (shift "
                                           "picked on one half of the image, ρ read on the other); 0 = the paper's "
                                           "plain ρ: best on aligned images, breaks on a 1-px shift"),
        profile: Optional[str] = typer.Option(None, "--profile",
                                    help="robust: both classes pass through random JPEG (q 60-100) and rescaling "
                                         "(0.5-1.5x) before their residuals, so the fingerprint survives "
                                         "recompression; plain: the images as they are (the paper). "
                                         "Default: plain (see docs/dif.md)"),
        views: Optional[int] = typer.Option(None, "--views", min=1, max=8,
                                            help="augmented views per training image with --profile robust "
                                                 "(default 2; each costs one residual per image, cached)"),
        plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the fingerprint and its spectrum"),
        no_eval: bool = typer.Option(False, "--no-eval", help="skip scoring the held-out test split"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk residual cache"),
        fpr: Optional[float] = typer.Option(None, "--fpr",
                                            help="calibrate the detection threshold at this false-positive rate "
                                                 "on held-out real images (the real test split, or "
                                                 "--calibration-real); recorded in the fingerprint"),
        calibration_real: Optional[Path] = typer.Option(None, "--calibration-real",
                                                        help="folder of held-out real images for --fpr"),
        min_images: int = typer.Option(8, "--min-images",  # = dif.extract.DEFAULT_MIN_IMAGES (tested)
                                       help="fail when fewer usable images remain in a class (unusable ones are "
                                            "skipped with a warning)"),
        fmt: Optional[str] = common.FormatOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Fit a generator's fingerprint from its images and real photos; writes a .fpx.safetensors artifact.

        Example: fpx dif-extract --generated ldm/ --real photos/ -o ldm.fpx.safetensors --plot ldm.png
        """
        import time


        from fingerprint_cli import batch, images
        from fingerprint_cli.dif import detect, extract
        from fingerprint_cli.dif.residuals import ResidualCache
        from fingerprint_cli.errors import FpxError, UsageError
        from fingerprint_cli.records import Record

        phases = _Phases(quiet)
        try:
            gen_paths = [str(p) for p in images.list_images(generated)]
            real_paths = [str(p) for p in images.list_images(real)]
            all_inputs = gen_paths + real_paths
            sink = batch.RecordSink(None, fmt, False, EXTRACT_COLUMNS)
            from fingerprint_cli import atomic

            for folder, found in ((generated, gen_paths), (real, real_paths)):
                if not found:
                    raise UsageError(f"no images found in {folder} (0 images): nothing to fit")
            extract.refuse_overlap(gen_paths, real_paths)
            cal_paths = None
            if calibration_real is not None:
                if fpr is None:
                    raise UsageError("--calibration-real needs --fpr (the false-positive rate to calibrate at)")
                cal_paths = [str(p) for p in images.list_images(calibration_real)]
                all_inputs += cal_paths
            atomic.check_outputs({"--out": out, "--plot": plot},
                                 batch.run_inputs(all_inputs, [generated, real]
                                                  + ([calibration_real] if calibration_real is not None else [])))
            cache = ResidualCache(disk=not no_cache)
            t0 = time.time()
            skipped_warn = lambda p, why: batch.warn(f"{p}: skipped ({why})", quiet)  # noqa: E731
            fp = extract.fit(gen_paths, real_paths, name=name or extract.default_name(generated), method=method,
                             crop=crop, epochs=epochs, seed=seed, denoiser=denoiser, images=n_images,
                             progress=phases.progress, on_phase=phases.phase, test_fraction=test_fraction,
                             batch_size=batch_size, cache=cache, tolerance=tolerance, min_images=min_images,
                             on_skip=lambda p, why: (phases.close(), skipped_warn(p, why)), fpr=fpr,
                             calibration_paths=cal_paths, profile=profile or extract.DEFAULT_PROFILE,
                             views=views)
            phases.close()
            if fp.meta.get("skipped"):
                by = {}
                for d in fp.meta["skipped"]:
                    by[d["class"]] = by.get(d["class"], 0) + 1
                batch.warn(f"{len(fp.meta['skipped'])} image(s) skipped (" +
                           ", ".join(f"{v} {k}" for k, v in by.items()) + ")", quiet)
            feats = {"mu_gen": fp.meta["mu_gen"], "mu_real": fp.meta["mu_real"],
                     "sigma_real": fp.meta["sigma_real"], "train_accuracy": fp.meta["train_accuracy"],
                     "test_accuracy": None, "test_auc": None}
            test_g = [d["path"] for d in fp.meta["test"]["generated"]]
            test_r = [d["path"] for d in fp.meta["test"]["real"]]
            if not no_eval and test_g and test_r:
                phases.phase("test split", len(test_g) + len(test_r))
                warn = lambda p, e: batch.warn(f"test split: {e}", quiet)  # noqa: E731
                cg = detect.correlations(fp, test_g, cache=cache, on_error=warn, progress=phases.progress)
                cr = detect.correlations(fp, test_r, cache=cache, on_error=warn, progress=phases.progress)
                phases.close()
                acc = (detect.is_generated(fp, cg).sum() + (~detect.is_generated(fp, cr)).sum()) / max(
                    1, len(cg) + len(cr))
                fp.meta["test_accuracy"] = feats["test_accuracy"] = float(acc)
                fp.meta["test_auc"] = feats["test_auc"] = detect.auc(detect.scores(fp, cg), detect.scores(fp, cr))
                if fp.calibrated:
                    pg = detect.p_values(fp, cg)
                    fp.meta["test_tpr_at_fpr"] = feats["test_tpr_at_fpr"] = float((pg <= fp.fpr).mean())
            if fp.calibrated:
                feats["fpr"] = fp.fpr
                feats["calibration_n"] = fp.meta["conformal"]["n"]
            feats["seconds"] = round(time.time() - t0, 1)
            digest = fp.save(out, inputs=all_inputs)
            details = {"fingerprint": {"path": str(out), "sha256": digest}, "name": fp.name, "method": fp.method,
                       "crop": fp.crop, "counts": fp.meta["counts"], "epochs": fp.meta.get("epochs"),
                       "augment": fp.meta.get("augment"),
                       "steps": fp.meta.get("steps"), "seconds": fp.meta["seconds"],
                       "residual_cache": {"hits": cache.hits, "misses": cache.misses},
                       "skipped": fp.meta.get("skipped", []), "conditions": fp.meta.get("conditions"),
                       "calibration": _calibration_summary(fp)}
            if plot is not None:
                details["plot"] = {"path": str(plot), "sha256": plot_fingerprint(fp, str(plot), inputs=all_inputs)}
            from fingerprint_cli.anchored.score import base_provenance

            prov = base_provenance(None, seed)
            prov["denoiser"] = fp.meta["denoiser"]
            rec = Record("dif-extract", {"generated": {"path": str(generated), "sha256": None},
                                         "real": {"path": str(real), "sha256": None}},
                         features=feats, directions={"mu_gen": "higher=more generator-specific",
                                                     "test_accuracy": "higher=better", "test_auc": "higher=better"},
                         provenance=prov, details=details)
            sink.add(rec)
            sink.close()
        except FpxError as exc:
            phases.close()
            common.die(exc)
        raise typer.Exit(0)

    @app.command("detect")
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
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk residual cache"),
        fmt: Optional[str] = common.FormatOpt,
        output: Optional[Path] = common.OutputOpt,
        resume: bool = common.ResumeOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Detect generators' images with their fingerprints: one record per image with ρ, score, p-value.

        A calibrated fingerprint calls an image generated only when its conformal p-value against held-out real
        images is at most the fingerprint's stated false-positive rate. With several fingerprints the label is
        the claimant with the highest score when it leads the others by --margin, 'unknown' when several claim
        it without a clear winner, 'real' when none does. Without any fingerprint argument the shipped library
        is used (`fpx models list`). Examples: fpx detect suspects/; fpx detect ldm.fpx.safetensors img.png;
        fpx detect -F ldm.fpx.safetensors -F dalle.fpx.safetensors img1.png img2.jpg --format csv
        """
        from fingerprint_cli import batch
        from fingerprint_cli.dif import detect
        from fingerprint_cli.dif.fingerprint import Fingerprint, load_folder, load_library
        from fingerprint_cli.dif.residuals import ResidualCache
        from fingerprint_cli.errors import FpxError, UsageError
        from fingerprint_cli.records import input_key

        try:
            fp_paths = [str(p) for p in fingerprints]
            rest = list(args)
            if not fp_paths:
                while rest and rest[0].endswith(".safetensors"):
                    fp_paths.append(rest.pop(0))
            if not rest:
                raise UsageError("give at least one IMAGE or folder (after the fingerprint(s), if any)")
            fps = [Fingerprint.load(p, force=force) for p in fp_paths]
            if fingerprint_dir is not None:
                fps += load_folder(fingerprint_dir, force=force,
                                   on_skip=lambda f, why: batch.warn(f"{f}: skipped ({why})", quiet))
            if not fps:
                fps = load_library(force=force)
                if not fps:
                    raise UsageError("no fingerprint given and no shipped library in this installation: name "
                                     "one (FILE.fpx.safetensors, -F FILE or --fingerprints DIR)")
                batch.warn(f"using the shipped fingerprint library ({len(fps)} fingerprints: "
                           f"{', '.join(fp.name for fp in fps)})", quiet)
            for fp in fps:
                detect.denoiser_for(fp)  # fails early when a denoiser is missing or differs
                if not fp.verified:
                    batch.warn(f"{fp.path}: fingerprint not verified ({fp.seal} seal"
                               f"{'' if fp.meta.get('library', {}).get('pinned', True) else ', sha256 differs from the pin'}"
                               f"): every record says verified: false", quiet)
                if not fp.calibrated:
                    batch.warn(f"{fp.path}: fingerprint not calibrated: no stated false-positive rate, the "
                               f"nearest-mean rule decides (calibrate it with `fpx dif-calibrate`)", quiet)
                if not fp.meta.get("conditions"):
                    batch.warn(f"{fp.path}: fingerprint records no training conditions: the suspects' JPEG "
                               f"quality and scale cannot be checked against them", quiet)
            paths = batch.expand_paths(rest)
            if not paths:
                raise UsageError(f"no images found in {', '.join(rest)}: nothing to do")
            from fingerprint_cli import atomic

            fp_files = [fp.path for fp in fps if fp.path]
            atomic.check_outputs({}, batch.run_inputs(paths + fp_files, [r for r in rest if Path(r).is_dir()]))
            sink = batch.RecordSink(str(output) if output else None, fmt, resume,
                                    DETECT_COLUMNS if len(fps) == 1 else MULTI_COLUMNS, paths + fp_files,
                                    command="detect")
            cache = ResidualCache(disk=not no_cache)
        except FpxError as exc:
            common.die(exc)
        todo = [p for p in paths if input_key("detect", image=p) not in sink.done]
        if resume and len(todo) < len(paths):
            batch.warn(f"--resume: {len(paths) - len(todo)} image(s) already in {output}, skipped", quiet)
        records = []
        if cache.root is not None:
            from fingerprint_cli import artifacts

            problem = artifacts.cache_problem()
            if problem:  # the cache is optional: say so once and go on without it
                batch.warn_once("cache:residual", f"the residual cache cannot be used ({problem}); going on "
                                                  "without it (set FPX_HOME to a writable folder, or --no-cache)")
                cache.root = None
        with batch.progress_bar(len(todo), "detect", quiet) as advance:
            for rec in detect.detect_many(fps, todo, cache=cache, margin=margin):
                cond = (rec.details or {}).get("condition") or {}
                if rec.ok and cond.get("warnings"):
                    batch.warn(f"{rec.inputs['image']['path']}: outside the fingerprint's trained/calibrated "
                               f"conditions: {'; '.join(cond['warnings'])}", quiet)
                sink.add(rec)
                records.append(rec)
                advance()
        sink.close()
        common.print_failures(records, quiet)
        raise typer.Exit(batch.exit_code_for(records, batch=len(paths) > 1))

    @app.command("dif-calibrate")
    def dif_calibrate(
        fingerprint: Path = typer.Argument(..., help="the fingerprint to calibrate (.fpx.safetensors)"),
        real: List[Path] = typer.Option(..., "--real", help="folder of held-out real images (repeatable); never "
                                                            "the fingerprint's training images"),
        fpr: float = typer.Option(0.01, "--fpr", help="the false-positive rate to state (0 < FPR <= 0.5)"),
        out: Path = typer.Option(..., "--out", "-o", help="calibrated fingerprint to write (never the input)"),
        description: Optional[str] = typer.Option(None, "--description", help="what the calibration images are"),
        dtype: str = typer.Option("float32", "--dtype", help="storage of the pattern: float32 | float16"),
        force: bool = typer.Option(False, "--force", help="calibrate a fingerprint whose seal does not match "
                                                          "(the output then stays verified: false)"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk residual cache"),
        fmt: Optional[str] = common.FormatOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Calibrate a fingerprint's detection threshold at a stated false-positive rate on held-out real images.

        Writes a new sealed fingerprint whose detections carry conformal p-values and call an image generated
        only when p <= FPR. Example: fpx dif-calibrate ldm.fpx.safetensors --real photos_val/ --fpr 0.01
        -o ldm-cal.fpx.safetensors
        """
        from fingerprint_cli import atomic, batch, images
        from fingerprint_cli.dif import detect
        from fingerprint_cli.dif.fingerprint import Fingerprint
        from fingerprint_cli.dif.residuals import ResidualCache
        from fingerprint_cli.errors import FpxError, UsageError
        from fingerprint_cli.records import Record
        from fingerprint_cli.anchored.score import base_provenance

        phases = _Phases(quiet)
        try:
            if dtype not in ("float32", "float16"):
                raise UsageError(f"--dtype must be float32 or float16 (got {dtype!r})")
            detect.check_fpr(fpr)
            fp = Fingerprint.load(fingerprint, force=force)
            if dtype != "float32":
                fp = fp.quantized(dtype)  # calibrate the pattern that will be stored
            paths = [str(p) for d in real for p in images.list_images(d)]
            atomic.refuse_overwrite_of_inputs(out, paths + [str(fingerprint)])
            if Path(out).is_dir():
                raise UsageError("is a folder; --out names the fingerprint file to write", str(out))
            skipped = []

            def skip(p, why):
                skipped.append({"path": p, "reason": why})
                batch.warn(f"{p}: skipped ({why})", quiet)

            phases.phase("calibration", len(paths))
            new = detect.calibrate(fp, paths, fpr, cache=ResidualCache(disk=not no_cache), on_skip=skip,
                                   progress=phases.progress,
                                   description=description or ", ".join(str(d) for d in real))
            phases.close()
            if skipped:
                batch.warn(f"{len(skipped)} image(s) skipped", quiet)
            digest = new.save(out, inputs=paths + [str(fingerprint)], dtype=dtype)
            new.verified = fp.verified
            cal = new.meta["conformal"]
            prov = base_provenance(None, None)
            prov["fingerprint"] = fp.provenance()
            rec = Record("dif-calibrate", {"fingerprint": {"path": str(fingerprint), "sha256": fp.sha256},
                                           "real": {"path": ", ".join(str(d) for d in real),
                                                    "sha256": cal["manifest_sha256"]}},
                         features={"fpr": cal["fpr"], "n": cal["n"], "rho_threshold": cal["rho_threshold"],
                                   "mu_real": new.meta["mu_real"], "mu_gen": new.meta["mu_gen"]},
                         directions={"fpr": "stated false-positive rate (upper bound for exchangeable real "
                                            "images)"},
                         provenance=prov,
                         details={"fingerprint": {"path": str(out), "sha256": digest, "verified": fp.verified},
                                  "calibration": _calibration_summary(new), "skipped": skipped})
            sink = batch.RecordSink(None, fmt, False, ["features.fpr", "features.n", "features.rho_threshold"])
            sink.add(rec)
            sink.close()
        except FpxError as exc:
            phases.close()
            common.die(exc)
        raise typer.Exit(0)


def _calibration_summary(fp) -> dict | None:
    cal = fp.meta.get("conformal")
    if not cal:
        return None
    return {"fpr": cal["fpr"], "n": cal["n"], "rho_threshold": cal.get("rho_threshold"),
            "manifest_sha256": cal.get("manifest_sha256"), "description": cal.get("description"),
            "conditions": cal.get("conditions")}
