"""Benchmark for `fpx lineage` (issue 6): does cross-detection among fingerprints recover known families?

Testbed ``generators`` — the five generators in DATA (../shared/data/generators): LDM, GLID-3-XL (a fine-tune
of LDM) and Majesty Diffusion (LDM + CLIP guidance) are expected to form one family; Disco Diffusion and DALL-E
mini to stand apart from it and from each other.

Testbed ``i2i`` — ground truth known by construction: crops of real photos (PHOTOS, the fixed
train/eval split of bench/photos.py) passed through pretrained offline networks (bench/i2i_networks.py):
waifu2x upconv_7 photo vs anime (same architecture and code, different training data), FFDNet at sigma 15
and 5 (one network, two settings), Real-ESRGAN x4plus vs x4plus-anime (the same RRDB generator with 23 and 6
blocks, one training recipe: two sizes of one family), Real-ESRGAN animevideov3 x4 vs x2 (identical
weights, the x2 model adds a x0.5 resize); families are unrelated to each other. ``--i2i-real mixed`` makes the real class blur-matched (crops
unchanged or through plain bicubic x2 / x4 round trips) so blur alone separates nothing. Generated class =
network output, real class = the same crops unprocessed; fingerprints are fitted on crops of the training
photos and the matrix is measured on crops of the disjoint eval photos.

For each testbed: fit one fingerprint per generator (``fingerprint_cli.dif.extract.fit``), then time
``fingerprint_cli.lineage.run`` (the whole matrix, one shared residual cache) and print the accuracy matrix,
the families, the links, and write a heatmap + dendrogram PNG.

    python bench/lineage.py ../shared/data/generators --photos bench/out/photos --out bench/out/lineage

Skips cleanly (exit 0) when a data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fingerprint_cli  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fingerprint_cli import images, lineage  # noqa: E402

GENERATORS = {  # folder -> short name
    "latent_diffusion_ldm_txt2img": "ldm",
    "glid3_xl": "glid3",
    "majesty_diffusion": "majesty",
    "disco_diffusion": "disco",
    "dalle_mini": "dalle_mini",
}
EXPECTED_GEN = [["ldm", "glid3", "majesty"], ["disco"], ["dalle_mini"]]
# two families of two (same architecture, different training data; same recipe, two sizes) and an outsider
I2I = ["waifu2x_photo", "waifu2x_anime", "animevideov3_x4", "animevideov3_x2", "realesrgan_x4plus",
       "realesrgan_x4plus_anime", "ffdnet_s15", "ffdnet_s5"]
# the plain bicubic round trip a network's outputs are compared with under --i2i-real matched
CONTROL = {"waifu2x_photo": "bicubic_x2", "waifu2x_anime": "bicubic_x2", "animevideov3_x2": "bicubic_x2",
           "realesrgan_anime": "bicubic_x2", "animevideov3_x4": "bicubic_x4", "realesrgan_x4plus": "bicubic_x4",
           "realesrgan_x4plus_anime": "bicubic_x4"}
# every i2i system's true family (exact by construction); the expected families of a run are these restricted
# to the systems in it
FAMILIES_I2I = [["waifu2x_photo", "waifu2x_anime"], ["realesrgan_x4plus", "realesrgan_x4plus_anime"],
                ["animevideov3_x4", "animevideov3_x2"], ["ffdnet_s15", "ffdnet_s5"]]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def crops_of(paths, out_dir: Path, size: int, per_image: int, seed: int) -> list[str]:
    """Write up to ``per_image`` non-overlapping-ish random size×size crops of each image (seeded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for p in paths:
        im = images.load_image(p)
        h, w = im.pixels.shape[:2]
        if h < size or w < size:
            continue
        for k in range(per_image):
            y = int(rng.integers(0, h - size + 1))
            x = int(rng.integers(0, w - size + 1))
            dst = out_dir / f"{Path(p).stem}_c{k}.png"
            if not dst.exists():
                images.save_png(im.pixels[y:y + size, x:x + size], dst)
            out.append(str(dst))
    return out


def pick_denoiser(name: str) -> str:
    from fingerprint_cli.dif.residuals import get_denoiser

    try:
        get_denoiser(name)
        return name
    except Exception as exc:  # e.g. DnCNN weights not installed yet
        log(f"denoiser {name!r} unavailable ({exc.__class__.__name__}: {exc}); using 'gaussian'")
        return "gaussian"


def fit_all(sets: dict[str, list[str]], real: list[str], out: Path, args, test_fraction: dict[str, float],
            cache) -> tuple[list[str], dict[str, float]]:
    from fingerprint_cli.dif import extract

    paths, secs = [], {}
    for name, gen in sets.items():
        real_i = real[name] if isinstance(real, dict) else real
        dst = out / f"{name}.fpx.safetensors"
        if dst.exists() and not args.refit:
            log(f"reuse {dst}")
            paths.append(str(dst))
            continue
        t = time.perf_counter()
        fp = extract.fit(gen, real_i, name=name, method=args.method, crop=args.crop, epochs=args.epochs,
                         seed=0, denoiser=args.denoiser, images=args.n_train,
                         test_fraction=test_fraction.get(name, 0.3), cache=cache)
        secs[name] = time.perf_counter() - t
        fp.save(dst)
        log(f"fitted {name}: {secs[name]:.0f} s, train acc {fp.meta.get('train_accuracy'):.3f}, "
            f"n_train {fp.meta['counts']}")
        paths.append(str(dst))
    return paths, secs


def families_for(res, metric: str):
    """Families and unresolved fingerprints when relatedness is built from ``metric``'s matrix."""
    basis = res.matrix(metric)
    _, _, cl = lineage.families(res.names, basis, res.n_generated, res.n_real, metric, res.clustering.threshold)
    return basis, cl


def verdict(cl, expected) -> tuple[bool, str]:
    canon = lambda fams: sorted(sorted(f) for f in fams)
    resolved_expected = [[x for x in f if x not in cl.unresolved] for f in expected]
    resolved_expected = [f for f in resolved_expected if f]
    full = not cl.unresolved and canon(cl.families) == canon(expected)
    if full:
        return True, "MATCH"
    if canon(cl.families) == canon(resolved_expected):
        return False, f"MATCH on the resolved fingerprints; unresolved {cl.unresolved}"
    return False, "DIFFERS" + (f" (unresolved {cl.unresolved})" if cl.unresolved else "")


def _matrix(title, names, m, fmt):
    """Print a markdown table of ``fmt(i, j)`` for the cells where ``m`` is finite."""
    print(f"\n{title}\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, a in enumerate(names):
        print(f"| {a} | " + " | ".join("-" if not np.isfinite(m[i, j]) else fmt(i, j) for j in range(len(names)))
              + " |")


def report(title: str, res, expected, t_matrix: float, fit_secs: dict, plot_path: Path) -> dict:
    names = res.names
    print(f"\n## {title}\n")
    _matrix("Cross-detection balanced accuracy, whole fingerprint (row: fingerprint; column: held-out images "
            "of); AUC in brackets", names, res.accuracy,
            lambda i, j: f"{100 * res.accuracy[i, j]:.0f}% ({res.auc[i, j]:.2f})")
    grid = res.grid_auc is not None
    if grid:
        _matrix(f"Grid cross-detection AUC (the fingerprint's period-{res.period} component; row: fingerprint)",
                names, res.grid_auc, lambda i, j: f"{res.grid_auc[i, j]:.2f}")
    _matrix("Fingerprint-to-fingerprint correlation, whole pattern (best over shifts ≤ 2 px)", names,
            res.fp_correlation, lambda i, j: f"{res.fp_correlation[i, j]:+.2f}")
    if grid:
        _matrix(f"Grid correlation (period-{res.period} components, oriented)", names, res.grid_correlation,
                lambda i, j: f"{res.grid_correlation[i, j]:+.2f}")
    print("\nSelf-detection (diagonal) TPR / TNR: " + ", ".join(
        f"{a} {100 * res.tpr[i, i]:.0f}/{100 * res.tnr[i, i]:.0f}%" for i, a in enumerate(names)))
    print(f"\nexpected families: {expected}")
    out = {"expected": expected, "names": names, "matrix_s": t_matrix, "fit_s": fit_secs,
           "accuracy": res.accuracy.tolist(), "auc": res.auc.tolist(),
           "grid_auc": res.grid_auc.tolist() if grid else None,
           "fp_correlation": res.fp_correlation.tolist(),
           "grid_correlation": res.grid_correlation.tolist() if grid else None}
    for metric in ("grid", "accuracy", "auc") if grid else ("accuracy", "auc"):
        basis, cl = families_for(res, metric)
        ok, text = verdict(cl, expected)
        print(f"families (--metric {metric}): {cl.families}" + (f"  unresolved {cl.unresolved}" if cl.unresolved
                                                                   else "") + f"  -> {text}")
        label = lineage.METRIC_LABELS[metric]
        corr = res.grid_correlation if metric == "grid" else res.fp_correlation
        for lk in lineage.link_evidence(names, basis, corr, cl, label=label,
                                        corr_label="grid correlation" if metric == "grid" else
                                        "fingerprint correlation"):
            print(f"  link: {lk['text']}")
        out[f"families_{metric}"] = cl.families
        out[f"unresolved_{metric}"] = cl.unresolved
        out[f"match_{metric}"] = ok
    n_img = int(res.timing.get("images", 0))
    print(f"\nmatrix time ({len(names)} fingerprints, {n_img} test images, one shared residual cache): "
          f"{t_matrix:.1f} s; of which residuals+correlations {res.timing['correlations_s']:.1f} s")
    if fit_secs:
        print("fit time per fingerprint: " + ", ".join(f"{k} {v:.0f} s" for k, v in fit_secs.items()))
    print(f"picture: {plot_path}")
    return out


def trace_table(sets: dict[str, list[str]], controls: dict[str, list[str]], crop: int, cache,
                period: int = lineage.DEFAULT_PERIOD) -> None:
    """Does each system leave a position-locked trace? RMS (in 1/255 levels) of the grid component of its
    mean residual over the training images, next to the same for the real controls (the floor: content that
    does not average away over N images). No fingerprint involved: what any grid-based evidence can see."""
    from fingerprint_cli.dif.residuals import compute, get_denoiser

    den = get_denoiser("dncnn")
    print(f"\n### Position-locked trace per system (period {period}, dncnn residuals, crop {crop})\n")
    print("| images | N | grid RMS of the mean residual (1/255) | whole mean residual RMS (1/255) |")
    print("|---|---|---|---|")
    for label, ps in list(sets.items()) + list(controls.items()):
        r, _ = compute(ps, den, crop, cache=cache)
        m = r.astype(np.float64).mean(axis=0)
        g = lineage.grid_component(m - m.mean(axis=(1, 2), keepdims=True), period)
        print(f"| {label} | {len(ps)} | {255 * g.std():.3f} | {255 * m.std():.3f} |")


def timed_matrix(paths, real_dir, images_map=None, cache=None):
    """``lineage.run`` timed; with ``cache`` (the benchmark's residual cache) residuals computed while fitting
    are reused, without it every residual is computed once for the whole matrix."""
    t = time.perf_counter()
    res, _ = lineage.run(paths, images=[f"{k}={v}" for k, v in (images_map or {}).items()], real_dir=real_dir,
                         cache=cache if getattr(timed_matrix, "use_cache", False) else None)
    return res, time.perf_counter() - t


def uncached_reference(paths, real_dir, images_map=None) -> float:
    """Reference for the timing ratio: every cell recomputes its images' residuals (no shared cache)."""
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.fingerprint import Fingerprint

    fps = [Fingerprint.load(p) for p in paths]
    real = [str(p) for p in images.list_images(real_dir)]
    t = time.perf_counter()
    for fp in fps:
        for other in fps:
            src = (images_map or {}).get(other.name)
            gen = [str(p) for p in images.list_images(src)] if src else \
                [e["path"] for e in other.meta["test"]["generated"]]
            detect.correlations(fp, gen, cache=None)
            detect.correlations(fp, real, cache=None)
    return time.perf_counter() - t


def testbed_generators(args, out: Path, real_train: list[str], real_eval_dir: Path, cache) -> dict | None:
    data = Path(args.data)
    if not data.is_dir():
        log(f"{data} absent: skipping the generators testbed")
        return None
    sets = {}
    for folder, name in GENERATORS.items():
        ps = [str(p) for p in images.list_images(data / folder)]
        if args.max_images:
            rng = np.random.default_rng(0)
            ps = sorted(rng.choice(ps, size=min(len(ps), args.max_images), replace=False).tolist())
        sets[name] = ps
    # half of each (subsampled) folder trains, the other half is the held-out test split
    tf = {name: 0.5 for name in sets}
    paths, fit_secs = fit_all(sets, real_train, out, args, tf, cache)
    res, t = timed_matrix(paths, str(real_eval_dir))
    lineage.plot(res, str(out / "lineage_generators.png"))
    summary = report("Testbed 1: five text-to-image generators", res, EXPECTED_GEN, t, fit_secs,
                     out / "lineage_generators.png")
    if args.reference_timing:
        t_ref = uncached_reference(paths, str(real_eval_dir))
        print(f"reference without the shared cache (each cell recomputes residuals): {t_ref:.1f} s "
              f"-> shared cache {t_ref / t:.1f}x faster")
        summary["uncached_s"] = t_ref
    return summary


MODERN = {  # testbed 3 (issue 15): folder under DATA -> short name
    "hfapi_sd/CompVis__stable-diffusion-v1-4": "sd14",
    "hfapi_sd/prompthero__openjourney-v4": "openjourney",
    "hfapi_sd/Yntec__epiCPhotoGasm": "epicphotogasm",
    "hfapi_sd/stabilityai__stable-diffusion-xl-base-1.0": "sdxl",
    "dalle3_api": "dalle3",
    "gpt_image_1_mini_api": "gpt_image_1_mini",
}
# SD 1.4 and the two SD 1.5 fine-tunes share the SD 1.x autoencoder; SDXL has its own; DALL-E 3 and
# gpt-image-1-mini are unrelated to the SD family (their relation to each other is not public: both accepted)
EXPECTED_MODERN = [["sd14", "openjourney", "epicphotogasm"], ["sdxl"], ["dalle3"], ["gpt_image_1_mini"]]
EXPECTED_MODERN_ALT = [["sd14", "openjourney", "epicphotogasm"], ["sdxl"], ["dalle3", "gpt_image_1_mini"]]


def kodak_tiles(kodak: Path, out: Path, keep, size: int = 256) -> Path:
    """Non-overlapping size×size tiles of the lossless Kodak photos whose number passes ``keep`` (PNG)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in images.list_images(kodak):
        if not keep(int(p.stem[-2:])):
            continue
        px = images.load_image(p).pixels
        h, w = px.shape[:2]
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                dst = out / f"{p.stem}_{y}_{x}.png"
                if not dst.exists():
                    images.save_png(px[y:y + size, x:x + size], dst)
    return out


def _modern_reals(args, data: Path) -> dict:
    """Testbed 3's real classes: {"png": (Kodak training tiles, test tile folder), "jpeg": (BSDS500 train/
    photos, val/ folder)} — split by photo; a class whose data folder is absent is left out."""
    reals = {}
    if (data / "real_kodak24").is_dir():
        tr = kodak_tiles(data / "real_kodak24", Path(args.out) / "kodak_tiles_train", lambda k: k <= 12)
        te = kodak_tiles(data / "real_kodak24", Path(args.out) / "kodak_tiles_test", lambda k: k > 12)
        reals["png"] = ([str(p) for p in images.list_images(tr)], str(te))
    real_jpeg = Path(args.real_jpeg)
    if real_jpeg.is_dir():
        rng = np.random.default_rng(0)
        tr = [str(p) for p in images.list_images(real_jpeg / "train")]
        reals["jpeg"] = ([tr[i] for i in rng.permutation(len(tr))][:args.n_train * 2], str(real_jpeg / "val"))
    return reals


def resaved_like(real: list[str], quality: int | None, folder: Path) -> list[str]:
    """``real`` re-saved as whole-image JPEG at ``quality`` under ``folder`` (the format of a JPEG-served
    generator); ``real`` itself for a lossless generator (None). Kept if already there."""
    if quality is None:
        return list(real)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in real:
        dst = folder / f"{Path(p).stem}.jpg"
        if not dst.exists():
            dst.write_bytes(images.encode(images.load_image(p).pixels, "JPEG", quality=int(quality)))
        out.append(str(dst))
    return out


def _fit_one(args, name: str, gen: list[str], real: list[str], dst: Path, prof: str, cache) -> float | None:
    """Fit (or reuse) one testbed-3 fingerprint at ``dst``; the fit's seconds, None when reused."""
    from fingerprint_cli.dif import extract

    if dst.exists() and not args.refit:
        return None
    t = time.perf_counter()
    fp = extract.fit(gen, real, name=name, method=args.method, crop=args.crop, epochs=args.epochs, seed=0,
                     denoiser=args.denoiser, images=args.n_train, test_fraction=1 / 3, cache=cache, profile=prof,
                     batch_size=32, tolerance=args.tolerance)
    secs = time.perf_counter() - t
    fp.save(dst)
    log(f"fitted {dst.parent.name}/{name}: {secs:.0f} s, counts {fp.meta['counts']}, tolerance "
        f"{fp.meta.get('tolerance')}")
    return secs


