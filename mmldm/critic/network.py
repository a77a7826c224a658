"""A pixel-domain audio-video sync critic: does this sound go with these frames, frame by frame?
(not in the paper)

The critics that read latents (the generator's own conditional error, the autoencoder's
contrastive head) rank a pool of candidates only loosely: what decides a clip's sync is where
things are in the decoded frames and when the decoded sound changes, and neither critic sees
pixels. This one does. It is a small two-tower network in the manner of SyncNet (Chung &
Zisserman, 2016, "Out of time: automated lip sync in the wild") and Wav2Lip's sync expert: a
video tower embeds each frame (a strided conv stack, flattened, so where things are in the frame
survives, then a temporal conv over neighbouring frames: motion), an audio tower embeds the audio
image's columns (a temporal conv stack over all its frequency rows), pooled to one embedding per
video frame. Both are unit vectors; their cosine per frame is the critic's judgement.

Training (:mod:`mmldm.critic.stage`, ``mmldm train sync-critic``) is per-frame InfoNCE over a
batch of real clips: each frame's video embedding must pick its own audio embedding out of every
frame of every clip in the batch, the other frames of its own clip included; those are the hard
negatives (the same object and sound a few frames earlier or later), so the critic learns *when*,
not only *what*.

On disk it is a model folder's ``sync_critic/`` component (``config.json`` + ``model.safetensors``,
:func:`save_sync_critic` / :func:`load_sync_critic`); this module imports no training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_positive_int

#: a model folder's component holding the sync critic (config.json + model.safetensors)
SYNC_CRITIC_NAME = "sync_critic"
SYNC_CRITIC_WHAT = "sync critic"
#: the video tower halves the frame until it is at most this many pixels across, then flattens it
FLAT_SIDE = 8


@dataclass
class SyncCriticConfig:
    """The network's layout. ``video_channels``: the widths of the video tower's stride-2 convs
    (the last repeated while the frame is wider than 8 pixels); the audio tower reads audio images
    of ``audio_image_size`` rows."""

    frame_size: int = 64
    audio_image_size: int = 64
    video_channels: tuple[int, ...] = (32, 64, 64)
    frame_width: int = 128
    audio_width: int = 128
    embed_dim: int = 64

    def __post_init__(self) -> None:
        self.video_channels = tuple(self.video_channels)
        for name in ("frame_size", "audio_image_size", "frame_width", "audio_width", "embed_dim"):
            check_positive_int(getattr(self, name), f"sync critic {name}")
        if not self.video_channels:
            raise ConfigError("sync critic video_channels: give at least one width")
        for value in self.video_channels:
            check_positive_int(value, "sync critic video_channels")

    @property
    def video_widths(self) -> tuple[int, ...]:
        """One width per stride-2 conv: enough convs to bring the frame to at most 8 pixels."""
        levels = max(len(self.video_channels), math.ceil(math.log2(max(self.frame_size / FLAT_SIDE, 1))))
        return self.video_channels + self.video_channels[-1:] * (levels - len(self.video_channels))

    @property
    def flat_side(self) -> int:
        side = self.frame_size
        for _ in self.video_widths:
            side = (side + 1) // 2
        return side


class SyncCritic(nn.Module):
    """Frames ``[B, T, 3, H, W]`` and audio images ``[B, 3, Hf, W]`` (both in [-1, 1], the
    pipeline's) -> one unit embedding per frame for each, ``[B, T, D]`` twice."""

    def __init__(self, cfg: SyncCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width = 3
        for out in cfg.video_widths:
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.GELU()]
            width = out
        layers += [nn.Flatten(), nn.Linear(width * cfg.flat_side ** 2, cfg.frame_width)]
        self.frame_tower = nn.Sequential(*layers)
        self.video_head = nn.Sequential(nn.GELU(), nn.Conv1d(cfg.frame_width, cfg.embed_dim, 3, padding=1))
        self.audio_tower = nn.Sequential(
            nn.Conv1d(3 * cfg.audio_image_size, cfg.audio_width, 5, padding=2), nn.GELU(),
            nn.Conv1d(cfg.audio_width, cfg.audio_width, 5, padding=2), nn.GELU())
        self.audio_head = nn.Conv1d(cfg.audio_width, cfg.embed_dim, 3, padding=1)
        #: the InfoNCE temperature's inverse, learnt (CLIP's), started at 10
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def check_inputs(self, frames: torch.Tensor, audio_image: torch.Tensor) -> None:
        cfg = self.cfg
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-2:] != (cfg.frame_size, cfg.frame_size):
            raise ConfigError(f"the sync critic reads frames [B, T, 3, {cfg.frame_size}, {cfg.frame_size}], "
                              f"got {list(frames.shape)}")
        if audio_image.ndim != 4 or audio_image.shape[1:3] != (3, cfg.audio_image_size):
            raise ConfigError(f"the sync critic reads audio images [B, 3, {cfg.audio_image_size}, W], "
                              f"got {list(audio_image.shape)}")
        if len(frames) != len(audio_image):
            raise ConfigError(f"the sync critic got {len(frames)} clips of frames and {len(audio_image)} audio images")

    def forward(self, frames: torch.Tensor, audio_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(frames, audio_image)
        b, t = frames.shape[:2]
        video = self.frame_tower(frames.flatten(0, 1)).view(b, t, -1).transpose(1, 2)  # [B, frame_width, T]
        video = self.video_head(video).transpose(1, 2)  # [B, T, D]
        audio = self.audio_tower(audio_image.flatten(1, 2))  # [B, audio_width, W]: one column per mel frame
        audio = self.audio_head(F.adaptive_avg_pool1d(audio, t)).transpose(1, 2)  # [B, T, D]: one per frame
        return F.normalize(video, dim=-1), F.normalize(audio, dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def frame_similarity(self, frames: torch.Tensor, audio_image: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: the cosine of each frame's video and audio embeddings (higher = more in sync)."""
        video, audio = self(frames, audio_image)
        return (video * audio).sum(-1)


@dataclass
class SyncCriticInfo:
    """``sync_critic/config.json``: the network and the clips it judges."""

    critic: SyncCriticConfig = field(default_factory=SyncCriticConfig)
    num_frames: int = 16
    fps: float = 10.0
    sample_rate: int = 16000

    def fits(self, num_frames: int, fps: float, sample_rate: int, frame_size: int) -> str | None:
        """None when the critic judges clips of this timing and size, else why not."""
        ours = (self.num_frames, self.fps, self.sample_rate, self.critic.frame_size)
        theirs = (num_frames, fps, sample_rate, frame_size)
        if ours != theirs:
            return (f"judges clips of {self.num_frames} frames at {self.fps:g} fps, {self.sample_rate} Hz, "
                    f"{self.critic.frame_size} px; the model makes {num_frames} frames at {fps:g} fps, "
                    f"{sample_rate} Hz, {frame_size} px")
        return None


def save_sync_critic(critic: SyncCritic, info: SyncCriticInfo, directory: Path) -> Path:
    """Write the critic as a folder: ``config.json`` (:class:`SyncCriticInfo`) + ``model.safetensors``."""
    from ..config import to_dict
    from ..weights import save_pretrained_folder

    return save_pretrained_folder(directory, to_dict(info), critic)


def read_sync_critic_info(directory: Path) -> SyncCriticInfo:
    """``config.json`` of a :func:`save_sync_critic` folder; one :class:`WeightsError` line when bad."""
    from ..weights import read_folder_info

    return read_folder_info(directory, SyncCriticInfo, SYNC_CRITIC_WHAT)


def load_sync_critic(directory: Path, device: torch.device | str = "cpu") -> tuple[SyncCritic, SyncCriticInfo]:
    """The critic and its info from a :func:`save_sync_critic` folder (frozen, eval mode)."""
    from ..weights import load_folder_module

    info = read_sync_critic_info(directory)
    return load_folder_module(SyncCritic(info.critic), directory, SYNC_CRITIC_WHAT, device), info


__all__ = ["SYNC_CRITIC_NAME", "SYNC_CRITIC_WHAT", "SyncCritic", "SyncCriticConfig", "SyncCriticInfo",
           "load_sync_critic", "read_sync_critic_info", "save_sync_critic"]
