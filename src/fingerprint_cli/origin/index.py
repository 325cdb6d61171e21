"""The reference library index: vectors in faiss, the reference list beside them, a sealed single file.

File format (``LIB.fpxindex``): one safetensors file — never a pickle — holding

* ``vectors`` (N, D) float32: the L2-normalised (post-head) embedding of each reference;
* ``calib.vectors`` (M, V, D) float32 and ``calib.owner`` (M,) int64: the views (original, mirrored) of the
  calibration queries — transformed copies of references — and the reference each came from;
* ``views.vectors`` (N, V-1, D) float32 (only with reference views, ``--views crops``): the embeddings of
  each reference's extra crop views (:data:`fingerprint_cli.origin.library.REF_VIEW_SETS`), extra faiss rows
  that map back to their reference — a search returns each reference once, at its best view;
* ``local.xy`` (M, 2) float32, ``local.desc`` (M, 32) uint8, ``local.offsets`` (N+1,) int64 (format v4, the local
  stage, :mod:`fingerprint_cli.origin.local`): every reference's ORB keypoints; ``local.calib.*`` the same for
  the local calibration queries' views (two per query) and ``local.calib.owner`` the reference of each query;
* ``head.weight`` (D, d_raw) when a linear head was applied; ``proj.weight`` (D, d_head) the sealed projection
  (``--dim``, :func:`fit_projection`; format v3); ``faiss`` (uint8) the serialised IVF index when ``search`` is
  not ``flat``;
* metadata ``fpx_index``: JSON with the format version, embedder identity (name, version, config, weights
  sha256), head identity (sha256, dims), the projection, the reference list (path, sha256), the calibration
  (decision rule, each test's threshold and impostor scores, target false-match rate, counts, measured rates)
  and the search settings; and ``seal``: the sha256 of that
  JSON and of every tensor's bytes. :func:`load` recomputes the seal and refuses a file whose seal does not
  match (modified after it was written).

Search: faiss ``IndexFlatIP`` (exact inner product = cosine on unit vectors) by default; ``ivf`` (IVF-Flat,
``nlist ≈ 4·√N``, ``nprobe`` 16) or ``ivfpq`` (IVF with 8-bit product quantisation on vectors zero-padded to
a multiple of 8 dimensions) for very large libraries — approximate, and the record says which.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint_cli import artifacts, images
from fingerprint_cli.errors import ArtifactError, FpxError, InputError, UsageError
from fingerprint_cli.images import shape_property
from fingerprint_cli.origin import dense as dense_mod
from fingerprint_cli.origin import local as local_mod
from fingerprint_cli.origin import verify
from fingerprint_cli.origin.embedders import EMBEDDERS, l2n

FORMAT = "fpx-origin-index"
FORMAT_VERSION = 4  # v2: reference crop views (``views.vectors``); v3: a sealed projection (``proj.weight``, --dim);
# v4: local features (``local.*``, --local).
# An index is written with the lowest version that holds what it has (v1 without views or projection).
SEARCH_KINDS = ("flat", "ivf", "ivfpq")


def models_hint(embedder_name: str | None) -> str:
    """The sentence naming both `fpx models` commands for an embedder that has weights."""
    if embedder_name and embedder_name in EMBEDDERS and not EMBEDDERS[embedder_name].weight_free:
        return (f"install the weights it was built with via `fpx models pull {embedder_name}` or "
                f"`fpx models import FILE --name {embedder_name}`")
    return ("`fpx models pull NAME` / `fpx models import FILE --name NAME` install an embedder's weights "
            "(this index's embedder needs none)")


@dataclass
class OriginIndex:
    """A loaded (or freshly built) library index. ``refs[i]`` describes row ``i`` of ``vectors``."""

    embedder: dict[str, Any]
    refs: list[dict[str, Any]]
    vectors: np.ndarray
    head: dict[str, Any] | None = None
    head_weight: np.ndarray | None = None
    calib_vectors: np.ndarray | None = None
    calib_owner: np.ndarray | None = None
    calib_transform: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    search_cfg: dict[str, Any] = field(default_factory=lambda: {"kind": "flat"})
    view_vectors: np.ndarray | None = None
    ref_views: dict[str, Any] = field(default_factory=lambda: {"scheme": "full", "views": ["full"]})
    projection: dict[str, Any] | None = None
    proj_weight: np.ndarray | None = None
    local: local_mod.LocalIndex | None = None
    local_calib: local_mod.LocalIndex | None = None
    local_calib_owner: np.ndarray | None = None
    local_calib_transform: list[str] = field(default_factory=list)
    path: str | None = None
    seal: str | None = None
    _faiss: Any = None

    n = shape_property("vectors", 0, "Number of references.")
    dim = shape_property("vectors", 1, "Dimension of the searched vectors (after the head and the projection).")

    @property
    def n_views(self) -> int:
        """Rows per reference in the search (1 = the full image only)."""
        return 1 + (0 if self.view_vectors is None else int(self.view_vectors.shape[1]))

    @property
    def n_rows(self) -> int:
        return self.n * self.n_views

    def all_vectors(self) -> np.ndarray:
        """Every searchable row: the references' full views (rows 0..N-1), then their extra views."""
        if self.view_vectors is None:
            return self.vectors
        return np.concatenate([self.vectors, self.view_vectors.reshape(-1, self.dim)]).astype(np.float32)

    def ref_rows(self, refs) -> np.ndarray:
        """All view rows (full and extra) of the given references, stacked: (len(refs) * V, D)."""
        refs = np.asarray(refs, int)
        if self.view_vectors is None:
            return self.vectors[refs]
        return np.concatenate([self.vectors[refs], self.view_vectors[refs].reshape(-1, self.dim)])

    def owner_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference, reference view) of faiss rows; -1 stays -1."""
        rows = np.asarray(rows, np.int64)
        if self.view_vectors is None:
            return rows, np.zeros_like(rows)
        extra = self.n_views - 1
        j = rows - self.n
        ref = np.where(rows < self.n, rows, j // extra)
        view = np.where(rows < self.n, 0, 1 + j % extra)
        ref = np.where(rows < 0, -1, ref)
        return ref, view

    @property
    def threshold(self) -> float | None:
        return self.calibration.get("threshold")

    def faiss_index(self):
        if self._faiss is None:
            self._faiss = build_faiss(self.all_vectors(), self.search_cfg)
        return self._faiss

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, faiss row ids) for each row of ``q`` (n, D); ids of -1 pad short results.
        Rows are reference views: map them with :meth:`owner_of` (the ``search_views*`` methods do)."""
        q = np.ascontiguousarray(np.asarray(q, np.float32))
        k = max(1, min(int(k), self.n_rows))
        idx = self.faiss_index()
        if self.search_cfg.get("kind") == "ivfpq":
            q = _pad(q, self.search_cfg["padded_dim"])
        sims, ids = idx.search(q, k)
        return sims, ids

    def search_views(self, views: np.ndarray, k: int, exclude: int | None = None) -> list[tuple[int, float]]:
        """Merge the searches of several views of one query (max similarity per reference over the query's
        views and the reference's views), best first: each reference once."""
        return [(i, s) for i, s, _, _ in self.search_views_detail(views, k, exclude)]

    def search_views_detail(self, views: np.ndarray, k: int, exclude: int | None = None
                            ) -> list[tuple[int, float, int, int]]:
        """Like :meth:`search_views`: (reference, similarity, query view, reference view) of each best."""
        kk = min(self.n_rows, (k + (1 if exclude is not None else 0)) * self.n_views)
        sims, ids = self.search(views, kk)
        return self._merge(sims, ids, k, () if exclude is None else (exclude,))

    def search_many(self, views: np.ndarray, k: int) -> list[list[tuple[int, float, int, int]]]:
        """:meth:`search_views_detail` for many queries at once: ``views`` (n, V, D), one faiss call."""
        views = np.asarray(views, np.float32)
        n, nv = views.shape[:2]
        if n == 0:
            return []
        sims, ids = self.search(views.reshape(n * nv, -1), min(self.n_rows, k * self.n_views))
        return [self._merge(sims[i * nv:(i + 1) * nv], ids[i * nv:(i + 1) * nv], k) for i in range(n)]

    def _merge(self, sims, ids, k, exclude=()):
        ref, rview = self.owner_of(ids)
        return _merge(sims, ref, k, exclude, rview)

    # -------------------------------------------------------- I/O
    def document(self) -> dict[str, Any]:
        version = 4 if self.local is not None else 3 if self.proj_weight is not None else \
            1 if self.view_vectors is None else 2
        doc = {"format": FORMAT, "format_version": version, "embedder": self.embedder, "head": self.head,
               "ref_views": self.ref_views,
               "refs": self.refs, "calibration": self.calibration, "calib_transform": self.calib_transform,
               "search": {k: v for k, v in self.search_cfg.items()}}
        if self.projection is not None:
            doc["projection"] = self.projection
        if self.local is not None:
            doc["local"] = local_settings(self.local.settings)
            doc["local_calib_transform"] = self.local_calib_transform
        return doc

    def tensors(self) -> dict[str, np.ndarray]:
        t = {"vectors": np.ascontiguousarray(self.vectors, np.float32)}
        if self.view_vectors is not None:
            t["views.vectors"] = np.ascontiguousarray(self.view_vectors, np.float32)
        if self.calib_vectors is not None and len(self.calib_vectors):
            t["calib.vectors"] = np.ascontiguousarray(self.calib_vectors, np.float32)
            t["calib.owner"] = np.ascontiguousarray(self.calib_owner, np.int64)
        if self.head_weight is not None:
            t["head.weight"] = np.ascontiguousarray(self.head_weight, np.float32)
        if self.proj_weight is not None:
            t["proj.weight"] = np.ascontiguousarray(self.proj_weight, np.float32)
        if self.local is not None:
            if self.local.search_kind == "ivf":
                self.local.faiss_index()  # the library's vote search: trained once, sealed in (local.faiss)
            t.update(_local_tensors("local", self.local))
            if self.local_calib is not None and self.local_calib.n:
                t.update(_local_tensors("local.calib", self.local_calib))
                t["local.calib.owner"] = np.ascontiguousarray(self.local_calib_owner, np.int64)
        if self.search_cfg.get("kind", "flat") != "flat":
            import faiss

            t["faiss"] = np.ascontiguousarray(faiss.serialize_index(self.faiss_index()), np.uint8)
        return t

    def save(self, path, inputs=()) -> str:
        """Write the sealed index atomically (never over an input). Returns the seal."""
        import torch

        tens = self.tensors()  # first: building an IVF index fills in nlist / padded_dim in search_cfg
        doc = json.dumps(self.document(), sort_keys=True)
        seal = _seal(doc, tens)
        artifacts.write_tensors(path, {k: torch.from_numpy(v) for k, v in tens.items()},
                                {"fpx_kind": "origin-index", "fpx_index": doc, "seal": seal}, inputs=tuple(inputs))
        self.path, self.seal = str(path), seal
        return seal

    def memory_bytes(self) -> int:
        paths = sum(len(r["path"]) + 64 for r in self.refs)
        views = 0 if self.view_vectors is None else self.view_vectors.nbytes
        local = 0 if self.local is None else self.local.bytes_per_reference() * self.n
        return int(self.vectors.nbytes + views + paths + local)


