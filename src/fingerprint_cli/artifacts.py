"""Versioned artifacts: the one place that reads or writes weights.

Every artifact fpx trusts has a name, a version, a sha256 pin, a source and a licence. Installed
files live in the cache (``FPX_HOME``, else the platform's user cache dir) under
``models/<name>/`` next to a ``manifest.json`` that records how the file got there and whether its
hash matched the pin. ``fpx models pull`` downloads with progress and verifies; ``fpx models import``
installs a file brought in by hand and refuses a hash mismatch unless forced, in which case the
manifest (and so every record made with it) says ``verified: false``.

Formats: safetensors and JSON only — never pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fingerprint_cli import atomic, fingerprints
from fingerprint_cli.errors import ArtifactError, InputError, UsageError
from fingerprint_cli.images import check_file, sha256_file
from fingerprint_cli.registry import suggest

PACKAGE_ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    version: str
    kind: str  # encoder | denoiser
    filename: str
    sha256: str | None
    source: str
    licence: str
    description: str
    url: str | None = None
    aliases: tuple[str, ...] = ()
    bundled: bool = False  # shipped inside the package (PACKAGE_ASSETS/filename, or package_dir/filename)
    provenance: dict[str, Any] = field(default_factory=dict)
    package_dir: Path | None = None  # where a bundled file lives when not in PACKAGE_ASSETS


@dataclass
class Installed:
    """An installed artifact as found now: ``sha256`` is what the file hashes to (re-hashed when the file
    changed since it was last hashed, see :func:`file_sha256`), ``verified`` whether that equals the pin,
    ``intact`` whether it equals the sha256 the manifest recorded at install time."""

    spec: ArtifactSpec
    path: Path
    sha256: str
    verified: bool
    how: str  # bundled | pull | import
    intact: bool = True
    manifest_sha256: str | None = None

    def provenance(self) -> dict[str, Any]:
        return {"artifact": self.spec.name, "version": self.spec.version, "sha256": self.sha256,
                "verified": self.verified, "source": self.spec.source}

    def summary(self) -> dict[str, Any]:
        """What ``fpx models pull`` / ``import`` print: name, path, sha256, verified."""
        return {"name": self.spec.name, "path": str(self.path), "sha256": self.sha256, "verified": self.verified}


REGISTRY: dict[str, ArtifactSpec] = {}


def register(spec: ArtifactSpec) -> ArtifactSpec:
    REGISTRY[spec.name] = spec
    return spec


PINS_FILE = PACKAGE_ASSETS / "artifacts.json"  # the pinned artifacts as data: name, version, sha256, source, ...


def _register_pinned() -> None:
    """Register the artifacts listed in ``assets/artifacts.json`` (the DINOv2 encoder, the DnCNN denoiser,
    the SD2 VAE)."""
    doc = json.loads(PINS_FILE.read_text(encoding="utf-8"))
    for e in doc["artifacts"]:
        fields = {k: v for k, v in e.items() if k != "note"}
        register(ArtifactSpec(**{**fields, "aliases": tuple(fields.get("aliases", ()))}))


_register_pinned()


def resolve(name: str) -> ArtifactSpec:
    """Find an artifact by name or alias; unknown names get a 'did you mean'."""
    if name in REGISTRY:
        return REGISTRY[name]
    for spec in REGISTRY.values():
        if name in spec.aliases:
            return spec
    choices = list(REGISTRY) + [a for s in REGISTRY.values() for a in s.aliases]
    raise UsageError(f"unknown artifact {name!r}{suggest(name, choices, n=1)} (known: {', '.join(REGISTRY)})")


# ---------------------------------------------------------------- cache locations
def home() -> Path:
    env = os.environ.get("FPX_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("fpx"))


@contextlib.contextmanager
def using_home(folder: str | os.PathLike, *, offline: bool = True) -> Iterator[Path]:
    """Run the block with ``FPX_HOME=folder`` (and ``FPX_OFFLINE=1`` unless ``offline=False``): a separate artifact
    cache, e.g. for a random test model imported by hand. The environment is restored afterwards."""
    old = {k: os.environ.get(k) for k in ("FPX_HOME", "FPX_OFFLINE")}
    os.environ["FPX_HOME"] = str(folder)
    if offline:
        os.environ["FPX_OFFLINE"] = "1"
    try:
        yield Path(folder)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def offline() -> bool:
    return os.environ.get("FPX_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def artifact_dir(spec: ArtifactSpec) -> Path:
    return home() / "models" / spec.name


def _manifest_path(spec: ArtifactSpec) -> Path:
    return artifact_dir(spec) / "manifest.json"


def read_manifest(spec: ArtifactSpec) -> dict[str, Any] | None:
    """The artifact's manifest, None when there is none; ArtifactError when it is there but unusable."""
    p = _manifest_path(spec)
    try:
        if not p.is_file():
            if p.exists():
                raise ArtifactError("manifest is not a regular file; reinstall the artifact", str(p))
            return None
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"manifest is unreadable or not valid JSON ({type(exc).__name__}); reinstall with "
                            f"`fpx models import FILE --name {spec.name}` or `fpx models pull {spec.name}`",
                            str(p)) from exc
    if not isinstance(m, dict) or not isinstance(m.get("sha256"), str):
        raise ArtifactError(f"manifest lacks the installed file's sha256; reinstall {spec.name}", str(p))
    return m


