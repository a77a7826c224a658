"""What a training stage supplies to the one training engine.

MM-LDM trains in three stages (KL-VAE, multi-modal autoencoder, DiT generator).
The engine (:class:`mmldm.training.engine.Trainer`) owns everything generic:
devices, mixed precision, accumulation, clipping, EMA, checkpoints, resume,
logging. A stage only says how to build its networks, what its data is, what its
loss on a batch is, and what a preview looks like.

Contract:

* **Config.** ``config_cls`` is a dataclass holding the engine's config as a
  field named ``train`` (a :class:`mmldm.training.config.TrainConfig`) next to
  the stage's own fields::

      @dataclass
      class VAEStageConfig:
          model: KLVAEConfig = field(default_factory=KLVAEConfig)
          data: DataConfig = field(default_factory=DataConfig)
          train: TrainConfig = field(default_factory=TrainConfig)

  Presets live in ``configs/<stage>/*.yaml`` and load strictly.
* **Construction.** The engine instantiates the stage class with no arguments
  (``stage_cls()``); everything configurable comes in through ``cfg``.
* **Modules.** ``build`` returns every network by key. Keys named in some
  optimiser group are trainable: wrapped for DDP/FSDP, checkpointed, EMA'd.
  All other modules are frozen: moved to the device, ``eval()``, no gradients,
  not checkpointed (load their pretrained weights inside ``build``).
* **Several optimisers** (e.g. a GAN discriminator beside the model) are
  expressed by ``optimizer_groups``: each group name maps to the module keys it
  updates, and ``losses`` returns one scalar per group under ``"loss/<group>"``
  (the main group is ``"model"``). Groups are stepped in the order given; the
  backward pass of ``loss/<group>`` only accumulates into that group's
  parameters (so a generator loss that runs through the discriminator does not
  touch the discriminator's gradients). Settings per group: ``train.groups``.
  A group's loss may be a constant without gradient in steps where the group is
  idle (e.g. a discriminator before it starts); it then does not move. Under DDP
  a module whose forward ran must get a gradient in that step (or set
  ``train.find_unused_parameters``).
* **Calling trainable modules.** ``losses`` receives the wrapped modules: call
  trainable ones through ``module(...)`` (their ``forward``) only, never through
  other methods, or DDP/FSDP cannot synchronise gradients. Dispatch inside
  ``forward`` if several entry points are needed.
* **Randomness.** ``generator`` is a :class:`torch.Generator` on the training
  device, seeded per process from ``(train.seed, rank)`` and saved in every
  checkpoint: draw all noise, timesteps and dropout masks from it, so that a
  resumed run continues exactly.
* **Data.** ``dataset`` items are dicts of tensors (collated with
  ``default_collate``). Item randomness (crops, target frames) must be a
  function of the index, or of the epoch given to an optional
  ``dataset.set_epoch(epoch)`` which the engine calls at each epoch start.
  The engine does the shuffling and per-process sharding.
* **Mixed precision.** ``losses`` runs under autocast (bf16 when configured);
  wrap numerically sensitive parts in ``torch.autocast(..., enabled=False)``.
* **Previews.** ``preview`` gets unwrapped modules in eval mode (the EMA copies
  where EMA is enabled) under ``torch.no_grad()`` and a fixed batch made of the
  first ``train.log.preview_items`` training items. It returns any of
  ``"video"`` [B,T,3,H,W] in [-1,1], ``"image"`` [B,3,H,W] in [-1,1],
  ``"audio"`` [B,N] in [-1,1] with ``"audio_sample_rate"`` (int).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


class Stage(Protocol):
    #: name used on the command line: ``mmldm train <name>``
    name: ClassVar[str]
    #: dataclass type of this stage's full config; has a field ``train: TrainConfig``
    config_cls: ClassVar[type]

    def build(self, cfg: Any) -> dict[str, nn.Module]:
        """All networks of the stage, trainable or frozen, by key ("model" is the main one)."""

    def optimizer_groups(self, cfg: Any) -> dict[str, list[str]]:
        """{group name: [module keys it optimises]}; ``{"model": ["model"]}`` in the common case."""

    def dataset(self, cfg: Any, split: str) -> Dataset:
        """Training (``split="train"``) or validation data; items are dicts of tensors."""

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Scalars: ``"loss/<group>"`` for each optimiser group, plus any logged extras.

        ``step`` is the index (from 0) of the optimiser step this batch belongs to.
        """

    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """Media for the logger: {"video": [B,T,3,H,W] in [-1,1], "audio": [B,N], "image": ...}."""
