"""Engine config: strict loading inside a stage config, overrides, per-group settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_stage import ToyConfig

from mmldm.config import load_config
from mmldm.errors import ConfigError
from mmldm.training.config import TrainConfig, train_config_of


def test_yaml_preset_with_overrides(tmp_path: Path) -> None:
    preset = tmp_path / "toy.yaml"
    preset.write_text("model: {hidden: 8}\ntrain:\n  mixed_precision: no\n  optim: {lr: 3e-4, betas: [0.5, 0.9]}\n"
                      "  groups: {critic: {lr: 1.0e-3, grad_clip: 0}}\n")
    cfg = load_config(ToyConfig, preset, ["train.batch_size=2", "model.hidden=12"])
    assert cfg.model.hidden == 12
    assert cfg.train.mixed_precision == "no"  # YAML's bare `no` is false
    assert cfg.train.batch_size == 2
    assert cfg.train.optim.betas == (0.5, 0.9)
    model_optim, model_clip = cfg.train.group_optim("model")
    critic_optim, critic_clip = cfg.train.group_optim("critic")
    assert (model_optim.lr, model_clip) == (3e-4, 1.0)
    assert (critic_optim.lr, critic_optim.betas, critic_clip) == (1e-3, (0.5, 0.9), 0.0)


@pytest.mark.parametrize("override, needle", [
    (["train.bogus=1"], "train.bogus"),
    (["train.optim.lrate=1"], "train.optim.lrate"),
    (["train.mixed_precision=fp8"], "mixed_precision"),
    (["train.grad_accum=0"], "grad_accum"),
    (["train.ema.decay=1.5"], "ema.decay"),
    (["train.schedule.kind=linear"], "schedule.kind"),
])
def test_bad_values_are_one_line_errors(override: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as err:
        load_config(ToyConfig, None, override)
    assert "\n" not in str(err.value)


def test_stage_config_must_hold_train() -> None:
    assert isinstance(train_config_of(ToyConfig()), TrainConfig)
    with pytest.raises(ConfigError, match="no field 'train'"):
        train_config_of(object())
