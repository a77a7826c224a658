"""Exponential moving average of a module's weights.

Not diffusers' ``EMAModel``: that keeps a flat list of shadow parameters and no
buffers, whereas we want a full module copy whose ``state_dict`` has the
model's own keys (saved as ``ema_<key>.safetensors``, loadable into the network
with ``load_state_dict``) and which previews can run directly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(update: int, decay: float, warmup_steps: int) -> float:
    """Decay used at the ``update``-th EMA update (0-based).

    The first update has decay 0, so the average starts as a copy of the
    weights; the decay then ramps linearly to ``decay`` over ``warmup_steps``.
    """
    if warmup_steps == 0:
        return 0.0 if update == 0 else decay
    return decay * min(1.0, update / warmup_steps)


class EMA:
    """EMA copy of ``module``: ``ema <- decay * ema + (1 - decay) * weights`` after each step."""

    def __init__(self, module: nn.Module, decay: float, warmup_steps: int):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        for p in self.module.parameters():
            p.data = p.data.float()

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards ``module``'s current weights (buffers are copied)."""
        d = ema_decay(self.updates, self.decay, self.warmup_steps)
        for ema_param, param in zip(self.module.parameters(), module.parameters()):
            ema_param.lerp_(param.detach().float(), 1.0 - d)
        for ema_buffer, buffer in zip(self.module.buffers(), module.buffers()):
            ema_buffer.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = updates