def _modern_fits(args, sets: dict, real_train: list[str], out: Path, prof: str, fit_real: str, cache,
                 real_kind: str) -> tuple[list[str], dict[str, float]]:
    """The six fingerprints of one (real class, profile, training real format) setting. ``fit_real``
    ``asis``: every generator against the real photos as they are; ``matched``: a JPEG-served generator against
    the real photos re-saved at its own JPEG quality (the lossless ones reuse the ``asis`` fit)."""
    from fingerprint_cli.dif import condition

    paths, secs = [], {}
    for name, gen in sets.items():
        q = _majority_quality(condition.probe_many(gen)) if fit_real == "matched" else None
        folder = out if q is not None else out.parent / out.name.replace("-matched", "-asis")
        folder.mkdir(parents=True, exist_ok=True)
        real = resaved_like(real_train, q, Path(args.out) / f"real_{real_kind}_train_q{q}")
        s = _fit_one(args, name, gen, real, folder / f"{name}.fpx.safetensors", prof, cache)
        if s is not None:
            secs[name] = s
        paths.append(str(folder / f"{name}.fpx.safetensors"))
    return paths, secs


def _majority_quality(conds: list[dict]) -> int | None:
    """The JPEG quality most of a generator's images carry, None when most are lossless."""
    qs = [c.get("jpeg_quality") for c in conds]
    jpeg = [q for q in qs if q is not None]
    if len(jpeg) * 2 <= len(qs):
        return None
    return int(np.median(jpeg))


