"""Review 8: a folder of suspects is read by file name (image suffixes, not hidden, not searched into
subfolders); what a run leaves out of a folder is said on stderr instead of silently (an analyst handing fpx a
folder must know that ``IMG_0001`` without a suffix, ``photo.heic`` or ``day2/`` were not looked at)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from conftest import natural_image
from fingerprint_cli import images
from fingerprint_cli.batch import expand_paths
from fingerprint_cli.cli.app import app


def _folder(tmp_path):
    d = tmp_path / "mix"
    (d / "day2").mkdir(parents=True)
    images.save_png(natural_image(40, 40, seed=1), tmp_path / "ref.png")
    u8 = images.to_uint8(np.clip(natural_image(40, 40, seed=1) * 0.9, 0, 1))
    (d / "a.png").write_bytes(images.encode(u8, "PNG"))
    (d / "B.JPG").write_bytes(images.encode(u8, "JPEG", quality=90))
    (d / "IMG_0001").write_bytes(images.encode(u8, "JPEG", quality=90))  # an image without a suffix
    (d / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic")
    (d / ".hidden.png").write_bytes(images.encode(u8, "PNG"))
    (d / "day2" / "c.png").write_bytes(images.encode(u8, "PNG"))
    return d


def test_expand_paths_warns_about_what_it_leaves_out(tmp_path, capsys):
    d = _folder(tmp_path)
    assert expand_paths([str(d)]) == expand_paths([str(d)], quiet=False)  # the API default is quiet
    got = expand_paths([str(d)])
    assert [p.rsplit("/", 1)[-1] for p in got] == ["B.JPG", "a.png"]
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if str(d) in ln]
    assert "4 entries not read" in line
    for name in ("IMG_0001", "photo.heic", ".hidden.png", "day2/"):
        assert name in line, line
    assert expand_paths([str(d)], recursive=True, quiet=False)  # recursive: the subfolder is searched, not listed as left out
    err = capsys.readouterr().err
    assert "day2" not in err and "3 entries not read" in err


def test_a_folder_of_images_only_says_nothing(tmp_path, capsys):
    d = tmp_path / "clean"
    d.mkdir()
    images.save_png(natural_image(40, 40, seed=1), d / "a.png")
    assert len(expand_paths([str(d)], quiet=False)) == 1
    assert capsys.readouterr().err == ""


def test_score_on_a_mixed_folder_says_what_it_did_not_read(tmp_path):
    d = _folder(tmp_path)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "ref.png"), str(d), "--encoder", "none", "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    assert len([json.loads(x) for x in res.stdout.splitlines()]) == 2
    assert "IMG_0001" in res.stderr and "not read" in res.stderr
    res = CliRunner().invoke(app, ["score", str(tmp_path / "ref.png"), str(d), "--encoder", "none", "-f", "jsonl",
                                   "-q"])
    assert res.exit_code == 0 and "not read" not in res.stderr  # --quiet silences it