# ---------------------------------------------------------------- hashing at load, with a verified-hash cache
_HASH_MEMO: dict[str, tuple[list[int], str]] = {}  # this process's verified hashes, same keys as the file cache


def _hash_cache_file() -> Path:
    return home() / "cache" / "sha256-of-files.json"


def _stat_key(st: os.stat_result) -> list[int]:
    # any write (even one that puts mtime back) changes ctime; a replaced file changes inode
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino), int(st.st_dev)]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file as it is now.

    The digest is cached (``FPX_HOME/cache/sha256-of-files.json``) keyed by the file's real path, size, mtime,
    ctime, inode and device; any change to the file re-hashes it. The cache is optional: when it cannot be read
    or written the file is simply hashed every time.
    """
    p = Path(path).resolve()
    st = os.stat(p)
    key = _stat_key(st)
    memo = _HASH_MEMO.get(str(p))
    if memo is not None and memo[0] == key:
        return memo[1]
    cache_file = _hash_cache_file()
    cache: dict[str, Any] = {}
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(p))
    if isinstance(hit, dict) and hit.get("stat") == key and isinstance(hit.get("sha256"), str):
        _HASH_MEMO[str(p)] = (key, hit["sha256"])
        return hit["sha256"]
    digest = sha256_file(p)
    if _stat_key(os.stat(p)) != key:  # changed while being hashed: hash again, do not cache
        return sha256_file(p)
    _HASH_MEMO[str(p)] = (key, digest)
    cache[str(p)] = {"stat": key, "sha256": digest}
    try:
        atomic.write_text(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    except OSError:
        pass  # an unwritable cache only costs the re-hash next time
    return digest


def _missing_message(spec: ArtifactSpec) -> str:
    return (f"the {spec.name} weights are not installed and fpx is offline: run `fpx models pull {spec.name}` "
            f"on a machine that reaches the model hub, or bring the file by hand and run "
            f"`fpx models import FILE --name {spec.name}`")


# ---------------------------------------------------------------- install
def install_file(source: str | os.PathLike, name: str, *, force: bool = False, how: str = "import") -> Installed:
    """Copy ``source`` into the cache as artifact ``name``, checking its sha256 against the pin.

    A mismatch raises :class:`ArtifactError` unless ``force``; a forced install is recorded as
    ``verified: false``. The copy is atomic and the source file is never modified.
    """
    spec = resolve(name)
    src = Path(source)
    if spec.bundled:
        raise UsageError(f"{spec.name} is bundled with fpx and always loaded from the package; importing a file "
                         "over it would have no effect (reinstall fpx to repair it)")
    check_file(src, "file", max_bytes=1 << 40)
    _check_safetensors(src)
    digest = sha256_file(src)
    verified = spec.sha256 is not None and digest == spec.sha256
    if not verified and not force:
        raise ArtifactError(f"sha256 {digest[:16]}… does not match the pinned {spec.sha256[:16]}… of "
                            f"{spec.name}; refusing it (use --force to install it anyway: every record made "
                            f"with it will then say verified: false)", str(src))
    dest_dir = artifact_dir(spec)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the artifact folder {dest_dir} ({exc.strerror or exc}); "
                            "set FPX_HOME to a writable folder") from exc
    dest = dest_dir / spec.filename
    with atomic.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        copied = sha256_file(tmp)
        if copied != digest:  # the source changed while being installed
            raise ArtifactError("changed while it was being installed; try again", str(src))
    manifest = {"name": spec.name, "version": spec.version, "filename": spec.filename, "sha256": digest,
                "expected_sha256": spec.sha256, "verified": verified, "how": how,
                "original": str(src.resolve()) if how == "import" else spec.url,
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": spec.source, "licence": spec.licence}
    atomic.write_text(_manifest_path(spec), json.dumps(manifest, indent=2))
    return Installed(spec, dest, digest, verified, how)


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file (pickles in particular)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            list(f.keys())
    except Exception as exc:
        raise ArtifactError("is not a safetensors file (fpx never loads pickles)", str(path)) from exc


def pull(name: str, *, progress: Callable[[int, int], None] | None = None, timeout: float = 30.0) -> Installed:
    """Download an artifact from its pinned URL, verify its sha256 and install it."""
    spec = resolve(name)
    if spec.bundled:
        return ensure(spec.name)
    if not spec.url:
        raise ArtifactError(f"{spec.name} has no download address; import it with `fpx models import`")
    dest_dir = artifact_dir(spec)
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / (spec.filename + ".download")
    try:
        req = urllib.request.Request(spec.url, headers={"User-Agent": "fpx"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise ArtifactError(f"cannot download {spec.name} from {spec.url} ({getattr(exc, 'reason', exc)}); "
                            f"retry `fpx models pull {spec.name}` where the model hub is reachable, or bring "
                            f"the file by hand and run `fpx models import FILE --name {spec.name}`") from exc
    try:
        digest = sha256_file(part)
        if digest != spec.sha256:
            raise ArtifactError(f"downloaded {spec.name} has sha256 {digest[:16]}…, not the pinned "
                                f"{spec.sha256[:16]}…; refusing it")
        return install_file(part, spec.name, how="pull")
    finally:
        part.unlink(missing_ok=True)


def installed(name: str) -> Installed | None:
    """The installed artifact, or None when it is not installed.

    The file is hashed as it is now (:func:`file_sha256`: cached while the file is unchanged), so ``sha256``
    is what will be loaded and ``verified`` is ``sha256 == pin`` — never what the manifest claims.
    A manifest that is there but unreadable raises :class:`ArtifactError`.
    """
    spec = resolve(name)
    if spec.bundled:
        path = (spec.package_dir or PACKAGE_ASSETS) / spec.filename
        if not path.is_file():
            return None
        digest = file_sha256(path)
        return Installed(spec, path, digest, digest == spec.sha256, "bundled", digest == spec.sha256, spec.sha256)
    m = read_manifest(spec)
    path = artifact_dir(spec) / spec.filename
    if m is None or not path.is_file():
        return None
    digest = file_sha256(path)
    return Installed(spec, path, digest, spec.sha256 is not None and digest == spec.sha256,
                     str(m.get("how", "import")), digest == m.get("sha256"), m.get("sha256"))


def verify(name: str) -> dict[str, Any]:
    """Re-hash the installed file; report whether it matches its manifest and the pin."""
    spec = resolve(name)
    try:
        inst = installed(spec.name)
    except ArtifactError as exc:
        return {"name": spec.name, "installed": True, "verified": False, "intact": False, "path": None,
                "problem": str(exc)}
    if inst is None:
        return {"name": spec.name, "installed": False, "verified": False, "intact": False, "path": None}
    digest = sha256_file(inst.path)  # a full re-hash, whatever the cache says
    return {"name": spec.name, "installed": True, "path": str(inst.path), "sha256": digest,
            "intact": digest == inst.manifest_sha256, "verified": digest == spec.sha256, "how": inst.how}


def ensure(name: str, *, progress: Callable[[int, int], None] | None = None) -> Installed:
    """Return the installed artifact, pulling it first when allowed; else a clear error."""
    spec = resolve(name)
    inst = installed(spec.name)
    if inst is not None:
        if not inst.intact:
            raise ArtifactError(f"the installed {spec.name} file has changed since it was installed (sha256 now "
                                f"{inst.sha256[:16]}…, recorded {str(inst.manifest_sha256)[:16]}…); refusing to "
                                f"load it: reinstall with `fpx models import FILE --name {spec.name}` or "
                                f"`fpx models pull {spec.name}`", str(inst.path))
        return inst
    if spec.bundled:
        raise ArtifactError(f"the bundled artifact {spec.name} is missing from the installation; reinstall fpx")
    if offline():
        raise ArtifactError(_missing_message(spec))
    print(f"fpx: {spec.name} is not installed; pulling it from {spec.url} (set FPX_OFFLINE=1 to never download)",
          file=sys.stderr)
    return pull(spec.name, progress=progress)


# ---------------------------------------------------------------- safetensors I/O
def read_tensors(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a safetensors file: (name -> torch tensor, metadata). Never unpickles."""
    from safetensors import safe_open

    p = Path(path)
    check_file(p, "file", max_bytes=1 << 40)
    try:
        tensors = {}
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:
        raise InputError(f"is not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else exc})",
                         str(p)) from exc
    return tensors, meta


