"""Build an origin index over a reference library, query it, and train the linear head.

Embedding is done in chunks through the project's one parallel map (:mod:`fingerprint_cli.parallel`: in
process, joblib workers with ``jobs``, or dask.distributed with ``scheduler``); results come back in input
order, so the merged index is the same whatever backend or worker finishes first. Each finished chunk is
journalled beside the output (``OUTPUT.partial/``) so ``resume=True`` skips the chunks already embedded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint_cli import __version__, atomic, batch, images, parallel
from fingerprint_cli.errors import ArtifactError, FpxError, InputError, UsageError
from fingerprint_cli.origin import conditions
from fingerprint_cli.origin import dense as dense_mod
from fingerprint_cli.origin import embedders as emb_mod
from fingerprint_cli.origin import head as head_mod
from fingerprint_cli.origin import local as local_mod
from fingerprint_cli.origin import verify
from fingerprint_cli.origin.index import (
    CALIB_TRANSFORMS,
    DEFAULT_DECISION,
    DEFAULT_LOCAL_DECISION,
    DUPLICATE_LEVEL,
    TESTS,
    OriginIndex,
    calib_transform,
    calibrate,
    decide,
    dense_best,
    fit_projection,
    load_index,
    models_hint,
    project,
)
from fingerprint_cli.records import Record

DEFAULT_FMR = 0.01
DEFAULT_CALIB = 200

VIEW_NAMES = ("original", "mirrored")

# Reference views (``--views``): extra rows per reference, (name, crop fraction, vertical, horizontal offset as a
# fraction of the slack). A crop of the origin then meets a query that is a crop of it at a similar framing;
# candidates are deduplicated by reference (best view), and the calibration's impostor scores see every view.
_CORNERS = (("tl", 0.0, 0.0), ("tr", 0.0, 1.0), ("bl", 1.0, 0.0), ("br", 1.0, 1.0))
REF_VIEW_SETS: dict[str, tuple[tuple[str, float, float, float], ...]] = {
    "full": (("full", 1.0, 0.5, 0.5),),
    "crops": (("full", 1.0, 0.5, 0.5), ("centre_0.8", 0.8, 0.5, 0.5),
              *((f"{c}_0.8", 0.8, y, x) for c, y, x in _CORNERS)),
    "crops-deep": (("full", 1.0, 0.5, 0.5), ("centre_0.8", 0.8, 0.5, 0.5),
                   *((f"{c}_0.8", 0.8, y, x) for c, y, x in _CORNERS), ("centre_0.65", 0.65, 0.5, 0.5),
                   *((f"{c}_0.65", 0.65, y, x) for c, y, x in _CORNERS)),
    # 80% crops on a 5 × 5 grid of offsets (0, ¼, ½, ¾, 1 of the slack): added after the benchmark's development
    # crop family (offset ¼, between the centre and the corners) gained nothing from ``crops``
    "crops-grid": (("full", 1.0, 0.5, 0.5),
                   *((f"g{i}{j}_0.8", 0.8, i / 4, j / 4) for i in range(5) for j in range(5))),
}
DEFAULT_REF_VIEWS = "full"


def ref_view_scheme(name: str) -> dict[str, Any]:
    """The metadata an index records for a ``--views`` scheme (refused if unknown)."""
    if name not in REF_VIEW_SETS:
        raise UsageError(f"unknown --views {name!r}; choose one of {', '.join(REF_VIEW_SETS)}")
    return {"scheme": name, "views": [v[0] for v in REF_VIEW_SETS[name]],
            "crops": [list(v[1:]) for v in REF_VIEW_SETS[name]]}


def crop_view(px: np.ndarray, frac: float, oy: float, ox: float) -> np.ndarray:
    """The ``frac`` crop of ``px`` placed at (oy, ox) of the slack (0 = top/left, 1 = bottom/right)."""
    h, w = px.shape[:2]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    y0, x0 = int(round((h - ch) * oy)), int(round((w - cw) * ox))
    return np.ascontiguousarray(px[y0:y0 + ch, x0:x0 + cw])


def views(px: np.ndarray) -> list[np.ndarray]:
    """The query views: the image and its mirror (a flipped edit still finds its origin)."""
    return [px, np.ascontiguousarray(px[:, ::-1])]


# ---------------------------------------------------------------- workers (top level: picklable)
def _embed_chunk(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Embed one chunk of paths; per-path failures become rows with an ``error`` (the chunk goes on)."""
    emb = emb_mod.from_spec(task["spec"])
    out = []
    for path, calib in task["items"]:
        try:
            im = images.load_image(path)
            px = im.pixels
            row: dict[str, Any] = {"path": path, "sha256": im.sha256, "size": [im.width, im.height],
                                   "steps": list(im.steps), "upsampled": min(im.width, im.height) < emb.input_size}
            if task.get("views"):
                row["vector"] = emb.embed(views(px))
            else:
                row["vector"] = emb.embed([px])[0]
            if task.get("ref_views"):
                row["ref_views"] = emb.embed([crop_view(px, *c) for c in task["ref_views"]])
            if calib:
                var = [calib_transform(t, px) for t in CALIB_TRANSFORMS]
                row["calib"] = emb.embed([v for x in var for v in views(x)]).reshape(len(var), 2, -1)
            if task.get("local"):
                _local_features(row, px, calib, local_mod.Settings.from_doc(task["local"]))
        except FpxError as exc:
            row = {"path": path, "error": {"type": exc.kind, "message": str(exc)}}
        except Exception as exc:  # noqa: BLE001 - one bad item never sinks the chunk
            row = {"path": path, "error": {"type": "runtime", "message": f"{path}: {type(exc).__name__}: {exc}"}}
        out.append(row)
    return out


def _local_features(row: dict[str, Any], px: np.ndarray, calib: bool, settings: local_mod.Settings) -> None:
    """The local stage's features of one reference (``local``, under the index's ``settings``) and, for a
    calibration reference, the suspect views of its built-in crops (``local_calib``: two views each; their
    names, :func:`~fingerprint_cli.origin.local.calib_names` of the settings, in ``local_calib_t``)."""
    row["local"] = local_mod.extract_reference(px, settings)
    if calib:
        row["local_calib_t"] = local_mod.calib_names(settings)
        row["local_calib"] = [local_mod.suspect_views(local_mod.calib_transform(t, px), settings)
                              for t in row["local_calib_t"]]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_chunks(spec: dict[str, Any], chunks: list[list], *, view_mode: bool, jobs: int, scheduler: str | None,
                progress: Callable[[int], None] | None, journal: Path | None = None,
                ref_views: Sequence[Sequence[float]] = (), local: local_mod.Settings | None = None
                ) -> list[dict[str, Any]]:
    """Embed all chunks (journalled ones read back), in input order. ``ref_views``: the extra crop views
    (fraction, oy, ox) embedded per image as ``row["ref_views"]``; ``local``: the references' local features
    too, under these settings."""
    rv = [list(c) for c in ref_views]
    ldoc = local.doc() if local is not None else None
    tasks = [{"spec": spec, "items": c, "views": view_mode, "ref_views": rv, "local": ldoc} for c in chunks]
    keys = [_chunk_key(spec, c, view_mode, rv + (["local", local_mod.N_FEATURES, ldoc] if ldoc else []))
            for c in chunks]
    results = _read_journal(journal, keys)
    todo = [i for i, r in enumerate(results) if r is None]
    done0 = len(tasks) - len(todo)
    if progress and done0:
        progress(done0)
    for j, out in parallel.imap(_embed_chunk, [tasks[i] for i in todo], jobs=jobs, scheduler=scheduler,
                                progress=(lambda n: progress(done0 + n)) if progress else None):
        results[todo[j]] = _chunk_result(out, chunks[todo[j]], journal, keys[todo[j]])
    return [row for r in results for row in r]  # type: ignore[union-attr]


