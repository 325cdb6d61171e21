"""``fpx calibrate``: fit a thresholds artifact from a labelled corpus and measure it (LOO, CI, η², blind);
:func:`fingerprint_cli.api.calibrate`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from fingerprint_cli import api, batch
from fingerprint_cli.anchored.calibrate import SCORES
from fingerprint_cli.anchored.discriminative import KINDS as DISC_KINDS
from fingerprint_cli.anchored.thresholds import Thresholds
from fingerprint_cli.cli import common
from fingerprint_cli.errors import FpxError, UsageError

ORDER = 40

SummaryFormat = Enum("SummaryFormat", {"text": "text", "json": "json"}, type=str)
Nonconformity = Enum("Nonconformity", {s: s for s in SCORES}, type=str)
DiscKind = Enum("DiscKind", {s: s for s in DISC_KINDS}, type=str)


def _r3(x):
    return x if x is None else round(x, 3)


def summary_text(doc: Thresholds) -> str:
    """The human summary of a calibrated artifact (what ``fpx calibrate`` prints)."""
    cal = doc.calibration
    lines = _head_lines(doc) + _eta_blind_band_lines(doc) + _conformal_lines(cal.get("conformal")) + \
        _confusion_lines(cal["loo"])
    return "\n".join(lines) + "\n"


def _head_lines(doc: Thresholds) -> list[str]:
    cal = doc.calibration
    loo, band = cal["loo"], cal["band_loo"]
    return [f"thresholds {doc.id} v{doc.version}  sha256 {doc.sha256[:16]}…",
            f"corpus: {cal['corpus']['n_images']} images, {cal['corpus']['n_calls']} calls, "
            f"{len(doc.systems)} systems; features: {', '.join(doc.features)}",
            f"LOO system accuracy  {loo['accuracy']:.3f}  95% CI [{loo['ci95'][0]:.3f}, {loo['ci95'][1]:.3f}]"
            f"  (chance {loo['chance']:.3f}, majority {loo['majority']:.3f}; cluster bootstrap over images, "
            f"B={loo['bootstrap']['B']})",
            f"LOO band accuracy    {band['accuracy']:.3f}  95% CI [{band['ci95'][0]:.3f}, {band['ci95'][1]:.3f}]"
            f"  purity " + ", ".join(f"{b} {p:.3f}" if p is not None else f"{b} -"
                                     for b, p in band["purity"].items()),
            f"inconclusive under the artifact's rule: {loo['inconclusive_rate']:.3f} of calls; accuracy when "
            f"decided {_r3(loo['accuracy_when_decided'])}"]


def _eta_blind_band_lines(doc: Thresholds) -> list[str]:
    cal = doc.calibration
    eta = cal["eta_squared"]
    dom = "n/a (no domain column)" if eta["domain"] is None else f"{eta['domain']:.3f}"
    lines = [f"eta^2 of features: system {eta['system']:.3f}, image domain {dom}, image {eta['image']:.3f}"]
    bl = cal.get("blind_baseline")
    if bl:
        lines.append(f"blind baseline (no reference): system {bl['loo']['accuracy']:.3f} "
                     f"[{bl['loo']['ci95'][0]:.3f}, {bl['loo']['ci95'][1]:.3f}], band {bl['band_loo']['accuracy']:.3f} "
                     f"[{bl['band_loo']['ci95'][0]:.3f}, {bl['band_loo']['ci95'][1]:.3f}]")
    lines.append(f"bands: {doc.band_rule.how}: " +
                 ", ".join(f"{s}={b}" for s, b in doc.band_rule.bands.items()))
    return lines


def _conformal_lines(conf: dict | None) -> list[str]:
    if not conf:
        return ["conformal: none (p-values: not calibrated)"]
    score_ = {"robust-top3": "per-class robust top-3 |z|",
              "robust-top3+knn": "per-class robust top-3 |z| + whole-vector kNN gate"}.get(
        conf.get("score"), "per-class Ledoit-Wolf Mahalanobis")
    lines = [f"conformal (Mondrian, {score_}, LOO) at alpha {conf['alpha']:g}: "
             f"coverage {conf['coverage']:.3f} (target {conf['target_coverage']:.3f}; per system "
             f"{conf['coverage_min_system']:.3f}-{conf['coverage_max_system']:.3f}), mean set size "
             f"{conf['mean_set_size']:.2f}, unknown {conf['unknown_rate']:.3f}, one system "
             f"{conf['singleton_rate']:.3f} (accuracy {_r3(conf['singleton_accuracy'])}), one band "
             f"{_r3(conf.get('band_decided_rate'))} (accuracy {_r3(conf.get('band_accuracy_when_decided'))})"]
    disc = conf.get("discriminative")
    if disc:
        lines.append(f"    combined with a discriminative p-value ({disc['kind']}, cross-fitted by photo, {disc['folds']} "
                     "folds); alone: " + "; ".join(
                         f"{n} coverage {a['coverage']:.3f}, mean set size {a['mean_set_size']:.2f}"
                         for n, a in disc["alone"].items()))
    g = conf.get("guard")
    if g:
        lines.append(f"    decision guard (sets unchanged): a system named only at density p >= {g['tau_system']:g}, a band "
                     f"at density p >= {g['tau_band']:g} ({g['band_rule']} members), gate p_ood >= {g['tau_gate']:g}"
                     + (f"; rewritten from {g['rewritten_from']}" if g.get("rewritten_from") else ""))
    wn = max(len(c) for c in conf["per_system"]) + 2
    for c, v in conf["per_system"].items():
        lines.append(f"    {c:<{wn}} coverage {v['coverage']:.3f}  n {v['n']:>5d}  mean set size {v['mean_set_size']:.2f}")
    return lines


def _confusion_lines(loo: dict) -> list[str]:
    labels = loo["labels"]
    w = max(len(x) for x in labels) + 2
    lines = ["confusion (rows true, columns predicted, LOO):"]
    cw = max(5, max(len(str(v)) for row in loo["confusion"] for v in row) + 1)
    lines.append(" " * (w + 5) + "".join(f"{f'[{i + 1}]':>{cw}}" for i in range(len(labels))))
    for i, (lab, row) in enumerate(zip(labels, loo["confusion"])):
        lines.append(f"{f'[{i + 1}]':>4} {lab:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return lines


def summary_json(cal: api.Calibration) -> str:
    doc = cal.doc
    return json.dumps({"id": doc.id, "sha256": doc.sha256, "output": str(cal.output), "plot": str(cal.plot),
                       "calibration": doc.calibration | {"plane": {"features": doc.plane["features"]}}},
                      indent=1) + "\n"


def calibrate_cmd(
    corpus: Optional[Path] = typer.Argument(None, help="CSV: reference,suspect,system,image_id[,domain,rep,band] "
                                                       "(omitted with --regard)"),
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
    nonconformity: Nonconformity = typer.Option(Nonconformity("robust-top3"), "--nonconformity",
                                      help="conformal score: robust-top3 (v3: mean of the 3 largest per-feature "
                                           "robust z-scores per system), robust-top3+knn (v4: + the whole-vector kNN gate) or "
                                           "mahalanobis (v2)"),
    gate_weight: float = typer.Option(0.2, "--gate-weight",
                                      help="with robust-top3+knn: the kNN gate's Bonferroni weight w in (0, 1) "
                                           "(v4-v6: 0.2; smaller gates less)"),
    disc: DiscKind = typer.Option(DiscKind("none"), "--discriminative",
                                  help="also a discriminative conformal p-value (-log posterior of a classifier, "
                                       "cross-fitted by photo), combined as min(1, 2 min(p_density, p_disc)): lda, "
                                       "qda, logistic; none (default) = the density p-values alone (v2-v7)"),
    guard: Optional[str] = typer.Option(None, "--guard",
                                        help="decision guard stored with the conformal part: "
                                             "tau_band=X,tau_system=Y[,tau_gate=Z][,band_rule=all|best] — a system "
                                             "is named only when its density p >= Y, a band only when its systems' "
                                             ">= X (sets unchanged; default: no guard)"),
    regard: Optional[str] = typer.Option(None, "--regard",
                                         help="rewrite only the decision guard of this existing artifact (id or "
                                              "file) into --output, with --guard (omit it to remove the guard); "
                                              "no CORPUS, nothing scored"),
    blind: bool = typer.Option(True, "--blind/--no-blind", help="also measure the blind (no reference) baseline"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the plane (default: OUTPUT with .png)"),
    scores: Optional[Path] = typer.Option(None, "--scores", help="also write the scored pairs (jsonl)"),
    reuse_scores: Optional[Path] = typer.Option(
        None, "--reuse-scores",
        help="a --scores jsonl of an earlier run: pairs whose paths and sha256 match and that have every "
             "feature are not scored again (recalibrate with another --alpha without rescoring)"),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="encoder resolution (default 224)"),
    batch_size: int = common.EncoderBatchOpt,
    no_cache: bool = common.NoTokenCacheOpt,
    fmt: Optional[SummaryFormat] = typer.Option(None, "--format", "-f",
                                                help="text (default) | json: the summary on stdout"),
    device: str = common.DeviceOpt,
    jobs: int = common.JobsOpt,
    quiet: bool = common.QuietOpt,
) -> None:
    """Fit a thresholds artifact on a labelled corpus: leave-one-image-out accuracy with a cluster-bootstrap
    95% CI, confusion matrix, band purity, eta^2 (system vs domain), a blind baseline, and a PNG of the plane.

    Example: fpx calibrate corpus.csv -o thresholds/my-lab-v1.json --features pixel
    """
    if (corpus is None) == (regard is None):
        common.die(UsageError("give a CORPUS to calibrate, or --regard ARTIFACT (not both)"))
    if regard is not None:
        _regard(regard, output, guard, artifact_id, version, description, fmt, quiet)
    try:
        cal = api.calibrate(corpus, output, features=features, artifact_id=artifact_id, version=version,
                            description=description, bootstrap=bootstrap, seed=seed, min_posterior=min_posterior,
                            alpha=alpha, conformal=conformal, nonconformity=common.value(nonconformity),
                            gate_weight=gate_weight, discriminative=common.value(disc), guard=guard, blind=blind,
                            plot=plot, scores=scores,
                            reuse_scores=reuse_scores, resolution=resolution, batch_size=batch_size,
                            use_cache=not no_cache, device=device, jobs=jobs, quiet=quiet)
    except FpxError as exc:
        common.die(exc)
    sys.stdout.write(summary_json(cal) if common.value(fmt) == "json" else summary_text(cal.doc))
    _warn_derived_bands(cal.doc, quiet)
    batch.warn(f"wrote {cal.output} and {cal.plot}", quiet)
    raise typer.Exit(cal.exit_code)


def _warn_derived_bands(doc: Thresholds, quiet: bool) -> None:
    """Without a band column the bands are derived from the plane and named ``tight`` / ``drift`` — AI bands —
    whatever the systems are: say so, naming each system's band, so benign edits are not filed as AI silently."""
    if doc.calibration["corpus"].get("has_band_column", True):
        return
    bands = doc.band_rule.bands
    named = ", ".join(f"{s}={b}" for s, b in sorted(bands.items()))
    batch.warn(f"no band column in the corpus: bands derived from the plane and named as AI bands ({named}); "
               "add a band column (benign / tight / drift) so that benign systems are not called AI processing",
               quiet)


def _regard(source: str, output: Path, guard: Optional[str], artifact_id: Optional[str], version: str,
            description: str, fmt, quiet: bool) -> None:
    """``--regard``: :func:`fingerprint_cli.api.regard`, its summary, exit 0 (or the error's code)."""
    try:
        cal = api.regard(source, output, guard, artifact_id=artifact_id,
                         version=None if version == "1" else version, description=description or None)
    except FpxError as exc:
        common.die(exc)
    sys.stdout.write(json.dumps({"id": cal.doc.id, "sha256": cal.doc.sha256, "output": str(cal.output),
                                 "guard": (cal.doc.conformal or {}).get("guard")}, indent=1) + "\n"
                     if common.value(fmt) == "json" else summary_text(cal.doc))
    batch.warn(f"wrote {cal.output}", quiet)
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