def local_settings(settings: local_mod.Settings = local_mod.DEFAULT) -> dict[str, Any]:
    """The local stage's settings an index records (:mod:`fingerprint_cli.origin.local`): the module's fixed
    ones and the index's own :class:`~fingerprint_cli.origin.local.Settings` (read back by :func:`load_index`)."""
    m = local_mod
    return {"features": "orb", "side": m.SIDE, "n_features": m.N_FEATURES, "knn": m.KNN,
            "vote_hamming": m.VOTE_HAMMING, "n_voted": m.N_VOTED, "ratio": m.RATIO, "ransac_px": m.RANSAC_PX,
            "model": "affine", "duplicate_fraction": m.DUPLICATE_FRACTION,
            "calib_transforms": m.calib_names(settings), **settings.doc(),
            **(dense_settings(settings.dense_region) if settings.dense else {})}


def dense_settings(region: str = "overlap") -> dict[str, Any]:
    """The dense verification's fixed parameters (:mod:`fingerprint_cli.origin.dense`) an index with
    ``dense`` local settings records beside them (the hull's margin with the ``hull`` region)."""
    d = dense_mod
    return {"dense_work": d.WORK, "dense_sigmas": list(d.SIGMAS), "dense_rho": d.RHO,
            "dense_min_overlap": d.MIN_OVERLAP, "dense_top": d.TOP, "dense_score": "energy-weighted local NCC",
            **({"dense_hull_margin": d.HULL_MARGIN} if region == "hull" else {})}


