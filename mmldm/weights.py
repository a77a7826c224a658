"""Weights on disk: one reader, one checked load, one "config + safetensors" folder format.

Every trained part of mmldm is saved the same way, as a folder holding a JSON config
and a safetensors file (the AVDiT and the multi-modal autoencoder as
``config.json`` + ``model.safetensors``, the KL-VAE in diffusers' layout,
``config.json`` + ``diffusion_pytorch_model.safetensors``), and loaded the same way:
the network is rebuilt from the config on the meta device and takes the file's
tensors as its parameters after :func:`load_state_checked` has compared every name
and shape. Every problem is one :class:`~mmldm.errors.WeightsError` line naming the
file: a missing or unreadable file, invalid JSON, missing / unexpected / mis-shaped
tensors.

Only safe formats are read: safetensors, or a PyTorch pickle loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import atomic_write_text, make_folder
from .errors import WeightsError
from .files import atomic_target

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

def load_state_dict_file(path: str | Path, what: str, key: str | None = None,
                         device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a weight file: ``.safetensors``, else a ``torch.load(weights_only=True)`` pickle.

    ``key``: for checkpoints that wrap the state dict (e.g. ``{"state_dict": ...}``), the entry
    to take; a file that already is a plain state dict is accepted too. Entries that are not
    tensors (a step counter beside the weights) are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, what, "weight file not found; pass the path to a local copy")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device=str(device))
        else:
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line naming it
        # the first sentence only: torch's weights-only message goes on to suggest weights_only=False
        detail = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        kind = "a safetensors" if path.suffix == ".safetensors" else "a torch.save weight file holding only tensors"
        raise WeightsError(path, what, f"cannot read weight file: not {kind} ({detail})") from None
    if key is not None and isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise WeightsError(path, what, "file does not hold a state dict of tensors")
    return tensors


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str,
                       assign: bool = False) -> None:
    """``model.load_state_dict(state)`` after checking every name and shape: missing, unexpected
    and mis-shaped tensors are one WeightsError line (a few of each named).

    Floating tensors take the model's dtype. ``assign=True`` makes the loaded tensors the
    parameters (for a model built on the meta device: no second copy, no random init).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {list(state[k].shape)} != {list(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {label} (e.g. {', '.join(items[:3])})"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise WeightsError(path, what, "do not fit the network: " + "; ".join(parts))
    state = {k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v).contiguous()
             for k, v in state.items()}
    model.load_state_dict(state, assign=assign)


def read_config_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; missing, invalid or non-object: one WeightsError line."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, what, f"{path.name} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(path, what, f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(path, what, f"{path.name} must hold a JSON object")
    return data


def save_pretrained_folder(directory: str | Path, config: dict[str, Any], module: nn.Module,
                           weights_name: str = WEIGHTS_NAME, config_name: str = CONFIG_NAME) -> Path:
    """Write ``config`` as JSON and ``module``'s state dict as safetensors into ``directory``.

    Each file is written under a temporary name and renamed (:func:`mmldm.files.atomic_target`),
    so an interrupted save never leaves a truncated file under its final name.
    """
    from safetensors.torch import save_file

    directory = make_folder(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_target(directory / weights_name) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})  # what diffusers and transformers write
    atomic_write_text(directory / config_name, json.dumps(config, indent=2) + "\n")
    return directory


def read_folder_config(directory: str | Path, what: str, config_name: str = CONFIG_NAME) -> dict[str, Any]:
    """The JSON config of a folder written by :func:`save_pretrained_folder` (read before its
    weights: a config the caller refuses costs no weight read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(directory, what, f"folder not found; expected {config_name} and its weights in it")
    return read_config_json(directory / config_name, what)


def read_folder_info(directory: str | Path, cls: type, what: str) -> Any:
    """The ``config.json`` of a :func:`save_pretrained_folder` folder as the dataclass ``cls``
    (:func:`mmldm.config.from_dict`); a missing, corrupt or wrong config is one WeightsError line."""
    from .config import from_dict
    from .errors import MMLDMError

    config = read_folder_config(directory, what)
    try:
        return from_dict(cls, config)
    except (MMLDMError, TypeError, ValueError) as exc:
        raise WeightsError(Path(directory) / CONFIG_NAME, what, str(exc)) from None


def load_folder_module(module: nn.Module, directory: str | Path, what: str,
                       device: torch.device | str = "cpu") -> nn.Module:
    """``module`` with the checked weights of a :func:`save_pretrained_folder` folder, on ``device``,
    frozen and in eval mode (an optional part of a model folder, ready to run)."""
    state, path = read_folder_weights(directory, what, device=device)
    load_state_checked(module, state, path, what)
    return module.to(device).eval().requires_grad_(False)


def read_folder_weights(directory: str | Path, what: str, weights_name: str = WEIGHTS_NAME,
                        device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], Path]:
    """``(tensors, path)`` of the safetensors file of a folder written by :func:`save_pretrained_folder`;
    the caller hands them to :func:`load_state_checked`."""
    weights = Path(directory) / weights_name
    if not weights.is_file():
        raise WeightsError(weights, what, f"{weights_name} is missing")
    return load_state_dict_file(weights, what, device=device), weights


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
