"""The fingerprint artifact: a (3, crop, crop) pattern plus JSON metadata, stored as safetensors, sealed.

File layout (``*.fpx.safetensors``): one tensor ``pattern`` (float32, or float16 when saved with
``dtype="float16"``; always computed with in float32) and string metadata ``format = "fpx-fingerprint"``,
``format_version``, ``name``, ``method``, ``meta`` (a JSON object: denoiser {"id", "sha256"}, crop, mu_real,
mu_gen, sigma_real, sigma_gen, threshold, tolerance, search, seed, fpx_version, the train/test split
``train`` / ``test`` — each {"generated": [{"path", "sha256"}, ...], "real": [...]} —, the training
``conditions`` and, once calibrated, ``conformal``: the held-out real images' statistics, per recompression
condition too, and the stated false-positive rate, see :mod:`.detect`) and ``seal``. Never pickle. In Python the
``meta`` JSON is a typed :class:`FingerprintMeta` (``Fingerprint.info``) that re-serialises byte for byte.

**Seal** (format 2): sha256 over the tensors (name, dtype, shape, bytes) and every other metadata entry
(:func:`seal_of`). :meth:`Fingerprint.load` recomputes it and refuses a file whose seal does not match (its
pattern or metadata was edited after it was written) unless ``force=True``; a forced or unsealed (format 1,
fpx ≤ 0.1) fingerprint loads with ``verified = False``, which every detection record carries.

**Validation at load** (:func:`validate`): pattern shape (3, crop, crop) and the recorded crop agree; the
pattern is finite and not constant (an all-zero pattern correlates with nothing); μ_real, μ_gen finite and
distinct, σ_real finite and positive; a known method and detection statistic; a calibration with a stated
rate in (0, 0.5], finite statistics and enough images for that rate; written by this fpx version or an older
one (a newer fpx may compute a statistic this one does not know). Each refusal names the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping

import torch

from fingerprint_cli import __version__, artifacts, batch, fingerprints
from fingerprint_cli.dif.meta import Conformal, FingerprintMeta, MetaView
from fingerprint_cli.errors import ArtifactError, InputError
from fingerprint_cli.images import RESAMPLING, sha256_file

FORMAT = "fpx-fingerprint"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
SEAL = "sha256-v1"
METHODS = ("dif", "average", "spectral")
STATISTICS = ("crossfit", "max")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class NotAFingerprint(InputError):
    """The file is not an fpx fingerprint at all (as opposed to a fingerprint that fails its checks)."""


def seal_of(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the tensors (sorted by name: name, dtype, shape, raw bytes) and the metadata entries other
    than ``seal`` (canonical JSON). Changing any byte of the pattern or any metadata value changes it."""
    h = hashlib.sha256(b"fpx-fingerprint-seal\x00" + SEAL.encode() + b"\x00")
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        head = json.dumps([name, str(t.dtype), list(t.shape)]).encode()
        h.update(len(head).to_bytes(8, "little") + head)
        data = t.numpy().tobytes()
        h.update(len(data).to_bytes(8, "little") + data)
    md = json.dumps({k: v for k, v in metadata.items() if k != "seal"}, sort_keys=True).encode()
    h.update(len(md).to_bytes(8, "little") + md)
    return h.hexdigest()


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def min_calibration_images(fpr: float) -> int:
    """Fewest calibration images for which a conformal p-value can reach ``fpr``: ⌈1/fpr⌉ − 1."""
    return max(1, math.ceil(1.0 / float(fpr) - 1e-9) - 1)


def validate(fp: "Fingerprint", path: str | None = None) -> None:
    """Refuse a fingerprint that cannot give meaningful decisions (InputError naming ``path``)."""
    p = path or fp.path
    _check_shape(fp, p)
    _check_known(fp, p)
    _check_pattern(fp.pattern, p)
    _check_statistics(fp.info, p)
    if fp.info.conformal is not None:
        _check_conformal(fp.info.conformal, p)


def _check_shape(fp: "Fingerprint", p: str | None) -> None:
    """The pattern is (3, crop, crop) and the recorded crop agrees with it."""
    pat = fp.pattern
    if pat.ndim != 3 or pat.shape[0] != 3 or pat.shape[1] != pat.shape[2]:
        raise InputError(f"fingerprint pattern has shape {tuple(pat.shape)}, not (3, crop, crop)", p)
    crop = fp.info.crop
    if int(pat.shape[-1] if crop is None else crop) != int(pat.shape[-1]):
        raise InputError(f"fingerprint records crop {crop} but its pattern is {pat.shape[-1]} px", p)