def _local_tensors(prefix: str, li: local_mod.LocalIndex) -> dict[str, np.ndarray]:
    """The tensors of one set of local features under ``prefix``; its trained vote search (``PREFIX.faiss``)
    when it has one."""
    t = {f"{prefix}.xy": np.ascontiguousarray(li.xy, np.float32),
         f"{prefix}.desc": np.ascontiguousarray(li.desc, np.uint8),
         f"{prefix}.offsets": np.ascontiguousarray(li.offsets, np.int64)}
    if li.blob is not None:
        t[f"{prefix}.faiss"] = np.ascontiguousarray(li.blob, np.uint8)
    return t


def _local_from(arrays: dict[str, np.ndarray], prefix: str, settings: local_mod.Settings
                ) -> local_mod.LocalIndex | None:
    """The local features stored under ``prefix`` (with their trained vote search, if stored); None if absent."""
    if f"{prefix}.desc" not in arrays:
        return None
    return local_mod.LocalIndex(arrays[f"{prefix}.xy"].astype(np.float32), arrays[f"{prefix}.desc"].astype(np.uint8),
                                arrays[f"{prefix}.offsets"].astype(np.int64), blob=arrays.get(f"{prefix}.faiss"),
                                settings=settings)


def _merge(sims: np.ndarray, ids: np.ndarray, k: int, exclude=(), rviews: np.ndarray | None = None
           ) -> list[tuple[int, float, int, int]]:
    """Best similarity per reference over the query views' result rows (``ids``: reference of each row,
    ``rviews``: which reference view), best first: (reference, similarity, query view, reference view)."""
    best: dict[int, tuple[float, int, int]] = {}
    if rviews is None:
        rviews = np.zeros_like(np.asarray(ids))
    for v, (srow, irow, rrow) in enumerate(zip(sims, ids, rviews)):
        for s, i, r in zip(srow, irow, rrow):
            i = int(i)
            if i < 0 or i in exclude:
                continue
            if s > best.get(i, (-np.inf, 0, 0))[0]:
                best[i] = (float(s), v, int(r))
    return sorted(((i, s, v, r) for i, (s, v, r) in best.items()), key=lambda t: (-t[1], t[0]))[:k]


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    if x.shape[1] == d:
        return np.ascontiguousarray(x)
    out = np.zeros((x.shape[0], d), np.float32)
    out[:, :x.shape[1]] = x
    return out


