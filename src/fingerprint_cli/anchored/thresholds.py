"""Thresholds artifacts: versioned JSON that ``fpx attribute`` trusts (schema, seal, load, checks).

An artifact is one JSON object (never a pickle) with ``schema: "fpx-thresholds/1"``, ``id``, ``version``,
``created``, ``fpx_version``, ``encoder`` (``null`` for pixel features only, else ``{id, weights_sha256,
resolution}``), ``features`` and ``directions``, ``standardisation`` (mean/std), ``class_model`` (LDA with a
shared covariance, parameters in JSON), ``band_rule``, ``inconclusive`` rule, optionally ``conformal`` (v2: Mondrian
conformal p-values, see :class:`fingerprint_cli.anchored.calibrate.Conformal`; an artifact without it still loads
and its records say "p-values: not calibrated") and ``calibration`` (corpus description and sha256, images, calls,
systems, leave-one-image-out accuracy with 95% CI, confusion matrix, band purity, η², blind baseline). The
``sha256`` field seals the rest: it is the SHA-256 of the canonical JSON (sorted keys, compact separators, UTF-8)
of the object without ``sha256``. An artifact whose seal does not match is refused, as is one whose encoder or
resolution differs from what fpx would compute.

In memory an artifact is a :class:`Thresholds` (typed fields, the file it came from as ``.path``);
:meth:`Thresholds.from_json` / :meth:`Thresholds.to_json` keep the JSON byte-identical (key order included), so
seals and the :data:`SHIPPED_PINS` stay valid. All validation lives in :meth:`Thresholds.from_dict` (through
:func:`validate`).

Shipped artifacts live in the package (``fingerprint_cli/thresholds/*.json``) and are found with
:mod:`importlib.resources`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fingerprint_cli import atomic
from fingerprint_cli.jsonobject import JsonObject
from fingerprint_cli.errors import ArtifactError, InputError
from fingerprint_cli.images import read_checked
from fingerprint_cli.registry import suggest

SCHEMA = "fpx-thresholds/1"
REQUIRED = ("schema", "id", "version", "created", "fpx_version", "encoder", "features", "standardisation",
            "class_model", "band_rule", "inconclusive", "calibration", "sha256")
MAX_BYTES = 64 << 20
SHIPPED_DIR = "fingerprint_cli/thresholds"


# Shipped ids pinned to their seal: an edited-and-resealed file can no longer carry a shipped id. A new shipped
# artifact (or a new version of one) gets its line here in the same commit as its file.
SHIPPED_PINS: dict[str, str] = {
    "local-offline-pixel-v1": "fafb39f0af607015fecf71ffeb7506e9a2e3ee2610dbf45dd96eb23e22964179",
    "local-offline-ssim-psnr-v1": "aa0cc8c484a81af68a473671f571e8a39dc53441fb4613c163acd2cf8553e1f0",
    "local-offline-pixel-v2": "a97acf9992782b603aafc9f2e9a71643f0710d9e6d9c45856c5200c9d12ed87e",
    "local-offline-pixel-v3": "4b230e5f274b112f739afcc7a29abfbbb3674315e0e4a2d2a4920123ee87c854",
    "local-offline-pixel-v4": "1bae5c9aa1c0c9754772658ab4905eef86cf36aca0d64bcc1a2ac6274643ab6f",
    "local-offline-pixel-v5": "5b246c0ed25f675815f68f0829237ad15afc3d9f730a7d6c9b8f33534b8e9bb0",
    "local-offline-pixel-v7": "c88cde0919a515304d3e6749522298192140f2dc34e05dbc49657d6a9371d1c4",
    "local-offline-pixel-v9": "7914e120fc77b6c7c8b46eb683552fd3a5b0b44a79463c085a2b2af2c6505595",
    "local-offline-pixel-v10": "e376b3da9db6311eff428a13baa67809a727c0c358d515ece6e8e3903268f3da",
}


# ---------------------------------------------------------------- the typed document
@dataclass(kw_only=True, eq=False)
class EncoderPin(JsonObject):
    """The encoder an artifact was calibrated with (``null`` in the JSON for pixel features only)."""

    id: str | None = None
    weights_sha256: str | None = None
    resolution: int | None = None
    verified: bool | None = None


@dataclass(kw_only=True, eq=False)
class Standardisation(JsonObject):
    """Per-feature mean and standard deviation of the calibration corpus (z = (x - mean) / std)."""

    mean: Any = None
    std: Any = None


@dataclass(kw_only=True, eq=False)
class ClassModel(JsonObject):
    """The shared-covariance LDA (:class:`fingerprint_cli.anchored.calibrate.LDA`), in standardised space."""

    kind: str | None = None
    classes: list[str] = field(default_factory=list)
    means: Any = None
    covariance: Any = None
    priors: Any = None
    shrinkage: float | str | None = None
    space: str | None = None
    fitted_by: str | None = None


@dataclass(kw_only=True, eq=False)
class BandRule(JsonObject):
    """Which band each system belongs to, how that was decided, and the 2-feature plane model for display."""

    bands: dict[str, str] = field(default_factory=dict)
    how: str | None = None
    decision: str | None = None
    plane: dict[str, Any] | None = None


@dataclass(kw_only=True, eq=False)
class InconclusiveRule(JsonObject):
    """When a decision abstains: ``alpha`` (conformal artifacts), else the posterior and distance thresholds."""

    alpha: float | None = None
    min_top_posterior: float | None = None
    band_min_posterior: float | None = None
    max_mahalanobis2: float | None = None
    far_quantile: float | None = None
    rule: str | None = None


@dataclass(kw_only=True, eq=False)
class Thresholds(JsonObject):
    """A validated, sealed thresholds artifact. Build one with :meth:`from_json` (bytes or a path) or
    :meth:`from_dict`; both refuse a broken artifact with :class:`ArtifactError`. ``path`` is the file it came
    from (``fingerprint_cli/thresholds/NAME.json`` for a shipped one), never part of the sealed document.

    Read it through its typed fields. It is also a read-only mapping over its JSON document (``t["id"]``,
    ``t.get("conformal")``, ``dict(t)``; :meth:`to_dict` for an editable copy): the accessor kept for callers
    that still read the dict (triage/evidence.py, bench/openset.py)."""

    NESTED: ClassVar[dict[str, type[JsonObject]]] = {
        "encoder": EncoderPin, "standardisation": Standardisation, "class_model": ClassModel,
        "band_rule": BandRule, "inconclusive": InconclusiveRule}

    schema: str
    id: str
    version: Any
    created: str
    fpx_version: str
    encoder: EncoderPin | None
    features: list[str]
    standardisation: Standardisation
    class_model: ClassModel
    band_rule: BandRule
    inconclusive: InconclusiveRule
    calibration: dict[str, Any]
    sha256: str
    description: str | None = None
    directions: dict[str, str] | None = None
    systems: list[str] | None = None
    conformal: dict[str, Any] | None = None
    path: str | None = None

    # ------------------------------------------------------------ construction (all validation is here)
    @classmethod
    def from_dict(cls, doc: Any, where: str | None = None, path: str | os.PathLike | None = None) -> Thresholds:
        """The artifact of the parsed JSON ``doc``, validated (:func:`validate`): schema, required keys, seal,
        shipped pin, class model and numbers. In-memory ``_``-prefixed keys (an old ``_path``) are dropped."""
        if isinstance(doc, dict):
            doc = {k: v for k, v in doc.items() if not str(k).startswith("_")}
        where = where or (str(path) if path is not None else None) or str(_get(doc, "id", "thresholds"))
        return validate(doc, where, path=str(path) if path is not None else None)

    @classmethod
    def from_json(cls, data: bytes | str | os.PathLike, what: str = "thresholds file") -> Thresholds:
        """The artifact in ``data``: the file's bytes, or a path to read (at most 64 MiB). ``what`` is ignored
        for bytes and names the file kind in the error for a path."""
        if isinstance(data, (bytes, bytearray)):
            return cls.from_dict(_parse(bytes(data), "thresholds document"), "thresholds document")
        p = Path(data)
        return cls.from_dict(_parse(read_checked(p, what, max_bytes=MAX_BYTES), str(p)), str(p), path=p)

    def to_dict(self) -> dict[str, Any]:
        """The sealed JSON document (a deep copy, keys in file order: edit it and :func:`save` it anew)."""
        return copy.deepcopy(self.to_obj())

    def to_json(self) -> bytes:
        """The file's bytes: exactly what :func:`save` writes and :meth:`from_json` read."""
        return dumps(self.to_dict()).encode("utf-8")

    def update(self, **values: Any) -> None:
        """Refused: a sealed artifact is read-only (edit :meth:`to_dict`'s copy and :func:`save` it anew)."""
        raise TypeError("a thresholds artifact is sealed and read-only")

    # ------------------------------------------------------------ what the code reads
    @property
    def where(self) -> str:
        """How errors name the artifact: its path, else its id."""
        return self.path or self.id

    @property
    def is_conformal(self) -> bool:
        return bool(self.conformal)

    @property
    def loo(self) -> dict[str, Any]:
        """The leave-one-image-out measurement (accuracy, ci95, chance, confusion, ...)."""
        return self.calibration.get("loo", {})

    @property
    def plane(self) -> dict[str, Any]:
        """The calibration plane (``features``: the two plotted features, ``points`` per system)."""
        return self.calibration["plane"]

    def plane_point(self, features: Mapping[str, float | None]) -> list[float] | None:
        """A call's point on the calibration plane (None when one of the two plane features is missing)."""
        vals = [features.get(f) for f in self.plane["features"]]
        return None if any(v is None for v in vals) else [float(v) for v in vals]

    @property
    def user_path(self) -> str | None:
        """The path of an artifact the user gave (an input of the run), None for a shipped one."""
        return self.path if self.path and not self.path.startswith(SHIPPED_DIR + "/") else None

    def summary(self) -> dict[str, Any]:
        """What a record says about the artifact that made its decision."""
        cal = self.calibration
        return {"id": self.id, "version": self.version, "sha256": self.sha256, "path": self.path,
                "encoder": self.encoder.to_obj() if self.encoder is not None else None,
                "features": self.features,
                "loo_accuracy": self.loo.get("accuracy"), "loo_ci95": self.loo.get("ci95"),
                "band_loo_accuracy": cal.get("band_loo", {}).get("accuracy"),
                "corpus": cal.get("corpus", {}).get("description"), "note": self.description,
                "p_values": (f"conformal, alpha {self.conformal.get('alpha')}" if self.conformal
                             else "not calibrated")}


