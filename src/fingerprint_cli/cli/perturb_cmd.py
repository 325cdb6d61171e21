"""``fpx perturb``: protect clean images with a content-adaptive sub-JND perturbation (or write JND maps)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fingerprint_cli.cli import common

ORDER = 10

TABLE_COLUMNS = ["inputs.image.path", "details.output", "features.psnr", "features.ssim",
                 "features.max_delta_over_jnd", "features.share_within_jnd"]
FEATURE_DIRECTIONS = {
    "psnr": "higher = less visible", "ssim": "higher = less visible",
    "mean_abs_delta": "lower = less visible", "max_abs_delta": "lower = less visible",
    "mean_delta_over_jnd": "lower = less visible", "max_delta_over_jnd": "must be <= strength",
    "share_within_jnd": "1 = every pixel and channel within its JND",
    "jnd_mean": "levels", "jnd_p10": "levels", "jnd_p90": "levels",
}


def plan_outputs(inputs: List[str], given_dirs: bool, out: Optional[Path], jnd_map: Optional[Path]):
    """[(input, output png or None, jnd map png or None)] following the naming rules in docs/perturb.md."""
    from fingerprint_cli.errors import UsageError

    batch = len(inputs) > 1 or given_dirs
    plan = []
    for src in inputs:
        p = Path(src)
        if batch:
            if out is None and jnd_map is None:
                raise UsageError("several images: name an output folder with -o OUTDIR (or --jnd-map DIR)")
            o = (out / f"{p.stem}.png") if out is not None else None
            m = (jnd_map / f"{p.stem}_jnd.png") if jnd_map is not None else None
        else:
            if out is None:
                o = None if jnd_map is not None else p.with_name(f"{p.stem}_protected.png")
            elif out.is_dir() or str(out).endswith(("/", "\\")):
                o = out / f"{p.stem}.png"
            else:
                if out.suffix.lower() != ".png":
                    raise UsageError("the protected image is written losslessly as PNG: name it *.png",
                                     str(out))
                o = out
            m = jnd_map
            if m is not None and m.suffix.lower() != ".png":
                raise UsageError("--jnd-map is written as a PNG picture: name it *.png", str(m))
        plan.append((src, o, m))
    return plan, batch


def register(app: typer.Typer) -> None:
    @app.command("perturb")
    def perturb_command(
        inputs: List[str] = typer.Argument(..., help="clean image(s) or folders of them"),
        out: Optional[Path] = typer.Option(None, "--out", "-o",
                                           help="protected PNG (one input) or output folder (several inputs); "
                                                "default IMAGE_protected.png beside the input"),
        method: str = typer.Option("keyed", "--method", "-m", help="keyed (no model) | adversarial (encoder)"),
        strength: float = typer.Option(0.3, "--strength", "-a",
                                       help="alpha: every pixel stays within alpha x JND (0.2 .. 2)"),
        jnd_model: str = typer.Option("chou-li", "--jnd", help="JND model: chou-li | namm"),
        key: Optional[str] = typer.Option(None, "--key", envvar="FPX_PERTURB_KEY",
                                          help="secret for the keyed pattern (or env FPX_PERTURB_KEY); "
                                               "default: a fresh random key. Only its id is recorded"),
        psnr_floor: float = typer.Option(40.0, "--psnr-floor",
                                         help="scale delta down when needed so PSNR stays >= this (dB; 0 = off)"),
        cell: int = typer.Option(2, "--cell", min=1, max=16, help="keyed pattern cell size in pixels"),
        steps: int = typer.Option(10, "--steps", min=1, help="adversarial: projected gradient steps"),
        seed: int = typer.Option(0, "--seed", help="adversarial: seed of the random start"),
        encoder: str = typer.Option("dinov2-vitb14", "--encoder", help="adversarial: encoder (as fpx score)"),
        resolution: Optional[int] = typer.Option(None, "--resolution",
                                                 help="adversarial: encoder input size (multiple of 14)"),
        jnd_map: Optional[Path] = typer.Option(None, "--jnd-map",
                                               help="also write the JND map as a grey PNG (grey = 8 x JND "
                                                    "levels); without -o only the map is written"),
        records: Optional[Path] = typer.Option(None, "--records",
                                               help="write the result records to this file instead of stdout"),
        fmt: Optional[str] = common.FormatOpt,
        resume: bool = typer.Option(False, "--resume",
                                    help="keep records already in --records FILE and skip their images"),
        device: str = common.DeviceOpt,
        quiet: bool = common.QuietOpt,
    ) -> None:
        """Protect clean images with an invisible perturbation bounded by alpha x JND on every pixel.

        Writes OUT.png (lossless) and OUT.png.json (sidecar: method, alpha, JND model, key id or seed,
        encoder, sha256 of input and output, PSNR, SSIM, mean/max |delta|/JND). Later,
        `fpx score CLEAN SUSPECT --perturbed OUT.png` measures survival and detection.

        Examples: fpx perturb cat.png -o cat_protected.png --key "$SECRET";
        fpx perturb photos/ -o protected/ --jnd namm; fpx perturb cat.png --jnd-map cat_jnd.png;
        fpx perturb cat.png -o cat_adv.png --method adversarial --steps 20
        """
        import json

        import numpy as np

        from fingerprint_cli import atomic, batch, images, jnd as jnd_mod, perturb as pert, score as score_mod
        from fingerprint_cli.errors import FpxError, InputError, UsageError
        from fingerprint_cli.records import Record, input_key

        try:
            pert._check_common(method, strength, jnd_model)
            pert.check_psnr_floor(psnr_floor)
            given_dirs = any(Path(i).is_dir() for i in inputs)
            files = batch.expand_paths(inputs)
            if not files:
                raise UsageError(f"no images found in {', '.join(map(str, inputs))}: nothing to do")
            plan, is_batch = plan_outputs(files, given_dirs, out, jnd_map)
            # every output (images, sidecars, maps, records) against every input, before any work
            run_in = batch.run_inputs(files, [i for i in inputs if Path(i).is_dir()])
            outs: dict = {"--records": records}
            planned: set = set()
            for n, (_, o, m) in enumerate(plan):
                for label, target in ((f"output {n + 1}", o), (f"--jnd-map {n + 1}", m)):
                    # in a batch, two inputs with one stem share an output: the second becomes an error record
                    # below, so each path is checked once here
                    if target is None or Path(target).resolve() in planned:
                        continue
                    planned.add(Path(target).resolve())
                    outs[label] = target
                    if label.startswith("output"):
                        outs[f"sidecar {n + 1}"] = pert.sidecar_path(str(target))
            atomic.check_outputs(outs, run_in, create=is_batch)
            enc = None
            making = any(o is not None for _, o, _ in plan)
            if method == "adversarial" and making:
                from fingerprint_cli import encoders

                enc = encoders.load_encoder(encoder, resolution, device)
            for d in {o.parent for _, o, _ in plan if o is not None} | \
                     {m.parent for _, _, m in plan if m is not None}:
                if is_batch:
                    d.mkdir(parents=True, exist_ok=True)
                elif not d.is_dir():
                    raise UsageError("output folder does not exist", str(d))
            sink = batch.RecordSink(str(records) if records else None, fmt, resume, TABLE_COLUMNS, files,
                                    command="perturb")
            prov = score_mod.base_provenance(enc)
        except FpxError as exc:
            common.die(exc)
        if method == "keyed" and key is None and making:
            batch.warn("no --key: a fresh random key was used (its id is in the sidecar); the pattern cannot "
                       "be regenerated, which detection does not need", quiet)
        seen_outputs: dict[str, str] = {}
        results: list[Record] = []
        todo = [t for t in plan if input_key("perturb", image=t[0]) not in sink.done]
        if resume and len(todo) < len(plan):
            batch.warn(f"--resume: {len(plan) - len(todo)} image(s) already in {records}, skipped", quiet)
        per_item = steps if enc is not None else 1
        with batch.progress_bar(len(todo) * per_item, "perturb", quiet) as advance:
            for src, o, m in todo:
                inputs_rec = {"image": {"path": src, "sha256": None}}
                try:
                    img = images.load_image(src)
                    inputs_rec["image"]["sha256"] = img.sha256
                    details: dict = {}
                    feats: dict = {}
                    for target in (o, m):
                        if target is None:
                            continue
                        k = str(target.resolve())
                        if k in seen_outputs:
                            raise InputError(f"would overwrite {target}, already written for {seen_outputs[k]} "
                                             "(two inputs with one file stem)", src)
                        seen_outputs[k] = src
                    if o is not None:
                        res = pert.perturb(img.pixels, method=method, strength=strength, jnd_model=jnd_model,
                                           key=key, cell=cell, encoder=enc, steps=steps, seed=seed,
                                           psnr_floor=psnr_floor or None,
                                           on_step=(lambda i: advance()) if enc is not None else None)
                        jmap = res.jnd
                        sidecar_file = pert.sidecar_path(str(o))
                        atomic.refuse_overwrite_of_inputs(sidecar_file, files)
                        sha = images.save_png(res.protected, o, inputs=files)
                        sidecar = pert.make_sidecar(res, img, str(o), sha)
                        atomic.write_text(sidecar_file, json.dumps(sidecar, indent=2) + "\n")
                        feats.update({k: res.stats[k] for k in ("psnr", "ssim", "mean_abs_delta", "max_abs_delta",
                                                                "mean_delta_over_jnd", "max_delta_over_jnd",
                                                                "share_within_jnd")})
                        details.update({"output": str(o), "output_sha256": sha, "sidecar": sidecar_file,
                                        **res.params, "seconds": round(res.seconds, 4)})
                    else:
                        jmap = jnd_mod.jnd_map(img.pixels, jnd_model)
                    feats.update({"jnd_mean": float(jmap.mean()), "jnd_p10": float(np.percentile(jmap, 10)),
                                  "jnd_p90": float(np.percentile(jmap, 90))})
                    details["jnd_model"] = jnd_model
                    if m is not None:
                        details["jnd_map"] = str(m)
                        details["jnd_map_sha256"] = images.save_png(jnd_mod.to_picture(jmap), m, inputs=files)
                        details["jnd_map_scale"] = "grey = min(255, round(8 x JND levels))"
                    rec = Record(command="perturb", inputs=inputs_rec, features=feats,
                                 directions={k: FEATURE_DIRECTIONS[k] for k in feats}, provenance=prov,
                                 details=details)
                except FpxError as exc:
                    if exc.path is None:
                        exc.path = src
                    rec = Record.failure("perturb", inputs_rec, exc, prov)
                except Exception as exc:  # noqa: BLE001 - one item's failure never aborts the batch
                    rec = Record.failure("perturb", inputs_rec,
                                         FpxError(f"unexpected failure: {type(exc).__name__}: {exc}", src), prov)
                if enc is None:
                    advance()
                sink.add(rec)
                results.append(rec)
        sink.close()
        common.print_failures(results, quiet)
        raise typer.Exit(batch.exit_code_for(results, batch=is_batch))
