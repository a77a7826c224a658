"""The sync critic network (:mod:`mmldm.critic.network`) and its training stage: shapes, unit
embeddings, layouts for any frame size, one-line errors on bad input, a folder round trip, and a
stage that learns to tell a clip's own sound from the other frames' (on real Sounding Shapes clips,
through the engine's dataset)."""

from __future__ import annotations

import pytest
import torch

from mmldm.config import from_dict
from mmldm.critic.network import (
    SyncCritic,
    SyncCriticConfig,
    SyncCriticInfo,
    load_sync_critic,
    save_sync_critic,
)
from mmldm.critic.stage import (
    SyncCriticAugmentConfig,
    SyncCriticStage,
    SyncCriticTrainConfig,
    blur_and_noise,
)
from mmldm.data.config import ClipDataConfig
from mmldm.errors import ConfigError, WeightsError
from mmldm.training.registry import get_stage


def small(size: int = 16) -> SyncCriticConfig:
    return SyncCriticConfig(frame_size=size, audio_image_size=size, video_channels=(4, 8), frame_width=16,
                            audio_width=16, embed_dim=8)


@pytest.mark.parametrize("size, levels", [(16, 3), (64, 3), (256, 5)])
def test_one_unit_embedding_per_frame_for_any_frame_size(size, levels):
    cfg = SyncCriticConfig(frame_size=size, audio_image_size=size)
    assert len(cfg.video_widths) == levels and cfg.flat_side <= 8
    critic = SyncCritic(cfg)
    video, audio = critic(torch.rand(2, 5, 3, size, size) * 2 - 1, torch.rand(2, 3, size, size) * 2 - 1)
    assert video.shape == audio.shape == (2, 5, cfg.embed_dim)
    assert torch.allclose(video.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert torch.allclose(audio.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    similarity = critic.frame_similarity(torch.rand(2, 5, 3, size, size), torch.rand(2, 3, size, size))
    assert similarity.shape == (2, 5) and bool((similarity.abs() <= 1 + 1e-5).all())


def test_each_frame_is_judged_with_its_own_stretch_of_sound():
    """Changing the last quarter of the audio image moves the last frames' audio embeddings, not the first's."""
    critic = SyncCritic(small()).eval()
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    changed = image.clone()
    changed[..., 12:] = -1
    _, before = critic(torch.zeros(1, 8, 3, 16, 16), image)
    _, after = critic(torch.zeros(1, 8, 3, 16, 16), changed)
    moved = (after - before).norm(dim=-1)[0]
    assert torch.allclose(moved[:3], torch.zeros(3), atol=1e-6) and bool((moved[-2:] > 1e-3).all())


def test_bad_layouts_and_inputs_are_one_line_errors():
    with pytest.raises(ConfigError, match="video_channels"):
        SyncCriticConfig(video_channels=())
    with pytest.raises(ConfigError, match="embed_dim"):
        SyncCriticConfig(embed_dim=0)
    critic = SyncCritic(small())
    with pytest.raises(ConfigError, match=r"frames \[B, T, 3, 16, 16\]"):
        critic(torch.zeros(1, 8, 3, 32, 32), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"audio images \[B, 3, 16, W\]"):
        critic(torch.zeros(1, 8, 3, 16, 16), torch.zeros(1, 3, 8, 16))
    with pytest.raises(ConfigError, match="2 clips of frames and 1 audio images"):
        critic(torch.zeros(2, 8, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="must equal data.size"):
        SyncCriticTrainConfig(critic=small(16), data=ClipDataConfig(size=64))
    with pytest.raises(ConfigError, match="blur_sigma"):
        SyncCriticAugmentConfig(blur_sigma=-1)


def test_save_and_load_round_trip_and_bad_files(tmp_path):
    critic = SyncCritic(small())
    info = SyncCriticInfo(critic=critic.cfg, num_frames=8)
    folder = save_sync_critic(critic, info, tmp_path / "critic")
    loaded, loaded_info = load_sync_critic(folder)
    assert loaded_info == info and not loaded.training
    assert all(torch.equal(v, critic.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert info.fits(8, 10.0, 16000, 16) is None and "judges clips of 8 frames" in info.fits(16, 10.0, 16000, 16)
    (folder / "config.json").write_text('{"critic": {"frame_size": -1}}')
    with pytest.raises(WeightsError, match="sync critic"):
        load_sync_critic(folder)
    with pytest.raises(WeightsError, match="folder not found"):
        load_sync_critic(tmp_path / "nowhere")


def test_blur_and_noise_are_seeded_and_off_when_zero():
    frames = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    cfg = SyncCriticAugmentConfig(blur_sigma=1.5, noise_std=0.05)
    a = blur_and_noise(frames, cfg, torch.Generator().manual_seed(1))
    b = blur_and_noise(frames, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, frames)
    assert torch.equal(blur_and_noise(frames, SyncCriticAugmentConfig(0, 0), None), frames)
    flat = torch.full((1, 2, 3, 16, 16), 0.3)  # a blur keeps a flat image flat
    assert torch.allclose(blur_and_noise(flat, SyncCriticAugmentConfig(2.0, 0), None), flat, atol=1e-6)


def test_the_stage_learns_which_sound_goes_with_which_frame(shapes_dir):
    """A few dozen steps on real Sounding Shapes clips (frames and audio images as the engine's
    dataset gives them) take the per-frame InfoNCE well down and the frame retrieval well up."""
    cfg = from_dict(SyncCriticTrainConfig, {
        "critic": {"frame_size": 32, "audio_image_size": 32, "video_channels": [8, 16], "frame_width": 32,
                   "audio_width": 32, "embed_dim": 16},
        "data": {"root": str(shapes_dir), "size": 32, "val_fraction": 0.0}, "augment": {"blur_sigma": 0.5}})
    stage = get_stage("sync-critic")()
    assert isinstance(stage, SyncCriticStage)
    modules = stage.build(cfg)
    dataset = stage.dataset(cfg, "train")
    batch = {key: torch.stack([dataset[i][key] for i in range(6)]) for key in ("frames", "audio_image")}
    optimizer = torch.optim.Adam(modules["model"].parameters(), lr=3e-3)
    first = stage.losses(modules, batch, 0, torch.Generator().manual_seed(0))
    for step in range(100):
        out = stage.losses(modules, batch, step, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out["loss/model"].backward()
        optimizer.step()
    last = stage.losses(modules, batch, 100, torch.Generator().manual_seed(99))
    assert last["loss/model"] < 0.5 * first["loss/model"], (first, last)
    # 96 frames in the batch: chance picks the right sound for 1 %
    assert last["critic/frame_accuracy"] > 0.4 and first["critic/frame_accuracy"] < 0.1, (first, last)
    preview = stage.preview({"model": modules["model"].eval()}, batch)["scalars"]
    assert preview["critic/matched_cosine"] > preview["critic/shifted_cosine"]
    with pytest.raises(Exception, match="not from a latent cache"):
        stage.losses(modules, {"video_latent": torch.zeros(1)}, 0)
