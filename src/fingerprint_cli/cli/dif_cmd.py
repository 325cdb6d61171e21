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
DETECT_COLUMNS = ["features.rho", "features.score", "decision.label"]


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

            atomic.refuse_overwrite_of_inputs(out, all_inputs)
            if plot is not None:
                atomic.refuse_overwrite_of_inputs(plot, all_inputs)
                if Path(plot).resolve() == Path(out).resolve():
                    raise UsageError("--plot and --out name the same file")
            cache = ResidualCache(disk=not no_cache)
            t0 = time.time()
            fp = extract.fit(gen_paths, real_paths, name=name or extract.default_name(generated), method=method,
                             crop=crop, epochs=epochs, seed=seed, denoiser=denoiser, images=n_images,
                             progress=phases.progress, on_phase=phases.phase, test_fraction=test_fraction,
                             batch_size=batch_size, cache=cache, tolerance=tolerance,
                             profile=profile or extract.DEFAULT_PROFILE,
                             views=views)
            phases.close()
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
            feats["seconds"] = round(time.time() - t0, 1)
            digest = fp.save(out, inputs=all_inputs)
            details = {"fingerprint": {"path": str(out), "sha256": digest}, "name": fp.name, "method": fp.method,
                       "crop": fp.crop, "counts": fp.meta["counts"], "epochs": fp.meta.get("epochs"),
                       "augment": fp.meta.get("augment"),
                       "steps": fp.meta.get("steps"), "seconds": fp.meta["seconds"],
                       "residual_cache": {"hits": cache.hits, "misses": cache.misses}}
            if plot is not None:
                details["plot"] = {"path": str(plot), "sha256": plot_fingerprint(fp, str(plot), inputs=all_inputs)}
            from fingerprint_cli.score import base_provenance

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
        args: List[str] = typer.Argument(..., help="FINGERPRINT.fpx.safetensors [more fingerprints] IMAGE|DIR ..."),
        fingerprints: List[Path] = typer.Option([], "--fingerprint", "-F",
                                                help="a fingerprint (repeatable; else the leading .safetensors args)"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the on-disk residual cache"),
        fmt: Optional[str] = common.FormatOpt,
        output: Optional[Path] = common.OutputOpt,
        resume: bool = common.ResumeOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Detect a generator's images with its fingerprint: one record per image with ρ, generated, score.

        With several fingerprints each image is attributed to the one with the highest calibrated score among
        those that call it generated (else 'real'). Examples: fpx detect ldm.fpx.safetensors suspects/;
        fpx detect -F ldm.fpx.safetensors -F dalle.fpx.safetensors img1.png img2.jpg --format csv
        """
        from fingerprint_cli import batch
        from fingerprint_cli.dif import detect
        from fingerprint_cli.dif.fingerprint import Fingerprint
        from fingerprint_cli.dif.residuals import ResidualCache
        from fingerprint_cli.errors import FpxError, InputError, UsageError
        from fingerprint_cli.records import Record, input_key
        from fingerprint_cli.score import base_provenance

        try:
            fp_paths = [str(p) for p in fingerprints]
            rest = list(args)
            if not fp_paths:
                while rest and rest[0].endswith(".safetensors"):
                    fp_paths.append(rest.pop(0))
            if not fp_paths:
                raise UsageError("name a fingerprint first (FILE.fpx.safetensors) or with --fingerprint")
            if not rest:
                raise UsageError("give at least one IMAGE or folder after the fingerprint(s)")
            fps = [Fingerprint.load(p) for p in fp_paths]
            names = [fp.name for fp in fps]
            if len(set(names)) < len(names):
                names = [f"{fp.name}#{i}" for i, fp in enumerate(fps)]
            for fp in fps:
                detect.denoiser_for(fp)  # fails early when a denoiser is missing or differs
            paths = batch.expand_paths(rest)
            sink = batch.RecordSink(str(output) if output else None, fmt, resume,
                                    DETECT_COLUMNS if len(fps) == 1 else None, paths + fp_paths)
            cache = ResidualCache(disk=not no_cache)
        except FpxError as exc:
            common.die(exc)
        prov = base_provenance(None, None)
        prov["fingerprints"] = [{"path": p, "name": fp.name, "method": fp.method, "denoiser": fp.meta.get("denoiser"),
                                 "crop": fp.crop} for p, fp in zip(fp_paths, fps)]
        todo = [p for p in paths if input_key("detect", image=p) not in sink.done]
        if resume and len(todo) < len(paths):
            batch.warn(f"--resume: {len(paths) - len(todo)} image(s) already in {output}, skipped", quiet)
        records = []
        with batch.progress_bar(len(todo), "detect", quiet) as advance:
            for p in todo:
                try:
                    feats, dirs, per = {}, {}, []
                    sha = None
                    for nm, fp in zip(names, fps):
                        errs = []
                        rho, infos = detect.correlations_with_info(fp, [p], cache=cache,
                                                                   on_error=lambda q, e: errs.append(e))
                        if errs:
                            raise errs[0]
                        sha = infos[0]["sha256"]
                        gen = bool(detect.is_generated(fp, rho)[0])
                        sc = float(detect.scores(fp, rho)[0])
                        per.append((nm, gen, sc))
                        sfx = "" if len(fps) == 1 else f".{nm}"
                        feats[f"rho{sfx}"] = float(rho[0])
                        feats[f"score{sfx}"] = sc
                        dirs[f"rho{sfx}"] = "higher=more like the generator"
                        dirs[f"score{sfx}"] = "higher=more like the generator (z vs real images)"
                    called = [x for x in per if x[1]]
                    if len(fps) == 1:
                        decision = {"generated": per[0][1], "label": per[0][0] if per[0][1] else "real"}
                    else:
                        best = max(called, key=lambda x: x[2]) if called else None
                        decision = {"generated": best is not None, "label": best[0] if best else "real",
                                    "called_by": [x[0] for x in called]}
                    reasons = [{"feature": f"score.{nm}" if len(fps) > 1 else "score", "z": sc,
                                "generated": g} for nm, g, sc in sorted(per, key=lambda x: -x[2])]
                    rec = Record("detect", {"image": {"path": p, "sha256": sha}}, features=feats, directions=dirs,
                                 decision=decision, reasons=reasons, provenance=prov)
                except FpxError as exc:
                    rec = Record.failure("detect", {"image": {"path": p, "sha256": None}}, exc, prov)
                except Exception as exc:  # a runtime failure on one item: the batch goes on
                    rec = Record.failure("detect", {"image": {"path": p, "sha256": None}},
                                         InputError(f"{type(exc).__name__}: {exc}", p), prov)
                sink.add(rec)
                records.append(rec)
                advance()
        sink.close()
        common.print_failures(records, quiet)
        raise typer.Exit(batch.exit_code_for(records, batch=len(paths) > 1))
