"""fpx origin, issue 12 round 7: the local test counts RANSAC inliers one-to-one (recorded in the index)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_origin_local import _textured
from test_origin_round6 import cli_build_and_add

from fingerprint_cli import images, origin
from fingerprint_cli.origin import local as L
from fingerprint_cli.origin.index import calibrate, load_index

FMR = 0.05


def _descriptors(n: int, rng) -> np.ndarray:
    """``n`` random 256-bit descriptors, far apart from one another (random bits: ~128 bits between any two)."""
    return rng.integers(0, 256, size=(n, 32), dtype=np.uint8)


def _flip(desc: np.ndarray, bits: int, rng) -> np.ndarray:
    """A copy of ``desc`` with ``bits`` random bits of each row flipped (a near-duplicate descriptor)."""
    out = desc.copy()
    for row in out:
        for b in rng.choice(256, size=bits, replace=False):
            row[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def _many_to_one(rng, per: int = 6):
    """A suspect of ``4 * per`` keypoints whose descriptors are near-copies of only 4 reference keypoints, each
    group clustered within 2 px of its reference keypoint (an identity map sends all of them within RANSAC_PX)."""
    centres = np.float32([[40, 40], [250, 60], [60, 200], [230, 210]])
    rdesc = _descriptors(4, rng)
    qxy = np.concatenate([c + rng.uniform(-2, 2, size=(per, 2)) for c in centres]).astype(np.float32)
    qdesc = np.concatenate([_flip(rdesc[i:i + 1].repeat(per, 0), 6, rng) for i in range(4)])
    return L.Features(qxy, qdesc), L.Features(centres, rdesc)


def _one_to_one(rng, n: int = 24):
    """A genuine crop: ``n`` reference keypoints, the suspect's the same ones shifted by (-30, -20)."""
    rxy = rng.uniform(30, 290, size=(n, 2)).astype(np.float32)
    rdesc = _descriptors(n, rng)
    return L.Features(rxy - np.float32([30, 20]), _flip(rdesc, 4, rng)), L.Features(rxy, rdesc)


def test_many_to_one_correspondences_count_low_one_to_one_and_as_before_as_suspect():
    rng = np.random.default_rng(7)
    q, r = _many_to_one(rng)
    qi, ri = L._ransac(q, r)
    assert len(np.unique(qi)) == 24 and len(np.unique(ri)) == 4  # every suspect keypoint, onto 4 reference ones
    assert L.inliers(q, r) == L.inliers(q, r, "suspect") == 24  # rounds 4-6: distinct suspect keypoints
    assert L.inliers(q, r, "one-to-one") == 4
    g, gr = _one_to_one(rng)
    assert L.inliers(g, gr, "one-to-one") == L.inliers(g, gr, "suspect") == 24  # a genuine set keeps its count
    # brute force of the count from its definition
    assert L.count_inliers(np.array([0, 1, 2, 3, 3]), np.array([5, 5, 6, 6, 6]), "one-to-one") == 2
    assert L.count_inliers(np.array([0, 1, 2, 3, 3]), np.array([5, 5, 6, 6, 6]), "suspect") == 4
    with pytest.raises(ValueError):
        L.count_inliers(np.arange(3), np.arange(3), "reference")
    with pytest.raises(ValueError):
        L.Settings(inlier_count="both")


def test_match_and_duplicates_use_the_librarys_count():
    rng = np.random.default_rng(11)
    q, r = _many_to_one(rng)
    g, gr = _one_to_one(rng)
    old = L.LocalIndex.from_features([r, gr], L.ROUND5)
    new = L.LocalIndex.from_features([r, gr], dataclasses.replace(L.ROUND5, inlier_count="one-to-one"))
    assert dict((c, n) for c, n, _ in L.match(old, [q], shortlist=[0, 1]))[0] == 24
    assert dict((c, n) for c, n, _ in L.match(new, [q], shortlist=[0, 1]))[0] == 4
    assert dict((c, n) for c, n, _ in L.match(new, [g], shortlist=[0, 1]))[1] == 24


