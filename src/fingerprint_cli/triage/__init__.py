"""``fpx triage``: one record per incoming image — custody, provenance metadata, every fpx evidence, a verdict
with its reasons, one dashboard.

Python API::

    from fingerprint_cli import triage
    records = triage.run(["inbox/"], fingerprints=["fps/"], output="triage.jsonl",
                         custody_log="custody.jsonl", report="triage.html")
    triage.verify_log("custody.jsonl").ok
    result = triage.run_job(["inbox/"], output="triage.jsonl")   # what `fpx triage` runs: JobResult

Modules: :mod:`.custody` (hashes, format by content, the hash-chained custody log), :mod:`.provenance`
(C2PA, XMP, EXIF, PNG generation chunks, JPEG quantisation), :mod:`.evidence` (fingerprints, origin,
attribution), :mod:`.verdict` (ranking and the verdict), :mod:`.core` (per-file work and the batch),
:mod:`.dashboard` (HTML), :mod:`.watch` (watch folders), :mod:`.job` (one ``fpx triage`` invocation: the CLI's
one call).
"""

from fingerprint_cli.triage.core import Item, Settings, Triage, analyse, list_inbox, make, run
from fingerprint_cli.triage.custody import CustodyLog, sniff, verify_log
from fingerprint_cli.triage.job import JobResult, run_job

__all__ = ["run", "make", "analyse", "list_inbox", "Triage", "Item", "Settings", "CustodyLog", "verify_log",
           "sniff", "run_job", "JobResult"]