def build_faiss(vectors: np.ndarray, cfg: dict[str, Any], blob: np.ndarray | None = None):
    """A faiss index over ``vectors`` for ``cfg['kind']`` (flat / ivf / ivfpq); ``blob`` restores a trained one."""
    import faiss

    kind = cfg.get("kind", "flat")
    v = np.ascontiguousarray(vectors, np.float32)
    if blob is not None:
        idx = faiss.deserialize_index(np.asarray(blob, np.uint8))
    elif kind == "flat":
        idx = faiss.IndexFlatIP(v.shape[1])
        idx.add(v)
    elif kind in ("ivf", "ivfpq"):
        n, d = v.shape
        nlist = int(cfg.get("nlist") or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1)))
        cfg["nlist"] = nlist
        if kind == "ivf":
            idx = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        else:
            dp = int(math.ceil(d / 8) * 8)
            cfg["padded_dim"] = dp
            m = int(cfg.get("m") or dp // 8)
            cfg["m"] = m
            if n < 256 * 4:
                raise UsageError(f"--search ivfpq needs at least 1024 references to train its quantiser (got {n})")
            v = _pad(v, dp)
            idx = faiss.index_factory(dp, f"IVF{nlist},PQ{m}x8", faiss.METRIC_INNER_PRODUCT)
        idx.train(v)
        idx.add(v)
    else:
        raise UsageError(f"unknown --search {kind!r}; choose one of {', '.join(SEARCH_KINDS)}")
    if kind != "flat":
        idx.nprobe = int(cfg.setdefault("nprobe", min(16, cfg.get("nlist", 16))))
    return idx


def _seal(doc: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(doc.encode("utf-8"))
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(hashlib.sha256(a.tobytes()).digest())
    return h.hexdigest()


def load_index(path) -> OriginIndex:
    """Read and verify a ``.fpxindex`` file; refuses one that is not an index or whose seal does not match.

    The seal is the sha256 of the index's JSON document and of every tensor, written with the index: any
    change to the vectors, the reference list or the calibration after writing is detected.
    """
    p = Path(path)
    arrays, meta = _read_index_file(p)
    doc = _verified_document(p, arrays, meta)
    cfg = dict(doc.get("search") or {"kind": "flat"})
    try:
        lset = local_mod.Settings.from_doc(doc.get("local"))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"index records local settings this fpx does not know ({exc}); rebuild it or "
                            "upgrade fpx", str(p)) from exc
    idx = OriginIndex(embedder=doc["embedder"], refs=doc["refs"], vectors=arrays["vectors"].astype(np.float32),
                      head=doc.get("head"), head_weight=arrays.get("head.weight"),
                      calib_vectors=arrays.get("calib.vectors"), calib_owner=arrays.get("calib.owner"),
                      calib_transform=list(doc.get("calib_transform") or []), calibration=doc.get("calibration") or {},
                      search_cfg=cfg, path=str(p), seal=meta["seal"], view_vectors=arrays.get("views.vectors"),
                      ref_views=doc.get("ref_views") or {"scheme": "full", "views": ["full"]},
                      projection=doc.get("projection"), proj_weight=arrays.get("proj.weight"),
                      local=_local_from(arrays, "local", lset), local_calib=_local_from(arrays, "local.calib", lset),
                      local_calib_owner=arrays.get("local.calib.owner"),
                      local_calib_transform=list(doc.get("local_calib_transform") or []))
    _check_shapes(idx, p)
    if cfg.get("kind", "flat") != "flat" and "faiss" in arrays:
        idx._faiss = build_faiss(idx.vectors, cfg, blob=arrays["faiss"])
        idx._faiss.nprobe = int(cfg.get("nprobe", 16))
    return idx


def _read_index_file(p: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (as numpy) and metadata of an index file; refuses a missing, unreadable or foreign file."""
    if not p.exists():
        raise InputError("no such index file", str(p))
    try:
        tensors, meta = artifacts.read_tensors(p)
    except InputError as exc:
        raise ArtifactError(f"is not a readable fpx origin index (damaged or not an index: {exc.message}); "
                            f"rebuild it with `fpx origin index`", str(p)) from exc
    if meta.get("fpx_kind") != "origin-index" or "fpx_index" not in meta or "vectors" not in tensors:
        raise InputError("is not an fpx origin index (made by `fpx origin index`)", str(p))
    return {k: v.numpy() for k, v in tensors.items()}, meta


def _verified_document(p: Path, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> dict[str, Any]:
    """The index's JSON document once its seal matches and its format is one this fpx reads."""
    doc_text = meta["fpx_index"]
    got = _seal(doc_text, arrays)
    try:
        doc = json.loads(doc_text)
    except json.JSONDecodeError as exc:
        raise ArtifactError("index metadata is not valid JSON: the file was modified; rebuild it", str(p)) from exc
    if got != meta.get("seal"):
        name = (doc.get("embedder") or {}).get("name")
        raise ArtifactError(f"index was modified after it was sealed (sha256 seal {got[:12]}… ≠ recorded "
                            f"{str(meta.get('seal'))[:12]}…); refusing it: rebuild it with `fpx origin index` "
                            f"({models_hint(name)})", str(p))
    if doc.get("format") != FORMAT or int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(f"index format {doc.get('format')} v{doc.get('format_version')} is not supported by "
                            f"this fpx (reads {FORMAT} v{FORMAT_VERSION})", str(p))
    return doc


def _check_shapes(idx: OriginIndex, p: Path) -> None:
    """Refuse an index whose reference list, views or projection disagree with its tensors."""
    if len(idx.refs) != idx.n:
        raise ArtifactError(f"index lists {len(idx.refs)} references for {idx.n} vectors", str(p))
    if len(idx.ref_views.get("views") or []) != idx.n_views or (
            idx.view_vectors is not None and idx.view_vectors.shape[0] != idx.n):
        raise ArtifactError(f"index records the reference views {idx.ref_views.get('views')} but holds "
                            f"{idx.n_views} view(s) per reference; rebuild it with `fpx origin index`", str(p))
    if (idx.projection is None) != (idx.proj_weight is None) or (
            idx.proj_weight is not None and idx.proj_weight.shape[0] != idx.dim):
        raise ArtifactError("index records a projection that does not match its tensors; rebuild it with "
                            "`fpx origin index`", str(p))
    bad = idx.local.check(idx.n) if idx.local is not None else None
    if bad is None and idx.local_calib is not None and (
            idx.local_calib_owner is None
            or idx.local_calib.n != local_mod.n_views(idx.local_calib.settings) * len(idx.local_calib_owner)):
        bad = "local calibration features do not match their owners"
    if bad:
        raise ArtifactError(f"index holds {bad}; rebuild it with `fpx origin index`", str(p))


# ---------------------------------------------------------------- projection (sealed PCA, --dim)
def fit_projection(rows: np.ndarray, out_dim: int, max_rows: int = 50000) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``out_dim``-dimensional subspace that best reconstructs ``rows`` in least squares (uncentred PCA:
    the top eigenvectors of ``rowsᵀ rows``, so inner products — cosines of unit rows — are kept as well as a
    linear map of that size can). Deterministic: an even subsample of at most ``max_rows`` rows, float64, each
    eigenvector's largest component made positive. Returns P (out_dim, D) and what the index records."""
    x = np.asarray(rows, np.float64)
    if len(x) > max_rows:
        x = x[np.linspace(0, len(x) - 1, max_rows).astype(int)]
    d = x.shape[1]
    if not (1 <= out_dim < d):
        raise UsageError(f"--dim must be between 1 and {d - 1} for this {d}-dimensional embedding (got {out_dim})")
    evals, evecs = np.linalg.eigh(x.T @ x)
    order = np.argsort(evals)[::-1][:out_dim]
    P = evecs[:, order].T
    P *= np.sign(P[np.arange(out_dim), np.argmax(np.abs(P), axis=1)])[:, None]
    kept = float(evals[order].sum() / max(evals.sum(), 1e-30))
    return P.astype(np.float32), {"kind": "pca-uncentred", "in_dim": d, "out_dim": int(out_dim),
                                  "fitted_on_rows": int(len(x)), "energy_kept": round(kept, 6)}


def project(weight: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (..., D) mapped by the index's projection and L2-normalised (unchanged without one)."""
    if weight is None:
        return x
    x = np.asarray(x, np.float32)
    return l2n(x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])


# ---------------------------------------------------------------- calibration
# Transforms applied to calibration references (never the benchmark's families): cheap, built from images.py.
CALIB_TRANSFORMS = ("jpeg_q50", "down_up_0.5", "regrade_jpeg80", "crop_0.85", "hflip_noise")


def calib_transform(name: str, px: np.ndarray) -> np.ndarray:
    """One of :data:`CALIB_TRANSFORMS` applied to a float RGB image (same size out, except the crop)."""
    h, w = px.shape[:2]
    if name == "jpeg_q50":
        return images.decode(images.encode(px, "JPEG", quality=50), "<jpeg>").pixels
    if name == "down_up_0.5":
        small = images.resize(px, max(1, h // 2), max(1, w // 2))
        return np.clip(images.resize(small, h, w), 0, 1)
    if name == "regrade_jpeg80":
        g = np.clip(1.08 * np.power(np.clip(px, 0, 1), 0.8) * np.array([1.0, 0.97, 0.92], np.float32) - 0.02, 0, 1)
        return images.decode(images.encode(g, "JPEG", quality=80), "<jpeg>").pixels
    if name == "crop_0.85":
        ch, cw = max(1, round(h * 0.85)), max(1, round(w * 0.85))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return np.ascontiguousarray(px[y0:y0 + ch, x0:x0 + cw])
    if name == "hflip_noise":
        rng = np.random.default_rng(0)
        return np.clip(px[:, ::-1] + rng.normal(0, 0.03, px.shape).astype(np.float32), 0, 1)
    raise UsageError(f"unknown calibration transform {name!r}")


DUPLICATE_LEVEL = 0.98
# decision rules: ``similarity`` — found when the top similarity passes its threshold at the false-match rate;
# ``similarity+distinct`` — found when the top similarity passes its threshold at half the rate OR the top match's
# distinctiveness (a ratio test against the best reference of another origin) passes its own threshold at the
# other half; ``similarity+verify`` — the same with the pixel verification of the top candidate
# (:mod:`fingerprint_cli.origin.verify`) as the second test (Bonferroni: the rates add up to the stated one).
# ``similarity+local`` — the same with the local stage's geometric evidence (:mod:`fingerprint_cli.origin.local`:
# RANSAC inliers of the top candidate) as the second test; the default of an index with local features.
DECISIONS = ("similarity", "similarity+distinct", "similarity+verify", "similarity+local")
DEFAULT_DECISION = "similarity+verify"  # an index without local features
DEFAULT_LOCAL_DECISION = "similarity+local"  # an index with them (--local, the default of new indexes)
# each test: (threshold key, sorted impostor scores key, rate key) in the calibration
TESTS = {"similarity": ("threshold", "impostor_scores_sorted", "similarity_false_match_rate"),
         "distinct": ("distinct_threshold", "impostor_distinct_sorted", "distinct_false_match_rate"),
         "verify": ("verify_threshold", "impostor_verify_sorted", "verify_false_match_rate"),
         "local": ("local_threshold", "impostor_local_sorted", "local_false_match_rate")}
_KK = 32  # references looked at per query for the top match and the best other origin


def duplicates_of(index: OriginIndex, row: int, level: float = DUPLICATE_LEVEL) -> np.ndarray:
    """Rows whose vector has cosine >= ``level`` with row ``row`` (itself included): one origin group."""
    return np.flatnonzero(index.vectors @ index.vectors[row] >= level)


def distinctiveness(s1: float | None, s2: float | None) -> float:
    """``1 − (1 − s1) / (1 − s2)``: the ratio test of the top match (similarity ``s1``) against the best reference
    of another origin (``s2``), in cosine distances. 1 = the top is far closer than anything else; 0 = a tie, or
    no other origin among the hits (``s2`` None: conservative)."""
    if s1 is None or s2 is None or 1.0 - s2 <= 1e-9:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - (1.0 - s1) / (1.0 - s2))))


def top_two(index: OriginIndex, hits, level: float = DUPLICATE_LEVEL, exclude=()
            ) -> tuple[int | None, float | None, float | None]:
    """(top reference, its similarity, best similarity of a reference outside its origin group) over ``hits``
    (merged (reference, similarity, …) best first), skipping ``exclude``; the third is None when every other
    hit is a near-duplicate of the top (cosine >= ``level`` between the references' own vectors)."""
    hits = [h for h in hits if h[0] not in exclude]
    if not hits:
        return None, None, None
    t, s1 = int(hits[0][0]), float(hits[0][1])
    others = hits[1:]
    if others:
        cos = index.vectors[[int(h[0]) for h in others]] @ index.vectors[t]
        for h, c in zip(others, cos):
            if c < level:
                return t, s1, float(h[1])
    return t, s1, None


def _ref_max(index: OriginIndex, views: np.ndarray) -> np.ndarray:
    """Exact best similarity of ``views`` (V, D) to each reference over all its views: (N,)."""
    s = views @ index.ref_rows(np.arange(index.n)).T
    best = s[:, :index.n].max(axis=0)
    if index.view_vectors is not None:
        best = np.maximum(best, s[:, index.n:].reshape(len(s), index.n, -1).max(axis=(0, 2)))
    return best


def _brute_best(index: OriginIndex, views: np.ndarray, excluded: set[int]) -> tuple[int | None, float | None]:
    """(reference, similarity) of the best match of ``views`` outside ``excluded`` (exact, every row)."""
    if len(excluded) >= index.n:
        return None, None
    best = _ref_max(index, views)
    best[np.fromiter(excluded, int, len(excluded))] = -np.inf
    t = int(np.argmax(best))
    return t, float(best[t])


def _impostor_scores(index: OriginIndex, views, owner: int, res, level: float) -> tuple[float, float, int | None]:
    """(similarity, distinctiveness, top reference) of one calibration query with its own origin group
    removed — a query whose origin is absent; exact (brute force when the searched hits run out)."""
    group = set(duplicates_of(index, owner, level).tolist())
    t, s1, s2 = top_two(index, res, level, exclude=group)
    if t is None:  # every hit was in the group
        t, s1 = _brute_best(index, views, group)
        if t is None:
            return -1.0, 0.0, None
    if s2 is None:
        _, s2 = _brute_best(index, views, group | set(duplicates_of(index, t, level).tolist()))
    return s1, distinctiveness(s1, s2), t


class _RefPixels:
    """The pixels of an index's references read again from their files (a small cache; None for a file that
    cannot be read any more)."""

    def __init__(self, index: OriginIndex, size: int = 64):
        self.index, self.size, self.cache = index, size, {}

    def __call__(self, i: int) -> np.ndarray | None:
        if i not in self.cache:
            if len(self.cache) > self.size:
                self.cache.clear()
            try:
                self.cache[i] = images.load_image(self.index.refs[i]["path"]).pixels
            except (FpxError, OSError):
                self.cache[i] = None
        return self.cache[i]


def _impostor_verify_scores(index: OriginIndex, tops: list[int | None]) -> np.ndarray:
    """Pixel verification score (:func:`fingerprint_cli.origin.verify.score`) of each calibration query — its
    transform re-applied to its reference, read again — against its best candidate outside its origin group;
    -1 where a file cannot be read any more."""
    pixels = _RefPixels(index)
    out = []
    for o, name, t in zip(index.calib_owner, index.calib_transform, tops):
        src, ref = pixels(int(o)), pixels(t) if t is not None else None
        out.append(-1.0 if src is None or ref is None else verify.score(calib_transform(name, src), ref))
    return np.asarray(out)


def _genuine_scores(index: OriginIndex, views, owner: int, res, level: float) -> tuple[bool, float, float]:
    """(top hit in the origin's group, similarity to the origin, distinctiveness of the top) of one
    calibration query with its origin present."""
    group = set(duplicates_of(index, owner, level).tolist())
    t, s1, s2 = top_two(index, res, level)
    sim = float(np.max(views @ index.ref_rows([owner]).T))
    return t is not None and t in group, sim, distinctiveness(s1, s2)


def conformal_threshold(scores: np.ndarray, fmr: float) -> tuple[float, str | None]:
    """The ⌈(n+1)(1−fmr)⌉-th smallest of n impostor scores (split-conformal: an exchangeable new impostor
    exceeds it with probability ≤ fmr); the largest score, with a note, when n is too small for ``fmr``."""
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - fmr))
    if rank > n:
        return float(np.max(scores)), (f"{n} impostor scores are too few for a false-match rate of {fmr}: "
                                       f"threshold set at the largest impostor score")
    return float(np.sort(scores)[rank - 1]), None


