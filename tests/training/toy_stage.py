"""A tiny stage for testing the engine: MLP regression on random tensors.

Optional extras exercise engine features: a frozen feature layer, a second
optimiser group ("critic", a least-squares GAN critic), dropout (global RNG),
noise drawn from the engine's generator, a NaN at a chosen step, and a pause at a
chosen step (so a test can kill the process mid-run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mmldm.training.config import TrainConfig


@dataclass
class ToyModelConfig:
    in_dim: int = 4
    hidden: int = 16
    out_dim: int = 2
    dropout: float = 0.1
    critic: bool = False
    #: before this optimiser step the critic is idle (its loss is a constant)
    critic_start_step: int = 0


@dataclass
class ToyDataConfig:
    num_items: int = 64
    #: losses() returns NaN at this optimiser step (-1: never)
    nan_at_step: int = -1
    #: losses() touches ``pause_file`` and sleeps at this step (-1: never)
    pause_at_step: int = -1
    pause_file: str = ""


@dataclass
class ToyConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ToyDataset(Dataset):
    """Items {"x": [in_dim], "y": [out_dim], "index": []} of a fixed random linear map plus noise."""

    def __init__(self, num_items: int, in_dim: int, out_dim: int, seed: int = 1234):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_items, in_dim, generator=gen)
        weight = torch.randn(in_dim, out_dim, generator=gen)
        self.y = self.x @ weight + 0.05 * torch.randn(num_items, out_dim, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index], "index": torch.tensor(index)}


class ToyStage:
    name = "toy"
    config_cls = ToyConfig

    def __init__(self) -> None:
        self.cfg: ToyConfig | None = None

    def build(self, cfg: ToyConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        m = cfg.model
        modules: dict[str, nn.Module] = {
            "features": nn.Linear(m.in_dim, m.in_dim),
            "model": nn.Sequential(nn.Linear(m.in_dim, m.hidden), nn.GELU(), nn.Dropout(m.dropout),
                                   nn.Linear(m.hidden, m.out_dim)),
        }
        if m.critic:
            modules["critic"] = nn.Sequential(nn.Linear(m.out_dim, m.hidden), nn.GELU(), nn.Linear(m.hidden, 1))
        return modules

    def optimizer_groups(self, cfg: ToyConfig) -> dict[str, list[str]]:
        return {"model": ["model"], "critic": ["critic"]} if cfg.model.critic else {"model": ["model"]}

    def dataset(self, cfg: ToyConfig, split: str) -> Dataset:
        return ToyDataset(cfg.data.num_items, cfg.model.in_dim, cfg.model.out_dim)

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        data = self.cfg.data
        if step == data.pause_at_step:
            Path(data.pause_file).write_text(str(step))
            time.sleep(600)
        with torch.no_grad():
            features = modules["features"](batch["x"])
        pred = modules["model"](features)
        noise = 0.01 * torch.randn(pred.shape, generator=generator, device=pred.device)
        mse = (pred.float() + noise - batch["y"]).pow(2).mean()
        terms = {"mse": mse.detach()}
        loss = mse
        if "critic" in modules and step < self.cfg.model.critic_start_step:
            terms["loss/critic"] = torch.zeros((), device=pred.device)
        elif "critic" in modules:
            critic = modules["critic"]
            loss = loss + 0.01 * (critic(pred).float() - 1).pow(2).mean()
            terms["loss/critic"] = (critic(pred.detach()).float().pow(2).mean()
                                    + (critic(batch["y"]).float() - 1).pow(2).mean())
        if step == data.nan_at_step:
            loss = loss * float("nan")
        terms["loss/model"] = loss
        return terms

    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        pred = modules["model"](modules["features"](batch["x"])).float().tanh()  # [B, out_dim]
        b = pred.shape[0]
        image = pred.mean(1).view(b, 1, 1, 1).expand(b, 3, 4, 4)
        return {"image": image, "video": image[:, None].expand(b, 2, 3, 4, 4),
                "audio": pred.mean(1, keepdim=True).expand(b, 80) * 0.5, "audio_sample_rate": 8000}
