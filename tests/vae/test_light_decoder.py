"""The light frame decoder: its shapes, its distillation stage, and its folder on disk."""

from __future__ import annotations

import pytest
import torch
from micro_models import micro_vae

from mmldm.errors import ConfigError, WeightsError
from mmldm.training.registry import get_stage
from mmldm.vae.light_decoder import (
    FrameDecoderInfo,
    LightDecoderConfig,
    LightFrameDecoder,
    load_frame_decoder,
    preset,
    save_frame_decoder,
)
from mmldm.vae.light_decoder_distill import (
    FrameDecoderDataConfig,
    FrameDecoderDistillConfig,
    FrameDecoderDistillStage,
)


@pytest.mark.parametrize(("name", "latent", "size"), [("tiny", 16, 64), ("sd-v1", 32, 256)])
def test_presets_decode_latents_to_frames_of_the_vae_size(name, latent, size):
    cfg = preset(name)
    assert cfg.upsample_factor == size // latent
    with torch.device("meta"):  # the sd-v1 preset at 256 px: shapes only
        out = LightFrameDecoder(cfg)(torch.empty(2, 4, latent, latent))
    assert out.shape == (2, 3, size, size)


def test_a_fraction_of_the_full_decoders_cost():
    """TAESD's layout at 256x256 costs a few percent of the SD v1 KL-VAE decoder (about 620 GFLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        LightFrameDecoder(preset("sd-v1"))(torch.empty(1, 4, 32, 32))
    assert 10e9 < counter.get_total_flops() < 0.1 * 620e9


def test_bad_layouts_are_config_errors():
    with pytest.raises(ConfigError, match="one entry per scale"):
        LightDecoderConfig(channels=(8, 8), blocks=(1,))
    with pytest.raises(ConfigError, match="unknown light frame decoder preset"):
        preset("huge")


def _teacher(tmp_path):
    torch.manual_seed(0)
    vae = micro_vae()
    return vae, vae.save_pretrained(tmp_path / "vae")


def _stage(tmp_path, **data):
    _, vae_dir = _teacher(tmp_path)
    cfg = FrameDecoderDistillConfig(vae=str(vae_dir), channels=(16, 16), blocks=(1, 1),
                                    data=FrameDecoderDataConfig(frames_per_clip=2, **data))
    stage = get_stage("frame-decoder-distill")()
    assert isinstance(stage, FrameDecoderDistillStage)
    return stage, stage.build(cfg)


@pytest.mark.parametrize("source", ["latent cache", "clips"])
def test_the_stage_learns_the_teachers_pixels(tmp_path, source):
    stage, modules = _stage(tmp_path)
    teacher = modules["teacher"]
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 4, 3, 16, 16, generator=g) * 2 - 1  # [B, T, 3, H, W]
    batch = ({"video_latent": teacher.encode_frames(frames).detach()} if source == "latent cache"
             else {"frames": frames})
    model = modules["model"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        out = stage.losses(modules, batch, step, generator=torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        out["loss/model"].backward()
        optimizer.step()
        losses.append(out["loss/model"].item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.92 * losses[0], losses
    assert not any(p.requires_grad for p in teacher.parameters())
    preview = stage.preview({k: m.eval() for k, m in modules.items()}, batch)
    assert preview["video"].shape == (3, 4, 3, 16, 16)  # 2 frames by the teacher, then by the student


def test_a_preset_that_does_not_fit_the_vae_is_refused(tmp_path):
    _, vae_dir = _teacher(tmp_path)
    with pytest.raises(ConfigError, match="upsamples 8x"):
        FrameDecoderDistillStage().build(FrameDecoderDistillConfig(vae=str(vae_dir), preset="sd-v1"))


def test_save_and_load_round_trip_and_bad_files(tmp_path):
    decoder = LightFrameDecoder(LightDecoderConfig(channels=(8, 8), blocks=(1, 0)))
    info = FrameDecoderInfo(decoder=decoder.cfg, vae_scaling_factor=0.5, vae_latent_channels=4,
                            vae_downsample_factor=2)
    folder = save_frame_decoder(decoder, info, tmp_path / "frame_decoder")
    loaded, loaded_info = load_frame_decoder(folder)
    assert loaded_info == info and not loaded.training
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(loaded(x), decoder(x))
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="light frame decoder"):
        load_frame_decoder(folder)
    (folder / "config.json").write_text('{"decoder": {"channels": [8], "blocks": [1, 1]}}')
    with pytest.raises(WeightsError, match="one entry per scale.*config.json"):
        load_frame_decoder(folder)
    with pytest.raises(WeightsError, match="folder not found"):
        load_frame_decoder(tmp_path / "nowhere")
