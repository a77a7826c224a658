"""Video encoder: key-frame VAE latents -> the video perceptual latent (paper Sec. 3.1).

A learnable "content frame" is put in front of the key-frame latents (T = K + 1
slots); a 3D convolution mixes neighbouring slots; each level runs residual
blocks with spatial self-attention (per slot) and temporal self-attention (per
pixel, across slots); levels are separated by a 2x spatial downsample. The
Gaussian heads read slot 0 only, so the content frame gathers the clip into one
latent (paper: 4 x 32x32 key frames -> 16 x 16x16). With ``readout: key_frames``
(not in the paper) they read each key-frame slot instead, Z / K channels each,
stacked along channels in key-frame order: the latent keeps its [Z, h, w] shape.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from .blocks import DiagonalGaussian, GaussianHead, ResBlock, SpatialAttention, TemporalAttention, downsample
from .config import VideoEncoderConfig


class VideoEncoderLayer(nn.Module):
    """One residual block + spatial attention + temporal attention. [B, T, C_in, H, W] -> [B, T, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, head_dim: int):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels)
        self.spatial = SpatialAttention(out_channels, head_dim)
        self.temporal = TemporalAttention(out_channels, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = rearrange(x, "b t c h w -> (b t) c h w")
        h = self.spatial(self.res(h))
        return self.temporal(rearrange(h, "(b t) c h w -> b t c h w", b=b))


class VideoEncoder(nn.Module):
    """Encode the key frames of a clip into a Gaussian posterior over the video perceptual latent."""

    def __init__(self, cfg: VideoEncoderConfig, vae_channels: int, vae_size: int):
        super().__init__()
        self.cfg = cfg
        self.content_frame = nn.Parameter(torch.randn(vae_channels, vae_size, vae_size) * 0.02)
        width = cfg.channels[0]
        self.stem = nn.Conv3d(vae_channels, width, kernel_size=3, padding=1)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, out in enumerate(cfg.channels):
            layers = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                layers.append(VideoEncoderLayer(width, out, cfg.head_dim))
                width = out
            self.levels.append(layers)
            self.downsamples.append(downsample(width) if i < len(cfg.channels) - 1 else nn.Identity())
        keys = len(cfg.key_frames)
        per_slot = cfg.readout == "key_frames"
        self.head = GaussianHead(width, cfg.latent_channels // keys if per_slot else cfg.latent_channels)

    def forward(self, key_latents: torch.Tensor) -> DiagonalGaussian:
        """Shapes: ``key_latents`` [B, K, C_vae, h, w] -> posterior over [B, Z, h/2^L, w/2^L]."""
        b = key_latents.shape[0]
        content = repeat(self.content_frame, "c h w -> b 1 c h w", b=b).to(key_latents.dtype)
        x = torch.cat([content, key_latents], dim=1)  # [B, T=K+1, C, h, w]
        x = rearrange(self.stem(rearrange(x, "b t c h w -> b c t h w")), "b c t h w -> b t c h w")
        for layers, down in zip(self.levels, self.downsamples):
            for layer in layers:
                x = layer(x)
            if not isinstance(down, nn.Identity):
                x = rearrange(down(rearrange(x, "b t c h w -> (b t) c h w")), "(b t) c h w -> b t c h w", b=b)
        if self.cfg.readout == "key_frames":  # slots 1..K, each Z/K channels: [B*K, Z/K, h', w']
            mean, logvar = self.head(rearrange(x[:, 1:], "b t c h w -> (b t) c h w"))
            stack = lambda y: rearrange(y, "(b t) z h w -> b (t z) h w", b=b)  # noqa: E731
            return DiagonalGaussian(stack(mean), stack(logvar))
        mean, logvar = self.head(x[:, 0])  # keep time slot 0 (the content frame)
        return DiagonalGaussian(mean, logvar)
