"""The fingerprint artifact: a (3, crop, crop) pattern plus JSON metadata, stored as safetensors.

File layout (``*.fpx.safetensors``): one tensor ``pattern`` (float32, 3×crop×crop) and string metadata
``format = "fpx-fingerprint"``, ``format_version``, ``name``, ``method`` and ``meta`` (a JSON object:
denoiser {"id", "sha256"}, crop, mu_real, mu_gen, sigma_real, sigma_gen, threshold, tolerance, seed,
fpx_version, and the train/test split ``train`` / ``test``, each {"generated": [{"path", "sha256"}, ...],
"real": [...]}). Never pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from fingerprint_cli.errors import InputError

FORMAT = "fpx-fingerprint"
FORMAT_VERSION = "1"
METHODS = ("dif", "average", "spectral")


@dataclass
class Fingerprint:
    name: str                # generator name
    method: str              # "dif" | "average" | "spectral"
    pattern: torch.Tensor    # (3, crop, crop) float32
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def crop(self) -> int:
        return int(self.meta.get("crop", self.pattern.shape[-1]))

    @property
    def denoiser(self) -> dict[str, Any]:
        return dict(self.meta.get("denoiser", {}))

    def save(self, path: str | os.PathLike, inputs=()) -> str:
        """Write atomically (refusing to overwrite any of ``inputs``); returns the file's sha256."""
        from fingerprint_cli import artifacts

        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                    "method": self.method, "meta": json.dumps(self.meta, sort_keys=True)}
        pattern = self.pattern.detach().to(torch.float32).cpu().contiguous()
        return artifacts.write_tensors(path, {"pattern": pattern}, metadata, inputs=tuple(inputs))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fingerprint":
        """Read a fingerprint; InputError naming the file when it is not one."""
        from fingerprint_cli import artifacts

        p = str(path)
        tensors, md = artifacts.read_tensors(p)
        if md.get("format") != FORMAT or "pattern" not in tensors:
            raise InputError("is not an fpx fingerprint (expected a file written by `fpx dif-extract`)", p)
        if md.get("format_version") != FORMAT_VERSION:
            raise InputError(f"fingerprint format version {md.get('format_version')!r} is not supported "
                             f"(this fpx reads version {FORMAT_VERSION})", p)
        try:
            meta = json.loads(md.get("meta", "{}"))
        except json.JSONDecodeError as exc:
            raise InputError("fingerprint metadata is not valid JSON", p) from exc
        pattern = tensors["pattern"].to(torch.float32)
        if pattern.ndim != 3 or pattern.shape[0] != 3 or pattern.shape[1] != pattern.shape[2]:
            raise InputError(f"fingerprint pattern has shape {tuple(pattern.shape)}, not (3, crop, crop)", p)
        method = md.get("method", "dif")
        if method not in METHODS:
            raise InputError(f"unknown fingerprint method {method!r}", p)
        fp = cls(name=md.get("name", ""), method=method, pattern=pattern, meta=meta)
        fp.meta.setdefault("crop", int(pattern.shape[-1]))
        fp.path = p  # type: ignore[attr-defined]
        return fp

    def compatible_with(self, other: "Fingerprint") -> str | None:
        """Why the two fingerprints' correlations are not comparable (denoiser, crop), or None."""
        a, b = self.denoiser, other.denoiser
        if a.get("sha256") != b.get("sha256"):
            return (f"made with different denoisers: {self.name!r} with {a.get('id')} "
                    f"(sha256 {str(a.get('sha256'))[:12]}…), {other.name!r} with {b.get('id')} "
                    f"(sha256 {str(b.get('sha256'))[:12]}…)")
        if self.crop != other.crop:
            return f"different crops: {self.name!r} {self.crop} px, {other.name!r} {other.crop} px"
        return None

    def summary(self) -> dict[str, Any]:
        m = self.meta
        return {"name": self.name, "method": self.method, "crop": self.crop,
                "denoiser": self.denoiser.get("id"), "mu_real": m.get("mu_real"), "mu_gen": m.get("mu_gen"),
                "threshold": m.get("threshold")}
