"""Loading feature-network weights from a local file, and fingerprinting it.

Only safe formats: ``.safetensors``, or a PyTorch pickle read with
``torch.load(weights_only=True)``. Every failure is one WeightsError line
naming the file and the feature net it was meant for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError


def load_state_dict_file(path: str | Path, what: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a weight file on CPU.

    ``key``: for checkpoints that wrap the state dict (e.g. ``{"model": ...}``),
    the entry to take; a file that is already a plain state dict is accepted too.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, what, "weight file not found; pass the path to a local copy")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line naming it
        # the first sentence only: torch's weights-only message goes on to suggest weights_only=False
        detail = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        kind = "a safetensors" if path.suffix == ".safetensors" else "a torch.save weight file holding only tensors"
        raise WeightsError(path, what, f"cannot read weight file: not {kind} ({detail})") from exc
    if key is not None and isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(path, what, "file does not hold a state dict of tensors")
    return state


def read_safetensors_metadata(path: str | Path, what: str) -> dict[str, str]:
    """The string metadata of a safetensors file's header ({} when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - an unreadable header becomes one line naming the file
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise WeightsError(path, what, f"cannot read the safetensors header ({detail})") from None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
