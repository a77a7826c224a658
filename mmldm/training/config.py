"""Typed configuration of the training engine.

Every stage config holds one :class:`TrainConfig` under the field ``train``; in a
YAML preset that is the ``train:`` block, and on the command line
``--set train.optim.lr=1e-5``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError


@dataclass
class OptimConfig:
    """AdamW settings (decoupled weight decay, Loshchilov & Hutter 2019)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class ScheduleConfig:
    """Learning-rate factor: linear warm-up from 0, then constant or cosine down to ``min_lr_ratio``."""

    kind: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"schedule.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")


@dataclass
class GroupConfig:
    """Per-optimiser-group settings; ``None`` means "as in ``train.optim`` / ``train.grad_clip``"."""

    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights.

    The average starts as a copy of the weights (decay 0 at the first update) and
    its decay ramps linearly to ``decay`` over ``warmup_steps`` optimiser steps.
    """

    enabled: bool = True
    decay: float = 0.9999
    warmup_steps: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"ema.decay must lie in [0, 1), got {self.decay}")
        if self.warmup_steps < 0:
            raise ValueError(f"ema.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class CheckpointConfig:
    every: int = 1000
    keep_last: int = 3

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"checkpoint.every must be >= 1, got {self.every}")
        if self.keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {self.keep_last}")


@dataclass
class LogConfig:
    #: scalars (global mean over processes) every N optimiser steps
    every: int = 50
    #: media previews every N steps (0: never)
    preview_every: int = 1000
    #: number of training items in the fixed preview batch
    preview_items: int = 4
    tensorboard: bool = True
    progress_bar: bool = True
    #: append the dataset indices of every batch to out_dir/data_order/rank_<r>.txt
    record_data_order: bool = False

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"log.every must be >= 1, got {self.every}")
        if self.preview_every < 0:
            raise ValueError(f"log.preview_every must be >= 0, got {self.preview_every}")


@dataclass
class TrainConfig:
    """Everything the engine needs besides the stage itself.

    ``batch_size`` is per process and per micro-batch: one optimiser step sees
    ``batch_size * grad_accum * num_processes`` items.
    """

    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    #: overrides per optimiser group name (e.g. ``disc``)
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    ema: EMAConfig = field(default_factory=EMAConfig)
    batch_size: int = 8
    grad_accum: int = 1
    #: max global gradient norm per group (0: no clipping)
    grad_clip: float = 1.0
    max_steps: int = 100_000
    #: "auto" (bf16 where the device multiplies bf16 natively, else fp32 on a CPU and fp16 on a
    #: GPU: :mod:`mmldm.training.precision`), "no", "bf16" or "fp16" (YAML reads a bare ``no`` as
    #: false, which means "no" too)
    mixed_precision: Literal["auto", "no", "bf16", "fp16", False] = "auto"
    #: "auto": CUDA when available, else CPU (gloo between processes)
    device: Literal["auto", "cpu"] = "auto"
    #: DDP only: allow trainable parameters that get no gradient in some steps (slower)
    find_unused_parameters: bool = False
    #: torch.use_deterministic_algorithms (bitwise reproducible resume, slower on GPU)
    deterministic: bool = False
    seed: int = 0
    num_workers: int = 0
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    out_dir: Path = Path("runs/default")

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.mixed_precision is False:
            self.mixed_precision = "no"
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    def group_optim(self, group: str) -> tuple[OptimConfig, float]:
        """AdamW settings and clipping norm of optimiser group ``group``."""
        over = self.groups.get(group, GroupConfig())
        optim = dataclasses.replace(
            self.optim,
            **{k: getattr(over, k) for k in ("lr", "betas", "weight_decay") if getattr(over, k) is not None},
        )
        clip = self.grad_clip if over.grad_clip is None else over.grad_clip
        return optim, clip


def train_config_of(cfg: Any) -> TrainConfig:
    """The engine config inside a stage config (its ``train`` field)."""
    train = getattr(cfg, "train", None)
    if not isinstance(train, TrainConfig):
        raise ConfigError(f"stage config {type(cfg).__name__} has no field 'train' of type TrainConfig")
    return train
