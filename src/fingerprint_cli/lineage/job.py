"""The ``fpx lineage`` job (:func:`fingerprint_cli.api.lineage`): check every input against every output, run
:func:`~fingerprint_cli.lineage.analysis.run` with a progress bar, then write the records (or, for a table on
stdout, the matrix) and the picture."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from fingerprint_cli import atomic, batch
from fingerprint_cli.lineage.analysis import run
from fingerprint_cli.lineage.report import matrix_text, plot as plot_lineage, to_records


def run_inputs(paths: Sequence[str], images: Sequence[str], real: Sequence[str]) -> list[str]:
    """Everything a lineage run reads: the fingerprints, the images their metadata records (held-out test splits)
    and the ``--images`` / ``--real`` folders (``NAME=DIR`` values name their folder after the ``=``)."""
    folders = [v.split("=", 1)[1] if "=" in v and not Path(v).is_dir() else v for v in list(images) + list(real)]
    return batch.run_inputs([], folders, list(paths))


def lineage_job(fingerprints: Sequence[Any], *, images: Sequence[str] = (), real: Sequence[str] = (),
                threshold: float = 0.5, max_shift: int = 2, metric: str = "grid", period: int = 16,
                equalise: str = "none", control: str = "none", plot: Any = None, output: Any = None, fmt: str | None = None,
                device: str = "auto", quiet: bool = False, stdout: bool = False):
    """Cross-detection matrix, relatedness and families of ``fingerprints`` (artifact paths): the records (one per
    ordered pair, then the summary) as :class:`~fingerprint_cli.batch.Results`, written to ``output``; with
    ``stdout`` and a table format, the matrix text is printed instead of the records. ``plot``: a heatmap +
    dendrogram PNG. The analysis' warnings go to stderr unless ``quiet``."""
    paths = [str(p) for p in fingerprints]
    images, real = [str(v) for v in images], [str(v) for v in real]
    inputs = run_inputs(paths, images, real)
    atomic.check_outputs({"--plot": plot, "--output": output}, inputs)
    sink = batch.open_sink(output, fmt, False, stdout, None, inputs, "lineage")
    try:
        with batch.progress_bar(len(paths), "lineage", quiet) as advance:
            res, prov = run(paths, images=images, real_dir=real or None, threshold=threshold, max_shift=max_shift,
                            metric=metric, period=period, device=device, equalise=equalise,
                            control=control,
                            on_progress=lambda n=1, **kw: advance(n, **kw))
        records = to_records(res, prov)
        if plot is not None:
            plot_lineage(res, str(plot), inputs=inputs)
    except BaseException:
        sink.abandon()
        raise
    for w in res.warnings:
        batch.warn(w, quiet)
    if getattr(sink, "fmt", None) == "table" and getattr(sink, "output", None) is None:
        sys.stdout.write(matrix_text(res))
        sys.stdout.flush()
    else:
        for r in records:
            sink.add(r)
        sink.close()
    return batch.Results(records, items=len(records), batch=True)
