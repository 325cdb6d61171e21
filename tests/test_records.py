"""Records in every output format read back to what was written; plain rows (``fpx models``) likewise; atomic
writes leave the target whole or untouched."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from fingerprint_cli import atomic, records
from fingerprint_cli.errors import InputError, UsageError
from fingerprint_cli.records import FORMATS, Record, read_records, render, render_rows, resolve_format


def _records() -> list[Record]:
    ok = Record(command="score", inputs={"reference": {"path": "refs/a.png", "sha256": "a" * 64},
                                         "suspect": {"path": "sus/[bold]b.png", "sha256": "b" * 64}},
                features={"patch_mean": np.float32(0.25), "ssim_clean": 0.875, "survival": float("nan")},
                directions={"patch_mean": "higher = further from the reference"},
                decision={"label": "tight", "p_values": {"tight": 0.5, "drift": 0.0625}},
                reasons=[{"feature": "patch_mean", "z": -1.5}],
                provenance={"fpx_version": "0", "utc": "2026-01-01T00:00:00+00:00"},
                details={"views": [1, 2], "nested": {"k": "v"}})
    bad = Record.failure("score", {"reference": {"path": "refs/a.png", "sha256": "a" * 64},
                                   "suspect": {"path": "sus/c.png", "sha256": None}},
                         InputError("corrupt or truncated image", "sus/c.png"))
    return [ok, bad]


def _expected() -> list[dict]:
    """What the records must read back as: numpy scalars made Python, NaN made null."""
    d = [r.to_dict() for r in _records()]
    assert d[0]["features"] == {"patch_mean": 0.25, "ssim_clean": 0.875, "survival": None}
    assert type(d[0]["features"]["patch_mean"]) is float
    return d


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats_round_trip_through_a_file(fmt, tmp_path):
    text = render(_records(), fmt)
    f = tmp_path / f"r.{fmt}"
    f.write_text(text)
    back = read_records(f)
    assert [r.to_dict() for r in back] == _expected()
    assert [r.ok for r in back] == [True, False] and back[1].error["type"] == "input"
    assert back[0].content_key() == _records()[0].content_key()


def test_jsonl_reader_drops_only_a_cut_last_line(tmp_path):
    text = render(_records(), "jsonl")
    f = tmp_path / "r.jsonl"
    f.write_text(text + text.splitlines()[0][:40])  # an interrupted run's half-written line
    assert [r.to_dict() for r in read_records(f)] == _expected()
    f.write_text("")
    assert read_records(f) == []


def test_csv_holds_every_flattened_value(tmp_path):
    rows = list(csv.DictReader(io.StringIO(render(_records(), "csv"))))
    assert len(rows) == 2
    exp = _expected()
    for row, d in zip(rows, exp):
        flat = records.flatten({k: v for k, v in d.items() if k not in ("directions", "provenance")})
        assert set(row) >= set(flat)  # the union of both records' columns
        for k, v in flat.items():
            assert row[k] == ("" if v is None else str(v)), k
        assert not any(c.startswith(("directions.", "provenance.")) for c in row)
    assert json.loads(rows[0]["details.views"]) == [1, 2]
    assert rows[1]["error.message"] == "sus/c.png: corrupt or truncated image" and rows[1]["details.views"] == ""


def test_table_names_files_status_and_escapes_markup():
    text = render(_records(), "table")
    assert "[bold]b.png" in text  # shown literally, not read as rich markup
    assert "c.png" in text and "error: sus/c.png: corrupt" in text
    assert "0.25" in text and "0.875" in text  # the feature columns, by default every features.* key
    assert "patch_mean" in text and "ssim_clean" in text
    assert "0.875" not in render(_records(), "table", table_columns=["features.patch_mean"])


def test_unknown_format_refused():
    with pytest.raises(ValueError, match="unknown format"):
        render(_records(), "xml")
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        resolve_format("xml")
    assert resolve_format("csv") == "csv"
    assert resolve_format(None) == "jsonl"  # stdout is not a terminal under pytest


ROWS = [{"name": "a", "installed": True, "verified": None, "path": "/x/[red]a"},
        {"name": "b", "installed": False, "verified": False, "path": None}]


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "table"])
def test_rows_round_trip(fmt):
    text = render_rows(ROWS, fmt, ["name", "installed"])
    if fmt == "json":
        assert json.loads(text) == ROWS
    elif fmt == "jsonl":
        assert [json.loads(x) for x in text.splitlines()] == ROWS
    else:
        back = list(csv.DictReader(io.StringIO(text)))
        assert back == [{k: "" if v is None else str(v) for k, v in r.items()} for r in ROWS]


def test_rows_table_and_empty_csv():
    text = render_rows(ROWS, "table", ["name", "verified", "path"])
    assert "[red]a" in text and "-" in text  # None shown as "-", markup escaped
    assert "installed" not in text  # only the columns asked for
    assert render_rows([], "csv", ["name", "installed"]) == "name,installed\n"


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_whole_or_leaves_the_target(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the sec")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind
    atomic.write_text(target, "second")
    assert target.read_text() == "second"


def test_check_outputs_refuses_every_clash(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    img = src / "a.png"
    img.write_bytes(b"x")
    link = tmp_path / "link.png"
    link.symlink_to(img)
    for files, folders, needle in [
        ({"-o": img}, None, "refusing to write over the input"),
        ({"-o": link}, None, "refusing to write over the input"),  # the same file through a link
        ({"-o": src}, None, "is a folder"),
        ({"-o": src / "new.png"}, None, "inside the input folder"),
        ({"-o": tmp_path / "x.json", "--records": tmp_path / "x.json"}, None, "name the same file"),
        ({}, {"--out-dir": src}, "is an input folder"),
    ]:
        with pytest.raises(UsageError, match=needle):
            atomic.check_outputs(files, [str(img), str(src)], folders=folders)
    # a records file beside the images is fine (not image-like), and so is a fresh folder elsewhere
    atomic.check_outputs({"-o": src / "r.jsonl"}, [str(img), str(src)], folders={"--out-dir": tmp_path / "new"})
    assert (tmp_path / "new").is_dir()


# ---------------------------------------------------------------- the record sink: journal and --resume
def _item(tmp_path, name: str, content: bytes) -> Record:
    from fingerprint_cli import images

    p = tmp_path / name
    p.write_bytes(content)
    return Record(command="score", inputs={"suspect": {"path": str(p), "sha256": images.sha256_file(p)}},
                  features={"x": 1.0})


def test_an_interrupted_run_resumes_from_its_journal_by_content(tmp_path):
    from fingerprint_cli.batch import RecordSink
    from fingerprint_cli.records import input_key

    out = tmp_path / "out.jsonl"
    a, b, c = (_item(tmp_path, f"{n}.bin", n.encode()) for n in "abc")
    sink = RecordSink(str(out), None, inputs=[])
    sink.add(a)
    sink.add(b)  # ... and the run dies here: no close()
    journal = tmp_path / "out.jsonl.partial"
    assert not out.exists() and len(journal.read_text().splitlines()) == 2
    with open(journal, "a") as f:
        f.write('{"schema_version": 1, "command": "sc')  # the line being written when it died
    (tmp_path / "b.bin").write_bytes(b"b, replaced since")  # a changed input is done again

    again = RecordSink(str(out), None, resume=True, inputs=[], command="score")
    assert [r.inputs["suspect"]["path"] for r in again.kept] == [a.inputs["suspect"]["path"],
                                                                 b.inputs["suspect"]["path"]]
    key = {n: input_key("score", suspect=str(tmp_path / f"{n}.bin")) for n in "abc"}
    assert key["a"] in again.done and key["b"] not in again.done and key["c"] not in again.done
    again.add(c)
    again.close()
    assert not journal.exists()
    assert [r.inputs["suspect"]["path"] for r in read_records(out)] == [str(tmp_path / f"{n}.bin") for n in "abc"]


def test_resume_refuses_another_commands_output_and_unreadable_files(tmp_path):
    from fingerprint_cli.batch import RecordSink

    out = tmp_path / "out.jsonl"
    out.write_text(render([Record(command="detect", inputs={"image": {"path": "x", "sha256": None}})], "jsonl"))
    with pytest.raises(UsageError, match="detect records, not score"):
        RecordSink(str(out), None, resume=True, inputs=[], command="score")
    out.write_text("not records\n")
    with pytest.raises(UsageError, match="cannot read it back"):
        RecordSink(str(out), None, resume=True, inputs=[], command="score")
    assert out.read_text() == "not records\n"  # refused, untouched
    with pytest.raises(UsageError, match="--resume needs --output"):
        RecordSink(None, None, resume=True)
