"""What a training stage supplies to the one training engine.

MM-LDM trains in three stages (KL-VAE, multi-modal autoencoder, DiT generator).
The engine (``mmldm.training.engine``) owns everything generic: devices,
mixed precision, accumulation, clipping, EMA, checkpoints, resume, logging.
A stage only says how to build its networks, what its data is, what its loss on a
batch is, and what a preview looks like.

Several optimisers (e.g. a GAN discriminator beside the model) are expressed by
``optimizer_groups``: each group name maps to the module keys it updates, and
``losses`` returns one scalar per group under ``"loss/<group>"`` (the main group
is ``"model"``). Groups are stepped in the order given, each backward pass
touching only its own loss.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


class Stage(Protocol):
    #: name used on the command line: ``mmldm train <name>``
    name: ClassVar[str]
    #: dataclass type of this stage's full config (engine fields included)
    config_cls: ClassVar[type]

    def build(self, cfg: Any) -> dict[str, nn.Module]:
        """All networks of the stage, trainable or frozen, by key ("model" is the main one)."""

    def optimizer_groups(self, cfg: Any) -> dict[str, list[str]]:
        """{group name: [module keys it optimises]}; ``{"model": ["model"]}`` in the common case."""

    def dataset(self, cfg: Any, split: str) -> Dataset:
        """Training (``split="train"``) or validation data; items are dicts of tensors."""

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Scalars: ``"loss/<group>"`` for each optimiser group, plus any logged extras."""

    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """Media for the logger: {"video": [B,T,3,H,W] in [-1,1], "audio": [B,N], "image": ...}."""
