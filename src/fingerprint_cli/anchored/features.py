"""The feature registry: every reference-anchored feature fpx computes, with its direction as data.

Each :class:`Feature` says what the number means, which way it grows (``direction`` is ``"higher"`` or
``"lower"``, ``effect`` is what grows — together the prose ``"lower = more change"`` that records carry in
``directions`` and thresholds artifacts store), its unit and range, its **neutral** value (what a suspect
identical to its reference gives) and a **probe**: a family of distortions of increasing strength along
which the feature moves in its declared direction. Tests are parametrised over this registry and check both
properties for every entry (identity pair → neutral; stronger probe → the declared direction), so a new
feature is registered here with its direction and probe, or it does not ship.

``sign(name)`` is +1 when a larger value means more of the effect and −1 otherwise; calibration orders
systems by signed change with it (it used to parse the prose with ``.startswith("lower")``).

Families: ``tokens`` (DINOv2 patch-token distances, need the encoder weights), ``pixel`` (SSIM/PSNR),
``anchored`` (further pixel features, :mod:`fingerprint_cli.anchored.pixel`), ``tone_corrected`` (the same on the
suspect mapped back through its fitted per-channel tone curve, ``tc_*``), ``tone_curve`` (that curve's own
shape, ``curve_*``), ``survival`` (perturbation survival, :mod:`fingerprint_cli.anchored.survival`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from fingerprint_cli.registry import Registry

Direction = Literal["higher", "lower"]
FAMILIES = ("tokens", "pixel", "anchored", "tone_corrected", "tone_curve", "artifact", "survival")


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    direction: Direction
    effect: str  # what a larger (direction "higher") or smaller ("lower") value means
    description: str
    unit: str = ""
    range: tuple[float | None, float | None] = (None, None)
    neutral: float | None = None  # value for a suspect identical to its reference (None: not defined)
    probe: str | None = None  # distortion family along which the value moves in `direction` (see tests)

    @property
    def direction_text(self) -> str:
        """The prose records and artifacts carry, e.g. ``"lower = more change"``."""
        return f"{self.direction} = {self.effect}"

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "higher" else -1.0


REGISTRY: Registry[Feature] = Registry("feature")


def _add(*args, **kw) -> None:
    f = Feature(*args, **kw)
    if f.family not in FAMILIES:
        raise ValueError(f"feature {f.name}: unknown family {f.family!r}")
    REGISTRY.register(f.name, f)


_MORE = "more change"
for _name, _what in (("patch_mean", "mean over patches of 1 - cos(suspect, reference) DINOv2 tokens"),
                     ("patch_median", "median per-patch token distance"),
                     ("patch_p90", "90th percentile per-patch token distance"),
                     ("patch_max", "maximum per-patch token distance")):
    _add(_name, "tokens", "higher", _MORE, _what, "1 - cos", (0.0, 2.0), 0.0, "noise")
_add("cls_distance", "tokens", "higher", _MORE, "1 - cos of the CLS tokens", "1 - cos", (0.0, 2.0), 0.0, "noise")
_add("ssim_clean", "pixel", "lower", _MORE, "pixel SSIM of suspect vs reference (Wang 2004, RGB mean)", "",
     (-1.0, 1.0), 1.0, "noise")
_add("psnr_clean", "pixel", "lower", _MORE, "PSNR of suspect vs reference, dB (capped at 100)", "dB",
     (0.0, 100.0), 100.0, "noise")
_add("hf_ratio", "anchored", "lower", "smoother than the reference",
     "log10 high-pass energy of suspect / reference (luma)", "log10", (None, None), 0.0, "blur")
_add("hp_corr", "anchored", "lower", "reference detail removed",
     "corr(high-pass of suspect-reference, high-pass of reference)", "", (-1.0, 1.0), 0.0, "blur")
_add("lowfreq_share", "anchored", "higher", "smoother change",
     "share of the difference energy below a sigma=2 px low-pass", "", (0.0, 1.0), 1.0, "smooth_shift")
_add("log_colour_shift", "anchored", "higher", _MORE,
     "log10(1e-5 + mean |channel-mean difference|) suspect vs reference", "log10", (-5.0, 0.0), -5.0, "tone")
_add("grid8", "anchored", "higher", "more 8x8 block edges",
     "difference gradient on 8-px block boundaries / elsewhere", "ratio", (0.0, None), 1.0, "jpeg")
_add("chroma_hf_ratio", "anchored", "lower", "chroma smoothed",
     "log10 high-pass energy of suspect / reference chroma (Cb, Cr)", "log10", (None, None), 0.0, "chroma_blur")
for _k in range(4):
    _add(f"gain_{_k}", "anchored", "lower", "octave attenuated",
         f"log10 luma power suspect / reference, octave {_k}", "log10", (None, None), 0.0, "blur")
for _k in range(4):
    _add(f"coh_{_k}", "anchored", "lower", "reference content replaced",
         f"coherence of suspect with reference, octave {_k}", "", (-1.0, 1.0), 1.0, "noise")
# tone-corrected twins (issue 11): the change features on the curve-corrected suspect; invariant to a global
# monotone tone/colour edit, otherwise they move like the originals
_add("tc_ssim", "tone_corrected", "lower", _MORE, "SSIM of the curve-corrected suspect vs reference", "",
     (-1.0, 1.0), 1.0, "noise")
_add("tc_psnr", "tone_corrected", "lower", _MORE,
     "PSNR (dB, capped at 100) of the curve-corrected suspect vs reference", "dB", (0.0, 100.0), 100.0, "noise")
for _name in [n for n, f in REGISTRY.items() if f.family == "anchored" and n != "log_colour_shift"]:
    _f = REGISTRY.get(_name)
    _add(f"tc_{_name}", "tone_corrected", _f.direction, _f.effect, _f.description + " (curve-corrected suspect)",
         _f.unit, _f.range, _f.neutral, _f.probe)
_add("curve_shift", "tone_curve", "higher", "brighter",
     "mean over channels and reference pixels of f_c(r) - r (fitted tone curve)", "", (-1.0, 1.0), 0.0, "tone")
_add("curve_contrast", "tone_curve", "higher", "more contrast",
     "log10 of the curve's interquartile slope (f(q75)-f(q25))/(q75-q25)", "log10", (None, None), 0.0,
     "contrast")
_add("curve_colour", "tone_curve", "higher", "stronger colour cast",
     "RMS over reference pixels of each channel's curve minus the mean curve", "", (None, None), 0.0,
     "colour_cast")
_add("curve_rough", "tone_curve", "higher", "steppier curve",
     "RMS second difference of the curves on a 64-bin grid (posterize)", "", (0.0, None), 0.0, "posterize")
_add("curve_share", "tone_curve", "higher", "change is a tone curve",
     "share of the suspect-reference difference energy that the fitted curves explain", "", (None, 1.0), 1.0,
     "tone_over_noise")
# artifact features (issue 11 round 11, fingerprint_cli.anchored.artifact_features): on the curve-corrected suspect
for _k in (2, 3, 4):
    _add(f"af_period_{_k}", "artifact", "higher", f"period-{_k} resampling trace",
         f"log10 lattice peak at 1/{_k} cycles/px of |first, second difference| profiles, suspect minus reference",
         "log10", (None, None), 0.0, "resample")
for _k in (0, 1):
    _add(f"af_halluc_{_k}", "artifact", "higher", "new detail not in the reference",
         f"log10(1e-6 + band-{_k} energy of the suspect unexplained by a gain on the reference's / reference's)",
         "log10", (-6.0, None), -6.0, "noise")
_add("af_edge_flat", "artifact", "higher", "flats smoothed more than edges",
     "log10 high-pass gain on the reference's strongest-20% gradient pixels minus on its flattest 50%", "log10",
     (None, None), 0.0, "edge_preserving")
_add("af_sparsity", "artifact", "higher", "change concentrated on few pixels",
     "log10(kurtosis / 3) of the high-passed luma change (0: Gaussian or no change)", "log10", (None, None), 0.0,
     "impulse")
_add("af_chroma_coupling", "artifact", "higher", "change shared by luma and chroma",
     "corr over pixels of |hp(luma change)| and |hp(chroma change)|", "", (-1.0, 1.0), 0.0, "red_noise")
_add("survival", "survival", "higher", "more of the perturbation kept",
     "<y - x, delta> / <delta, delta>: 1 intact, 0 gone", "", (None, None), None, None)
_add("perturbation_z", "survival", "higher", "more evidence the suspect derives from the protected image",
     "sign-flip z of the correlation of (suspect - clean) with delta; P(z >= t | null) <= exp(-t^2/2)", "z",
     (None, None), None, None)


def get(name: str) -> Feature:
    """The registered feature ``name`` (a usage error suggesting close names otherwise)."""
    return REGISTRY.get(name)


def names(family: str | Sequence[str] | None = None) -> list[str]:
    """Registered names, in registry order, optionally of one family (or several)."""
    fams = (family,) if isinstance(family, str) else family
    return [n for n, f in REGISTRY.items() if fams is None or f.family in fams]


def directions(feature_names: Sequence[str]) -> dict[str, str]:
    """``{name: "lower = more change", ...}`` for records and artifacts."""
    return {n: get(n).direction_text for n in feature_names}


def table(family: str | Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{name: (direction text, description)}`` of a family — the shape the scoring modules publish."""
    return {n: (get(n).direction_text, get(n).description) for n in names(family)}


def sign(name: str, fallback_text: str | None = None) -> float:
    """+1 when larger means more of the feature's effect, −1 when smaller does.

    A name outside the registry (a feature of an artifact made elsewhere) falls back to its stored
    direction prose, ``fallback_text`` (``"lower = …"`` → −1)."""
    if name in REGISTRY:
        return get(name).sign
    return -1.0 if (fallback_text or "").strip().startswith("lower") else 1.0
