"""The one parallel map every batch command uses: in-process, joblib processes, or dask.distributed.

``pmap(fn, items, jobs=..., scheduler=...)`` applies ``fn`` to every item and returns one :class:`Outcome`
per item **in input order** (the merge is deterministic whatever order the workers finish in). A failing
item never aborts the batch: its exception is caught where it ran and returned as ``Outcome.error``.
``imap`` is the same but yields ``(index, Outcome)`` as items finish, for record sinks that write (and
resume) as they go.

Backends, chosen by the arguments:

* ``scheduler=None, jobs=1`` — a plain loop in this process (the default; easiest to debug).
* ``scheduler=None, jobs=N>1`` — joblib's process pool (loky), ``N`` workers.
* ``scheduler="local"`` — a dask.distributed ``LocalCluster`` of ``jobs`` worker processes started for the
  call and closed after it.
* ``scheduler="tcp://host:8786"`` (any address) — an existing dask.distributed scheduler; the cluster is
  the lab's, fpx only connects and submits.

``fn`` and the items must be picklable for the two process backends (a top-level function, plain data).
"""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from fingerprint_cli.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome:
    """What happened to one item: its ``value``, or the ``error`` it raised (with a short traceback)."""

    value: Any = None
    error: BaseException | None = None
    trace: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _guarded(fn: Callable[[T], R], item: T) -> Outcome:
    try:
        return Outcome(value=fn(item))
    except Exception as exc:  # noqa: BLE001 - a per-item failure becomes that item's outcome
        return Outcome(error=exc, trace=traceback.format_exc(limit=5))


def backend(jobs: int = 1, scheduler: str | None = None) -> str:
    """The backend name ``pmap`` uses for these arguments (``serial``, ``joblib``, ``dask-local``, ``dask``)."""
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    if scheduler:
        return "dask-local" if scheduler == "local" else "dask"
    return "serial" if jobs == 1 else "joblib"


def imap(fn: Callable[[T], R], items: Sequence[T], *, jobs: int = 1, scheduler: str | None = None,
         progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Outcome]]:
    """Yield ``(index, Outcome)`` for every item as it finishes; ``progress(n_done)`` after each."""
    items = list(items)
    kind = backend(jobs, scheduler)
    done = 0
    if kind == "serial" or (kind == "joblib" and len(items) <= 1):
        for i, it in enumerate(items):
            out = _guarded(fn, it)
            done += 1
            if progress:
                progress(done)
            yield i, out
        return
    if kind == "joblib":
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=jobs, return_as="generator_unordered", backend="loky")
        for i, out in par(delayed(_indexed)(fn, i, it) for i, it in enumerate(items)):
            done += 1
            if progress:
                progress(done)
            yield i, out
        return
    yield from _dask(fn, items, jobs, scheduler, progress)


def _indexed(fn: Callable[[T], R], i: int, item: T) -> tuple[int, Outcome]:
    return i, _guarded(fn, item)


def _dask(fn, items, jobs, scheduler, progress) -> Iterator[tuple[int, Outcome]]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise UsageError("--scheduler needs dask.distributed (pip install 'dask[distributed]')") from exc
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="10s")
    try:
        futures = [client.submit(_indexed, fn, i, it, pure=False) for i, it in enumerate(items)]
        done = 0
        for fut in as_completed(futures):
            i, out = fut.result()
            done += 1
            if progress:
                progress(done)
            yield i, out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def pmap(fn: Callable[[T], R], items: Sequence[T], *, jobs: int = 1, scheduler: str | None = None,
         progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """One :class:`Outcome` per item, in input order (see the module docstring for the backends)."""
    items = list(items)
    outs: list[Outcome | None] = [None] * len(items)
    for i, out in imap(fn, items, jobs=jobs, scheduler=scheduler, progress=progress):
        outs[i] = out
    return outs  # type: ignore[return-value]


@contextmanager
def threads_limited(get: Callable[[], int], set_: Callable[[int], None], n: int = 1) -> Iterator[None]:
    """A library's thread count (``get`` / ``set_``: e.g. ``torch.get_num_threads`` / ``torch.set_num_threads``,
    faiss' ``omp_get_max_threads`` / ``omp_set_num_threads``) held at ``n`` for the duration and restored after,
    even on an error: for small per-item work where starting threads costs more than it brings — fpx parallelises
    over items instead (``--jobs``)."""
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)
