"""The autoencoder stage on the training engine: presets, a 2-step run, checkpoint loading."""

from __future__ import annotations

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
