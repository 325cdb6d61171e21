"""Artifacts: pinning, import/force/verified flag, verify, offline message, no pickles."""

from __future__ import annotations

import json

import pytest
import torch

from fingerprint_cli import artifacts
from fingerprint_cli.errors import ArtifactError, InputError, UsageError


def test_dinov2_pin():
    spec = artifacts.resolve("dinov2-vitb14")
    assert spec.sha256 == "55cbb5d887b336d430e649c277b85a1429e724871f9d02ac16203235886d8c7b"
    assert "timm/vit_base_patch14_dinov2.lvd142m" in spec.source
    assert artifacts.resolve("dinov2") is spec  # alias


def test_unknown_name_did_you_mean():
    with pytest.raises(UsageError, match="did you mean 'dinov2-vitb14'"):
        artifacts.resolve("dinov2-vitb41")


def test_import_refuses_mismatch_unless_forced(tiny_model_file):
    with pytest.raises(ArtifactError, match="does not match the pinned"):
        artifacts.install_file(tiny_model_file, "dinov2-vitb14")
    assert artifacts.installed("dinov2-vitb14") is None
    inst = artifacts.install_file(tiny_model_file, "dinov2-vitb14", force=True)
    assert inst.verified is False
    manifest = json.loads((artifacts.artifact_dir(inst.spec) / "manifest.json").read_text())
    assert manifest["verified"] is False and manifest["sha256"] == inst.sha256
    v = artifacts.verify("dinov2-vitb14")
    assert v["intact"] is True and v["verified"] is False
    # tampering after install is detected
    with open(inst.path, "ab") as f:
        f.write(b"x")
    assert artifacts.verify("dinov2-vitb14")["intact"] is False


def test_import_matching_pin_is_verified(tmp_path, monkeypatch):
    p = tmp_path / "w.safetensors"
    artifacts.write_tensors(p, {"a": torch.zeros(3)})
    from fingerprint_cli.images import sha256_file

    spec = artifacts.resolve("dinov2-vitb14")
    monkeypatch.setitem(artifacts.REGISTRY, "dinov2-vitb14",
                        artifacts.ArtifactSpec(**{**spec.__dict__, "sha256": sha256_file(p)}))
    inst = artifacts.install_file(p, "dinov2-vitb14")
    assert inst.verified is True
    assert artifacts.verify("dinov2-vitb14")["verified"] is True


def test_pickle_refused(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        artifacts.install_file(p, "dinov2-vitb14", force=True)
    with pytest.raises(InputError):
        artifacts.read_tensors(p)


def test_offline_missing_names_both_commands():
    with pytest.raises(ArtifactError) as ei:
        artifacts.ensure("dinov2-vitb14")
    msg = str(ei.value)
    assert "fpx models pull dinov2-vitb14" in msg and "fpx models import" in msg


def test_home_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FPX_HOME", str(tmp_path / "h"))
    assert artifacts.home() == tmp_path / "h"
    monkeypatch.delenv("FPX_HOME")
    assert "fpx" in str(artifacts.home())
