"""The SD VAE encoder written in fpx against diffusers' AutoencoderKL (random weights, no download)."""

from __future__ import annotations

import pytest
import torch

from fingerprint_cli.origin import vae

diffusers = pytest.importorskip("diffusers")


def _reference(small: bool, seed: int = 1):
    torch.manual_seed(seed)
    ref = diffusers.AutoencoderKL(**vae.sd2_config(small)).eval()
    with torch.no_grad():  # move GroupNorm affine params off (1, 0) so they matter
        for n, p in ref.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.mark.parametrize("small", [True, False], ids=["small-config", "sd2-config"])
def test_posterior_mean_matches_diffusers(small):
    ref = _reference(small)
    ours = vae.build(ref.state_dict())  # decoder keys are in the state dict and must be ignored
    assert ours.arch["block_out_channels"] == vae.sd2_config(small)["block_out_channels"]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mean
        got = ours(x)
    assert got.shape == want.shape == (2, 4, 64 // ours.arch["downsample_factor"],
                                       64 // ours.arch["downsample_factor"])
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert want.abs().mean() > 1e-2  # not trivially zero


def test_legacy_attention_key_names_give_the_same_encoder():
    ref = _reference(True)
    state = ref.state_dict()
    legacy = {}
    for k, v in state.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f"mid_block.attentions.0.{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
                if k.endswith("weight"):
                    v = v[:, :, None, None]  # the 1x1-conv shape of the oldest checkpoints
        legacy[k] = v
    assert any(".query." in k for k in legacy) and not any(".to_q." in k for k in legacy)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(vae.build(legacy)(x), vae.build(state)(x), atol=0, rtol=0)


def test_wrong_state_dict_is_refused():
    from fingerprint_cli.errors import ArtifactError

    with pytest.raises(ArtifactError, match="AutoencoderKL"):
        vae.build({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)})
    state = vae.random_state(small=True)
    state["encoder.conv_out.weight"] = state["encoder.conv_out.weight"][:, :5]
    with pytest.raises(ArtifactError, match="do not fit"):
        vae.build(state)
