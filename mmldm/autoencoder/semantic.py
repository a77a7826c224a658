"""The shared high-level semantic space (paper Sec. 3.1, "A Shared High-level Semantic Space").

* :class:`Projector` maps a (detached) perceptual latent to ``token_grid**2``
  semantic tokens of width ``dim`` (paper: 4 tokens of 768).
* :class:`ClassificationHead` predicts the class from an audio-video pair of
  token sets (cross-entropy).
* :class:`ContrastiveHead` pools and projects each modality to a unit vector
  and computes the CLIP loss of Eq. (1) with a learnable temperature, the
  features gathered across processes when ``torch.distributed`` is running.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .blocks import ResBlock, SelfAttention, downsample
from .config import SemanticConfig


class Projector(nn.Module):
    """Perceptual latent -> semantic tokens.

    Shapes: ``latent`` [B, Z, S, S] -> [B, N = token_grid**2, dim]. Convolutions
    halve the side until it equals ``token_grid``; self-attention then mixes
    the tokens and a linear layer maps them to the semantic width.
    """

    def __init__(self, cfg: SemanticConfig, latent_channels: int, latent_size: int):
        super().__init__()
        width = cfg.projector_channels
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        layers: list[nn.Module] = []
        side = latent_size
        while side > cfg.token_grid:
            layers += [ResBlock(width, width), downsample(width)]
            side //= 2
        layers.append(ResBlock(width, width))
        self.convs = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.randn(cfg.token_grid**2, width) * 0.02)
        self.attn = SelfAttention(width, cfg.head_dim)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, cfg.dim)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        tokens = rearrange(self.convs(self.conv_in(latent)), "b c h w -> b (h w) c") + self.position
        return self.out(self.norm(self.attn(tokens)))


class ClassificationHead(nn.Module):
    """Class logits from a pair of token sets: [B, N, D] x 2 -> [B, num_classes]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, num_classes))

    def forward(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([video_tokens.mean(dim=1), audio_tokens.mean(dim=1)], dim=-1)  # [B, 2D]
        return self.net(pooled)


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [B, E] from every process -> [world * B, E].

    Gradients flow through this process's own slice only (the other slices are
    constants here; each process back-propagates its own part). Without an
    initialised process group this returns ``x``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


class ContrastiveHead(nn.Module):
    """CLIP-style audio-video contrastive loss, Eq. (1).

    Each modality's tokens are mean-pooled, projected to ``contrastive_dim`` and
    L2-normalised; similarities are scaled by ``exp(log_scale)`` (init 1/0.07,
    clamped to [1, max_logit_scale] as in CLIP); the loss is the mean of the
    video->audio and audio->video cross-entropies with matched pairs positive.
    """

    def __init__(self, cfg: SemanticConfig):
        super().__init__()
        self.video_proj = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.contrastive_dim))
        self.audio_proj = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.contrastive_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature_init)))
        self.max_log_scale = math.log(cfg.max_logit_scale)

    def embed(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings ``([B, E], [B, E])`` of the two modalities."""
        video = F.normalize(self.video_proj(video_tokens.mean(dim=1)), dim=-1)
        audio = F.normalize(self.audio_proj(audio_tokens.mean(dim=1)), dim=-1)
        return video, audio

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log_scale).exp()

    def forward(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Scalar contrastive loss of a batch of matched pairs ([B, N, D] each)."""
        video, audio = self.embed(video_tokens.float(), audio_tokens.float())
        all_video, all_audio = gather_with_local_grad(video), gather_with_local_grad(audio)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        labels = torch.arange(video.shape[0], device=video.device) + rank * video.shape[0]
        scale = self.logit_scale()
        video_to_audio = scale * video @ all_audio.T  # [B, world*B]
        audio_to_video = scale * audio @ all_video.T
        return 0.5 * (F.cross_entropy(video_to_audio, labels) + F.cross_entropy(audio_to_video, labels))
