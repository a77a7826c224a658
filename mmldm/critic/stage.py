"""Training the sync critic (:mod:`mmldm.critic.network`) on real clips: ``mmldm train sync-critic``.

    mmldm train sync-critic --config configs/recipe/sync-critic.yaml --set data.root=DATA --out RUN
    mmldm export sync-critic RUN/checkpoints/step_003000 --model DIR [--default]

Each step reads ``batch_size`` clips (frames and audio image, as every stage reads them) and
scores every frame's video embedding against every frame's audio embedding in the batch
(``B*T x B*T`` cosines times the learnt scale): per-frame InfoNCE in both directions, CLIP's
symmetric loss with frames as the items. A clip's own other frames are in the negatives, which is
what teaches timing.

The critic judges *decoded* samples, which are a little blurred and noisy next to the real clips
it learns from; each training clip's frames are blurred (a Gaussian of a random width up to
``augment.blur_sigma`` pixels) and noised (a random std up to ``augment.noise_std``) so that
those differences do not read as being out of sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import rng
from ..data.config import ClipDataConfig
from ..errors import ConfigError, DataError
from ..training.config import TrainConfig
from .network import SyncCritic, SyncCriticConfig


@dataclass
class SyncCriticAugmentConfig:
    #: the largest Gaussian blur (std in pixels) put on a training clip's frames (0: none)
    blur_sigma: float = 1.5
    #: the largest std of Gaussian noise added to them (pixels in [-1, 1]; 0: none)
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        if not (0 <= self.blur_sigma <= 8) or not (0 <= self.noise_std <= 1):
            raise ConfigError(f"augment: blur_sigma must lie in [0, 8] and noise_std in [0, 1], "
                              f"got {self.blur_sigma} and {self.noise_std}")


@dataclass
class SyncCriticTrainConfig:
    critic: SyncCriticConfig = field(default_factory=SyncCriticConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    augment: SyncCriticAugmentConfig = field(default_factory=SyncCriticAugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.critic.frame_size != self.data.size or self.critic.audio_image_size != self.data.size:
            raise ConfigError(f"critic.frame_size ({self.critic.frame_size}) and critic.audio_image_size "
                              f"({self.critic.audio_image_size}) must equal data.size ({self.data.size}): the "
                              "critic reads the clips' frames and audio images at that size")


def blur_and_noise(frames: torch.Tensor, cfg: SyncCriticAugmentConfig,
                   generator: torch.Generator | None) -> torch.Tensor:
    """``[B, T, 3, H, W]``: each clip blurred by its own Gaussian (std uniform in [0, blur_sigma]) and
    noised (std uniform in [0, noise_std])."""
    b = frames.shape[0]
    device = frames.device
    out = frames
    if cfg.blur_sigma > 0:
        sigma = rng.rand((b,), generator, device) * cfg.blur_sigma  # [B]
        radius = max(1, round(3 * cfg.blur_sigma))
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=frames.dtype)
        kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)  # [B, K]; a tiny sigma is the identity
        t, c, h, w = frames.shape[1:]
        x = frames.permute(1, 2, 0, 3, 4).reshape(1, t * c * b, h, w)  # clips as groups of channels
        weights = kernel.repeat(t * c, 1)[:, None]  # [T*C*B, 1, K]
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), weights[:, :, None, :], groups=t * c * b)
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), weights[:, :, :, None], groups=t * c * b)
        out = x.reshape(t, c, b, h, w).permute(2, 0, 1, 3, 4)
    if cfg.noise_std > 0:
        std = rng.rand((b, 1, 1, 1, 1), generator, device) * cfg.noise_std
        out = out + rng.randn(out.shape, generator, device, out.dtype) * std
    return out


def frame_infonce(critic: SyncCritic, frames: torch.Tensor, audio_image: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(symmetric per-frame InfoNCE loss, the share of frames whose own audio scores highest)."""
    video, audio = critic(frames, audio_image)
    video, audio = video.flatten(0, 1).float(), audio.flatten(0, 1).float()  # [B*T, D]
    logits = video @ audio.T * critic.logit_scale().float()
    target = torch.arange(len(video), device=video.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, (logits.argmax(1) == target).float().mean()


class SyncCriticStage:
    """The sync critic (see the module docstring)."""

    name = "sync-critic"
    config_cls = SyncCriticTrainConfig

    def __init__(self) -> None:
        self.cfg: SyncCriticTrainConfig | None = None

    def build(self, cfg: SyncCriticTrainConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        return {"model": SyncCritic(cfg.critic)}

    def optimizer_groups(self, cfg: SyncCriticTrainConfig) -> dict[str, list[str]]:
        return {"model": ["model"]}

    def dataset(self, cfg: SyncCriticTrainConfig, split: str) -> Dataset:
        return cfg.data.dataset(split)

    @staticmethod
    def _inputs(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "frames" not in batch or "audio_image" not in batch:
            raise DataError("the sync critic learns from clips with frames and audio (a video folder, "
                            "data.root), not from a latent cache")
        frames, audio_image = batch["frames"].float(), batch["audio_image"].float()
        if frames.shape[0] * frames.shape[1] < 2:
            raise ConfigError("the sync critic needs more than one frame per batch to contrast")
        return frames, audio_image

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss/model``: per-frame InfoNCE of blurred, noised frames against the clips' audio."""
        assert self.cfg is not None, "build() first"
        frames, audio_image = self._inputs(batch)
        loss, accuracy = frame_infonce(modules["model"], blur_and_noise(frames, self.cfg.augment, generator),
                                       audio_image)
        return {"loss/model": loss, "critic/frame_accuracy": accuracy.detach(),
                "critic/logit_scale": modules["model"].logit_scale().detach()}

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """``scalars``: the clean batch's frame accuracy, and the cosine of matched frames against
        the same frames with their clip's audio shifted by a quarter clip (a sync error)."""
        frames, audio_image = self._inputs(batch)
        critic = modules["model"]
        _, accuracy = frame_infonce(critic, frames, audio_image)
        shift = max(1, audio_image.shape[-1] // 4)
        matched = critic.frame_similarity(frames, audio_image).mean()
        shifted = critic.frame_similarity(frames, audio_image.roll(shift, dims=-1)).mean()
        return {"scalars": {"critic/clean_frame_accuracy": float(accuracy), "critic/matched_cosine": float(matched),
                            "critic/shifted_cosine": float(shifted)}}


__all__ = ["SyncCriticAugmentConfig", "SyncCriticStage", "SyncCriticTrainConfig", "blur_and_noise", "frame_infonce"]
