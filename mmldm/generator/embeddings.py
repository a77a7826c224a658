"""Embeddings of the multi-modal DiT: patches, positions, timesteps, classes.

The sinusoidal functions are diffusers' (``diffusers.models.embeddings``), so
the timestep embedding equals DiT's ``TimestepEmbedder`` (cos first, 256
frequencies, max period 10000) and the position embedding equals DiT's fixed
2D sin-cos embedding (first half of the channels encodes the row, second half
the column).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed_from_grid
from einops import rearrange
from torch import nn


def sincos_2d_position_embedding(dim: int, height: int, width: int,
                                 device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding of a ``height x width`` token grid.

    Integer positions (no rescaling by a base size: diffusers'
    ``get_2d_sincos_pos_embed`` rescales for PixArt, DiT does not), raster order.

    :param dim: embedding width ``D`` (a multiple of 4).
    :return: ``[height * width, D]`` float32, row-major (token ``i * width + j`` is row i, column j).
    """
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                                torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    grid = torch.stack([rows.reshape(-1), cols.reshape(-1)])  # [2, H*W]
    return get_2d_sincos_pos_embed_from_grid(dim, grid).float()  # [H*W, D]


class PatchEmbed(nn.Module):
    """Latent ``[B, C, H, W]`` -> tokens ``[B, (H/p)(W/p), D]`` with a ``p x p``-stride convolution."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """:param latent: ``[B, C, H, W]``. :return: ``[B, N, D]``, N = (H/p)(W/p), raster order."""
        return rearrange(self.proj(latent), "b d h w -> b (h w) d")


class FrameEmbed(nn.Module):
    """Latent ``[B, C, H, W]`` -> tokens ``[B, C, D]``: one token per channel, a linear map of its ``H x W`` map.

    For a video latent whose channels are frames (the key-frame readout with one
    channel per frame, :mod:`mmldm.autoencoder`), each token is one frame.
    """

    def __init__(self, height: int, width: int, dim: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(height * width, dim, bias=bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """:param latent: ``[B, C, H, W]``. :return: ``[B, C, D]``, token i = channel i."""
        return self.proj(rearrange(latent, "b c h w -> b c (h w)"))


class TimestepEmbedder(nn.Module):
    """Timestep ``[B]`` (float, DDPM scale 0..1000) -> ``[B, D]``: sinusoid(256) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequencies = Timesteps(frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(frequency_dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """:param t: ``[B]``. :return: ``[B, D]``."""
        freq = self.frequencies(t)  # [B, F] float32
        return self.mlp(freq.to(self.mlp.linear_1.weight.dtype))  # [B, D]


class ClassEmbedder(nn.Module):
    """Class label ``[B]`` -> ``[B, D]``; index ``num_classes`` is the null class (dropped label)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """:param labels: ``[B]`` int64 in ``[0, num_classes]``. :return: ``[B, D]``."""
        return self.table(labels)