def write_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None,
                  inputs: tuple = ()) -> str:
    """Write tensors as safetensors atomically (metadata values must be strings). Returns its sha256."""
    from safetensors.torch import save_file

    atomic.refuse_overwrite_of_inputs(path, inputs)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic.atomic_path(path, suffix=".safetensors") as tmp:
        save_file(clean, str(tmp), metadata=metadata or {})
    return sha256_file(path)


def verify_installed(name: str | None = None) -> list[dict[str, Any]]:
    """:func:`verify` rows (``fpx models verify``): of artifact ``name``, else of every installed artifact and
    every one whose installation is broken. :func:`verify_failure` says why a row is not good."""
    names = [resolve(name).name] if name else [r["name"] for r in summary() if r["installed"] or r.get("problem")]
    return [verify(n) for n in names]


def verify_failure(row: dict[str, Any]) -> str | None:
    """Why a :func:`verify` row is not intact and verified, in a few words; None when it is both."""
    if row["intact"] and row["verified"]:
        return None
    if row.get("problem"):
        return row["problem"]
    if not row["installed"]:
        return "not installed"
    return "file changed since it was installed" if not row["intact"] else "sha256 differs from the pin"


def location(name: str | None = None) -> Path:
    """Where fpx keeps artifacts (``FPX_HOME``, else the user cache dir), or where artifact ``name``'s file is
    (its install path when it is not installed yet)."""
    if name is None:
        return home()
    spec = resolve(name)
    inst = installed(spec.name)
    return inst.path if inst else artifact_dir(spec) / spec.filename


