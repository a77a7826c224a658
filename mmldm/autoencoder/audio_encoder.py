"""Audio encoder: the audio image's VAE latent -> the audio perceptual latent (paper Sec. 3.1).

The VAE latent is concatenated (channels) with a learnable map, then residual
blocks with spatial self-attention run at each level, with a 2x downsample
between levels (paper: 4x32x32 -> 16x8x8, i.e. x4).
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from .blocks import DiagonalGaussian, GaussianHead, ResBlock, SpatialAttention, downsample
from .config import AudioEncoderConfig


class AudioEncoder(nn.Module):
    """Encode an audio-image latent into a Gaussian posterior over the audio perceptual latent."""

    def __init__(self, cfg: AudioEncoderConfig, vae_channels: int, vae_size: int):
        super().__init__()
        self.cfg = cfg
        self.learned_map = nn.Parameter(torch.randn(vae_channels, vae_size, vae_size) * 0.02)
        width = cfg.channels[0]
        self.stem = nn.Conv2d(2 * vae_channels, width, 3, padding=1)
        self.layers = nn.ModuleList()
        for i, out in enumerate(cfg.channels):
            for _ in range(cfg.num_res_blocks):
                self.layers.append(ResBlock(width, out))
                self.layers.append(SpatialAttention(out, cfg.head_dim))
                width = out
            if i < len(cfg.channels) - 1:
                self.layers.append(downsample(width))
        self.head = GaussianHead(width, cfg.latent_channels)

    def forward(self, audio_latent: torch.Tensor) -> DiagonalGaussian:
        """Shapes: ``audio_latent`` [B, C_vae, h, w] -> posterior over [B, Z, h/2^L, w/2^L]."""
        learned = repeat(self.learned_map, "c h w -> b c h w", b=audio_latent.shape[0]).to(audio_latent.dtype)
        x = self.stem(torch.cat([audio_latent, learned], dim=1))
        for layer in self.layers:
            x = layer(x)
        mean, logvar = self.head(x)
        return DiagonalGaussian(mean, logvar)
