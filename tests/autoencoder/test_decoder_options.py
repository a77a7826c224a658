"""Signal-decoder options beyond the paper: the rectified-flow objective and input features."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import UNet2DConditionModel

from mmldm.autoencoder.config import SamplingConfig
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.diffusion import DiffusionConfig, samplers
from mmldm.errors import ConfigError


def _with_input_features(make_config, **overrides):
    base = make_config()
    return make_config(decoder=dataclasses.replace(base.decoder, input_features=True), **overrides)


def test_flow_objective_trains_on_velocity_and_decodes_with_euler(make_config, make_batch, monkeypatch):
    model = HierarchicalAVAutoencoder(make_config(diffusion=DiffusionConfig(objective="flow")))
    assert model.objective.name == "flow" and model.objective.prediction == "velocity"
    batch = make_batch()
    losses = model.training_losses(batch["video_latents"], batch["audio_latent"], batch["labels"],
                                   generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss/model"])
    used = []
    real_sample = samplers.sample

    def spy(*args, **kwargs):
        used.append(kwargs["sampler"])
        return real_sample(*args, **kwargs)

    monkeypatch.setattr("mmldm.autoencoder.model.sample", spy)
    frames, audio = model.eval().decode(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2), [0, 3],
                                        generator=torch.Generator().manual_seed(0))
    assert frames.shape == (1, 2, 4, 8, 8) and audio.shape == (1, 4, 8, 8)
    assert set(used) == {"euler"}
    assert set(HierarchicalAVAutoencoder(make_config()).objective.samplers) == {"ddim", "dpmpp"}


def test_objective_and_eta_are_checked(make_config):
    with pytest.raises(ConfigError, match="objective"):
        make_config(diffusion=DiffusionConfig(objective="score"))
    with pytest.raises(ConfigError, match="eta"):
        make_config(diffusion=DiffusionConfig(objective="flow"), sampling=SamplingConfig(steps=3, eta=0.5))


def test_input_features_reach_the_unet_from_the_first_step(make_config):
    """Unlike the zero-initialised skip path, concatenated features change the output at init."""
    model = HierarchicalAVAutoencoder(_with_input_features(make_config)).eval()
    assert model.decoder.unet.conv_in.in_channels == 4 + 8  # latent + feature_channels[0]
    assert model.decoder.unet.config.in_channels == 4
    keep, labels = torch.zeros(2, dtype=torch.bool), torch.tensor([0, 1])
    noisy, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 700.0])
    outs = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        latent, tokens = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 16, generator=g)
        cond = model.decoder.condition("video", latent, tokens, labels, keep, torch.tensor([0.25, 0.5]))
        assert cond.input_features.shape == (2, 8, 8, 8)
        with torch.no_grad():
            outs.append(model.decoder(noisy, t, cond))
    assert not torch.allclose(outs[0], outs[1])


def test_input_features_keep_a_pretrained_unet_unchanged(make_config, tmp_path):
    """On a pretrained UNet the new conv_in channels are zero: the UNet computes what it did."""
    base = make_config()
    source = UNet2DConditionModel(**base.decoder.unet)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.05)
    source.save_pretrained(tmp_path / "unet")
    cfg = make_config(decoder=dataclasses.replace(base.decoder, pretrained_unet=str(tmp_path / "unet"), unet={},
                                                  input_features=True))
    conv_in = HierarchicalAVAutoencoder(cfg).decoder.unet.conv_in
    assert torch.equal(conv_in.weight[:, :4], source.conv_in.weight)
    assert torch.count_nonzero(conv_in.weight[:, 4:]) == 0
    assert torch.equal(conv_in.bias, source.conv_in.bias)


def test_flow_with_input_features_saves_and_reloads(make_config, tmp_path):
    model = HierarchicalAVAutoencoder(_with_input_features(make_config, diffusion=DiffusionConfig(objective="flow"))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.05)
    loaded = HierarchicalAVAutoencoder.from_pretrained(model.save_pretrained(tmp_path / "ae")).eval()
    assert loaded.cfg.diffusion.objective == "flow" and loaded.cfg.decoder.input_features
    z = (torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2))
    first = model.decode(*z, [1], generator=torch.Generator().manual_seed(0))
    second = loaded.decode(*z, [1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_key_frame_readout_stacks_one_channel_group_per_key_frame(make_config):
    """readout key_frames: channel group k of the latent depends on key frame k and (through
    temporal attention) the others, but changing a late key frame leaves the shape intact."""
    base = make_config()
    cfg = make_config(video_encoder=dataclasses.replace(base.video_encoder, readout="key_frames", latent_channels=8))
    model = HierarchicalAVAutoencoder(cfg).eval()
    video = torch.randn(2, 8, 4, 8, 8)
    with torch.no_grad():
        post = model.encode_video(video)
        assert post.mean.shape == (2, 8, 4, 4)  # 4 key frames x 2 channels
        changed = video.clone()
        changed[:, cfg.video_encoder.key_frames[0]] += 1.0
        moved = model.encode_video(changed).mean - post.mean
        other = video.clone()
        other[:, 1] += 1.0  # not a key frame: the encoder never looks at it
        assert torch.equal(model.encode_video(other).mean, post.mean)
    assert moved[:, :2].abs().mean() > 0  # the first group follows the first key frame
    with pytest.raises(ConfigError, match="multiple"):
        make_config(video_encoder=dataclasses.replace(base.video_encoder, readout="key_frames", latent_channels=6))
    with pytest.raises(ConfigError, match="readout"):
        make_config(video_encoder=dataclasses.replace(base.video_encoder, readout="slots"))


def test_frame_group_selects_and_interpolates_key_frame_channels(make_config):
    base = make_config()  # 8 frames, key frames [0, 3, 5, 7]
    cfg = make_config(video_encoder=dataclasses.replace(base.video_encoder, readout="key_frames", latent_channels=8))
    decoder = HierarchicalAVAutoencoder(cfg).decoder
    latent = torch.arange(8.0).reshape(1, 8, 1, 1).expand(3, 8, 2, 2)  # group k = channels 2k, 2k+1
    got = decoder.frame_group(latent, torch.tensor([0.0, 3 / 8, 4 / 8]))
    assert got.shape == (3, 2, 2, 2)
    torch.testing.assert_close(got[0, :, 0, 0], torch.tensor([0.0, 1.0]))  # frame 0: key frame 0
    torch.testing.assert_close(got[1, :, 0, 0], torch.tensor([2.0, 3.0]))  # frame 3: key frame 1
    torch.testing.assert_close(got[2, :, 0, 0], torch.tensor([3.0, 4.0]))  # frame 4: halfway between 3 and 5
    # training and decoding run with the readout
    model = HierarchicalAVAutoencoder(cfg)
    v, a = torch.randn(2, 8, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.isfinite(model.training_losses(v, a, torch.tensor([0, 2]),
                                                generator=torch.Generator().manual_seed(0))["loss/model"])
    frames, _ = model.eval().decode(torch.randn(1, 8, 4, 4), torch.randn(1, 4, 2, 2), [1, 6],
                                    generator=torch.Generator().manual_seed(0))
    assert frames.shape == (1, 2, 4, 8, 8)