def test_an_index_without_the_key_counts_as_before():
    doc = L.ROUND5.doc()
    assert doc["inlier_count"] == "suspect"
    del doc["inlier_count"]
    assert L.Settings.from_doc(doc) == L.ROUND5 and L.Settings.from_doc(doc).inlier_count == "suspect"
    assert L.Settings.from_doc({}).inlier_count == "suspect"
    assert L.Settings.from_doc({**doc, "inlier_count": "one-to-one"}).inlier_count == "one-to-one"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same 12 references indexed with the round-5 count and with the one-to-one count."""
    d = tmp_path_factory.mktemp("r7refs")
    refs = d / "refs"
    refs.mkdir()
    for i in range(12):
        images.save_png(_textured(160, 220, seed=800 + i), refs / f"r{i:02d}.png")
    old, _ = origin.build_index([str(refs)], str(d / "old.fpxindex"), n_calibration=12, false_match_rate=FMR,
                                inlier_count="suspect")
    new, _ = origin.build_index([str(refs)], str(d / "new.fpxindex"), n_calibration=12, false_match_rate=FMR,
                                inlier_count="one-to-one")
    return d, old, new


def test_the_count_is_recorded_and_recalibration_reproduces_it(built, tmp_path):
    d, old, new = built
    assert load_index(d / "old.fpxindex").local.settings.inlier_count == "suspect"
    back = load_index(d / "new.fpxindex")
    assert back.local.settings.inlier_count == "one-to-one" and back.document()["local"]["inlier_count"] == "one-to-one"
    assert np.array_equal(back.local.desc, old.local.desc)  # the features are the same; only the count differs
    # the round-7 upgrade path: set the key on an old index and recalibrate = what a new build calibrates
    up = load_index(d / "old.fpxindex")
    up.local.settings = up.local_calib.settings = back.local.settings
    calibrate(up, FMR)
    assert up.calibration["impostor_local_sorted"] == new.calibration["impostor_local_sorted"]
    assert up.calibration["local_threshold"] == new.calibration["local_threshold"]
    # and the old index recalibrated under its own (absent-or-suspect) count is unchanged
    same = load_index(d / "old.fpxindex")
    calibrate(same, FMR)
    assert same.calibration["impostor_local_sorted"] == old.calibration["impostor_local_sorted"]
    # one-to-one never counts more than suspect: every impostor score is at most the old one, query by query
    assert np.all(np.asarray(new.calibration["impostor_local_sorted"]) <=
                  np.asarray(old.calibration["impostor_local_sorted"]) + 1e-9)


def test_cli_inlier_count_is_recorded_and_kept_by_add(tmp_path):
    from typer.testing import CliRunner

    from fingerprint_cli.cli.app import app

    bad = CliRunner().invoke(app, ["origin", "index", str(tmp_path), "-o", str(tmp_path / "b.fpxindex"),
                                   "--inlier-count", "one2one", "-q"])
    assert bad.exit_code == 2 and not (tmp_path / "b.fpxindex").exists()  # refused before anything is embedded
    idx, grown = cli_build_and_add(tmp_path, ["--inlier-count", "one-to-one"], 840)
    assert idx.local.settings.inlier_count == "one-to-one"
    assert grown.local.settings == idx.local.settings and grown.n == 7


def test_an_unknown_recorded_count_is_refused_naming_the_file(built, tmp_path):
    from fingerprint_cli.errors import ArtifactError

    d, _, _ = built
    idx = load_index(d / "new.fpxindex")
    future = dataclasses.replace(idx.local.settings)
    object.__setattr__(future, "inlier_count", "weighted")  # what a later fpx might record
    idx.local.settings = future
    out = tmp_path / "future.fpxindex"
    idx.save(out)
    with pytest.raises(ArtifactError, match="inlier_count") as exc:
        load_index(out)
    assert exc.value.path == str(out)
