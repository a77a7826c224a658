"""Building blocks shared by the encoders, projectors and discriminator.

Shapes: B batch, T frames, C channels, H/W spatial, N tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import rng


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block: (GN, SiLU, 3x3 conv) x 2 plus a 1x1 skip.

    Shapes: ``x`` [B, C_in, H, W] -> [B, C_out, H, W]; optional ``bias`` [B, C_out]
    is added after the first convolution (used for the frame-index embedding).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if bias is not None:
            h = h + bias[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens with a pre-norm and a residual.

    Shapes: ``x`` [B, N, C] -> [B, N, C].
    """

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"attention width {channels} is not a multiple of head_dim {head_dim}")
        self.heads = channels // head_dim
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(rearrange(h, "b h n d -> b n (h d)"))


class SpatialAttention(nn.Module):
    """Self-attention over the H*W positions of each image. ``x`` [B, C, H, W] -> same."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.attn = SelfAttention(channels, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(x, "b c h w -> b (h w) c")
        return rearrange(self.attn(tokens), "b (h w) c -> b c h w", h=h, w=w)


class TemporalAttention(nn.Module):
    """Self-attention over the T slots at each pixel. ``x`` [B, T, C, H, W] -> same."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.attn = SelfAttention(channels, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        tokens = rearrange(x, "b t c h w -> (b h w) t c")
        return rearrange(self.attn(tokens), "(b h w) t c -> b t c h w", b=b, h=h, w=w)


def downsample(channels: int) -> nn.Conv2d:
    """2x spatial downsample: a stride-2 3x3 convolution."""
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class GaussianHead(nn.Module):
    """Mean and log-variance heads of a diagonal Gaussian posterior.

    Each head is GN, SiLU, 3x3 conv. The log-variance head's last conv is
    zero-initialised (weight and bias), so the posterior starts with unit
    variance around the learned mean; the mean head keeps its default
    initialisation so the latent carries signal from the first step.

    Shapes: [B, C, H, W] -> (mean, logvar), each [B, Z, H, W]; logvar clamped to [-30, 20].
    """

    def __init__(self, channels: int, latent_channels: int):
        super().__init__()
        self.mean = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, latent_channels, 3, padding=1))
        self.logvar = nn.Sequential(group_norm(channels), nn.SiLU(),
                                    zero_module(nn.Conv2d(channels, latent_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), self.logvar(x).clamp(-30.0, 20.0)


class DiagonalGaussian:
    """A diagonal Gaussian posterior ``N(mean, exp(logvar))`` over [B, Z, H, W] latents."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample ``mean + std * eps``."""
        eps = rng.randn(self.mean.shape, generator, self.mean.device).to(self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent dims: ``[B]`` (as in LDM's KL regulariser)."""
        mean, logvar = self.mean.float(), self.logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
        return kl.flatten(1).sum(dim=1)