def _chunk_result(out, chunk: list, journal: Path | None, key: str) -> list[dict[str, Any]]:
    """The rows of one finished chunk (journalled), or an error row per item when its worker failed."""
    if not out.ok:
        return [{"path": p, "error": {"type": "runtime", "message": f"{p}: {out.error}"}} for p, _ in chunk]
    if journal is not None:
        atomic.write_text(journal / f"chunk-{key}.json", json.dumps(_journal(out.value)))
    return out.value


def _chunk_key(spec: dict[str, Any], chunk: list, view_mode: bool, rv: list) -> str:
    """The journal name of one chunk: a hash of the embedder, the items and what is embedded."""
    return hashlib.sha256(json.dumps([spec, chunk, view_mode] + ([rv] if rv else []), sort_keys=True,
                                     default=str).encode()).hexdigest()[:24]


def _read_journal(journal: Path | None, keys: list[str]) -> list[list | None]:
    """The rows of each chunk already journalled (None where a chunk is missing or unreadable)."""
    results: list[list | None] = [None] * len(keys)
    if journal is None:
        return results
    for i, k in enumerate(keys):
        f = journal / f"chunk-{k}.json"
        if f.exists():
            try:
                results[i] = _unjournal(json.loads(f.read_text()))
            except (OSError, json.JSONDecodeError, KeyError):
                results[i] = None
    return results


def _journal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = dict(r)
        for k in ("vector", "calib", "ref_views"):
            if k in r:
                a = np.asarray(r[k], np.float32)
                r[k] = {"shape": list(a.shape), "data": a.ravel().tolist()}
        if "local" in r:
            r["local"] = local_mod.to_json(r["local"])
        if "local_calib" in r:
            r["local_calib"] = [[local_mod.to_json(f) for f in vs] for vs in r["local_calib"]]
        out.append(r)
    return out


def _unjournal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        for k in ("vector", "calib", "ref_views"):
            if k in r:
                r[k] = np.asarray(r[k]["data"], np.float32).reshape(r[k]["shape"])
        if "local" in r:
            r["local"] = local_mod.from_json(r["local"])
        if "local_calib" in r:
            r["local_calib"] = [[local_mod.from_json(f) for f in vs] for vs in r["local_calib"]]
    return rows


# ---------------------------------------------------------------- embedder / head matching
def embedder_for(index: OriginIndex, device: str = "cpu") -> emb_mod.Embedder:
    """The embedder an index was built with, rebuilt here; refuses when it differs (config or weights)."""
    want = index.embedder
    name = want.get("name")
    if name not in emb_mod.EMBEDDERS:
        raise ArtifactError(f"index was built with the embedder {name!r}, unknown to this fpx", index.path)
    options = dict(want.get("config") or {}) if emb_mod.EMBEDDERS[name].weight_free else {"device": device}
    try:
        emb = emb_mod.get_embedder(name, **options)
    except ArtifactError as exc:
        raise ArtifactError(f"{exc.message} (the index {index.path} needs {name})") from exc
    have = emb.identity()
    for key in ("version", "config", "weights_sha256", "dim"):
        if have.get(key) != want.get(key):
            raise ArtifactError(
                f"index was built with {name} {key}={_short(want.get(key))} but this fpx has {_short(have.get(key))}; "
                f"refusing to compare embeddings from different models: {models_hint(name)}", index.path)
    return emb


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return s[:16] + "…" if isinstance(v, str) and len(s) > 20 else s


def _head_for(index: OriginIndex, head_path: str | None) -> head_mod.Head | None:
    if head_path is not None:
        h = head_mod.load(head_path)
        if index.head is None:
            raise ArtifactError(f"the index {index.path} was built without a head; a query with the head "
                                f"{head_path} would compare different embeddings: rebuild the index with --head")
        if h.sha256 != index.head.get("sha256"):
            raise ArtifactError(f"head sha256 {h.sha256[:12]}… is not the index's head {index.head['sha256'][:12]}…; "
                                f"refusing to mix heads", head_path)
        return h
    if index.head is not None and index.head_weight is not None:
        return head_mod.Head(index.head_weight, index.head.get("sha256"), {})
    return None


def _check_head_fits(h: head_mod.Head, emb: emb_mod.Embedder, where: str | None) -> None:
    trained = (h.meta.get("embedder") or {})
    if h.in_dim != emb.dim:
        raise UsageError(f"the head takes {h.in_dim}-d embeddings but {emb.name} gives {emb.dim}", where)
    if trained and (trained.get("name") != emb.name or trained.get("config") != emb.config()
                    or trained.get("weights_sha256") != emb.weights_sha256):
        raise ArtifactError(f"the head was trained for {trained.get('name')} {_short(trained.get('config'))} "
                            f"(weights {_short(trained.get('weights_sha256'))}), not this {emb.name}", where)