def _modern_lineage(args, paths, real_test_dir, cache, eq: str, control: str, key: str, out: Path, secs) -> dict:
    """One lineage run of testbed 3 and its report (every metric; right under either OpenAI reading)."""
    t = time.perf_counter()
    res, _ = lineage.run(paths, real_dir=real_test_dir, cache=cache, equalise=eq, control=control,
                         metric="grid" if args.method != "spectral" else "auc")
    dt = time.perf_counter() - t
    pic = out / f"lineage_{eq}_{control}.png"
    lineage.plot(res, str(pic))
    summ = report(f"Testbed 3 — {key}", res, EXPECTED_MODERN, dt, secs, pic)
    summ["control_formats"] = res.control_formats
    print(f"control formats (column: its images' format; the real negatives re-saved so): {res.control_formats}")
    for metric in ("grid", "accuracy", "auc") if res.grid_auc is not None else ("accuracy", "auc"):
        _, cl = families_for(res, metric)
        alt, _ = verdict(cl, EXPECTED_MODERN_ALT)
        summ[f"match_{metric}"] = summ[f"match_{metric}"] or alt
        print(f"  {metric}: right (either DALL-E 3 / gpt-image-1-mini reading) = {summ[f'match_{metric}']}")
    return summ


def _modern_verdicts(summary: dict) -> None:
    print("\n## Testbed 3 verdicts (families right?)\n")
    print("| real class | profile | fit real | --equalise | --control | grid | accuracy | auc |")
    print("|---|---|---|---|---|---|---|---|")
    for key, summ in summary.items():
        rk, prof, fit_real, eq, ctl = key.split("/")
        print(f"| {rk} | {prof} | {fit_real} | {eq.split('=')[1]} | {ctl.split('=')[1]} | " + " | ".join(
            ("right" if summ[f"match_{m}"] else "wrong") + f" {summ[f'families_{m}']} unresolved "
            f"{summ[f'unresolved_{m}']}" if f"match_{m}" in summ else "-" for m in ("grid", "accuracy", "auc"))
            + " |")


