"""The fingerprint's JSON metadata as typed objects (:class:`FingerprintMeta`, its calibration :class:`Conformal`),
kept free of torch so that code that only reads metadata (the suspect-condition checks of :mod:`.condition`,
triage's provenance) does not load it. :mod:`.fingerprint` re-exports both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from fingerprint_cli import records
from fingerprint_cli.jsonobject import JsonObject


@dataclass(kw_only=True, eq=False)
class Conformal(JsonObject):
    """``meta["conformal"]``: the held-out real images a fingerprint's false-positive rate is calibrated on
    (see :func:`.detect.calibrate`). ``recompressions``: per condition a real photo may arrive in
    (:class:`.condition.Recompression` id → {"n", "rho", "rho_threshold"}), the same images' statistics after
    that condition; absent in fingerprints calibrated "as distributed" only. ``lossless``: a second set of real
    images that are lossless as distributed (PNG photos), calibrated as their own set ({"n", "rho",
    "rho_threshold", "images", "manifest_sha256", "description", "conditions"}); a lossless suspect's p-value is
    then also taken over it (:func:`.condition.calibration_sets`). Absent in fingerprints calibrated before it
    existed, which load and decide as before. ``restored``: the scale-restoration sets ({"to", "method", "slack",
    "bands": {scale: {"scale", "n", "sets": {encoding: {"n", "rho", "rho_threshold"}}}}}, :mod:`.restore`); a
    fingerprint without it never restores a suspect."""
    SPARSE: ClassVar[bool] = True
    fpr: float | None = None
    n: int | None = None
    rho: list[float] | None = None
    rho_threshold: float | None = None
    images: list[dict[str, Any]] | None = None
    manifest_sha256: str | None = None
    description: str | None = None
    conditions: dict[str, Any] | None = None
    statistic: str | None = None
    created: str | None = None
    pvalue: str | None = None
    recompressions: dict[str, dict[str, Any]] | None = None
    recompressions_left_out: dict[str, str] | None = None
    lossless: dict[str, Any] | None = None
    restored: dict[str, Any] | None = None


@dataclass(kw_only=True, eq=False)
class FingerprintMeta(JsonObject):
    """The ``meta`` JSON of a fingerprint file, typed (see the module docstring for what each key holds).
    :meth:`from_json` / :meth:`to_json` round-trip the stored string byte for byte (a ``SPARSE``
    :class:`~fingerprint_cli.jsonobject.JsonObject`: keys this fpx does not type are kept in ``extra``, a key
    absent from the file stays absent, an explicit null stays null, numbers keep their JSON type)."""
    SPARSE: ClassVar[bool] = True
    denoiser: dict[str, Any] | None = None
    crop: int | None = None
    method: str | None = None
    seed: int | None = None
    tolerance: int | None = None
    search: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    margin: float | None = None
    unet_width: int | None = None
    steps: int | None = None
    final_loss: float | None = None
    mu_gen: float | None = None
    mu_real: float | None = None
    sigma_gen: float | None = None
    sigma_real: float | None = None
    threshold: float | None = None
    calibration: Any = None              # how μ/σ were computed ("training correlations", …)
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    test_auc: float | None = None
    test_tpr_at_fpr: float | None = None
    train: dict[str, list[dict[str, Any]]] | None = None
    test: dict[str, list[dict[str, Any]]] | None = None
    counts: dict[str, int] | None = None
    seconds: dict[str, float] | None = None
    skipped: list[dict[str, str]] | None = None
    augment: dict[str, Any] | None = None
    conditions: dict[str, Any] | None = None
    conformal: Conformal | Any = None
    calibrated_from_unverified: bool | None = None
    library_id: str | None = None
    storage_dtype: str | None = None
    fpx_version: str | None = None
    created: str | None = None

    NESTED: ClassVar[dict[str, type[JsonObject]]] = {"conformal": Conformal}

    @classmethod
    def from_json(cls, text: str) -> "FingerprintMeta":
        """Parse the stored ``meta`` string; ValueError when it is not a JSON object."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("fingerprint metadata is not a JSON object")
        try:
            return cls.from_obj(d, "fingerprint metadata")
        except TypeError as exc:  # a nested object that is not one (e.g. "conformal": 5)
            raise ValueError(str(exc)) from exc

    def to_json(self) -> str:
        """The stored form: ``json.dumps(..., sort_keys=True)`` of the strict-JSON form (``records.json_safe``: a
        training path that is not UTF-8 is spelled with ``\\xNN`` escapes, not as a lone surrogate)."""
        return json.dumps(records.json_safe(self.to_obj()), sort_keys=True)

    def copy(self) -> "FingerprintMeta":
        """A deep copy (through JSON, as stored)."""
        return FingerprintMeta.from_json(self.to_json())

    def split(self, which: str, cls: str) -> list[dict[str, Any]]:
        """The ``train`` / ``test`` split's entries [{"path", "sha256"}] of class ``generated`` / ``real``."""
        return list(((getattr(self, which) or {}).get(cls)) or [])

    @property
    def oriented_sign(self) -> float:
        """+1 when generated images correlate above real ones (μ_gen ≥ μ_real), else −1."""
        return 1.0 if float(self.mu_gen) >= float(self.mu_real) else -1.0


class MetaView(dict):
    """``Fingerprint.meta``: the metadata as the plain JSON dict, for readers outside ``dif/`` (lineage,
    triage). Read-only at the top level — write through ``Fingerprint.info`` (typed); a write here would be lost,
    so it is refused."""

    def _refuse(self, *_a, **_k):
        raise TypeError("Fingerprint.meta is a read-only view of the metadata: set fields on Fingerprint.info "
                        "(a FingerprintMeta)")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _refuse
