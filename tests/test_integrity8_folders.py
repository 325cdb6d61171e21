"""Integrity 8 (review-8 finding L6): ``fpx detect`` and ``fpx origin index`` say once what a folder holds that
they do not read (an image without a suffix, a ``.heic``, hidden files, subfolders), as score / attribute do;
``--quiet`` silences it."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from conftest import natural_image
from test_api import _dif_corpus
from test_review8_folders import _folder
from fingerprint_cli import api, images
from fingerprint_cli.cli.app import app


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _left_out_lines(stderr: str, folder) -> list[str]:
    return [ln for ln in stderr.splitlines() if str(folder) in ln and "not read" in ln]


def test_detect_on_a_mixed_folder_says_what_it_did_not_read(tmp_path):
    d = _dif_corpus(tmp_path)
    fp_file = tmp_path / "gen.fpx.safetensors"
    api.extract(d["gen"], d["real"], fp_file, name="gen", method="average", crop=32, denoiser="gaussian",
                test_fraction=0.25, quiet=True)
    mix = _folder(tmp_path)
    res = _invoke("detect", fp_file, mix, "-f", "jsonl", "--no-cache")
    assert res.exit_code == 0, res.output
    assert len([json.loads(x) for x in res.stdout.splitlines()]) == 2
    [line] = _left_out_lines(res.stderr, mix)
    assert "4 entries not read" in line and "IMG_0001" in line and "day2/" in line
    res = _invoke("detect", fp_file, mix, "-f", "jsonl", "--no-cache", "-q")
    assert res.exit_code == 0 and not _left_out_lines(res.stderr, mix)


def _refs(tmp_path, seed: int):
    """A folder of twelve reference photos (``natural_image`` of seeds ``seed`` ...)."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(natural_image(96, 128, seed=seed + i).astype(np.float32), refs / f"r{i:02d}.png")
    return refs


def _small_index(tmp_path, seed: int):
    """(the reference folder of :func:`_refs`, its global-only index built by the CLI)."""
    refs = _refs(tmp_path, seed)
    idx = tmp_path / "a.fpxindex"
    assert _invoke("origin", "index", refs, "-o", idx, "--dim", "12", "--no-local", "-q").exit_code == 0
    return refs, idx


def test_origin_index_on_a_mixed_folder_says_what_it_did_not_read(tmp_path):
    refs = _refs(tmp_path, 600)
    (refs / "IMG_0001").write_bytes(images.encode(natural_image(96, 128, seed=700), "JPEG", quality=90))
    (refs / "sub").mkdir()
    images.save_png(natural_image(96, 128, seed=800).astype(np.float32), refs / "sub" / "s.png")  # searched into
    res = _invoke("origin", "index", refs, "-o", tmp_path / "a.fpxindex", "--dim", "12", "--no-local")
    assert res.exit_code == 0, res.output
    [line] = _left_out_lines(res.stderr, refs)
    assert "1 entry not read" in line and "IMG_0001" in line and "sub" not in line
    assert "13 references" in res.stderr, res.stderr  # 12 + the one in sub/
    res = _invoke("origin", "index", refs, "-o", tmp_path / "b.fpxindex", "--dim", "12", "--no-local", "-q")
    assert res.exit_code == 0 and not _left_out_lines(res.stderr, refs)


def test_origin_query_on_a_mixed_folder_says_what_it_did_not_read(tmp_path):
    _, idx = _small_index(tmp_path, 900)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    images.save_png(natural_image(96, 128, seed=903).astype(np.float32), inbox / "q.png")
    (inbox / "IMG_0002").write_bytes(images.encode(natural_image(96, 128, seed=950), "JPEG", quality=90))
    res = _invoke("origin", "query", inbox, "--index", idx, "-f", "jsonl")
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 1
    [line] = _left_out_lines(res.stderr, inbox)
    assert "1 entry not read" in line and "IMG_0002" in line
    res = _invoke("origin", "query", inbox, "--index", idx, "-f", "jsonl", "-q")
    assert res.exit_code == 0 and not _left_out_lines(res.stderr, inbox)


def test_not_in_library_says_absence_is_not_proven_and_found_does_not(tmp_path):
    from fingerprint_cli.origin import library

    refs, idx = _small_index(tmp_path, 1000)
    absent = tmp_path / "absent.png"
    noise = np.random.default_rng(5).random((96, 128, 3)).astype(np.float32)  # nothing like any reference
    images.save_png(noise, absent)
    decs = [r.decision for r in library.query([str(refs / "r03.png"), str(absent)], str(idx))]
    found = [d for d in decs if d["label"] == "found"]
    missed = [d for d in decs if d["label"] == "not-in-library"]
    assert found and "note" not in found[0]
    assert missed and missed[0]["note"] == library.NOT_FOUND_NOTE and "not evidence" in missed[0]["note"]