def calibrate(index: OriginIndex, fmr: float = 0.01, duplicate_level: float = DUPLICATE_LEVEL,
              decision: str | None = None) -> dict[str, Any]:
    """Set the ``found`` thresholds at false-match rate ``fmr`` from impostor scores; returns the calibration.

    Impostor scores of a calibration query (a transformed copy of reference ``r``): its best similarity to any
    reference outside ``r``'s origin group — a query whose origin is absent from the library — taken, like a
    real query's score, as the max over the query's views and every view of each reference (with
    ``--views crops`` the impostor side sees the crop rows too, so the threshold stays calibrated), and the
    distinctiveness of that best match (:func:`distinctiveness`, against the best reference outside both its
    group and ``r``'s). The group is ``r`` and its near-duplicates (cosine >= ``duplicate_level`` between the
    references' own vectors: bursts, video frames, re-saved copies), which a query of ``r`` legitimately finds;
    query records list them as ``near_duplicates`` of a found origin. Each threshold is the split-conformal
    quantile (:func:`conformal_threshold`) of its impostor scores at ``fmr`` (``decision="similarity"``) or at
    ``fmr / 2`` each (``similarity+distinct``, ``similarity+verify`` — the default, whose pixel verification of
    each impostor's best candidate reads both files again), and ``found`` needs a score strictly above it.
    The genuine side (the same queries with their origin present) gives the in-sample miss rate: top
    candidate wrong or no test passed. With dense verification (the index's local settings ``dense``) the local
    test also gets ``dense_threshold`` at its own share (:func:`_dense_calibration`; the test is the AND of both).
    """
    rule = _check_rule(fmr, decision or index.calibration.get("decision") or DEFAULT_DECISION)
    cv, owner = index.calib_vectors, index.calib_owner
    if cv is None or len(cv) == 0 or index.n < 2:
        index.calibration = {"threshold": None, "false_match_rate": fmr, "n_impostor": 0, "decision": rule,
                             "note": "no calibration queries (library too small): every query is not-in-library"}
        return index.calibration
    results = index.search_many(cv, min(index.n, _KK))  # one batched faiss call for all calibration queries
    pairs = [_impostor_scores(index, v, int(o), r, duplicate_level) for v, o, r in zip(cv, owner, results)]
    imp = {"similarity": np.asarray([p[0] for p in pairs]), "distinct": np.asarray([p[1] for p in pairs])}
    if "verify" in rule:
        imp["verify"] = _impostor_verify_scores(index, [p[2] for p in pairs])
    gen = [_genuine_scores(index, v, int(o), r, duplicate_level) for v, o, r in zip(cv, owner, results)]
    local_gen, groups = _local_calibration(index, duplicate_level, imp) if "local" in rule else (None, [])
    dense_imp = imp.pop("dense", None)
    cal = {"false_match_rate": fmr, "decision": rule, "n_impostor": len(pairs), "n_references_at_calibration": index.n,
           "duplicate_level": duplicate_level, **_thresholds(imp, fmr, rule)}
    if dense_imp is not None:
        _dense_threshold(cal, dense_imp)
    _in_sample_rates(index, cal, imp, gen)
    if local_gen is not None:
        _local_in_sample(cal, imp["local"], local_gen, groups, dense_imp)
    index.calibration = cal
    return cal


