"""Integrity 8 (review-8 finding L1): a fingerprint's metadata spells a training path that is not UTF-8 as the
records do (``caf\\xe9.png``), never as a lone surrogate that strict JSON readers refuse. (The perturb sidecar's
case is ``tests/test_review8_paths.py::test_perturb_sidecar_is_strict_json``, no longer an expected failure.)"""

from __future__ import annotations

import os

from fingerprint_cli.dif.meta import FingerprintMeta

BAD = os.fsdecode(b"caf\xe9.png")


def test_fingerprint_meta_stores_a_non_utf8_training_path_as_strict_json():
    meta = FingerprintMeta.from_obj({"name": "g", "mu_gen": 0.2, "mu_real": 0.0, "sigma_real": 0.1,
                                     "train": {"generated": [{"path": f"/in/{BAD}", "sha256": "ab"}], "real": []}},
                                    "fingerprint metadata")
    text = meta.to_json()
    text.encode("utf-8")  # strict: no lone surrogate reaches the artifact
    assert "\\udce9" not in text and "\\\\xe9" in text
    back = FingerprintMeta.from_json(text)
    assert back.split("train", "generated") == [{"path": "/in/caf\\xe9.png", "sha256": "ab"}]
    assert back.mu_gen == 0.2 and back.to_json() == text  # stable through a copy
