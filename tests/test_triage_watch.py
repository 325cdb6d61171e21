"""`fpx triage --watch`: files taken once their size is stable, idempotent by sha256, resumable, Ctrl-C safe;
the dashboard refreshes while watching. A short-lived watcher in a thread."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from test_triage import save, u8

from fingerprint_cli.triage import core, custody, watch


def wait_for(cond, timeout=90.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.1)
    return False


def records(path):
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_pending_waits_for_a_stable_size(tmp_path):
    p = tmp_path / "growing.png"
    p.write_bytes(b"\x89PNG")
    pend = watch._Pending()
    pend.add(str(p))
    pend.add(str(tmp_path / ".hidden.png"))
    pend.add(str(tmp_path / "download.png.part"))
    assert pend.ready(0.0) == []  # first look: remember size and mtime
    with open(p, "ab") as f:
        f.write(b"more bytes")  # still being written
    assert pend.ready(0.0) == []
    assert pend.ready(3600.0) == []  # stable, but not for long enough
    assert pend.ready(0.0) == [str(p)]
    assert pend.ready(0.0) == []  # taken once
    pend.add(str(tmp_path / "gone.png"))
    assert pend.ready(0.0) == [] and not pend.items  # deleted before it settled


@pytest.mark.parametrize("polling", [False, True])
def test_watch_processes_arrivals_idempotently_and_resumes(tmp_path, polling):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    save(u8(1), inbox / "already.png", "PNG")
    output, log, html = out / "t.jsonl", out / "t.custody.jsonl", out / "t.html"
    t = core.make([inbox], output=str(output), custody_log=str(log), report=str(html), refresh_seconds=5)
    stop = threading.Event()
    th = threading.Thread(target=watch.watch, args=(t, [inbox]),
                          kwargs=dict(settle=0.3, poll=0.1, stop=stop, polling_observer=polling), daemon=True)
    th.start()
    try:
        assert wait_for(lambda: len(records(output)) == 1)  # what was there at the start
        assert "http-equiv='refresh'" in html.read_text()  # the dashboard reloads itself while watching
        save(u8(2), tmp_path / "staging.jpg", "JPEG", quality=80)
        shutil.move(tmp_path / "staging.jpg", inbox / "new.jpg")  # arrives by a move
        (inbox / "sub").mkdir()
        save(u8(3), inbox / "sub" / "deep.png", "PNG")
        assert wait_for(lambda: len(records(output)) == 3)
        shutil.copy(inbox / "new.jpg", inbox / "same-bytes.jpg")  # same sha256, another name
        assert wait_for(lambda: len(records(output)) == 4)
    finally:
        stop.set()
        th.join(timeout=30)
    assert not th.is_alive()
    recs = {r["inputs"]["image"]["path"].split("/")[-1]: r for r in records(output)}
    assert set(recs) == {"already.png", "new.jpg", "deep.png", "same-bytes.jpg"}
    assert all(r["status"] == "ok" for r in recs.values())
    assert recs["same-bytes.jpg"]["details"]["duplicate_of"].endswith("new.jpg")  # not analysed again
    assert "http-equiv='refresh'" not in html.read_text()  # final write: a static page
    res = custody.verify_log(log)
    assert res.ok and res.entries == 4
    # a restarted watcher resumes: nothing already triaged is redone or re-logged
    t2 = core.make([inbox], output=str(output), custody_log=str(log), report=str(html))
    stop2 = threading.Event()
    made = []
    th2 = threading.Thread(target=lambda: made.append(watch.watch(t2, [inbox], settle=0.2, poll=0.1, stop=stop2,
                                                                  polling_observer=polling)), daemon=True)
    th2.start()
    time.sleep(1.5)
    stop2.set()
    th2.join(timeout=30)
    assert made == [0] and len(records(output)) == 4 and custody.verify_log(log).entries == 4


def test_ctrl_c_finishes_the_batch_and_writes(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for i in range(3):
        save(u8(10 + i), inbox / f"f{i}.png", "PNG")
    t = core.make([inbox], output=str(out / "t.jsonl"), custody_log=str(out / "c.jsonl"), report=str(out / "t.html"))

    def interrupt(_batch):
        raise KeyboardInterrupt

    made = watch.watch(t, [inbox], settle=0.0, poll=0.05, on_batch=interrupt)
    assert made == 3
    assert len(records(out / "t.jsonl")) == 3 and custody.verify_log(out / "c.jsonl").ok
    assert (out / "t.html").read_text().startswith("<!DOCTYPE html>")


def test_an_interrupted_batch_keeps_finished_chunks_and_a_rerun_resumes(tmp_path, monkeypatch):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for i in range(5):
        save(u8(20 + i), inbox / f"f{i}.png", "PNG")
    real = core.analyse

    def flaky(item):
        if item.path.endswith("f3.png"):
            raise KeyboardInterrupt  # Ctrl-C while the second chunk is being analysed
        return real(item)

    monkeypatch.setattr(core, "analyse", flaky)
    t = core.make([inbox], output=str(out / "t.jsonl"), custody_log=str(out / "c.jsonl"))
    with pytest.raises(KeyboardInterrupt):
        t.process_all(core.list_inbox([inbox]), chunk=2)
    assert [r["inputs"]["image"]["path"][-6:] for r in records(out / "t.jsonl")] == ["f0.png", "f1.png"]
    assert custody.verify_log(out / "c.jsonl").entries == 2
    monkeypatch.setattr(core, "analyse", real)
    recs = core.run([inbox], output=str(out / "t.jsonl"), custody_log=str(out / "c.jsonl"))
    assert len(recs) == 5 and len(records(out / "t.jsonl")) == 5
    res = custody.verify_log(out / "c.jsonl")
    assert res.ok and res.entries == 5  # nothing logged twice