def _provenance(emb: emb_mod.Embedder, h: head_mod.Head | None, index: OriginIndex | None = None) -> dict[str, Any]:
    prov = {"fpx_version": __version__, "python": platform.python_version(), "embedder": emb.provenance(),
            "head": h.identity() if h is not None else None,
            "utc_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if index is not None:
        prov["index"] = {"path": index.path, "seal": index.seal, "n_references": index.n,
                         "search": index.search_cfg.get("kind", "flat"),
                         "ref_views": (index.ref_views or {}).get("scheme", "full"),
                         "projection": index.projection}
    return prov


# ---------------------------------------------------------------- build
def build_index(refs: Sequence[str], output: str, *, embedder: str = emb_mod.DEFAULT_EMBEDDER,
                embedder_options: dict[str, Any] | None = None, head: str | None = None, add: bool = False,
                resume: bool = False, false_match_rate: float = DEFAULT_FMR, n_calibration: int = DEFAULT_CALIB,
                search: str = "flat", ref_views: str | None = None, dim: int | str | None = "auto",
                decision: str | None = None, local: bool | None = None, calibration_overlays: bool = False,
                inlier_count: str | None = None, dense: bool | None = None, dense_region: str | None = None,
                suspect_windows: str | None = None, jobs: int = 1, scheduler: str | None = None,
                chunk_size: int = 16, recursive: bool = True, progress: Callable[[int, int], None] | None = None
                ) -> tuple[OriginIndex, list[Record]]:
    """Embed ``refs`` (files or folders, searched recursively) and write a sealed index to ``output``.

    ``add=True`` grows the existing index at ``output`` (same embedder, head and projection; references already
    in it, by path or sha256, are skipped) and recalibrates the thresholds over the whole library. ``ref_views``
    (:data:`REF_VIEW_SETS`; default ``full``, with ``add`` the index's own) indexes crop views of every
    reference as extra rows mapped to it (``crops``: centre and four corners at 80%); an ``add`` with another
    scheme is refused. ``dim`` seals a projection to that many dimensions, learned on the references
    (:func:`~fingerprint_cli.origin.index.fit_projection`: smaller, faster search); ``"auto"`` (default) the
    embedder's ``default_dim`` (128 for ``dct-layout``; none with a head or for ``sd2-vae``), 0 or None none;
    with ``add`` the index's own. ``local`` (default on; with ``add`` the index's own) stores every reference's
    local features (:mod:`~fingerprint_cli.origin.local`: crops, zooms and rotations are found by their
    keypoints and verified geometrically). ``decision``: the rule calibrated at ``false_match_rate``
    (:data:`~fingerprint_cli.origin.index.DECISIONS`; default ``similarity+local`` with local features,
    ``similarity+verify`` without; with ``add`` the index's own). ``calibration_overlays`` (a new index with
    local features): its local calibration queries also include overlay crops
    (:data:`~fingerprint_cli.origin.local.OVERLAY_TRANSFORMS`; recorded; with ``add`` the index's own).
    ``inlier_count`` (a new index with local features; None: this fpx's default): what the local stage counts
    among the RANSAC inliers (:data:`~fingerprint_cli.origin.local.INLIER_COUNTS`; recorded; with ``add`` the
    index's own). ``dense`` (a new index with local features; None: this fpx's default): the local test also
    needs the dense agreement of the candidate's pixels at the fitted map (:mod:`~fingerprint_cli.origin.dense`;
    recorded; with ``add`` the index's own). ``dense_region`` (:data:`~fingerprint_cli.origin.dense.REGIONS`;
    given, it implies ``dense``; None: this fpx's default): where that agreement is summed (``hull``: inside
    the convex hull of the RANSAC inliers). ``suspect_windows`` (:data:`~fingerprint_cli.origin.local.SUSPECT_WINDOWS`;
    None: this fpx's default; recorded; with ``add`` the index's own): the local stage's suspect views also
    include fixed sub-windows of the suspect's frame, the local calibration queries' too. Unreadable
    references become error records and the build goes on. ``progress(done_chunks, total_chunks)``.
    Returns the index and one record per reference plus a summary record.
    """
    out = Path(output)
    paths = batch.expand_paths(refs, recursive=recursive)
    if not paths:
        raise UsageError("no reference images were given (files or folders of images)")
    auto = False
    if add:
        base, emb, h, ref_views = _open_base(out, embedder_options, head, ref_views, None if dim == "auto" else dim)
        local = _base_local(base, local, out)
    else:
        base, (emb, h) = None, _fresh_models(out, resume, embedder, embedder_options, head)
        auto, dim = dim == "auto", _resolve_dim(dim, emb, h)
        local, decision = _new_local(local, decision)
    scheme = ref_view_scheme(ref_views or DEFAULT_REF_VIEWS)
    lset = _local_settings_for(base, local, calibration_overlays, inlier_count, dense, dense_region, suspect_windows)
    known = {r["path"] for r in base.refs} if base else set()
    new = [p for p in paths if p not in known]
    chunks = _chunks(_calibration_plan(new, n_calibration), chunk_size)
    journal = _fresh_journal(out, resume)
    rows = _run_chunks(emb.spec(), chunks, view_mode=False, jobs=jobs, scheduler=scheduler,
                       progress=(lambda n: progress(n, len(chunks))) if progress else None, journal=journal,
                       ref_views=scheme["crops"][1:], local=lset)
    full_prov = _provenance(emb, h)
    lib = _Library(base, h, {"fpx_version": full_prov["fpx_version"], "embedder": emb.name,
                                   "head": h.sha256 if h is not None else None})  # per reference; the summary has all
    records = [Record(command="origin-index", inputs={"reference": {"path": p}},
                      details={"skipped": "already in the index (same path)"}, provenance=lib.prov)
               for p in paths if p in known]
    records += [lib.add(row, emb) for row in rows]
    idx = lib.assemble(emb, h, base, search, scheme, dim, out, auto, lset)
    calibrate(idx, false_match_rate, decision=decision if base is None else base.calibration.get("decision"))
    idx.save(out, inputs=paths)
    shutil.rmtree(journal, ignore_errors=True)
    records.append(_index_summary(idx, out, lib.added, records, scheme, full_prov))
    return idx, records


def _open_base(out: Path, embedder_options: dict[str, Any] | None, head: str | None, ref_views: str | None,
               dim: int | None) -> tuple[OriginIndex, emb_mod.Embedder, head_mod.Head | None, str]:
    """``--add``: the index to grow, its embedder and head, and its reference-view scheme; refuses another
    scheme, head or projection than the index's own."""
    if not out.exists():
        raise UsageError("--add grows an existing index, but there is none at this path", str(out))
    base = load_index(out)
    emb = embedder_for(base, (embedder_options or {}).get("device", "cpu"))
    h = _head_for(base, None)
    have = (base.ref_views or {}).get("scheme", "full")
    if ref_views is not None and ref_views != have:
        raise UsageError(f"--views {ref_views} differs from the index's reference views {have!r}; --add keeps "
                         f"the index's own (rebuild without --add to change them)", str(out))
    if head is not None and (h is None or head_mod.load(head).sha256 != h.sha256):
        raise ArtifactError("--head differs from the head the index was built with; --add keeps the "
                            "index's own head", head)
    if dim is not None and dim != (base.projection or {}).get("out_dim"):
        raise UsageError(f"--dim {dim} differs from the index's projection ({base.projection or 'none'}); --add "
                         f"keeps the index's own", str(out))
    return base, emb, h, have


def _new_local(local: bool | None, decision: str | None) -> tuple[bool, str]:
    """A new index's local setting (default on) and decision rule (default: ``similarity+local`` with local
    features, ``similarity+verify`` without)."""
    local = True if local is None else bool(local)
    return local, decision or (DEFAULT_LOCAL_DECISION if local else DEFAULT_DECISION)


def _local_settings_for(base: OriginIndex | None, local: bool, overlays: bool = False,
                        inlier_count: str | None = None, dense: bool | None = None,
                        dense_region: str | None = None, suspect_windows: str | None = None
                        ) -> local_mod.Settings | None:
    """The local settings of the references being added: the base index's own (``--add``), this fpx's default
    for a new index (with ``overlays``, the overlay calibration crops too; ``inlier_count``, ``dense``,
    ``dense_region`` — which implies ``dense`` — and ``suspect_windows`` when given), None without local
    features."""
    if not local:
        return None
    if base is not None and base.local is not None:
        return base.local.settings
    s = dataclasses.replace(local_mod.DEFAULT, calib_overlays=True) if overlays else local_mod.DEFAULT
    s = s if inlier_count is None else dataclasses.replace(s, inlier_count=inlier_count)
    if dense is not None:  # off: no region either (round 5's settings); on: this fpx's region unless given
        s = dataclasses.replace(s, dense=True) if dense else dataclasses.replace(s, dense=False, dense_region="overlap")
    s = s if suspect_windows is None else dataclasses.replace(s, suspect_windows=suspect_windows)
    return s if dense_region is None else dataclasses.replace(s, dense=True, dense_region=dense_region)


def _base_local(base: OriginIndex, local: bool | None, out: Path) -> bool:
    """``--add``: whether the index holds local features (refuses ``--local`` / ``--no-local`` against them)."""
    have = base.local is not None
    if local is not None and bool(local) != have:
        raise UsageError(f"--{'' if local else 'no-'}local differs from the index, which was built "
                         f"{'with' if have else 'without'} local features; --add keeps the index's own", str(out))
    return have


def _fresh_models(out: Path, resume: bool, embedder: str, embedder_options: dict[str, Any] | None,
                  head: str | None) -> tuple[emb_mod.Embedder, head_mod.Head | None]:
    """A new index: its embedder and (checked) head."""
    if out.exists() and not resume and out.is_dir():
        raise UsageError("output is a folder; give a file name such as LIB.fpxindex", str(out))
    emb = emb_mod.get_embedder(embedder, **(embedder_options or {}))
    h = head_mod.load(head) if head else None
    if h is not None:
        _check_head_fits(h, emb, head)
    return emb, h


def _resolve_dim(dim: int | str | None, emb: emb_mod.Embedder, h: head_mod.Head | None) -> int | None:
    """The projection a new index gets (``"auto"``: the embedder's default, none with a head; 0: none); refuses
    one the embedding cannot be projected to, before any work."""
    if dim == "auto":
        dim = emb_mod.EMBEDDERS[emb.name].default_dim if h is None else None
    d = h.out_dim if h is not None else emb.dim
    if dim and not 1 <= int(dim) < d:
        raise UsageError(f"--dim must be between 1 and {d - 1} for this {d}-dimensional embedding (got {dim})")
    return int(dim) if dim else None


def _calibration_plan(paths: list[str], n_calibration: int) -> list[tuple[str, bool]]:
    """(path, is a calibration reference): every ``stride``-th new reference, about ``n_calibration`` of them."""
    stride = max(1, math.ceil(len(paths) / max(1, n_calibration))) if n_calibration > 0 else 0
    return [(p, bool(stride) and i % stride == 0) for i, p in enumerate(paths)]


def _fresh_journal(out: Path, resume: bool) -> Path:
    """The ``OUTPUT.partial/`` folder of chunk journals (emptied unless resuming)."""
    journal = out.with_name(out.name + ".partial")
    if journal.exists() and not resume:
        shutil.rmtree(journal, ignore_errors=True)
    journal.mkdir(parents=True, exist_ok=True)
    return journal


def _base_local_parts(base: OriginIndex | None) -> tuple[list, list, list[int], list[str]]:
    """``--add``: the base index's local features (per reference), its local calibration queries' views, their
    owners and transforms (all empty for a new index or one without local features)."""
    if base is None or base.local is None:
        return [], [], [], []
    lc = base.local_calib
    return ([base.local.features(i) for i in range(base.n)],
            [lc.features(j) for j in range(lc.n)] if lc is not None else [],
            [int(o) for o in base.local_calib_owner] if base.local_calib_owner is not None else [],
            list(base.local_calib_transform))


class _Library:
    """The references of an index being built: the base index's (``--add``) then each new readable row,
    mapped by the head (and the base's projection), deduplicated by sha256."""

    def __init__(self, base: OriginIndex | None, h: head_mod.Head | None, prov: dict[str, Any]):
        self.h, self.prov, self.added = h, prov, 0
        self.proj = base.proj_weight if base is not None else None
        self.refs = list(base.refs) if base else []
        self.vecs = [base.vectors] if base else []
        self.views = [base.view_vectors] if base is not None and base.view_vectors is not None else []
        self.cal_v = [base.calib_vectors] if base is not None and base.calib_vectors is not None else []
        self.cal_o = [base.calib_owner] if base is not None and base.calib_owner is not None else []
        self.cal_t = list(base.calib_transform) if base else []
        self.lfeat, self.lcal, self.lcal_o, self.lcal_t = _base_local_parts(base)
        self.seen = {r["sha256"]: i for i, r in enumerate(self.refs)}

    def _map(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings (..., d_raw) through the head and the base's projection."""
        x = np.asarray(x, np.float32)
        if self.h is not None:
            x = self.h.apply(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        return project(self.proj, x)

    def add(self, row: dict[str, Any], emb: emb_mod.Embedder) -> Record:
        """Take one embedded row (or its error) in; the reference's record."""
        if "error" in row:
            return Record(command="origin-index", inputs={"reference": {"path": row["path"]}}, status="error",
                          error=row["error"], provenance=self.prov)
        inp = {"reference": {"path": row["path"], "sha256": row["sha256"]}}
        det = {"size": row["size"], "steps": row["steps"]}
        if row["upsampled"]:
            det["upsampled"] = f"smaller than the {emb.input_size}px embedder input: upsampled"
        if row["sha256"] in self.seen:
            det["skipped"] = f"same sha256 as {self.refs[self.seen[row['sha256']]]['path']} (not added twice)"
            return Record(command="origin-index", inputs=inp, details=det, provenance=self.prov)
        i = len(self.refs)
        self.seen[row["sha256"]] = i
        self.refs.append({"path": row["path"], "sha256": row["sha256"]})
        self.vecs.append(self._map(row["vector"][None]))
        if "ref_views" in row:
            self.views.append(self._map(row["ref_views"])[None])
        if "calib" in row:
            self.cal_v.append(self._map(row["calib"]))
            self.cal_o.append(np.full(len(row["calib"]), i, np.int64))
            self.cal_t.extend(CALIB_TRANSFORMS)
        if "local" in row:
            self.lfeat.append(row["local"])
            for vs in row.get("local_calib") or []:
                self.lcal.extend(vs)
                self.lcal_o.append(i)
            if "local_calib" in row:  # a journal row of an older build names no transforms: the round-5 three
                self.lcal_t.extend(row.get("local_calib_t") or list(local_mod.CALIB_TRANSFORMS))
        self.added += 1
        det["row"] = i
        return Record(command="origin-index", inputs=inp, details=det, provenance=self.prov)

    def assemble(self, emb, h, base, search: str, scheme: dict[str, Any], dim: int | None, out: Path,
                 auto: bool = False, local: local_mod.Settings | None = None) -> OriginIndex:
        """The index of every reference, projected when ``dim`` asks for a new projection (by default, ``auto``,
        only when the library has at least :data:`AUTO_DIM_ROWS` rows per dimension to learn it from)."""
        if not self.vecs or sum(len(v) for v in self.vecs) == 0:
            raise InputError("no reference could be read; nothing to index", str(out))
        d = self.vecs[-1].shape[-1]
        idx = OriginIndex(embedder=emb.identity(), refs=self.refs,
                          vectors=np.concatenate(self.vecs).astype(np.float32).reshape(-1, d),
                          head=base.head if base else (h.identity() if h is not None else None),
                          head_weight=h.weight if h is not None else None,
                          calib_vectors=_concat(self.cal_v, np.float32), calib_owner=_concat(self.cal_o, np.int64),
                          calib_transform=self.cal_t, search_cfg=_search_cfg(base, search),
                          view_vectors=_concat(self.views, np.float32), ref_views=scheme,
                          projection=base.projection if base else None, proj_weight=self.proj)
        if local is not None:
            idx.local = local_mod.LocalIndex.from_features(self.lfeat, local)
            idx.local_calib = local_mod.LocalIndex.from_features(self.lcal, local)
            idx.local_calib_owner = np.asarray(self.lcal_o, np.int64)
            idx.local_calib_transform = self.lcal_t
        if base is None and dim is not None and not (auto and idx.n_rows < AUTO_DIM_ROWS * dim):
            _apply_new_projection(idx, dim)
        return idx


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray | None:
    """The parts stacked along the first axis, or None when there are none."""
    return np.concatenate(parts).astype(dtype) if parts else None


def _search_cfg(base: OriginIndex | None, search: str) -> dict[str, Any]:
    """A new index's search settings; ``--add`` keeps the base's kind (an IVF quantiser is retrained on the
    grown library)."""
    if base is None:
        return {"kind": search}
    cfg = dict(base.search_cfg)
    return cfg if cfg.get("kind", "flat") == "flat" else {"kind": cfg["kind"]}


AUTO_DIM_ROWS = 8  # the default projection needs this many searchable rows per dimension (1,024 for 128)


def _apply_new_projection(idx: OriginIndex, dim: int) -> None:
    """Learn the sealed projection on every searchable row and map the index's vectors through it; refuses
    fewer rows than dimensions (a subspace the library does not span would distort every query)."""
    if idx.n_rows < dim:
        raise UsageError(f"--dim {dim} needs at least {dim} indexed rows to learn the projection from "
                         f"(this library has {idx.n_rows}); use a smaller --dim or --dim 0")
    idx.proj_weight, idx.projection = fit_projection(idx.all_vectors(), dim)
    idx.vectors = project(idx.proj_weight, idx.vectors)
    if idx.view_vectors is not None:
        idx.view_vectors = project(idx.proj_weight, idx.view_vectors)
    if idx.calib_vectors is not None:
        idx.calib_vectors = project(idx.proj_weight, idx.calib_vectors)


def _index_summary(idx: OriginIndex, out: Path, added: int, records: list[Record], scheme: dict[str, Any],
                   full_prov: dict[str, Any]) -> Record:
    """The last record of a build: the index, its calibration, memory and search settings."""
    cal, memory = idx.calibration, idx.memory_bytes()
    return Record(
        command="origin-index", inputs={"index": {"path": str(out), "sha256": idx.seal}},
        features={"n_references": float(idx.n), "threshold": cal.get("threshold"),
                  "miss_rate_in_sample": cal.get("miss_rate_in_sample")},
        directions={"n_references": "count", "threshold": "similarity needed for found",
                    "miss_rate_in_sample": "lower = better"},
        details={"added": added, "failed": sum(1 for r in records if not r.ok),
                 "calibration": {k: v for k, v in cal.items() if not k.endswith("_sorted")},
                 "memory_bytes": memory, "memory_bytes_per_reference": round(memory / idx.n, 1),
                 "local_bytes_per_reference": round(idx.local.bytes_per_reference(), 1) if idx.local else None,
                 "search": idx.search_cfg, "ref_views": scheme["views"],
                 "projection": idx.projection},
        provenance={**full_prov, "index": {"path": str(out), "seal": idx.seal, "n_references": idx.n}})


# ---------------------------------------------------------------- query
def query(paths: Sequence[str], index: OriginIndex | str, k: int = 5, *, head: str | None = None,
          device: str = "cpu", jobs: int = 1, scheduler: str | None = None, chunk_size: int = 16,
          progress: Callable[[int, int], None] | None = None, quiet: bool = True) -> list[Record]:
    """One record per suspect: ranked candidates and the decision ``found`` / ``not-in-library``.
    With ``quiet=False`` a folder's entries that are not read are named once on stderr.

    ``index`` is a loaded :class:`OriginIndex` or the path of a ``.fpxindex`` file (see :func:`load_index`).
    A suspect is embedded with the index's embedder (refused if the installed weights differ), head and
    projection, as two views (itself and its mirror); candidates are the references with the highest cosine
    over both views and every view the index holds of each reference (``--views``: each reference listed
    once, at its best view, named in ``reference_view``). The decision is the index's calibrated rule
    (:func:`~fingerprint_cli.origin.index.decide`): ``found`` when the top similarity is above its threshold,
    or (rule ``similarity+verify``, the default) when the suspect's pixels are found inside the top candidate
    (:mod:`~fingerprint_cli.origin.verify`), or (rule ``similarity+distinct``) when the top match is distinct
    enough from the best reference of another origin; each threshold is set at the index's stated false-match rate on queries whose origin is absent,
    and the record carries the conformal p-values. Unreadable suspects become error records; a suspect
    smaller than the embedder input is upsampled and the record says so. UsageError when ``paths`` name no
    image (an empty folder): nothing to do.
    """
    idx = index if isinstance(index, OriginIndex) else load_index(index)
    if k < 1:
        raise UsageError(f"-k must be at least 1 (got {k})")
    emb = embedder_for(idx, device)
    h = _head_for(idx, head)
    named = batch.expand_paths(paths, quiet=quiet)
    if not named:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}: nothing to do")
    chunks = _chunks([(p, False) for p in named], chunk_size)
    rows = _run_chunks(emb.spec(), chunks, view_mode=True, jobs=jobs, scheduler=scheduler,
                       progress=(lambda n: progress(n, len(chunks))) if progress else None)
    prov = _provenance(emb, h, idx)
    ok = [r for r in rows if "error" not in r]
    hits, qv = _search_rows(idx, h, ok, k)
    _suspect_local_views(idx, ok, hits, jobs, scheduler, chunk_size)
    found = iter(zip(hits, qv))
    return [Record(command="origin", inputs={"suspect": {"path": row["path"]}}, status="error", error=row["error"],
                   provenance=prov) if "error" in row else _query_record(idx, emb, row, *next(found), k, prov)
            for row in rows]


def _uses_local(idx: OriginIndex) -> bool:
    """Whether the index's decision runs the local stage (local features and a calibrated local test)."""
    return idx.local is not None and idx.calibration.get("local_threshold") is not None and \
        "local" in (idx.calibration.get("tests") or [])


def _search_rows(idx: OriginIndex, h: head_mod.Head | None, ok_rows: list[dict[str, Any]], k: int
                 ) -> tuple[list, np.ndarray]:
    """Merged hits of every readable suspect (its views through the head and projection): one faiss call; at
    least the references the decision looks at; and the searched views (n, 2, D)."""
    if not ok_rows:
        return [], np.zeros((0, 2, idx.dim), np.float32)
    allv = np.stack([r["vector"] for r in ok_rows])
    if h is not None:
        allv = h.apply(allv.reshape(-1, allv.shape[-1])).reshape(allv.shape[0], allv.shape[1], -1)
    qv = project(idx.proj_weight, allv)
    return idx.search_many(qv, max(k, DECISION_HITS)), qv


def _exact_hit(idx: OriginIndex, qv: np.ndarray, ref: int) -> tuple[int, float, int, int]:
    """(reference, similarity, query view, reference view) of one reference, exact over all its views."""
    s = np.asarray(qv, np.float32) @ idx.ref_rows([ref]).T  # (2, V)
    v, r = np.unravel_index(int(np.argmax(s)), s.shape)
    return int(ref), float(s[v, r]), int(v), int(r)


def _similarity_decides(idx: OriginIndex, hits: list) -> bool:
    """Whether the top similarity alone passes the index's threshold (the local stage is then not needed)."""
    s_thr = idx.calibration.get("threshold")
    return bool(hits) and s_thr is not None and hits[0][1] > s_thr


def _local_skip(idx: OriginIndex, hits: list, lviews) -> str | None:
    """Why the local stage does not run for a suspect (None: it runs); ``lviews`` its ORB views, or the reason
    they could not be extracted (a string), or None."""
    if idx.local is None:
        return "no local features in this index"
    if not _uses_local(idx):
        return "the index's local test is not calibrated (too few impostor scores) or not in its rule"
    if _similarity_decides(idx, hits):
        return "skipped: the similarity decided"
    if lviews is None or isinstance(lviews, str):
        return f"not computed: {lviews or 'no local features for this suspect'}"
    return None


def _local_views_chunk(task: dict[str, Any]) -> list[tuple[list, np.ndarray | None] | str]:
    """The ORB views (:func:`~fingerprint_cli.origin.local.suspect_views` under the index's local settings,
    ``task["settings"]``) of a chunk of suspects, read again
    (path, sha256 at embedding), each with the suspect's pixels at the dense verification's scale when the
    task asks for them (``dense``; else None); the error message instead for a file that cannot be read or has
    changed."""
    out: list[tuple[list, np.ndarray | None] | str] = []
    for path, sha in task["items"]:
        try:
            im = images.load_image(path)
            if im.sha256 != sha:
                raise InputError("changed since it was embedded (sha256 differs): local stage not run", path)
            small = dense_mod.rgb(im.pixels) if task.get("dense") else None
            out.append((local_mod.suspect_views(im.pixels, local_mod.Settings.from_doc(task["settings"])), small))
        except FpxError as exc:
            out.append(str(exc))
    return out


def _suspect_local_views(idx: OriginIndex, rows: list[dict[str, Any]], hits: list, jobs: int,
                         scheduler: str | None, chunk_size: int) -> None:
    """``row["local_views"]`` of each suspect the local stage runs for — only those whose similarity does not
    decide (no ORB work for the others) — through the parallel map."""
    if not _uses_local(idx):
        return
    need = [i for i, hs in enumerate(hits) if not _similarity_decides(idx, hs)]
    chunks = _chunks(need, chunk_size)
    dense = _uses_dense(idx)
    tasks = [{"items": [(rows[i]["path"], rows[i]["sha256"]) for i in c], "dense": dense,
              "settings": idx.local.settings.doc()} for c in chunks]
    for j, res in parallel.imap(_local_views_chunk, tasks, jobs=jobs, scheduler=scheduler):
        got = res.value if res.ok else [f"local features failed: {res.error}"] * len(chunks[j])
        for i, v in zip(chunks[j], got):
            rows[i]["local_views"], rows[i]["dense_pixels"] = (v, None) if isinstance(v, str) else v


def _uses_dense(idx: OriginIndex) -> bool:
    """Whether the index's local test needs the dense verification (its settings and a calibrated threshold)."""
    return _uses_local(idx) and idx.local.settings.dense and idx.calibration.get("dense_threshold") is not None


def _dense_scores(idx: OriginIndex, m: list[tuple[int, int, int]], thr: float, lviews, suspect) -> dict[int, float]:
    """The dense score (:func:`~fingerprint_cli.origin.index.dense_best`) of each of the first
    :data:`~fingerprint_cli.origin.dense.TOP` candidates above the inlier threshold (most inliers first): the
    reference read from its file (a candidate that cannot be read gets none and does not pass)."""
    out: dict[int, float] = {}
    for r, _, _ in [c for c in m if c[1] > thr][:dense_mod.TOP]:
        try:
            px = images.load_image(idx.refs[r]["path"]).pixels
        except (FpxError, OSError):
            continue
        d = dense_best(lviews, suspect, idx.local.features(r), px, idx.local.settings.dense_region)
        if d is not None:
            out[r] = round(float(d), 6)
    return out


def local_stage(idx: OriginIndex, hits: list, qv: np.ndarray, lviews, suspect: np.ndarray | None = None
                ) -> tuple[list, dict[int, int] | None, dict[str, Any], dict[int, float] | None]:
    """The local stage of one suspect (:mod:`~fingerprint_cli.origin.local`): unless the similarity already
    decides, its keypoints vote for candidates over the whole library, the votes' best and the global
    shortlist are verified geometrically, and every candidate verified above the calibrated threshold ranks
    first (most inliers first), before the unverified ones in global order. With dense verification (the
    index's local settings) only the first :data:`~fingerprint_cli.origin.dense.TOP` of them whose dense score
    (``suspect``: its pixels) is above its threshold count as verified. Returns the reordered hits, the
    inliers of each verified candidate (None: not run), what the record says about the stage and the dense
    scores (None: not used)."""
    why = _local_skip(idx, hits, lviews)
    if why:
        return hits, None, {"ran": False, "why": why}, None
    thr = idx.calibration["local_threshold"]
    m = local_mod.match(idx.local, lviews, [h[0] for h in hits[:local_mod.SHORTLIST]])
    verified, dense = _verified(idx, m, thr, lviews, suspect)
    byref = {h[0]: h for h in hits}
    front = [byref.get(r) or _exact_hit(idx, qv, r) for r in verified]
    done = set(verified)
    rest = [h for h in hits if h[0] not in done]
    return front + rest, {r: n for r, n, _ in m}, _local_info(idx, thr, m, done, dense), dense


def _local_info(idx: OriginIndex, thr: float, m: list[tuple[int, int, int]], done: set[int],
                dense: dict[int, float] | None) -> dict[str, Any]:
    """What the record says about a local stage that ran: its threshold, candidates, the verified ones (path,
    inliers, the query view — whole frame or sub-window — they matched on, dense score) and, for the query
    record, ``views``: the view index of each verified candidate (:func:`_window_views` takes it out)."""
    info = {"ran": True, "threshold": thr, "n_candidates": len(m),
            "verified": [{"path": idx.refs[r]["path"], "inliers": n, "view": local_mod.view_name(v, idx.local.settings),
                          **({"dense": dense[r]} if dense and r in dense else {})}
                         for r, n, v in m if r in done][:10], "views": {r: v for r, _, v in m if r in done}}
    if dense is not None:
        info["dense_threshold"] = idx.calibration["dense_threshold"]
        info["dense_region"] = idx.local.settings.dense_region
    return info


def _verified(idx: OriginIndex, m: list[tuple[int, int, int]], thr: float, lviews, suspect
              ) -> tuple[list[int], dict[int, float] | None]:
    """The candidates of ``m`` (most inliers first) that pass the local test: above the inlier threshold and,
    with dense verification, above the dense threshold too (the dense scores: None without it)."""
    verified = [r for r, n, _ in m if n > thr]
    if not _uses_dense(idx):
        return verified, None
    dense = _dense_scores(idx, m, thr, lviews, suspect) if suspect is not None else {}
    dthr = idx.calibration["dense_threshold"]
    return [r for r in verified if dense.get(r, -1.0) > dthr], dense


def _window_views(idx: OriginIndex, linfo: dict[str, Any]) -> dict[int, str]:
    """With suspect sub-windows (the index's local settings), the query view — whole frame or sub-window —
    each verified candidate matched on, by reference row (empty otherwise: the records stay as before); the
    stage's ``views`` entry is taken out of ``linfo`` (it is not part of the record)."""
    views = linfo.pop("views", None) or {}
    if idx.local is None or idx.local.settings.suspect_windows == "none":
        return {}
    return {r: local_mod.view_name(v, idx.local.settings) for r, v in views.items()}


DECISION_HITS = 32  # references searched per suspect for the decision (the best other origin), whatever -k is


def _query_record(idx: OriginIndex, emb: emb_mod.Embedder, row: dict[str, Any], hits: list, qv: np.ndarray,
                  k: int, prov: dict[str, Any]) -> Record:
    """The record of one readable suspect from its merged hits (reordered by the local stage)."""
    rnames = idx.ref_views.get("views") or ["full"]
    hits, inl, linfo, dense = local_stage(idx, hits, qv, row.get("local_views"), row.get("dense_pixels"))
    lview = _window_views(idx, linfo)
    cands = [{"rank": r + 1, "path": idx.refs[i]["path"], "sha256": idx.refs[i]["sha256"],
              "similarity": round(s, 6), "view": VIEW_NAMES[vi], "reference_view": rnames[rv],
              **({"local_inliers": inl[i]} if inl is not None and i in inl else {}),
              **({"local_view": lview[i]} if i in lview else {}),
              **({"dense": dense[i]} if dense is not None and i in dense else {})}
             for r, (i, s, vi, rv) in enumerate(hits[:k])]
    dec = decide(idx, hits, lambda t: _verify_score(row["path"], idx.refs[t]["path"]), local=inl, dense=dense)
    s1 = dec["similarity"]
    s2 = hits[1][1] if len(hits) > 1 else None
    det: dict[str, Any] = {"candidates": cands, "views": list(VIEW_NAMES), "reference_views": list(rnames),
                           "size": row["size"], "steps": row["steps"], "local": linfo}
    if row["upsampled"]:
        det["upsampled"] = (f"suspect {row['size'][0]}x{row['size'][1]} is smaller than the "
                            f"{emb.input_size}px embedder input: upsampled")
    decision = _decision(idx, hits, dec, cands)
    conditions.apply(idx, row, decision, det, hits[0][0] if hits else None)
    return Record(command="origin", inputs={"suspect": {"path": row["path"], "sha256": row["sha256"]}},
                  features={"similarity_top1": s1, "similarity_margin": (s1 - s2) if s2 is not None else None,
                            "distinctiveness": dec["distinctiveness"] if s1 is not None else None},
                  directions={"similarity_top1": "higher = more likely the origin is in the library",
                              "similarity_margin": "higher = top candidate more distinct from the next",
                              "distinctiveness": "higher = top candidate closer than any other origin, relative "
                                                 "to it (1 − d1/d2 in cosine distance)"},
                  decision=decision, reasons=_reasons(idx.calibration, dec),
                  details=det, provenance=prov)


def _verify_score(suspect: str, reference: str) -> float | None:
    """:func:`fingerprint_cli.origin.verify.score` of a suspect against a reference file (None when either
    can no longer be read: the verification then does not pass)."""
    try:
        return verify.score(images.load_image(suspect).pixels, images.load_image(reference).pixels)
    except (FpxError, OSError):
        return None


#: what a ``not-in-library`` answer does not say (the decision's ``note``): absence is not proven
NOT_FOUND_NOTE = ("no reference passed the index's tests at its stated false-match rate; the miss rate is measured "
                  "only in-sample, on the index's own built-in transforms (calibration.miss_rate_in_sample) — this is "
                  "not evidence that the suspect's origin is absent from the library")


def _decision(idx: OriginIndex, hits: list, dec: dict[str, Any], cands: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's decision block: label, origin (with its near-duplicates), thresholds, rates, p-values."""
    cal = idx.calibration
    origin = None
    if dec["found"]:
        level = cal.get("duplicate_level", DUPLICATE_LEVEL)
        top = hits[0][0]
        dups = [idx.refs[i]["path"] for i, *_ in hits[1:len(cands)]
                if float(idx.vectors[i] @ idx.vectors[top]) >= level]
        origin = {**{key: cands[0][key] for key in ("path", "sha256", "similarity", "view", "reference_view")},
                  "near_duplicates": dups, "passed": dec["passed"]}
    return {"label": "found" if dec["found"] else "not-in-library", "origin": origin,
            **({} if dec["found"] else {"note": NOT_FOUND_NOTE}),
            "rule": cal.get("decision", "similarity"), "evidence": _evidence(cal, dec),
            "threshold": cal.get("threshold"),
            "distinct_threshold": cal.get("distinct_threshold"), "verify_threshold": cal.get("verify_threshold"),
            "local_threshold": cal.get("local_threshold"), "local_inliers": dec["local"],
            **({"dense_threshold": cal["dense_threshold"], "dense": dec["dense"], "p_value_dense": dec["p_value_dense"],
                "dense_region": idx.local.settings.dense_region}
               if cal.get("dense_threshold") is not None else {}),
            "false_match_rate": cal.get("false_match_rate"),
            "p_value": dec["p_value"], "p_value_similarity": dec["p_value_similarity"],
            "p_value_distinct": dec["p_value_distinct"], "p_value_verify": dec["p_value_verify"],
            "p_value_local": dec["p_value_local"],
            "calibration": {"n_impostor": cal.get("n_impostor"), "miss_rate_in_sample": cal.get("miss_rate_in_sample"),
                            **{TESTS[t][2]: cal.get(TESTS[t][2]) for t in cal.get("tests") or ["similarity"]},
                            "method": cal.get("method"), "note": cal.get("note")}}


def _evidence(cal: dict[str, Any], dec: dict[str, Any]) -> str:
    """One line: the evidence the decision rests on and its threshold (local inliers when the stage ran)."""
    if dec["local"] is not None and cal.get("local_threshold") is not None:
        line = f"local-inliers {int(dec['local'])}, threshold {cal['local_threshold']:g}"
        if cal.get("dense_threshold") is not None:
            d = "not computed" if dec["dense"] is None else f"{dec['dense']:.3f}"
            line += f"; dense {d}, threshold {cal['dense_threshold']:.3f}"
        return line
    s, t = dec["similarity"], cal.get("threshold")
    return f"similarity {s:.4f}, threshold {t:.4f}" if s is not None and t is not None else "no calibrated threshold"


def _unused_tests(cal: dict[str, Any]) -> list[dict[str, Any]]:
    """A reason for each second test of the rule that could not be calibrated (too few impostor scores)."""
    return [{"feature": "distinctiveness" if t == "distinct" else t, "value": None, "threshold": None,
             "says": f"not used: {cal.get(f'{t}_note', 'not calibrated')}"}
            for t in (cal.get("tests") or [])[1:] if cal.get(TESTS[t][0]) is None]


def _reasons(cal: dict[str, Any], dec: dict[str, Any]) -> list[dict[str, Any]]:
    """One reason per test of the rule: the score, its threshold and what it says."""
    thr, s1 = cal.get("threshold"), dec["similarity"]
    above = s1 is not None and thr is not None and s1 > thr
    out = [{"feature": "similarity_top1", "value": s1, "threshold": thr,
            "says": "above the threshold: the top candidate is the origin" if above else
            "not above the threshold: no reference is similar enough"}]
    out += _unused_tests(cal)
    if cal.get("distinct_threshold") is not None:
        dt = cal["distinct_threshold"]
        ok = s1 is not None and dec["distinctiveness"] > dt
        out.append({"feature": "distinctiveness", "value": dec["distinctiveness"], "threshold": dt,
                    "second_origin_similarity": dec["second_origin_similarity"],
                    "says": "above the threshold: the top candidate is far closer than any other origin" if ok else
                    "not above the threshold: another origin is nearly as close"})
    if cal.get("verify_threshold") is not None:
        vt, v = cal["verify_threshold"], dec["verify"]
        out.append({"feature": "verify", "value": v, "threshold": vt,
                    "says": "not needed: the similarity decided" if v is None and above else
                    "not computed: a file could not be read or there is no candidate" if v is None else
                    "above the threshold: the suspect's pixels sit inside the top candidate" if v > vt else
                    "not above the threshold: the pixels do not confirm the top candidate"})
    if cal.get("local_threshold") is not None:
        out.append(_local_reason(cal["local_threshold"], dec["local"], above))
    if cal.get("dense_threshold") is not None:
        out.append(_dense_reason(cal["dense_threshold"], dec["dense"], dec["local"], above))
    return out


def _dense_reason(dt: float, d: float | None, n: float | None, above: bool) -> dict[str, Any]:
    """The dense half of the local test: its score, threshold and what they say."""
    return {"feature": "dense", "value": d, "threshold": dt,
            "says": "not needed: the similarity decided" if n is None and above else
            "not computed: the top candidate was not verified above the inlier threshold, or its file could "
            "not be read" if d is None else
            "above the threshold: the top candidate's pixels agree with the suspect's at the fitted map" if d > dt
            else "not above the threshold: the pixels do not agree at the fitted map (the inliers are not "
                 "confirmed)"}


def _local_reason(lt: float, n: float | None, above: bool) -> dict[str, Any]:
    """The local test's reason: its inliers, threshold and what they say."""
    return {"feature": "local_inliers", "value": n, "threshold": lt,
            "says": "not needed: the similarity decided" if n is None and above else
            "not computed: no local features for this suspect" if n is None else
            "above the threshold: the top candidate's keypoints map onto the suspect's (RANSAC)" if n > lt
            else "not above the threshold: no candidate's keypoints map onto the suspect's"}


def find_references(suspects: Sequence[str], index: OriginIndex | str, *, device: str = "cpu",
                    jobs: int = 1) -> tuple[list[tuple[str, str, dict[str, Any]]], list[Record]]:
    """For ``fpx attribute --index``: (suspect, retrieved reference path, retrieval info) for each suspect
    whose origin is ``found``, and the query records of the others (not-in-library or unreadable)."""
    idx = index if isinstance(index, OriginIndex) else load_index(index)
    found, rest = [], []
    for rec in query(suspects, idx, k=1, device=device, jobs=jobs):
        if rec.ok and rec.decision and rec.decision["label"] == "found":
            o = rec.decision["origin"]
            found.append((rec.inputs["suspect"]["path"], o["path"],
                          {"index": idx.path, "index_seal": idx.seal, "reference": o["path"],
                           "reference_sha256": o["sha256"], "similarity": o["similarity"], "view": o["view"],
                           "threshold": rec.decision["threshold"], "p_value": rec.decision["p_value"],
                           "false_match_rate": rec.decision["false_match_rate"], "rule": rec.decision["rule"],
                           "passed": o["passed"], "within_conditions": rec.decision.get("within_conditions"),
                           **({"outside_conditions": rec.decision["outside_conditions"]}
                              if rec.decision.get("outside_conditions") else {})}))
        else:
            rest.append(rec)
    return found, rest


def pairs_from_index(suspects: Sequence[str], index: OriginIndex | str, *, device: str = "cpu"):
    """``fpx attribute --index``: (pairs of retrieved reference and suspect, {suspect: retrieval info}, records
    for the suspects with no reference found — decision ``not-in-library`` — or unreadable)."""
    found, rest = find_references(suspects, index, device=device)
    pairs = [batch.Pair(ref, s) for s, ref, _ in found]
    info = {s: i for s, _, i in found}
    records = []
    for r in rest:
        if r.ok:
            records.append(Record(command="attribute", inputs={"reference": {"path": None, "sha256": None},
                                                               "suspect": r.inputs["suspect"]},
                                  features=r.features, directions=r.directions,
                                  decision={"label": "not-in-library", "band": "not-in-library",
                                            "system": "not-in-library", "origin": r.decision},
                                  reasons=r.reasons, details={"candidates": r.details.get("candidates")},
                                  provenance=r.provenance))
        else:
            records.append(Record(command="attribute", inputs=r.inputs, status="error", error=r.error,
                                  provenance=r.provenance))
    return pairs, info, records


# ---------------------------------------------------------------- train
def train(pairs_csv: str, output: str, *, embedder: str = emb_mod.DEFAULT_EMBEDDER,
          embedder_options: dict[str, Any] | None = None, out_dim: int | None = None, epochs: int = 30,
          seed: int = 0, jobs: int = 1, scheduler: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> tuple[str, list[Record]]:
    """Fit the linear head on a lab's (origin, generated) pairs: CSV columns ``reference,suspect``.

    Each distinct reference is one class (an origin); its own embedding and those of its suspects are the
    samples; CosFace with the ID2 recipe (:func:`fingerprint_cli.origin.head.fit`). Writes the head to
    ``output`` (safetensors, atomically) and returns its sha256 and the records (failures and a summary).
    """
    rows = batch.read_csv_rows(pairs_csv, ["reference", "suspect"])
    if not rows:
        raise InputError("has no pairs", str(pairs_csv))
    emb = emb_mod.get_embedder(embedder, **(embedder_options or {}))
    uniq = list(dict.fromkeys([r["reference"] for r in rows] + [r["suspect"] for r in rows]))
    chunks = _chunks([(p, False) for p in uniq], 16)
    got = _run_chunks(emb.spec(), chunks, view_mode=False, jobs=jobs, scheduler=scheduler,
                      progress=(lambda n: progress(n, len(chunks))) if progress else None)
    prov = _provenance(emb, None)
    records = [Record(command="origin-train", inputs={"image": {"path": g["path"]}}, status="error",
                      error=g["error"], provenance=prov) for g in got if "error" in g]
    xs, ys = _training_set(rows, {g["path"]: g for g in got})
    if len(set(ys)) < 2:
        raise InputError("needs readable pairs of at least two distinct references (origins)", str(pairs_csv))
    weight, info = head_mod.fit(np.stack(xs), ys, out_dim=out_dim, epochs=epochs, seed=seed)
    info["pairs_csv_sha256"] = images.sha256_file(pairs_csv)
    sha = head_mod.save(output, weight, emb.identity(), info, inputs=[pairs_csv, *uniq])
    records.append(Record(command="origin-train", inputs={"pairs": {"path": str(pairs_csv), "sha256":
                                                                    info["pairs_csv_sha256"]},
                                                          "head": {"path": str(output), "sha256": sha}},
                          features={"final_loss": info["loss_per_epoch"][-1], "origins": float(info["origins"]),
                                    "samples": float(info["samples"])},
                          directions={"final_loss": "lower = better fit (training data)", "origins": "count",
                                      "samples": "count"},
                          details=info, provenance=prov))
    return sha, records


def _training_set(rows: list[dict[str, str]], by_path: dict[str, dict[str, Any]]
                  ) -> tuple[list[np.ndarray], list[int]]:
    """Samples and origin labels: each readable reference's own embedding, then each readable suspect's,
    labelled by its reference (pairs with an unreadable side are left out)."""
    ok = {p for p, g in by_path.items() if "error" not in g}
    refs = list(dict.fromkeys(r["reference"] for r in rows if r["reference"] in ok))
    label = {p: i for i, p in enumerate(refs)}
    xs = [by_path[p]["vector"] for p in refs]
    ys = [label[p] for p in refs]
    for r in rows:
        if r["reference"] in label and r["suspect"] in ok:
            xs.append(by_path[r["suspect"]]["vector"])
            ys.append(label[r["reference"]])
    return xs, ys
