"""Latents as one tensor OR a dict of tensors, with one batch dimension.

The diffusion code is written once for both cases: a single latent ``[B, ...]``
(e.g. the autoencoder's decoder latent) and a multi-modal dict such as
``{"audio": [B, 16, 8, 8], "video": [B, 16, 16, 16]}`` (the generator). All
entries of a dict share the batch size ``B``, and one timestep per sample is
shared by every entry (MM-LDM Sec. 3.2: "a shared transition kernel").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch

from .. import rng

#: a latent: one tensor [B, ...] or a dict {modality: [B, ...]}
Latents = Union[torch.Tensor, dict[str, torch.Tensor]]


def tree_map(fn: Callable[..., torch.Tensor], first: Latents, *rest: Latents) -> Latents:
    """Apply ``fn`` leaf-wise over tensors or dicts with the same keys."""
    if isinstance(first, torch.Tensor):
        for other in rest:
            if not isinstance(other, torch.Tensor):
                raise ValueError(f"expected a tensor, got {type(other).__name__} (latents must match)")
        return fn(first, *rest)
    if not isinstance(first, dict):
        raise ValueError(f"latents must be a tensor or a dict of tensors, got {type(first).__name__}")
    for other in rest:
        if not isinstance(other, dict) or set(other) != set(first):
            got = sorted(other) if isinstance(other, dict) else type(other).__name__
            raise ValueError(f"latent keys do not match: expected {sorted(first)}, got {got}")
    return {key: fn(first[key], *(other[key] for other in rest)) for key in first}


def leaves(x: Latents) -> list[torch.Tensor]:
    """The tensors of ``x`` (one for a tensor, one per key for a dict, in key order)."""
    return [x] if isinstance(x, torch.Tensor) else list(x.values())


def batch_size(x: Latents) -> int:
    """The shared batch size ``B``; a dict whose entries disagree is a ValueError."""
    sizes = {t.shape[0] for t in leaves(x)}
    if len(sizes) != 1:
        shapes = {k: tuple(v.shape) for k, v in x.items()} if isinstance(x, dict) else tuple(x.shape)
        raise ValueError(f"latent entries must share the batch size, got {shapes}")
    return sizes.pop()


def noise_like(x: Latents, generator: torch.Generator | None = None) -> Latents:
    """Standard Gaussian noise with the structure, shapes, dtype and device of ``x``.

    Drawn on the generator's device and moved, so a seeded CPU generator gives
    the same noise whatever device ``x`` is on. Entries are drawn in key order.
    """
    return tree_map(lambda leaf: rng.randn(leaf.shape, generator, leaf.device, leaf.dtype), x)


def broadcast_to(per_sample: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, 1, ...]`` with as many dims as ``like``, in ``like``'s dtype."""
    return per_sample.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class Packer:
    """Flatten a latent into one ``[B, N]`` tensor and back (for one-tensor schedulers).

    diffusers' schedulers step a single tensor; they are element-wise in the
    sample, so a dict is packed as ``cat([audio.flatten(1), video.flatten(1)], 1)``
    and unpacked after the step. A plain tensor passes through unchanged.
    """

    def __init__(self, like: Latents):
        self.is_dict = isinstance(like, dict)
        self.shapes = {k: tuple(v.shape[1:]) for k, v in like.items()} if self.is_dict else None

    def pack(self, x: Latents) -> torch.Tensor:
        """``x`` -> ``[B, N]`` (dict) or ``x`` itself (tensor)."""
        if not self.is_dict:
            return x
        return torch.cat([x[k].flatten(1) for k in self.shapes], dim=1)

    def unpack(self, flat: torch.Tensor) -> Latents:
        """Inverse of :meth:`pack`."""
        if not self.is_dict:
            return flat
        sizes = [int(torch.Size(s).numel()) for s in self.shapes.values()]
        parts = torch.split(flat, sizes, dim=1)
        return {k: p.reshape(p.shape[0], *s) for (k, s), p in zip(self.shapes.items(), parts)}