def summary() -> list[dict[str, Any]]:
    """One row per registered artifact: installed, how, verified (from the manifest), path."""
    rows = []
    for spec in REGISTRY.values():
        problem = None
        try:
            inst = installed(spec.name)
        except (ArtifactError, OSError) as exc:
            inst, problem = None, str(exc)
        if inst is not None and not inst.intact:
            problem = "file changed since it was installed (`fpx models verify` for details)"
        rows.append({"name": spec.name, "version": spec.version, "kind": spec.kind,
                     "installed": inst is not None, "verified": inst.verified if inst else None,
                     "how": inst.how if inst else None, "path": str(inst.path) if inst else None,
                     "sha256": inst.sha256 if inst else None, "pinned_sha256": spec.sha256,
                     "source": spec.source, "licence": spec.licence, "problem": problem})
        if spec.kind == "fingerprint":  # its profile, coverage and the members `fpx detect` routes it with
            rows[-1]["routing"] = spec.provenance.get("routing")
    return rows


def cache_problem() -> str | None:
    """Why the cache folder (``home()``) cannot be used, or None when it can (it need not exist yet)."""
    h = home()
    probe = h
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _register_shipped_fingerprints() -> None:
    """Register the shipped fingerprint library (fingerprint_cli/fingerprints/index.json) as bundled artifacts
    pinned to their sha256, so `fpx models list` / `verify` show and re-hash them."""
    try:
        entries = fingerprints.index()
    except (OSError, ValueError) as exc:
        print(f"fpx: warning: the shipped fingerprint library index is unreadable ({exc})", file=sys.stderr)
        return
    for e in entries:
        held = e.get("held_out") or {}
        desc = (f"fingerprint of {e['name']} ({e.get('method', 'dif')}, crop {e.get('crop')}); "
                f"stated FPR {e.get('calibration', {}).get('fpr')}; held-out TPR {held.get('tpr')}, "
                f"FPR {held.get('fpr')}")
        register(ArtifactSpec(name=e["id"], version=e["version"], kind="fingerprint", filename=e["file"],
                              sha256=e["sha256"], source=e.get("training_set", {}).get("description", ""),
                              licence=e.get("licence", "MIT (fitted by the fpx project)"), description=desc,
                              bundled=True, package_dir=fingerprints.LIBRARY_DIR,
                              provenance=dict(e, routing=fingerprints.members_text(entries, e))))


_register_shipped_fingerprints()
