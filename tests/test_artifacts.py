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


@pytest.fixture
def local_server(tmp_path):
    """A loopback HTTP server over tmp_path/srv (bounded: shut down after the test)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_pull_verifies_hash(local_server, monkeypatch):
    from fingerprint_cli.images import sha256_file

    root, base = local_server
    good = root / "model.safetensors"
    artifacts.write_tensors(good, {"a": torch.arange(5.0)})
    spec = artifacts.resolve("dinov2-vitb14")
    monkeypatch.setitem(artifacts.REGISTRY, "dinov2-vitb14", artifacts.ArtifactSpec(
        **{**spec.__dict__, "url": f"{base}/model.safetensors", "sha256": sha256_file(good)}))
    seen = []
    inst = artifacts.pull("dinov2-vitb14", progress=lambda d, t: seen.append((d, t)))
    assert inst.verified and inst.how == "pull" and seen[-1][0] == good.stat().st_size
    # a server that hands out a different file is refused and nothing is installed
    artifacts.artifact_dir(spec).joinpath("manifest.json").unlink()
    artifacts.write_tensors(good, {"a": torch.arange(6.0)})
    with pytest.raises(ArtifactError, match="not the pinned"):
        artifacts.pull("dinov2-vitb14")
    assert artifacts.installed("dinov2-vitb14") is None
    assert not list(artifacts.artifact_dir(spec).glob("*.download"))


def test_first_use_pulls_when_online(local_server, monkeypatch):
    from fingerprint_cli.images import sha256_file

    root, base = local_server
    good = root / "model.safetensors"
    artifacts.write_tensors(good, {"a": torch.arange(5.0)})
    spec = artifacts.resolve("dinov2-vitb14")
    monkeypatch.setitem(artifacts.REGISTRY, "dinov2-vitb14", artifacts.ArtifactSpec(
        **{**spec.__dict__, "url": f"{base}/model.safetensors", "sha256": sha256_file(good)}))
    monkeypatch.delenv("FPX_OFFLINE")
    inst = artifacts.ensure("dinov2-vitb14")
    assert inst.verified and inst.path.exists()
