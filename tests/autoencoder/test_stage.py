"""The autoencoder stage on the training engine: presets, a 2-step run, checkpoint loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mmldm.autoencoder.config import paper_config, tiny_config
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.autoencoder.stage import AutoencoderStage, AutoencoderStageConfig, export_pretrained, load_autoencoder
from mmldm.config import load_config
from mmldm.errors import ConfigError, WeightsError
from mmldm.training.registry import get_stage

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "autoencoder"


def test_yaml_presets_match_the_python_presets():
    tiny = load_config(AutoencoderStageConfig, CONFIGS / "tiny.yaml")
    assert tiny.model == tiny_config()
    paper = load_config(AutoencoderStageConfig, CONFIGS / "paper.yaml")
    assert paper.model.decoder.pretrained_unet is not None
    paper.model.decoder.pretrained_unet = None
    assert paper.model == paper_config()
    assert get_stage("autoencoder") is AutoencoderStage


def test_stage_rejects_a_vae_that_does_not_fit(tmp_path):
    cfg = load_config(AutoencoderStageConfig, CONFIGS / "tiny.yaml", ["vae.path=null", "data.size=32"])
    with pytest.raises(ConfigError, match="vae_latent_size"):
        AutoencoderStage().build(cfg)


def test_two_training_steps_checkpoint_and_reload(shapes_dir, tmp_path):
    from mmldm.training.engine import Trainer

    overrides = [
        "vae.path=null", f"data.root={shapes_dir}", "data.val_fraction=0",
        "model.loss.adversarial_start_step=0", "model.sampling.steps=2",
        "train.max_steps=2", "train.batch_size=1", "train.num_workers=0", "train.mixed_precision=no",
        "train.checkpoint.every=2", "train.log.every=1", "train.log.preview_every=2", "train.log.preview_items=1", "train.log.progress_bar=false",
        "train.device=cpu", f"train.out_dir={tmp_path / 'run'}",
    ]
    cfg = load_config(AutoencoderStageConfig, CONFIGS / "tiny.yaml", overrides)
    result = Trainer(AutoencoderStage(), cfg).fit()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    assert {"loss/model", "loss/disc"} <= set(result.losses)
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("step_*"))
    model, vae_cfg = load_autoencoder(checkpoint)
    assert vae_cfg is not None and vae_cfg.path is None
    assert isinstance(model, HierarchicalAVAutoencoder)
    folder = export_pretrained(checkpoint, tmp_path / "exported")
    reloaded = HierarchicalAVAutoencoder.from_pretrained(folder)
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(WeightsError, match="not a training checkpoint"):
        load_autoencoder(tmp_path)


def test_training_on_a_kl_vae_latent_cache(shapes_dir, tmp_path):
    from torch.utils.data import Subset, default_collate

    from mmldm.data.latent_cache import write_latent_cache
    from mmldm.vae.kl_vae import KLVAE

    torch.manual_seed(0)
    vae = KLVAE.from_preset("tiny").eval().requires_grad_(False)
    vae.save_pretrained(tmp_path / "vae")
    cfg = load_config(AutoencoderStageConfig, CONFIGS / "tiny.yaml", [
        f"vae.path={tmp_path / 'vae'}", f"data.root={shapes_dir}", "data.val_fraction=0",
        f"data.latent_cache={tmp_path / 'cache'}", "model.loss.adversarial_start_step=0", "model.sampling.steps=1"])
    stage = AutoencoderStage()
    pixels = AutoencoderStage().dataset(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, latent_cache=None)),
                                        "train")
    write_latent_cache(Subset(pixels, [0, 1, 2]), vae.encode_clips, tmp_path / "cache", {"encoder": "kl-vae"},
                       shard_size=2, batch_size=2)
    modules = stage.build(cfg)
    dataset = stage.dataset(cfg, "train")
    assert len(dataset) == 3
    batch = default_collate([dataset[0], dataset[1]])
    assert "frames" not in batch and batch["video_latent"].shape == (2, 16, 4, 16, 16)
    losses = stage.losses(modules, batch, step=0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss/model"]) and "ae/adversarial" in losses
    preview = stage.preview(modules, batch)
    assert preview["video"].shape == (2, 8, 3, 64, 64) and preview["image"].shape == (4, 3, 64, 64)