def _local_calibration(index: OriginIndex, level: float, imp: dict[str, np.ndarray]
                       ) -> tuple[np.ndarray | tuple[np.ndarray, np.ndarray], list[int]]:
    """Impostor (into ``imp["local"]``) and genuine (returned) local evidence of the local calibration queries (built-in crops of calibration
    references, :func:`fingerprint_cli.origin.local.calib_names`): the most inliers among the candidates
    outside the query's origin group — its reference, the references within cosine ``level`` of it and those
    holding its keypoints (:func:`~fingerprint_cli.origin.local.local_duplicates`) — and the inliers against its
    own reference; the group size of each query. With dense verification (the local settings' ``dense``) also
    the dense scores (:func:`_dense_calibration`: impostor into ``imp["dense"]``; the genuine side is then the
    pair (inliers, dense scores))."""
    lib, lc = index.local, index.local_calib
    if lib is None or lc is None or index.local_calib_owner is None or not len(index.local_calib_owner):
        raise UsageError("the decision rule similarity+local needs local features: build the index with --local")
    groups: dict[int, set[int]] = {}
    impostors, gen, sizes, cands = [], [], [], []
    for j, o in enumerate(int(x) for x in index.local_calib_owner):
        if o not in groups:
            near = np.flatnonzero(index.vectors @ index.vectors[o] >= LOCAL_GROUP_COSINE)
            groups[o] = set(duplicates_of(index, o, level).tolist()) | local_mod.local_duplicates(lib, o, near)
        views = _calib_views(lc, j)
        n, others = _local_impostors(lib, views, o, groups[o], dense_mod.TOP if lib.settings.dense else 0)
        impostors.append(n)
        cands.append(others)
        own = lib.features(o)
        gen.append(float(max(local_mod.inliers(v, own, lib.settings.inlier_count) for v in views)))
        sizes.append(len(groups[o]))
    imp["local"] = np.asarray(impostors)
    if not lib.settings.dense:
        return np.asarray(gen), sizes
    imp["dense"], gen_dense = _dense_calibration(index, cands)
    return (np.asarray(gen), gen_dense), sizes


def _calib_views(lc: local_mod.LocalIndex, j: int) -> list[local_mod.Features]:
    """The query views of local calibration query ``j`` (:func:`~fingerprint_cli.origin.local.suspect_views`
    under the index's settings: two, or more with sub-windows)."""
    k = local_mod.n_views(lc.settings)
    return [lc.features(k * j + t) for t in range(k)]


