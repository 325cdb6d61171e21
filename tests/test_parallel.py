"""The shared parallel map: same ordered results on every backend, per-item failures kept, not raised."""

from __future__ import annotations

import pytest

from fingerprint_cli import parallel
from fingerprint_cli.errors import UsageError


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x * x


@pytest.mark.parametrize("jobs,scheduler,kind", [(1, None, "serial"), (2, None, "joblib"),
                                                 (2, "local", "dask-local")])
def test_every_backend_gives_input_order_and_keeps_failures(jobs, scheduler, kind):
    assert parallel.backend(jobs, scheduler) == kind
    seen = []
    outs = parallel.pmap(square_or_fail, list(range(7)), jobs=jobs, scheduler=scheduler, progress=seen.append)
    assert [o.value for o in outs if o.ok] == [0, 1, 4, 16, 25, 36]
    assert [i for i, o in enumerate(outs) if not o.ok] == [3]
    assert isinstance(outs[3].error, ValueError) and "three is bad" in str(outs[3].error)
    assert "square_or_fail" in outs[3].trace
    assert sorted(seen) == list(range(1, 8))


def test_imap_yields_every_index_once():
    got = dict(parallel.imap(square_or_fail, [5, 6], jobs=2))
    assert set(got) == {0, 1} and got[1].value == 36


def test_jobs_below_one_is_a_usage_error():
    with pytest.raises(UsageError):
        parallel.pmap(square_or_fail, [1], jobs=0)


def test_threads_limited_sets_and_restores_even_on_error():
    state = {"n": 4}
    with parallel.threads_limited(lambda: state["n"], lambda n: state.__setitem__("n", n)):
        assert state["n"] == 1
    assert state["n"] == 4
    with pytest.raises(RuntimeError):
        with parallel.threads_limited(lambda: state["n"], lambda n: state.__setitem__("n", n), n=2):
            assert state["n"] == 2
            raise RuntimeError("boom")
    assert state["n"] == 4
