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


def _served_pin(local_server, monkeypatch):
    """A small weights file on the local server, with the dinov2 entry pinned to it and pointing there."""
    from fingerprint_cli.images import sha256_file

    root, base = local_server
    good = root / "model.safetensors"
    artifacts.write_tensors(good, {"a": torch.arange(5.0)})
    spec = artifacts.resolve("dinov2-vitb14")
    monkeypatch.setitem(artifacts.REGISTRY, "dinov2-vitb14", artifacts.ArtifactSpec(
        **{**spec.__dict__, "url": f"{base}/model.safetensors", "sha256": sha256_file(good)}))
    return good, spec


def test_pull_verifies_hash(local_server, monkeypatch):
    good, spec = _served_pin(local_server, monkeypatch)
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
    _served_pin(local_server, monkeypatch)
    monkeypatch.delenv("FPX_OFFLINE")
    inst = artifacts.ensure("dinov2-vitb14")
    assert inst.verified and inst.path.exists()


# ---------------------------------------------------------------- the `fpx models` library calls
def test_pins_are_data_and_every_pinned_file_is_named_once():
    doc = json.loads(artifacts.PINS_FILE.read_text(encoding="utf-8"))
    names = [e["name"] for e in doc["artifacts"]]
    assert names == ["dinov2-vitb14", "dncnn-fpx", "sd2-vae"]
    for e in doc["artifacts"]:
        spec = artifacts.resolve(e["name"])
        assert spec.sha256 == e["sha256"] and len(spec.sha256) == 64 and spec.aliases == tuple(e["aliases"])
    aliases = [a for s in artifacts.REGISTRY.values() for a in (s.name, *s.aliases)]
    assert len(aliases) == len(set(aliases))  # a name or alias resolves to one artifact only


def test_verify_installed_and_why(tiny_model_file, tmp_path):
    rows = artifacts.verify_installed()
    # nothing imported: only the bundled artifacts (denoiser, shipped fingerprints), all intact and verified
    assert rows and all(artifacts.REGISTRY[r["name"]].bundled for r in rows)
    assert [artifacts.verify_failure(r) for r in rows] == [None] * len(rows)
    missing = artifacts.verify_installed("dinov2")  # an alias names the artifact
    assert [r["name"] for r in missing] == ["dinov2-vitb14"] and artifacts.verify_failure(missing[0]) == "not installed"
    with pytest.raises(UsageError, match="did you mean"):
        artifacts.verify_installed("dinov2-vitb41")
    inst = artifacts.install_file(tiny_model_file, "dinov2-vitb14", force=True)
    assert inst.summary() == {"name": "dinov2-vitb14", "path": str(inst.path), "sha256": inst.sha256,
                              "verified": False}
    row = artifacts.verify_installed("dinov2-vitb14")[0]
    assert row["intact"] and not row["verified"]
    assert artifacts.verify_failure(row) == "sha256 differs from the pin"
    with open(inst.path, "ab") as f:  # changed after install
        f.write(b"\0")
    assert artifacts.verify_failure(artifacts.verify_installed("dinov2-vitb14")[0]) == (
        "file changed since it was installed")
    (artifacts.artifact_dir(inst.spec) / "manifest.json").write_text("{not json")
    row = artifacts.verify_installed("dinov2-vitb14")[0]
    assert "not valid JSON" in artifacts.verify_failure(row)
    assert "dinov2-vitb14" in [r["name"] for r in artifacts.verify_installed()]  # a broken one is listed too


def test_location(tiny_model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FPX_HOME", str(tmp_path / "h"))
    assert artifacts.location() == tmp_path / "h"
    where = artifacts.location("dinov2")
    assert where == tmp_path / "h" / "models" / "dinov2-vitb14" / "model.safetensors" and not where.exists()
    inst = artifacts.install_file(tiny_model_file, "dinov2-vitb14", force=True)
    assert artifacts.location("dinov2-vitb14") == inst.path and inst.path.is_file()
    assert artifacts.location("dncnn-fpx") == artifacts.PACKAGE_ASSETS / "dncnn-fpx.safetensors"


def test_using_home_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("FPX_OFFLINE")
    before = artifacts.home()
    with artifacts.using_home(tmp_path / "scratch") as h:
        assert artifacts.home() == h == tmp_path / "scratch" and artifacts.offline()
    assert artifacts.home() == before and not artifacts.offline()
    with pytest.raises(KeyError):
        with artifacts.using_home(tmp_path / "other", offline=False):
            assert not artifacts.offline()
            raise KeyError("boom")
    assert artifacts.home() == before


def test_doctor_text_states_each_artifact():
    from fingerprint_cli import doctor

    arts = [{"name": "a", "installed": True, "how": "import", "verified": False, "path": "/p/a", "problem": None},
            {"name": "b", "installed": False, "how": None, "verified": None, "path": None, "problem": "manifest bad"},
            {"name": "c", "installed": False, "how": None, "verified": None, "path": None, "problem": None}]
    text = doctor.text({"fpx": "9.9", "cache_problem": "/h is not writable", "artifacts": arts})
    lines = text.splitlines()
    assert lines[0].split() == ["fpx", "9.9"] and "artifacts:" in lines
    assert "  a                installed (import), UNVERIFIED: /p/a" in lines
    assert any(x.strip().startswith("b") and "BROKEN: manifest bad" in x for x in lines)
    assert "cache: UNUSABLE (/h is not writable)" in text
    assert lines[-1].endswith("for: b, c")  # the hint names every artifact not installed