def _check_known(fp: "Fingerprint", p: str | None) -> None:
    """A method and statistic this fpx computes, written by this fpx version or an older one."""
    if fp.method not in METHODS:
        raise InputError(f"unknown fingerprint method {fp.method!r} (this fpx knows {', '.join(METHODS)})", p)
    search = fp.info.to_obj().get("search", "max")  # absent: fpx ≤ 0.1's maximum over shifts
    if search not in STATISTICS:
        raise InputError(f"unknown detection statistic {search!r} (this fpx knows {', '.join(STATISTICS)})", p)
    made_by = fp.info.fpx_version
    if made_by and _version_tuple(made_by) > _version_tuple(__version__):
        raise InputError(f"made by fpx {made_by}, newer than this fpx {__version__}: its statistics may not be "
                         f"the ones this version computes; upgrade fpx", p)


def _check_pattern(pat: torch.Tensor, p: str | None) -> None:
    """Finite and not constant (an all-zero pattern correlates with nothing)."""
    if not bool(torch.isfinite(pat).all()):
        raise InputError("fingerprint pattern contains NaN or infinite values", p)
    if float(pat.to(torch.float64).std()) <= 1e-12:
        raise InputError("fingerprint pattern is constant (e.g. all zeros): it correlates with nothing", p)


def _check_statistics(m: FingerprintMeta, p: str | None) -> None:
    """μ_real, μ_gen finite and distinct, σ_real finite and positive, tolerance an integer in 0..16."""
    for k in ("mu_real", "mu_gen", "sigma_real"):
        if not _finite(getattr(m, k)):
            raise InputError(f"fingerprint calibration value {k} is {getattr(m, k)!r}, not a finite number", p)
    if float(m.sigma_real) <= 0:
        raise InputError(f"fingerprint sigma_real is {m.sigma_real}: the real images' spread must be positive", p)
    if float(m.mu_gen) == float(m.mu_real):
        raise InputError("fingerprint mu_gen equals mu_real: the two classes were not separated", p)
    tol = m.to_obj().get("tolerance", 0)
    if not isinstance(tol, int) or not 0 <= tol <= 16:
        raise InputError(f"fingerprint tolerance {m.tolerance!r} is not an integer in 0..16", p)


def _check_conformal(cal: Any, p: str | None) -> None:
    """A stated rate in (0, 0.5], finite statistics, enough images for that rate — for the images as
    distributed, for the lossless real set and for each recompression condition."""
    if not isinstance(cal, Conformal):
        raise InputError("fingerprint calibration ('conformal') is not an object", p)
    fpr = cal.fpr
    if not _finite(fpr) or not 0 < float(fpr) <= 0.5:
        raise InputError(f"fingerprint's stated false-positive rate {fpr!r} is not in (0, 0.5]", p)
    _check_calibration_set(cal.n, cal.rho, float(fpr), "", p)
    if cal.lossless is not None:
        if not isinstance(cal.lossless, dict):
            raise InputError("fingerprint calibration's lossless set is not an object", p)
        _check_calibration_set(cal.lossless.get("n"), cal.lossless.get("rho"), float(fpr), " (lossless set)", p)
    _check_restored(cal.restored, float(fpr), p)
    recs = cal.recompressions
    if recs is None:
        return
    if not isinstance(recs, dict) or not all(isinstance(v, dict) for v in recs.values()):
        raise InputError("fingerprint calibration's recompressions are not an object of objects", p)
    for cid, entry in recs.items():
        _check_calibration_set(entry.get("n"), entry.get("rho"), float(fpr), f" under {cid}", p)


def _check_restored(restored: Any, fpr: float, p: str | None) -> None:
    """The scale-restoration sets (``conformal["restored"]``, :mod:`.restore`): a known kernel, a positive target
    side, and each band's sets valid calibration sets."""
    if restored is None:
        return
    bands = restored.get("bands") if isinstance(restored, dict) else None
    if not isinstance(bands, dict) or not all(isinstance(b, dict) and isinstance(b.get("sets"), dict)
                                              and _finite(b.get("scale")) and float(b["scale"]) > 0
                                              for b in bands.values()):
        raise InputError("fingerprint calibration's restored scale bands are not well-formed", p)
    if restored.get("method") not in RESAMPLING or not isinstance(restored.get("to"), int) or restored["to"] < 1:
        raise InputError(f"fingerprint calibration's restoration (kernel {restored.get('method')!r}, target "
                         f"{restored.get('to')!r} px) is not one this fpx can apply", p)
    for key, band in bands.items():
        for enc, entry in band["sets"].items():
            if not isinstance(entry, dict):
                raise InputError(f"fingerprint calibration's restored set {key}/{enc} is not an object", p)
            _check_calibration_set(entry.get("n"), entry.get("rho"), fpr, f" (restored {key}/{enc})", p)