def _get(doc: Any, key: str, default: Any = None) -> Any:
    return doc.get(key, default) if isinstance(doc, dict) else default


def _parse(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"thresholds file is not valid JSON ({exc.__class__.__name__})", where) from exc


# ---------------------------------------------------------------- seal and file format
def canonical(doc: Mapping[str, Any]) -> bytes:
    """The sealed bytes: every key but ``sha256`` and the in-memory ``_``-prefixed ones."""
    body = {k: v for k, v in doc.items() if k != "sha256" and not str(k).startswith("_")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def seal(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``doc`` (a dict) with its ``sha256`` seal (re)computed."""
    out = {k: v for k, v in doc.items() if k != "sha256" and not str(k).startswith("_")}
    out["sha256"] = hashlib.sha256(canonical(out)).hexdigest()
    return out


def dumps(doc: Mapping[str, Any]) -> str:
    """The file format of an artifact: indented JSON, keys in document order, a final newline."""
    return json.dumps(dict(doc), indent=1, sort_keys=False, allow_nan=False) + "\n"


def save(doc: Mapping[str, Any], path: str | os.PathLike, inputs=()) -> Thresholds:
    """Seal and write an artifact atomically (never over one of ``inputs``); returns it, validated, with its
    ``path``."""
    sealed = Thresholds.from_dict(seal(doc), str(path), path=path)
    atomic.refuse_overwrite_of_inputs(path, inputs)
    atomic.write_bytes(path, sealed.to_json())
    return sealed


# ---------------------------------------------------------------- validation (one place)
def validate(doc: Any, where: str, path: str | None = None) -> Thresholds:
    """The :class:`Thresholds` of ``doc`` after every check; an :class:`ArtifactError` naming ``where``
    otherwise: not an artifact, missing keys, a broken seal, a resealed shipped id, malformed parts, an
    inconsistent class model, numbers that cannot give a meaningful posterior."""
    _check_envelope(doc, where)
    _check_seal(doc, where)
    try:
        t = Thresholds.from_obj(doc, "thresholds artifact")
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"thresholds artifact is malformed ({exc})", where) from exc
    t.path = path
    _check_class_model(t, where)
    check_numbers(t, where)
    return t


def _check_envelope(doc: Any, where: str) -> None:
    """An fpx thresholds object with every required key."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ArtifactError(f"is not an fpx thresholds artifact (expected schema {SCHEMA!r})", where)
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ArtifactError(f"thresholds artifact lacks {', '.join(missing)}", where)


def _check_seal(doc: dict[str, Any], where: str) -> None:
    """The content hashes to its ``sha256``, and a shipped id carries exactly the shipped content."""
    try:
        digest = hashlib.sha256(canonical(doc)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"thresholds artifact is not canonical JSON ({exc})", where) from exc
    if digest != doc["sha256"]:
        raise ArtifactError(f"thresholds artifact has been modified: its content hashes to {digest[:16]}…, "
                            f"not its recorded sha256 {str(doc['sha256'])[:16]}…; refusing it", where)
    pin = SHIPPED_PINS.get(str(doc.get("id")))
    if pin is not None and doc["sha256"] != pin:
        raise ArtifactError(f"carries the id {doc['id']!r} of a shipped thresholds artifact but not its content "
                            f"(sha256 {str(doc['sha256'])[:16]}…, shipped {pin[:16]}…): it was edited and "
                            "resealed; refusing it (give an edited artifact its own id)", where)


def _check_class_model(t: Thresholds, where: str) -> None:
    """As many class means as classes (at least two), each of the feature dimension, a d × d covariance."""
    cm = t.class_model
    k, d = len(cm.classes or []), len(t.features)
    means, cov = cm.means or [], cm.covariance or []
    if k < 2 or len(means) != k or any(len(m) != d for m in means) or len(cov) != d:
        raise ArtifactError("thresholds artifact has an inconsistent class model", where)


def _array(x: Any, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``x`` as a finite float array of ``shape``, else an :class:`ArtifactError` naming ``name``."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArtifactError(f"thresholds artifact: {name} is not numeric", where) from None
    if a.shape != shape:
        raise ArtifactError(f"thresholds artifact: {name} has shape {a.shape}, not {shape}", where)
    if not np.all(np.isfinite(a)):
        raise ArtifactError(f"thresholds artifact: {name} holds non-finite values (NaN or infinite)", where)
    return a


def check_numbers(t: Thresholds, where: str) -> None:
    """Refuse a class model that cannot give a meaningful posterior: non-finite or non-positive scales,
    non-finite means, a covariance that is not symmetric positive definite, repeated classes, bad priors or an
    inconclusive rule outside its range."""
    _check_unique_names(t, where)
    _check_standardisation(t, where)
    _check_class_numbers(t, where)
    if t.conformal:
        _check_set_rule(t.inconclusive, where)
    else:
        _check_posterior_rule(t.inconclusive, where)


def _check_unique_names(t: Thresholds, where: str) -> None:
    classes = t.class_model.classes
    if len(set(map(str, classes))) != len(classes):
        raise ArtifactError("thresholds artifact names a class twice", where)
    if len(set(t.features)) != len(t.features):
        raise ArtifactError("thresholds artifact names a feature twice", where)


def _check_standardisation(t: Thresholds, where: str) -> None:
    """Finite means and positive finite scales, one per feature."""
    d = len(t.features)
    _array(t.standardisation.mean, "standardisation mean", (d,), where)
    std = _array(t.standardisation.std, "standardisation std", (d,), where)
    if np.any(std <= 0):
        bad = [f for f, v in zip(t.features, std) if v <= 0]
        raise ArtifactError(f"thresholds artifact: standardisation std is not positive for {', '.join(bad)} "
                            "(a zero scale makes every z-score infinite)", where)


def _check_class_numbers(t: Thresholds, where: str) -> None:
    """Finite class means that differ, a symmetric positive-definite covariance, positive priors summing to 1."""
    cm = t.class_model
    k, d = len(cm.classes), len(t.features)
    means = _array(cm.means, "class means", (k, d), where)
    cov = _array(cm.covariance, "covariance", (d, d), where)
    if not np.allclose(cov, cov.T, rtol=1e-6, atol=1e-9):
        raise ArtifactError("thresholds artifact: covariance is not symmetric", where)
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ArtifactError("thresholds artifact: covariance is not positive definite", where) from None
    priors = _array(cm.priors, "priors", (k,), where)
    if np.any(priors <= 0) or abs(float(priors.sum()) - 1.0) > 1e-4:
        raise ArtifactError("thresholds artifact: priors must be positive and sum to 1", where)
    if k >= 2 and np.allclose(means, means[:1], atol=1e-12):
        raise ArtifactError("thresholds artifact: every class has the same mean (no class can be told apart)",
                            where)


def _check_set_rule(rule: InconclusiveRule, where: str) -> None:
    """A prediction-set rule: alpha in (0, 0.5] (the conformal part itself is checked when a Decider uses it)."""
    try:
        a = float(rule.alpha)
    except (TypeError, ValueError):
        raise ArtifactError("thresholds artifact: prediction-set rule lacks a numeric alpha", where) from None
    if not 0.0 < a <= 0.5:
        raise ArtifactError(f"thresholds artifact: alpha {a:g} is not in (0, 0.5]", where)


def _check_posterior_rule(rule: InconclusiveRule, where: str) -> None:
    """A v1 rule: posteriors in [0, 1] and a finite positive distance bound."""
    try:
        mtp, bmp = float(rule.min_top_posterior), float(rule.band_min_posterior)
        mm2 = float(rule.max_mahalanobis2)
    except (TypeError, ValueError):
        raise ArtifactError("thresholds artifact: inconclusive rule lacks numeric min_top_posterior, "
                            "band_min_posterior and max_mahalanobis2", where) from None
    if not (0.0 <= mtp <= 1.0 and 0.0 <= bmp <= 1.0 and np.isfinite(mm2) and mm2 > 0):
        raise ArtifactError("thresholds artifact: inconclusive rule out of range (posteriors in [0, 1], "
                            "max_mahalanobis2 finite and > 0)", where)


# ---------------------------------------------------------------- finding artifacts
def load(path: str | os.PathLike) -> Thresholds:
    """The artifact in the file ``path`` (validated; refused loudly otherwise)."""
    return Thresholds.from_json(Path(path))


def shipped() -> list[Thresholds]:
    """Every artifact shipped in the package, sorted by id. A shipped artifact that fails its checks is an
    :class:`ArtifactError` (a corrupted installation must fail loudly, never be skipped)."""
    root = resources.files("fingerprint_cli") / "thresholds"
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            where = f"(shipped) {entry.name}"
            out.append(Thresholds.from_dict(_parse(entry.read_bytes(), where), where,
                                            path=f"{SHIPPED_DIR}/{entry.name}"))
    return sorted(out, key=lambda t: t.id)


def find(name: str) -> Thresholds:
    """An artifact by file path, or by the id of a shipped one."""
    if Path(name).is_file() or name.endswith(".json"):
        return load(name)
    docs = shipped()
    for d in docs:
        if d.id == name:
            return d
    ids = [d.id for d in docs]
    raise InputError(f"no thresholds file and no shipped artifact with this id{suggest(name, ids, n=1)} "
                     f"(shipped: {', '.join(ids) or 'none'})", name)


def summary(doc: Thresholds) -> dict[str, Any]:
    """What a record says about the artifact that made its decision (:meth:`Thresholds.summary`)."""
    return doc.summary()


def check_encoder(doc: Thresholds, encoder) -> None:
    """Refuse the artifact when its encoder (weights sha256, resolution) differs from ``encoder``."""
    want = doc.encoder
    if want is None:
        if encoder is not None:
            raise ArtifactError("thresholds were calibrated on pixel features only (encoder: null) but an "
                                "encoder was requested", doc.where)
        return
    if encoder is None:
        raise ArtifactError(f"thresholds need the {want.id} encoder features, and no encoder is loaded",
                            doc.where)
    prov = encoder.provenance()
    if prov.get("weights_sha256") != want.weights_sha256:
        raise ArtifactError(f"thresholds were calibrated with encoder weights sha256 "
                            f"{str(want.weights_sha256)[:16]}…, but the installed {prov.get('encoder')} "
                            f"weights are {str(prov.get('weights_sha256'))[:16]}…; refusing to mix them", doc.where)
    if int(prov.get("resolution")) != int(want.resolution):
        raise ArtifactError(f"thresholds were calibrated at resolution {want.resolution}, not "
                            f"{prov.get('resolution')}; refusing to mix them", doc.where)
