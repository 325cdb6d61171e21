"""Shared fixtures: an isolated FPX_HOME, offline mode, and a small random DINOv2-architecture model
installed through the same `fpx models import --force` path users take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "fpx-home"
    monkeypatch.setenv("FPX_HOME", str(home))
    monkeypatch.setenv("FPX_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    from fingerprint_cli.anchored.encoders import make_random_dinov2

    path = tmp_path_factory.mktemp("model") / "tiny-dinov2.safetensors"
    make_random_dinov2(path, embed_dim=64, depth=2, seed=0)
    return path


@pytest.fixture(scope="session")
def _model_home(tmp_path_factory, tiny_model_file) -> Path:
    """A FPX_HOME with the tiny model imported via the CLI (`fpx models import --force`)."""
    from typer.testing import CliRunner

    from fingerprint_cli import artifacts
    from fingerprint_cli.cli.app import app

    home = tmp_path_factory.mktemp("fpx-home-model")
    with artifacts.using_home(home):
        res = CliRunner().invoke(app, ["models", "import", str(tiny_model_file), "--name", "dinov2-vitb14",
                                       "--force"])
        assert res.exit_code == 0, res.output
    return home


@pytest.fixture
def model_home(_model_home, monkeypatch) -> Path:
    """Use the FPX_HOME that holds the imported tiny model for this test."""
    monkeypatch.setenv("FPX_HOME", str(_model_home))
    return _model_home


def natural_image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'photo' (gradients, blobs, an edge, mild texture), float RGB in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 0.3 + 0.4 * (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1)) / 2
        for _ in range(4):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            img[..., c] += rng.uniform(-0.3, 0.3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img[:, w // 2:, :] += 0.15
    img += 0.02 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def planted(kind: int, side: int) -> np.ndarray:
    """A small periodic generator trace (side × side × 3, amplitude 0.03): kind 0 or 1, two different patterns."""
    yy, xx = np.mgrid[0:side, 0:side]
    if kind == 0:
        p = np.sin(2 * np.pi * xx / 4) * np.cos(2 * np.pi * yy / 8)
        w = np.array([1.0, -0.5, 0.7])
    else:
        p = np.cos(2 * np.pi * (xx + yy) / 6)
        w = np.array([-0.6, 1.0, 0.4])
    return (p[..., None] * w * 0.03).astype(np.float32)


def write_two_generator_corpus(root: Path, side: int, extra: tuple[str, ...] = ()) -> dict[str, Path]:
    """Folders ``gen`` and ``gen2`` (16 images each carrying trace :func:`planted` 0 resp. 1) and ``real`` (16 clean
    images), side × side PNGs under ``root``; plus empty folders named in ``extra``. Returns name → folder."""
    from fingerprint_cli import images

    dirs = {k: root / k for k in ("gen", "gen2", "real", *extra)}
    for d in dirs.values():
        d.mkdir()
    for i in range(16):
        images.save_png(np.clip(natural_image(side, side, seed=i) + planted(0, side), 0, 1), dirs["gen"] / f"g{i:02d}.png")
        images.save_png(np.clip(natural_image(side, side, seed=50 + i) + planted(1, side), 0, 1),
                        dirs["gen2"] / f"h{i:02d}.png")
        images.save_png(natural_image(side, side, seed=100 + i), dirs["real"] / f"r{i:02d}.png")
    return dirs


def folder_paths(folder) -> list[str]:
    """The image files of a folder, as strings (fpx's own listing)."""
    from fingerprint_cli import images

    return [str(p) for p in images.list_images(folder)]


def cli_run(args):
    """``fpx ARGS`` through typer's test runner."""
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    return CliRunner().invoke(app, args)


def cli_jsonl(text: str) -> list[dict]:
    """The JSON records among a command's output lines."""
    import json

    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def write_calibration_corpus(root: Path, side: int, trace: np.ndarray, n_gen: int, cal_shape: tuple[int, int]
                             ) -> dict[str, str]:
    """Folders ``gen`` (``n_gen`` side × side images carrying ``trace``), ``real`` (``n_gen`` clean ones) and ``cal``
    (24 clean calibration images of ``cal_shape`` = (h, w)) under ``root``, PNG. Returns name → folder path."""
    from fingerprint_cli import images

    dirs = {k: root / k for k in ("gen", "real", "cal")}
    for d in dirs.values():
        d.mkdir()
    for i in range(n_gen):
        images.save_png(np.clip(natural_image(side, side, seed=i) + trace, 0, 1), dirs["gen"] / f"g{i:02d}.png")
        images.save_png(natural_image(side, side, seed=100 + i), dirs["real"] / f"r{i:02d}.png")
    for i in range(24):
        images.save_png(natural_image(*cal_shape, seed=300 + i), dirs["cal"] / f"c{i:02d}.png")
    return {k: str(v) for k, v in dirs.items()}


def write_traced_set(folder: Path, pat: np.ndarray | None, n: int, seed0: int, side: int, amp: float = 0.04
                     ) -> list[str]:
    """Write ``n`` PNG 'photos' (side × side) into ``folder``, each carrying the trace ``pat`` (None: clean), named
    ``img<seed>.png``; returns their paths."""
    from fingerprint_cli import images

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        # content at a different place in every image (photos share no fixed edge), trace fixed
        s = seed0 + k
        px = np.roll(natural_image(side, side, seed=s), (s * 7 % side, s * 13 % side), axis=(0, 1))
        if pat is not None:
            px = np.clip(px + amp * pat / np.abs(pat).max() * 2, 0, 1)
        p = folder / f"img{s:05d}.png"
        images.save_png(px, p)
        out.append(str(p))
    return out


def self_contained_html(path: Path) -> str:
    """The text of an HTML file after checking it stands alone: a doctype, and no resource loaded from anywhere
    (every src/href a data: URI, no <link>, no CSS @import)."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", text)
    assert "<link" not in text and "@import" not in text
    return text


@pytest.fixture
def photo_pair(tmp_path):
    """Write a reference PNG and return a helper to write distorted suspects beside it."""
    from fingerprint_cli import images

    ref = natural_image(seed=1)
    ref_path = tmp_path / "ref.png"
    images.save_png(ref, ref_path)
    return ref, ref_path


@pytest.fixture(autouse=True, scope="session")
def _every_record_validates_against_the_shipped_schema():
    """Every record any test makes (every command, every format) is checked against the shipped schema."""
    import jsonschema

    from fingerprint_cli import records, schema

    validator = jsonschema.Draft202012Validator(schema.load())
    original = records.Record.to_dict

    def checked(self):
        d = original(self)
        errors = sorted(validator.iter_errors(d), key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"record of {d.get('command')!r} breaks the schema: "
                                 + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:3]))
        return d

    records.Record.to_dict = checked
    yield
    records.Record.to_dict = original