def _check_calibration_set(n: Any, rho: Any, fpr: float, where: str, p: str | None) -> None:
    if not isinstance(rho, list) or not all(_finite(x) for x in rho):
        raise InputError(f"fingerprint calibration statistics{where} are missing or not finite", p)
    if n != len(rho):
        raise InputError(f"fingerprint calibration{where} says n = {n} but holds {len(rho)} values", p)
    need = min_calibration_images(fpr)
    if len(rho) < need:
        raise InputError(f"fingerprint is calibrated{where} on {len(rho)} real images, fewer than the {need} a "
                         f"false-positive rate of {fpr} needs", p)


class Fingerprint:
    """A generator fingerprint: its pattern, typed metadata (``info``, a :class:`FingerprintMeta`) and where it
    came from. ``meta`` is the same metadata as a read-only plain dict (readers outside ``dif/``); ``library``
    the shipped library's entry ({"id", "version", "pinned_sha256", "pinned", "held_out"}) when it was loaded
    from there (not part of the sealed file)."""

    def __init__(self, name: str, method: str, pattern: torch.Tensor,
                 meta: FingerprintMeta | Mapping[str, Any] | None = None, path: str | None = None,
                 verified: bool = True, seal: str = "unsaved", sha256: str | None = None,
                 library: dict[str, Any] | None = None):
        self.name = name              # generator name
        self.method = method          # "dif" | "average" | "spectral"
        self.pattern = pattern        # (3, crop, crop) float32
        self.info = meta if isinstance(meta, FingerprintMeta) else FingerprintMeta.from_obj(meta or {})
        self.path = path
        self.verified = verified      # sealed and the seal matched (False: unsealed, or loaded with force)
        self.seal = seal              # "ok" | "absent" (format 1) | "mismatch" (loaded with force) | "unsaved"
        self.sha256 = sha256          # of the file it was loaded from / saved to
        self.library = library

    def __repr__(self) -> str:
        return f"Fingerprint({self.name!r}, {self.method!r}, crop={self.crop}, path={self.path!r})"

    @property
    def meta(self) -> MetaView:
        """The metadata as its JSON dict (plus ``library`` when loaded from the shipped library), read-only."""
        d = self.info.to_obj()
        if self.library is not None:
            d["library"] = self.library
        return MetaView(d)

    @meta.setter
    def meta(self, value: Mapping[str, Any]) -> None:
        self.info = value if isinstance(value, FingerprintMeta) else FingerprintMeta.from_obj(value)

    @property
    def crop(self) -> int:
        return int(self.pattern.shape[-1] if self.info.crop is None else self.info.crop)

    @property
    def denoiser(self) -> dict[str, Any]:
        return dict(self.info.denoiser or {})

    @property
    def conformal(self) -> Conformal | None:
        """The conformal calibration, or None when the fingerprint has none."""
        cal = self.info.conformal
        return cal if isinstance(cal, Conformal) else None

    @property
    def calibrated(self) -> bool:
        return self.conformal is not None

    @property
    def fpr(self) -> float | None:
        return float(self.conformal.fpr) if self.calibrated else None

    def copy(self, **changes) -> "Fingerprint":
        """A deep copy of the metadata (the pattern is shared), with ``changes`` applied."""
        fp = Fingerprint(self.name, self.method, self.pattern, self.info.copy(), self.path, self.verified,
                         self.seal, self.sha256, self.library)
        for k, v in changes.items():
            setattr(fp, k, v)
        return fp

    def quantized(self, dtype: str = "float16") -> "Fingerprint":
        """A copy whose pattern is rounded to ``dtype`` (and held as float32): what a file stored in that dtype
        gives back. Calibrate *after* quantising, so the stored calibration statistics are those of the stored
        pattern."""
        fp = self.copy()
        fp.pattern = self.pattern.detach().to(torch.float32).to(DTYPES[dtype]).to(torch.float32)
        return fp

    def save(self, path: str | os.PathLike, inputs=(), dtype: str = "float32") -> str:
        """Write atomically and sealed (refusing to overwrite any of ``inputs``); returns the file's sha256.

        ``dtype="float16"`` halves the file; correlations are computed in float32 either way. A calibrated
        fingerprint is stored in float16 only when its pattern already is float16-exact (:meth:`quantized`
        before calibrating): otherwise its stored calibration statistics would not be those of the stored
        pattern, and the stated false-positive rate would not hold exactly."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if self.calibrated and dtype != "float32":
            exact = self.pattern.to(torch.float32).to(DTYPES[dtype]).to(torch.float32)
            if not torch.equal(exact, self.pattern.to(torch.float32)):
                raise ValueError(f"a calibrated fingerprint must be quantised to {dtype} before calibration "
                                 f"(Fingerprint.quantized) to be stored in {dtype}")
        validate(self, str(path))
        info = self.info.copy()
        info.fpx_version = info.fpx_version or __version__
        info.storage_dtype = dtype
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                    "method": self.method, "meta": info.to_json(), "seal_algorithm": SEAL}
        pattern = self.pattern.detach().to(torch.float32).cpu().to(DTYPES[dtype]).contiguous()
        tensors = {"pattern": pattern}
        metadata["seal"] = seal_of(tensors, metadata)
        digest = artifacts.write_tensors(path, tensors, metadata, inputs=tuple(inputs))
        self.info = info
        self.path, self.seal, self.verified, self.sha256 = str(path), "ok", True, digest
        return digest

    @classmethod
    def load(cls, path: str | os.PathLike, force: bool = False) -> "Fingerprint":
        """Read, unseal and validate a fingerprint; InputError naming the file when it is not a usable one.

        A seal mismatch is refused unless ``force`` (then ``verified`` is False, as for a format-1 file that
        has no seal)."""
        p = str(path)
        tensors, md = _read_fingerprint_file(p)
        seal, verified = _unseal(tensors, md, force, p)
        try:
            info = FingerprintMeta.from_json(md.get("meta", "{}"))
        except json.JSONDecodeError as exc:
            raise InputError("fingerprint metadata is not valid JSON", p) from exc
        except ValueError as exc:
            raise InputError(str(exc), p) from exc
        pattern = tensors["pattern"]
        if pattern.dtype not in (torch.float32, torch.float16, torch.float64):
            raise InputError(f"fingerprint pattern has dtype {pattern.dtype}, not a float type", p)
        pattern = pattern.to(torch.float32)
        if info.crop is None and "crop" not in info.order:  # absent, not an explicit null
            info.crop = int(pattern.shape[-1]) if pattern.ndim == 3 else None
        fp = cls(name=md.get("name", ""), method=md.get("method", "dif"), pattern=pattern, meta=info, path=p,
                 verified=verified, seal=seal, sha256=sha256_file(p))
        validate(fp, p)
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

    def provenance(self) -> dict[str, Any]:
        """What a record says about the fingerprint it used."""
        cal = self.conformal
        d = {"path": self.path, "name": self.name, "method": self.method, "sha256": self.sha256,
             "seal": self.seal, "verified": self.verified, "denoiser": self.info.denoiser, "crop": self.crop,
             "fpx_version": self.info.fpx_version,
             "calibration": (f"conformal, {cal.n} held-out real images" if cal else "not calibrated"),
             "fpr": cal.fpr if cal else None}
        if self.library:
            d["library"] = self.library
        return d

    def summary(self) -> dict[str, Any]:
        m = self.info
        return {"name": self.name, "method": self.method, "crop": self.crop,
                "denoiser": self.denoiser.get("id"), "mu_real": m.mu_real, "mu_gen": m.mu_gen,
                "threshold": m.threshold, "fpr": self.fpr, "verified": self.verified}


def _read_fingerprint_file(p: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and string metadata of a fingerprint file; NotAFingerprint when it is not one, InputError
    when its format version is one this fpx cannot read."""
    try:
        tensors, md = artifacts.read_tensors(p)
    except InputError as exc:
        raise NotAFingerprint(exc.message, exc.path) from exc
    if md.get("format") != FORMAT or "pattern" not in tensors:
        raise NotAFingerprint("is not an fpx fingerprint (expected a file written by `fpx dif-extract`)", p)
    version = md.get("format_version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"fingerprint format version {version!r} is not supported (this fpx reads "
                         f"versions {', '.join(READABLE_VERSIONS)}; the file was probably written by a newer "
                         f"fpx)", p)
    return tensors, md


def _unseal(tensors: dict[str, torch.Tensor], md: dict[str, str], force: bool, p: str) -> tuple[str, bool]:
    """(seal state, verified) of a fingerprint file: format 1 has no seal; a format-2 file without a seal or
    with one that does not match is refused unless ``force``."""
    if md.get("format_version") == "1":
        return "absent", False
    if "seal" not in md:
        if not force:
            raise InputError("fingerprint has no seal (format 2 files are always sealed): it was edited; "
                             "refusing it (--force loads it anyway, every record then says verified: false)", p)
        return "mismatch", False
    if seal_of(tensors, md) != md["seal"]:
        if not force:
            raise InputError("fingerprint seal does not match its contents: the pattern or the metadata was "
                             "changed after it was written; refusing it (--force loads it anyway, every record "
                             "then says verified: false)", p)
        return "mismatch", False
    return "ok", True


def load_folder(folder: str | os.PathLike, *, force: bool = False,
                on_skip=None) -> list[Fingerprint]:
    """Every fingerprint in ``folder`` (sorted by file name). Files that are not fingerprints are skipped and
    reported through ``on_skip(path, reason)``; a fingerprint that fails its seal or its checks is refused
    (InputError), because silently dropping it would change the answer. InputError when none is found."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError("is not a folder", str(d))
    out = []
    for f in sorted(x for x in d.iterdir() if x.is_file() and not x.name.startswith(".")):
        try:
            out.append(Fingerprint.load(f, force=force))
        except NotAFingerprint as exc:
            if on_skip:
                on_skip(str(f), exc.message)
    if not out:
        raise InputError("holds no fpx fingerprint (*.fpx.safetensors)", str(d))
    return out


def load_library(directory: str | os.PathLike | None = None, *, force: bool = False) -> list[Fingerprint]:
    """The shipped fingerprint library (:mod:`fingerprint_cli.fingerprints`), each file checked against the
    sha256 its index pins (a mismatch is refused unless ``force``; then ``verified`` is False). Each
    fingerprint's ``library`` carries its id, version and the index's held-out measurements."""
    root = Path(directory) if directory else fingerprints.LIBRARY_DIR
    try:
        entries = fingerprints.index(root)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"the fingerprint library index is unreadable ({exc})",
                            str(root / "index.json")) from exc
    out = []
    for e in entries:
        f = root / e["file"]
        if not f.is_file():
            raise ArtifactError(f"shipped fingerprint {e['id']} is missing from the installation; reinstall fpx",
                                str(f))
        digest = sha256_file(f)
        pinned = digest == e["sha256"]
        if not pinned and not force:
            raise InputError(f"shipped fingerprint {e['id']} has sha256 {digest[:16]}…, not the pinned "
                             f"{e['sha256'][:16]}…: the file was changed; refusing it (--force uses it anyway, "
                             f"every record then says verified: false)", str(f))
        fp = Fingerprint.load(f, force=force)
        fp.verified = fp.verified and pinned
        fp.library = {"id": e["id"], "version": e["version"], "pinned_sha256": e["sha256"], "pinned": pinned,
                      "held_out": e.get("held_out")}
        out.append(fp)
    return out


def calibration_summary(fp: Fingerprint) -> dict | None:
    """What a record says about a fingerprint's conformal calibration (None when it has none)."""
    cal = fp.conformal
    if cal is None:
        return None
    return {"fpr": cal.fpr, "n": cal.n, "rho_threshold": cal.rho_threshold,
            "manifest_sha256": cal.manifest_sha256, "description": cal.description,
            "conditions": cal.conditions,
            "recompressions": ({cid: {"n": e.get("n"), "rho_threshold": e.get("rho_threshold")}
                                for cid, e in cal.recompressions.items()} if cal.recompressions else None),
            "lossless": ({k: cal.lossless.get(k) for k in ("n", "rho_threshold", "manifest_sha256", "description",
                                                          "conditions")} if cal.lossless else None)}


class Phases:
    """One progress bar (stderr) per phase a long DIF job announces (residuals, training, calibration, …):
    ``phase(label, total)`` closes the previous bar and opens the next, ``progress(n)`` advances it."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.stack = ExitStack()
        self.advance = lambda n=1, **kw: None

    def phase(self, label: str, total: int) -> None:
        self.stack.close()
        self.stack = ExitStack()
        self.advance = self.stack.enter_context(batch.progress_bar(total, label, self.quiet))

    def progress(self, n: int = 1, **fields) -> None:
        self.advance(n, **fields)

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> "Phases":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