def _dense_calibration(index: OriginIndex, cands: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(impostor, genuine) dense scores of the local calibration queries (:mod:`~fingerprint_cli.origin.dense`):
    each query's pixels made again from its reference's file (its built-in transform), scored against each of
    its first :data:`~fingerprint_cli.origin.dense.TOP` candidates outside its origin group (most inliers first;
    the impostor score is their maximum — at least what a suspect meets, whose checked candidates are those of
    its first few above the inlier threshold) and against its own reference (genuine). NaN where a file
    cannot be read any more (left out of the calibration)."""
    lib, lc = index.local, index.local_calib
    pixels = _RefPixels(index)
    imp, gen = [], []
    for j, (o, name) in enumerate(zip((int(x) for x in index.local_calib_owner), index.local_calib_transform)):
        src = pixels(o)
        if src is None:
            imp.append(np.nan)
            gen.append(np.nan)
            continue
        q = local_mod.calib_transform(name, src)
        views = _calib_views(lc, j)
        region = lib.settings.dense_region
        gen.append(dense_best(views, q, lib.features(o), src, region))
        scores = [dense_best(views, q, lib.features(c), pixels(c), region) for c in cands[j]]
        imp.append(max([s for s in scores if s is not None] or [0.0]))
    return np.asarray(imp, float), np.asarray([0.0 if g is None else g for g in gen], float)


def dense_best(views: list[local_mod.Features], suspect: np.ndarray, ref: local_mod.Features,
               ref_pixels: np.ndarray | None, region: str = "overlap") -> float | None:
    """The dense score (:func:`fingerprint_cli.origin.dense.score`) of a suspect (its float RGB pixels and its
    two local views) against one candidate at the map of the view with more inliers, summed over ``region``
    (:data:`~fingerprint_cli.origin.dense.REGIONS`; ``hull``: inside that view's inliers' convex hull); 0
    without a plausible map, None without the candidate's pixels."""
    if ref_pixels is None:
        return None
    fits = [local_mod.fit(v, ref) for v in views]
    vi = max(range(len(fits)), key=lambda i: (fits[i][2] is not None, len(np.unique(fits[i][0])), -i))
    qi, _, A = fits[vi]
    if A is None:
        return 0.0
    hull = views[vi].xy[qi] if region == "hull" else None
    return dense_mod.score(suspect, ref_pixels, A, local_mod.is_mirrored(vi), local_mod.SIDE, hull)


def _dense_threshold(cal: dict[str, Any], scores: np.ndarray) -> None:
    """The dense test's threshold at the local test's share of the rate (the local test passes only when its
    inliers and its dense score both pass: an AND of two tests each calibrated at that share holds it)."""
    s = scores[np.isfinite(scores)]
    if cal.get("local_threshold") is None or not len(s):
        cal["dense_threshold"] = None
        return
    share = cal["local_false_match_rate"]
    thr, note = conformal_threshold(s, share)
    cal.update({"dense_threshold": thr, "dense_false_match_rate": share if note is None else attainable_rate(len(s)),
                "impostor_dense_sorted": [round(float(x), 6) for x in np.sort(s)], "dense_n_impostor": int(len(s))})
    cal["method"] += ("; the local test also needs the dense score of its candidate (energy-weighted local NCC "
                      "at the fitted map) above its own threshold at the same share (AND)")


LOCAL_GROUP_COSINE = 0.8  # global neighbours checked for being local duplicates of a calibration reference


def _local_impostor(lib: local_mod.LocalIndex, views, o: int, group: set[int]) -> float:
    """The most inliers of a local calibration query among candidates outside ``o``'s group
    (:func:`_local_impostors`)."""
    return _local_impostors(lib, views, o, group)[0]


def _local_impostors(lib: local_mod.LocalIndex, views, o: int, group: set[int], top: int = 0
                     ) -> tuple[float, list[int]]:
    """The most inliers of a local calibration query among candidates outside ``o``'s group, and its first
    ``top`` such candidates (most inliers first); a candidate found to be a duplicate of ``o``
    (:func:`~fingerprint_cli.origin.local.is_duplicate`) joins the group instead. No global shortlist for these
    queries: as many more voted candidates are verified instead."""
    m = local_mod.match(lib, views, exclude=group, n_voted=local_mod.N_VOTED + local_mod.SHORTLIST)
    best, others = None, []
    for c, n, _ in m:
        if best is not None and len(others) >= top:
            break
        if local_mod.is_duplicate(lib, o, c):
            group.add(c)
            continue
        best = float(n) if best is None else best
        others.append(c)
    return (0.0 if best is None else best), others[:top]


def _local_in_sample(cal: dict[str, Any], imp: np.ndarray, gen, sizes: list[int],
                     dense_imp: np.ndarray | None = None) -> None:
    """The local test's in-sample rates: impostors above its threshold, genuine queries not above it (with dense
    verification, ``gen`` is the pair (inliers, dense scores) and both must pass: the rates of the AND, and the
    dense test's own)."""
    thr = cal.get("local_threshold")
    gen_dense = None
    if isinstance(gen, tuple):
        gen, gen_dense = gen
    out = {"n_queries": int(len(imp)), "false_match": float(np.mean(imp > thr)) if thr is not None else None,
           "miss": float(np.mean(gen <= thr)) if thr is not None else None,
           "genuine_inliers_median": float(np.median(gen)) if len(gen) else None,
           "mean_group_size": float(np.mean(sizes)) if sizes else None}
    dthr = cal.get("dense_threshold")
    if gen_dense is not None and thr is not None and dthr is not None:
        ok = np.isfinite(dense_imp)
        out.update({"dense_false_match": float(np.mean(dense_imp[ok] > dthr)),
                    "dense_miss": float(np.mean(gen_dense <= dthr)),
                    "miss_with_dense": float(np.mean((gen <= thr) | (gen_dense <= dthr))),
                    "genuine_dense_median": float(np.median(gen_dense)),
                    "impostor_dense_median": float(np.median(dense_imp[ok])) if ok.any() else None})
    cal["local_in_sample"] = out


def _check_rule(fmr: float, rule: str) -> str:
    """Refuse a false-match rate outside (0, 1) or an unknown decision rule."""
    if not (0.0 < fmr < 1.0):
        raise UsageError(f"--false-match-rate must be in (0, 1), got {fmr}")
    if rule not in DECISIONS:
        raise UsageError(f"unknown --decision {rule!r}; choose one of {', '.join(DECISIONS)}")
    return rule


def _thresholds(imp: dict[str, np.ndarray], fmr: float, rule: str) -> dict[str, Any]:
    """Each test's threshold from its impostor scores, at the stated rate shared equally between the rule's
    tests, its rate and the sorted scores the p-values are computed against."""
    tests = rule.split("+")
    out: dict[str, Any] = {"tests": tests,
                           "method": "split-conformal quantile of leave-one-out impostor scores (transformed "
                                     "references; own reference and its near-duplicates excluded)"}
    for t in tests:
        thr_key, sorted_key, rate_key = TESTS[t]
        out[thr_key], note = conformal_threshold(imp[t], fmr / len(tests))
        out[rate_key] = fmr / len(tests)
        out[sorted_key] = [round(float(x), 6) for x in np.sort(imp[t])]
        if note and t == "similarity":
            out["note"] = note
            out[rate_key] = attainable_rate(len(imp[t]))
        elif note:  # a second test that cannot be calibrated at its share of the rate is not used
            out[thr_key] = None
            out[rate_key] = 0.0
            out[f"{t}_note"] = note + f"; the {t} test is not used (more --calibration-refs or a larger library)"
    if len(tests) > 1:
        out["method"] += f"; found if any of {', '.join(tests)} passes at 1/{len(tests)} of the rate (Bonferroni)"
    _state_attained_rate(out, tests, fmr)
    return out


def attainable_rate(n: int) -> float:
    """The false-match bound of a threshold at the largest of ``n`` exchangeable impostor scores (``found``
    needs a score strictly above it): a new impostor is the strict maximum of n + 1 with probability ≤ 1/(n+1)."""
    return 1.0 / (n + 1)


def _state_attained_rate(out: dict[str, Any], tests: list[str], fmr: float) -> None:
    """``false_match_rate``: the rate the calibrated tests hold together (the Bonferroni sum of their own rates),
    which is above the requested ``fmr`` when too few impostor scores could reach it — a record never states a
    rate its threshold cannot hold. The request stays in ``false_match_rate_requested``."""
    attained = sum(out[TESTS[t][2]] for t in tests)
    out["false_match_rate_requested"] = fmr
    out["false_match_rate"] = fmr if attained <= fmr + 1e-12 else round(attained, 6)


def _passes(cal: dict[str, Any], scores: dict[str, float | None]) -> str | None:
    """The first test of the calibration's rule that the scores pass (None: none passes)."""
    if cal.get("threshold") is None:
        return None
    for t in cal.get("tests") or ["similarity"]:
        thr = cal.get(TESTS[t][0])
        if thr is not None and scores.get(t) is not None and scores[t] > thr and _dense_passes(cal, t, scores):
            return t
    return None


def _dense_passes(cal: dict[str, Any], test: str, scores: dict[str, float | None]) -> bool:
    """The dense half of the local test (True for any other test, or an index without dense verification)."""
    thr = cal.get("dense_threshold")
    if test != "local" or thr is None:
        return True
    return scores.get("dense") is not None and scores["dense"] > thr


def _in_sample_rates(index: OriginIndex, cal: dict[str, Any], imp: dict[str, np.ndarray], gen: list) -> None:
    """In-sample false-match (impostor) and miss (genuine) rates of the calibration, overall and per transform
    (the genuine side without the pixel verification, which is computed for impostors only; the local test,
    whose impostors are other queries, has its own: :func:`_local_in_sample`)."""
    names = [k for k in imp if k != "local"]
    fm = np.asarray([_passes(cal, dict(zip(names, row))) is not None for row in zip(*(imp[k] for k in names))])
    found = np.asarray([top and _passes(cal, {"similarity": s, "distinct": d}) is not None for top, s, d in gen])
    cal["impostor_false_match_in_sample"] = float(np.mean(fm))
    cal["miss_rate_in_sample"] = float(np.mean(~found))
    per = {}
    for t in sorted(set(index.calib_transform)):
        sel = np.asarray([x == t for x in index.calib_transform])
        if sel.any():
            per[t] = {"false_match": float(np.mean(fm[sel])), "miss": float(np.mean(~found[sel]))}
    cal["per_transform"] = per


def p_value(cal: dict[str, Any], score: float, key: str = "impostor_scores_sorted") -> float | None:
    """Conformal p-value of a score against the stored impostor scores: (1 + #{imp ≥ s}) / (n + 1)."""
    imp = cal.get(key)
    if not imp:
        return None
    a = np.asarray(imp)
    return float((1 + np.sum(a >= score)) / (len(a) + 1))


def _first_scores(t: int | None, s1: float | None, s2: float | None, local: dict[int, int] | None,
                  dense: dict[int, float] | None = None) -> dict[str, float | None]:
    """Every test's score that needs no file read: similarity, distinctiveness, the top's local inliers and
    dense score (None where not computed)."""
    return {"similarity": s1, "distinct": distinctiveness(s1, s2) if s1 is not None else None, "verify": None,
            "local": float(local.get(t, 0)) if local is not None and t is not None else None,
            "dense": dense.get(t) if dense is not None and t is not None else None}


def _p_values(cal: dict[str, Any], scores: dict[str, float | None]) -> dict[str, float | None]:
    """Each test's conformal p-value (None where its score was not computed); with dense verification the local
    test's is the larger of its inliers' and its dense score's (the p-value of an AND)."""
    pv = {name: p_value(cal, scores[name], TESTS[name][1]) if scores[name] is not None else None for name in TESTS}
    pv["dense"] = p_value(cal, scores["dense"], "impostor_dense_sorted") if scores["dense"] is not None else None
    if pv["local"] is not None and cal.get("dense_threshold") is not None:
        pv["local"] = max(pv["local"], 1.0 if pv["dense"] is None else pv["dense"])
    return pv


def decide(index: OriginIndex, hits, verifier=None, local: dict[int, int] | None = None,
           dense: dict[int, float] | None = None) -> dict[str, Any]:
    """The decision for one query's merged hits (best first): the top, the scores, p-values and ``found``.

    ``verifier(top reference) -> score or None`` computes the pixel verification (rule ``similarity+verify``;
    asked only when the similarity alone does not decide); ``local`` maps the references the local stage
    verified to their inliers (rule ``similarity+local``; None when the stage did not run) and ``dense`` those
    it checked densely to their scores (an index with dense verification: the local test then needs both;
    its p-value is the larger of the two). ``p_value`` is the conformal p-value of the
    similarity (rule ``similarity``) or the Bonferroni combination: the number of tests times the smallest
    of their p-values (capped at 1).
    """
    cal = index.calibration
    tests = cal.get("tests") or ["similarity"]
    t, s1, s2 = top_two(index, hits, cal.get("duplicate_level", DUPLICATE_LEVEL))
    scores = _first_scores(t, s1, s2, local, dense)
    passed = _passes(cal, scores)
    if passed is None and cal.get("verify_threshold") is not None and t is not None and verifier is not None:
        scores["verify"] = verifier(t)
        passed = _passes(cal, scores)
    pv = _p_values(cal, scores)
    known = [pv[name] for name in tests if pv[name] is not None]
    return {"top": t, "similarity": s1, "second_origin_similarity": s2, "distinctiveness": scores["distinct"] or 0.0,
            "verify": scores["verify"], "found": passed is not None, "passed": passed,
            "p_value": min(1.0, len(tests) * min(known)) if known else None,
            "p_value_similarity": pv["similarity"], "p_value_distinct": pv["distinct"] if "distinct" in tests else None,
            "p_value_verify": pv["verify"], "local": scores["local"], "p_value_local": pv["local"],
            "dense": scores["dense"], "p_value_dense": pv["dense"]}
