"""Seeded random weights for the feature networks (``--features random`` and tests).

Real weights load through :mod:`mmldm.weights` (safetensors or ``weights_only`` pickles).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_weights_(model: nn.Module, seed: int, bias_std: float = 0.01) -> nn.Module:
    """Seeded random weights for ``--features random`` and tests, in place.

    Convolutions and linear layers: He-normal weights, N(0, bias_std) biases;
    batch norms: identity (weight 1, bias 0, mean 0, variance 1). Other
    parameters and buffers are left as they are. Works on a model built on the
    meta device and moved with ``to_empty`` (no default initialisation to pay for).
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * bias_std)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model.eval()
