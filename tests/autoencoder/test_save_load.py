"""Saving, reloading and Stable Diffusion UNet initialisation of the autoencoder."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.autoencoder.signal_decoder import load_pretrained_unet
from mmldm.errors import WeightsError


def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_save_and_reload_give_identical_reconstructions(cfg, vae, tmp_path):
    model = HierarchicalAVAutoencoder(cfg).eval()
    _perturb(model)
    folder = model.save_pretrained(tmp_path / "ae")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = HierarchicalAVAutoencoder.from_pretrained(folder).eval()
    video_latents, audio_latent = torch.randn(2, 8, 4, 8, 8), torch.randn(2, 4, 8, 8)

    def reconstruct(m: HierarchicalAVAutoencoder):
        video_post, audio_post = m.encode(video_latents, audio_latent)
        return m.reconstruct(vae, video_post.mode(), audio_post.mode(), [0, 5],
                             generator=torch.Generator().manual_seed(7))

    first, second = reconstruct(model), reconstruct(loaded)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_pretrained_sd_unet_initialises_the_decoder(make_config, tmp_path):
    """A diffusers SD-format folder (``unet/`` subfolder) or a bare UNet folder loads unchanged."""
    base = make_config()
    source = UNet2DConditionModel(**base.decoder.unet)
    source.save_pretrained(tmp_path / "sd" / "unet")
    expected = load_file(tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors")
    for folder in (tmp_path / "sd", tmp_path / "sd" / "unet"):
        cfg = make_config(decoder=dataclasses.replace(base.decoder, pretrained_unet=str(folder), unet={}))
        model = HierarchicalAVAutoencoder(cfg)
        state = model.decoder.unet.state_dict()
        assert set(state) == set(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        assert model.decoder.unet.config.class_embed_type == "identity"
    # the saved autoencoder rebuilds without the pretrained folder
    saved = model.save_pretrained(tmp_path / "ae")
    config = json.loads((saved / "config.json").read_text())
    assert config["decoder"]["pretrained_unet"] is None
    assert config["decoder"]["unet"]["block_out_channels"] == [16, 32]
    reloaded = HierarchicalAVAutoencoder.from_pretrained(saved)
    assert torch.equal(reloaded.decoder.unet.conv_in.weight, expected["conv_in.weight"])


def test_missing_pretrained_unet_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="Stable Diffusion v1 UNet.*unet/config.json"):
        load_pretrained_unet(tmp_path / "nowhere", "identity")
    (tmp_path / "empty" / "unet").mkdir(parents=True)
    (tmp_path / "empty" / "unet" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="no diffusion_pytorch_model weights"):
        load_pretrained_unet(tmp_path / "empty", "identity")


def test_from_pretrained_errors(cfg, tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        HierarchicalAVAutoencoder.from_pretrained(tmp_path)
    folder = HierarchicalAVAutoencoder(cfg).save_pretrained(tmp_path / "ae")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="model.safetensors"):
        HierarchicalAVAutoencoder.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoder"]["feature_channels"] = [8, 16, 32]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="feature_channels"):
        HierarchicalAVAutoencoder.from_pretrained(folder)
