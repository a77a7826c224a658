"""Loading feature-network weights from a local file, and fingerprinting it.

Only safe formats: ``.safetensors``, or a PyTorch pickle read with
``torch.load(weights_only=True)``. Every failure is one WeightsError line
naming the file and the feature net it was meant for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

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
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeightsError(path, what, f"cannot read weight file: {reason}") from exc
    if key is not None and isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(path, what, "file does not hold a state dict of tensors")
    return state


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