def _half_grid(r: np.ndarray, period: int) -> np.ndarray:
    """Grid component of the mean of residuals ``r`` (N, C, H, W), its channel means removed."""
    m = r.astype(np.float64).mean(axis=0)
    return lineage.grid_component(m - m.mean(axis=(1, 2), keepdims=True), period)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float((a * b).mean())


def split_half_traces(sets: dict[str, list[str]], crop: int, period: int, denoiser: str, cache) -> None:
    """No fingerprint involved: is there a position-locked trace, and which sets share it? Each set's residuals
    (centre ``crop``, images too small left out) are split into even / odd halves; the grid component of each
    half's mean residual is correlated with the other set's other half (mean of the two cross-half pairs). The
    diagonal is a set's own half-vs-half reproducibility — the noise floor of everything off it."""
    from fingerprint_cli.dif.residuals import compute, get_denoiser

    den = get_denoiser(denoiser)
    halves = {}
    for name, ps in sets.items():
        r, _ = compute(ps, den, crop, cache=cache, on_error=lambda p, e: None)
        if len(r) >= 4:
            halves[name] = (_half_grid(r[0::2], period), _half_grid(r[1::2], period))
    ks = list(halves)
    print(f"\n### Split-half grid traces of the mean residual ({denoiser} residuals, crop {crop}, period {period})\n")
    print("| | " + " | ".join(ks) + " |")
    print("|---|" + "---|" * len(ks))
    for a in ks:
        print(f"| {a} | " + " | ".join(f"{(_corr(halves[a][0], halves[b][1]) + _corr(halves[a][1], halves[b][0])) / 2:+.2f}"
                                     for b in ks) + " |")
    sys.stdout.flush()


