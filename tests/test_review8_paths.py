"""Review 8: a file name that is not valid UTF-8 (``b'caf\\xe9.png'``) in every command's records.

Python spells such a name with a lone surrogate (U+DCE9); written as-is a record held an unpaired ``\\udce9``
escape (invalid for strict JSON readers such as jq or serde) or broke the UTF-8 writer (CSV, HTML reports). The
representation now: the path as text with each undecodable byte escaped as ``\\xNN``, plus ``path_bytes`` (hex of
the exact bytes) on the input entry, from which a record read back gets its path back (``--resume`` works).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.cli.app import app
from fingerprint_cli.records import Record, json_text, read_records

BAD = os.fsdecode(b"caf\xe9.png")  # what os.listdir returns for the name
SHOWN = "caf\\xe9.png"  # how records spell it


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def strict_json_lines(path: Path) -> list[dict]:
    """Parse a JSON / JSONL file as a strict reader does: the bytes must decode as UTF-8 and no string may hold an
    unpaired surrogate (jq, serde_json and UTF-8 encoders refuse them; Python's json.loads alone accepts them)."""
    text = path.read_bytes().decode("utf-8")  # strict
    try:
        whole = json.loads(text)
        docs = whole if isinstance(whole, list) else [whole]
    except json.JSONDecodeError:  # JSON lines
        docs = [json.loads(ln) for ln in text.splitlines() if ln]
    for d in docs:
        for s in _strings(d):
            s.encode("utf-8")  # raises on a lone surrogate
    return docs


def _bad_entries(docs: list[dict]) -> list[dict]:
    """The input entries (of any role) that name the non-UTF-8 file."""
    return [v for d in docs for v in d["inputs"].values() if isinstance(v, dict) and SHOWN in str(v.get("path"))]


@pytest.fixture
def inbox(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    images.save_png(natural_image(48, 48, seed=1), d / "ref.png")
    images.save_png(np.clip(natural_image(48, 48, seed=1) * 0.9, 0, 1), d / BAD)
    assert (d / BAD).exists() and os.fsencode(d / BAD).endswith(b"caf\xe9.png")
    out = tmp_path / "out"
    out.mkdir()
    return d, out


def test_json_text_escapes_only_lone_surrogates():
    assert json_text("caf\udce9.png") == "caf\\xe9.png"
    assert json_text("x\ud800y") == "x\\ud800y"  # a surrogate no byte maps to
    assert json_text("café ☕ [x].png") == "café ☕ [x].png"  # valid text is never touched


def test_record_round_trip_keeps_the_bytes(tmp_path):
    rec = Record("score", {"suspect": {"path": f"in/{BAD}", "sha256": "0" * 64}, "reference": {"path": "r.png"}},
                 status="error", error={"type": "input", "message": f"in/{BAD}: truncated"})
    d = rec.to_dict()
    assert d["inputs"]["suspect"]["path"] == f"in/{SHOWN}"
    assert bytes.fromhex(d["inputs"]["suspect"]["path_bytes"]) == b"in/caf\xe9.png"
    assert "path_bytes" not in d["inputs"]["reference"]  # only where the path is not valid UTF-8
    assert d["error"]["message"] == f"in/{SHOWN}: truncated"
    back = Record.from_dict(json.loads(json.dumps(d)))
    assert back.inputs["suspect"]["path"] == f"in/{BAD}" and back.content_key() == rec.content_key()
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(d) + "\n", encoding="utf-8")
    assert read_records(p)[0].inputs["suspect"]["path"] == f"in/{BAD}"


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_score_outputs_are_strict_utf8_and_resume_works(inbox, fmt):
    d, out = inbox
    o = out / f"s.{fmt}"
    res = run("score", d / "ref.png", d / BAD, "--encoder", "none", "-o", o, "-q")
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        text = o.read_bytes().decode("utf-8")
        assert SHOWN in text and b"caf\xe9".hex() in text
        return
    [entry] = _bad_entries(strict_json_lines(o))
    assert bytes.fromhex(entry["path_bytes"]).endswith(b"caf\xe9.png")
    res = run("score", d / "ref.png", d / BAD, "--encoder", "none", "-o", o, "--resume")
    assert res.exit_code == 0 and "1 pair(s) already in" in res.stderr, res.output
    assert len(strict_json_lines(o)) == 1


def test_score_stdout_table_and_csv(inbox):
    d, _ = inbox
    for fmt in ("csv", "table", "jsonl"):
        res = run("score", d / "ref.png", d / BAD, "--encoder", "none", "-f", fmt)
        assert res.exit_code == 0 and "\udce9" not in res.stdout, (fmt, res.output)
        res.stdout.encode("utf-8")
        shown = json.loads(res.stdout)["inputs"]["suspect"]["path"] if fmt == "jsonl" else res.stdout
        assert SHOWN in shown, (fmt, res.output)


def test_attribute_perturb_detect_triage(inbox, tmp_path):
    from fingerprint_cli.dif.fingerprint import Fingerprint
    from fingerprint_cli.dif.residuals import get_denoiser
    import torch

    d, out = inbox
    res = run("attribute", d / "ref.png", d / BAD, "-o", out / "a.jsonl", "-q")
    assert res.exit_code == 0, res.output
    assert _bad_entries(strict_json_lines(out / "a.jsonl"))
    res = run("perturb", d / BAD, "-o", out / "p.png", "--key", "k", "-f", "jsonl")
    assert res.exit_code == 0, res.output
    (out / "p.jsonl").write_text(res.stdout, encoding="utf-8")
    assert _bad_entries(strict_json_lines(out / "p.jsonl"))
    den = get_denoiser("gaussian")
    fp = Fingerprint("toy", "dif", torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0)),
                     {"denoiser": {"id": den.id, "sha256": den.sha256}, "crop": 32, "mu_real": 0.0,
                      "mu_gen": 0.05, "sigma_real": 0.01, "sigma_gen": 0.01, "threshold": 0.025, "tolerance": 0,
                      "search": "crossfit"})
    fp.save(tmp_path / "toy.fpx.safetensors")
    res = run("detect", tmp_path / "toy.fpx.safetensors", d, "--no-cache", "-o", out / "d.jsonl")
    assert res.exit_code == 0, res.output
    assert _bad_entries(strict_json_lines(out / "d.jsonl"))
    res = run("triage", d, "-o", out / "t.jsonl", "--report", out / "t.html", "-q")
    assert res.exit_code == 0, res.output
    assert _bad_entries(strict_json_lines(out / "t.jsonl"))
    strict_json_lines(out / "t.custody.jsonl")
    assert SHOWN in (out / "t.html").read_bytes().decode("utf-8")


