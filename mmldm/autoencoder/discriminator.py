"""Audio-video discriminator for the adversarial loss (paper Sec. 3.1, Eq. 2).

It scores a triplet (audio image, frame a, frame b): 3 slots of [3, H, W] images.
A 3D convolution stem mixes the slots; each level runs a residual block per
slot, temporal (cross-slot) attention at each pixel and a 2x downsample; a full
self-attention over all slots and positions at the lowest resolution, a global
average pool and a linear layer give one logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .blocks import ResBlock, SelfAttention, TemporalAttention, downsample, group_norm
from .config import DiscriminatorConfig


class AVDiscriminator(nn.Module):
    """Triplet discriminator. Shapes: three [B, 3, H, W] images -> [B] logits."""

    def __init__(self, cfg: DiscriminatorConfig, image_channels: int = 3):
        super().__init__()
        width = cfg.channels[0]
        self.slot_embedding = nn.Parameter(torch.zeros(3, image_channels, 1, 1))
        self.stem = nn.Conv3d(image_channels, width, kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1))
        self.blocks = nn.ModuleList()
        self.temporal = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for out in cfg.channels:
            self.blocks.append(ResBlock(width, out))
            self.temporal.append(TemporalAttention(out, cfg.head_dim))
            self.downsamples.append(downsample(out))
            width = out
        self.attn = SelfAttention(width, cfg.head_dim)
        self.norm = group_norm(width)
        self.out = nn.Linear(width, 1)

    def forward(self, audio_image: torch.Tensor, frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
        x = torch.stack([audio_image, frame_a, frame_b], dim=1) + self.slot_embedding  # [B, 3, C, H, W]
        b = x.shape[0]
        x = rearrange(self.stem(rearrange(x, "b t c h w -> b c t h w")), "b c t h w -> (b t) c h w")
        for block, temporal, down in zip(self.blocks, self.temporal, self.downsamples):
            x = rearrange(block(x), "(b t) c h w -> b t c h w", b=b)
            x = down(rearrange(temporal(x), "b t c h w -> (b t) c h w"))
        x = F.silu(self.norm(x))
        tokens = self.attn(rearrange(x, "(b t) c h w -> b (t h w) c", b=b))  # full attention over slots x pixels
        return self.out(tokens.mean(dim=1)).squeeze(-1)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminator, Eq. (2): E[relu(1 - D(real))] + mean_k E[relu(1 + D(fake_k))]."""
    fake = torch.stack([F.relu(1.0 + logits).mean() for logits in fake_logits]).mean()
    return F.relu(1.0 - real_logits).mean() + fake


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. (2): -E[D(fake)] on the all-fake triplet."""
    return -fake_logits.mean()