def testbed_modern(args, cache) -> dict:
    """Testbed 3 (issue 15): SD 1.x family vs SDXL vs DALL-E 3 vs gpt-image-1-mini, once against lossless
    real photos (Kodak tiles: photos 1-12 fit, 13-24 test) and once against real JPEG photos (BSDS500: train/
    fits, val/ tests); per training profile, training real format (--fit-real), --equalise and --control
    setting; every metric."""
    data = Path(args.data)
    root = Path(args.out) / f"modern-{args.method}-{args.denoiser}-c{args.crop}-n{args.n_train}-e{args.epochs}{args.tag}"
    root.mkdir(parents=True, exist_ok=True)
    reals = _modern_reals(args, data)
    sets = {name: [str(p) for p in images.list_images(data / folder)] for folder, name in MODERN.items()
            if (data / folder).is_dir()}
    for crop in args.trace_crops:
        traces = dict(sets)
        traces["kodak24 (full photos)"] = [str(p) for p in images.list_images(data / "real_kodak24")]
        traces.update({f"real {k} (train)": v[0] for k, v in reals.items()})
        for period in args.trace_periods:
            split_half_traces(traces, crop, period, args.denoiser, cache)
    summary: dict = {}
    for real_kind in args.modern_real:
        if real_kind not in reals:
            log(f"real class {real_kind} absent: skipped")
            continue
        real_train, real_test_dir = reals[real_kind]
        for prof in args.profiles:
            for fit_real in args.fit_real:
                out = root / f"{real_kind}-{prof}-{fit_real}"
                paths, secs = _modern_fits(args, sets, real_train, out, prof, fit_real, cache, real_kind)
                if args.fit_only:
                    continue
                for eq in args.equalise:
                    for control in args.control:
                        key = f"{real_kind}/{prof}/{fit_real}/equalise={eq}/control={control}"
                        summary[key] = _modern_lineage(args, paths, real_test_dir, cache, eq, control, key, out,
                                                       secs)
                        (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
                        sys.stdout.flush()
    _modern_verdicts(summary)
    return summary

def processed(src: list[str], folder: Path, system) -> list[str]:
    """``system`` applied to each image of ``src``, saved under ``folder`` with the same file name (kept if
    already there, so runs share the outputs); the output paths in the order of ``src``."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for p in src:
        dst = folder / Path(p).name
        if not dst.exists():
            images.save_png(system(images.load_image(p).pixels), dst)
        made.append(str(dst))
    return made


def testbed_i2i(args, out: Path, train_crops: list[str], eval_crops: list[str], cache) -> dict | None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from i2i_networks import SYSTEMS, available
    except ImportError as exc:
        log(f"bench/i2i_networks.py not importable ({exc}): skipping the i2i testbed")
        return None
    avail = available()
    wanted = args.i2i_systems.split(",") if args.i2i_systems else I2I
    unknown = [s for s in wanted if s not in avail]
    if unknown:
        raise SystemExit(f"unknown i2i system(s) {unknown}; known: {sorted(avail)}")
    systems = [s for s in wanted if avail.get(s) is None]
    missing = {s: avail.get(s) for s in wanted if avail.get(s) is not None}
    if missing:
        log(f"i2i systems unavailable: {missing}")
    if len(systems) < 3:
        log("fewer than 3 i2i systems available: skipping the i2i testbed")
        return None
    sets, eval_dirs = {}, {}
    t0 = time.perf_counter()
    for s in systems:
        for split, src in (("train", train_crops), ("eval", eval_crops)):
            d = out.parent / f"i2i_images{args.i2i_set}" / s / split  # shared by every method/denoiser run
            made = processed(src, d, SYSTEMS[s])
            if split == "train":
                sets[s] = made
            else:
                eval_dirs[s] = str(d)
        log(f"i2i {s}: {len(sets[s])} train + {len(eval_crops)} eval images")
    t_make = time.perf_counter() - t0
    log(f"making the i2i images took {t_make:.0f} s")
    tf = {s: 0.2 for s in systems}
    real_eval_map = None
    if args.i2i_real == "matched":
        # each network's own control: the same crops through the plain bicubic round trip of its scale factor
        # (what the network does minus the network), the unchanged crops for a same-size network (FFDNet).
        # The lineage matrix tests every fingerprint against the eval crops through ITS control (--real NAME=DIR)
        base = out.parent / f"i2i_images{args.i2i_set}"
        real_train, real_eval_map = {}, {}
        for s in systems:
            kind = CONTROL.get(s, "identity")
            for split, src in (("train", train_crops), ("eval", eval_crops)):
                d = base / f"real_{kind}_{split}"
                made = processed(src, d, SYSTEMS[kind])
                if split == "train":
                    real_train[s] = made
                else:
                    real_eval_map[s] = str(d)
        eval_real = None
        i2i_out = out / "i2i_matched"
    elif args.i2i_real != "photo":
        # controls: the real class is the photo crops through plain bicubic round trips, so a fingerprint
        # cannot separate the classes by blur alone and has to learn the network. "bicubic2": every crop
        # through a 1/2 down / up round trip; "mixed": crop k unchanged, through the x2 or the x4 round trip
        # (k mod 3) — the blur levels of FFDNet, the x2 and the x4 networks are all present in the real class
        kinds = ["bicubic_x2"] if args.i2i_real == "bicubic2" else ["identity", "bicubic_x2", "bicubic_x4"]
        base = out.parent / f"i2i_images{args.i2i_set}"
        real_train, eval_real = [], base / f"real_{args.i2i_real}_eval"
        for split, src, dst_dir in (("train", train_crops, base / f"real_{args.i2i_real}_train"),
                                    ("eval", eval_crops, eval_real)):
            dst_dir.mkdir(parents=True, exist_ok=True)
            for k, p in enumerate(src):
                dst = dst_dir / Path(p).name
                if not dst.exists():
                    images.save_png(SYSTEMS[kinds[k % len(kinds)]](images.load_image(p).pixels), dst)
                if split == "train":
                    real_train.append(str(dst))
        i2i_out = out / f"i2i_{args.i2i_real}"
    else:
        real_train, i2i_out = train_crops, out / "i2i"
        eval_real = out.parent / f"i2i_images{args.i2i_set}" / "real_eval"
        eval_real.mkdir(parents=True, exist_ok=True)
        for p in eval_crops:
            dst = eval_real / Path(p).name
            if not dst.exists():
                dst.write_bytes(Path(p).read_bytes())
    if args.make_only:
        return None
    i2i_out.mkdir(parents=True, exist_ok=True)
    controls = {"photo crops (unchanged)": train_crops}
    base = out.parent / f"i2i_images{args.i2i_set}"
    for kind in ("bicubic_x2", "bicubic_x4"):
        d = base / f"real_{kind}_train"
        if d.is_dir():
            controls[kind] = sorted(str(p) for p in d.glob("*.png"))
    trace_table(sets, controls, args.crop, cache)
    paths, fit_secs = fit_all(sets, real_train, i2i_out, args, tf, cache)
    if real_eval_map is not None:
        res, t = timed_matrix(paths, [f"{k}={v}" for k, v in real_eval_map.items()], eval_dirs, cache)
    else:
        res, t = timed_matrix(paths, str(eval_real), eval_dirs, cache)
    plot_path = i2i_out / "lineage_i2i.png"
    lineage.plot(res, str(plot_path))
    expected = [[s for s in fam if s in systems] for fam in FAMILIES_I2I]
    expected = [f for f in expected if f] + [[s] for s in systems if not any(s in f for f in FAMILIES_I2I)]
    summary = report(f"Testbed 2: photos through pretrained image-to-image networks (real class: {args.i2i_real})",
                     res, expected, t, fit_secs, plot_path)
    print(f"(making the i2i images took {t_make:.0f} s)")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="folder with the generator sub-folders (../shared/data/generators)")
    ap.add_argument("--photos", default="bench/out/photos", help="bench/photos.py output (train/ and eval/)")
    ap.add_argument("--out", default="bench/out/lineage")
    ap.add_argument("--testbed", choices=["generators", "i2i", "both", "modern"], default="both",
                    help="modern = testbed 3 of issue 15 (SD 1.x family, SDXL, DALL-E 3, gpt-image-1-mini)")
    ap.add_argument("--real-jpeg", default="/work/shared/data/real_bsds500", help="real JPEG photos (train/, val/)")
    ap.add_argument("--modern-real", nargs="*", default=["jpeg", "png"], help="testbed 3 real classes")
    ap.add_argument("--profiles", nargs="*", default=["robust", "plain"], help="testbed 3 training profiles")
    ap.add_argument("--equalise", nargs="*", default=["none", "jpeg90"], help="testbed 3 --equalise settings")
    ap.add_argument("--control", nargs="*", default=["none", "format"], choices=list(lineage.CONTROLS),
                    help="testbed 3 --control settings (format: each column's real negatives re-saved in its "
                         "generator's format)")
    ap.add_argument("--fit-real", nargs="*", default=["asis"], choices=["asis", "matched"],
                    help="testbed 3 training real class: as it is, or re-saved at each JPEG generator's quality")
    ap.add_argument("--fit-only", action="store_true", help="testbed 3: fit the fingerprints, run no lineage")
    ap.add_argument("--tolerance", type=int, default=0,
                    help="testbed 3 detection statistic: 0 = zero-shift rho (the current default in effect)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--trace-crops", nargs="*", type=int, default=[],
                    help="testbed 3: first print the split-half grid-trace table of every set at these crops")
    ap.add_argument("--trace-periods", nargs="*", type=int, default=[lineage.DEFAULT_PERIOD],
                    help="grid periods of the --trace-crops tables")
    ap.add_argument("--method", default="dif", choices=["dif", "average", "spectral"])
    ap.add_argument("--denoiser", default="dncnn")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=64, help="training images per class")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=128,
                    help="subsample each generator folder to this many (half train, half test; 0: all)")
    ap.add_argument("--real-crops", type=int, default=2, help="256-px crops per training photo (real class)")
    ap.add_argument("--i2i-crop", type=int, default=128, help="crop size for the i2i testbed")
    ap.add_argument("--i2i-crops", type=int, default=2, help="crops per photo for the i2i testbed")
    ap.add_argument("--i2i-real", choices=["photo", "bicubic2", "mixed", "matched"], default="mixed",
                    help="i2i real class: the photo crops; the crops through a bicubic 1/2 round trip; or "
                         "(default) a blur-matched mix of unchanged, x2 and x4 bicubic round trips; or each "
                         "network's own control (matched: the bicubic round trip of its scale factor)")
    ap.add_argument("--matrix-cache", action="store_true",
                    help="time the matrix with the residuals cached while fitting (default: from scratch)")
    ap.add_argument("--i2i-systems", default=None,
                    help=f"comma-separated i2i systems (default {','.join(I2I)}; see bench/i2i_networks.py)")
    ap.add_argument("--i2i-eval-crops", type=int, default=None, help="crops per eval photo (default --i2i-crops)")
    ap.add_argument("--cache", default=None, help="disk residual cache folder (shared with bench/dif.py --out/cache)")
    ap.add_argument("--make-only", action="store_true", help="only make the testbed images (no fitting)")
    ap.add_argument("--tag", default="", help="suffix of the output folder name")
    ap.add_argument("--refit", action="store_true", help="refit fingerprints even if present in --out")
    ap.add_argument("--reference-timing", action="store_true",
                    help="also time the matrix without the shared residual cache (the reference)")
    args = ap.parse_args()
    timed_matrix.use_cache = args.matrix_cache
    if args.testbed == "modern":
        import torch

        from fingerprint_cli.dif.residuals import ResidualCache

        torch.set_num_threads(args.threads)

        args.denoiser = pick_denoiser(args.denoiser)
        testbed_modern(args, ResidualCache(disk=args.cache) if args.cache else ResidualCache())
        return 0
    photos = Path(args.photos)
    if not (photos / "train").is_dir() or not (photos / "eval").is_dir():
        log(f"{photos}/train or /eval absent (run bench/photos.py): skipping")
        return 0
    args.denoiser = pick_denoiser(args.denoiser)
    out = Path(args.out) / f"{args.method}-{args.denoiser}-c{args.crop}-n{args.n_train}-e{args.epochs}{args.tag}"
    out.mkdir(parents=True, exist_ok=True)
    from fingerprint_cli.dif.residuals import ResidualCache

    cache = ResidualCache(disk=args.cache) if args.cache else ResidualCache()
    train_photos = [str(p) for p in images.list_images(photos / "train")]
    eval_photos = [str(p) for p in images.list_images(photos / "eval")]
    print(f"# bench/lineage.py  method={args.method} denoiser={args.denoiser} crop={args.crop} "
          f"n_train={args.n_train} epochs={args.epochs}")
    results = {}
    if args.testbed in ("generators", "both"):
        kodak = Path(args.data) / "real_kodak24"
        extra = [str(p) for p in images.list_images(kodak)] if kodak.is_dir() else []
        real_train = crops_of(train_photos + extra, Path(args.out) / f"real_train_{args.crop}", args.crop,
                              args.real_crops, seed=1)
        real_eval = Path(args.out) / f"real_eval_{args.crop}"
        crops_of(eval_photos, real_eval, args.crop, 2, seed=2)
        results["generators"] = testbed_generators(args, out, real_train, real_eval, cache)
    if args.testbed in ("i2i", "both"):
        c = args.i2i_crop
        ne = args.i2i_eval_crops or args.i2i_crops
        sfx = args.i2i_set = "" if (args.i2i_crops, ne) == (2, 2) else f"_k{args.i2i_crops}-{ne}"
        train_crops = crops_of(train_photos, Path(args.out) / f"i2i_real_train_{c}{sfx}", c, args.i2i_crops, seed=3)
        eval_crops = crops_of(eval_photos, Path(args.out) / f"i2i_real_eval_{c}{sfx}", c, ne, seed=4)
        crop_save = args.crop
        args.crop = min(args.crop, c)
        results["i2i"] = testbed_i2i(args, out, train_crops, eval_crops, cache)
        args.crop = crop_save
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