def test_origin_index_and_query(inbox):
    d, out = inbox
    for i in range(4):
        images.save_png(natural_image(64, 80, seed=20 + i), d / f"r{i}.png")
    res = run("origin", "index", d, "-o", out / "lib.fpxindex", "--records", out / "ix.jsonl", "-q")
    assert res.exit_code == 0, res.output
    assert _bad_entries(strict_json_lines(out / "ix.jsonl"))
    res = run("origin", "query", d / BAD, "--index", out / "lib.fpxindex", "-o", out / "q.jsonl", "-q")
    assert res.exit_code == 0, res.output
    docs = strict_json_lines(out / "q.jsonl")
    assert _bad_entries(docs) and any(SHOWN in s for s in _strings(docs[0]["details"]))  # candidates escaped too


def test_dif_extract_and_lineage_records(tmp_path):
    from conftest import write_two_generator_corpus

    dirs = write_two_generator_corpus(tmp_path, 32)
    os.rename(dirs["gen"] / "g00.png", dirs["gen"] / BAD)
    fps = []
    for name in ("gen", "gen2"):
        fps.append(tmp_path / f"{name}.fpx.safetensors")
        res = run("dif-extract", "--generated", dirs[name], "--real", dirs["real"], "-o", fps[-1], "--name", name,
                  "--method", "average", "--crop", "32", "--denoiser", "gaussian", "-f", "jsonl", "-q")
        assert res.exit_code == 0, res.output
        (tmp_path / f"{name}.jsonl").write_text(res.stdout, encoding="utf-8")
        strict_json_lines(tmp_path / f"{name}.jsonl")
    res = run("lineage", *fps, "--metric", "auc", "-o", tmp_path / "l.jsonl", "-q")
    assert res.exit_code == 0, res.output
    strict_json_lines(tmp_path / "l.jsonl")


def test_perturb_sidecar_is_strict_json(inbox):
    d, out = inbox
    res = run("perturb", d / BAD, "-o", out / "p.png", "--key", "k", "-f", "jsonl")
    assert res.exit_code == 0, res.output
    strict_json_lines(out / "p.png.json")
