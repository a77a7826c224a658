"""Audio images -> waveforms, for one clip and for clips that follow each other.

Long generation produces consecutive, non-overlapping clips. Vocoding each clip
on its own and concatenating the waves puts a click at every seam: each clip's
wave starts and ends wherever its own synthesis (Griffin-Lim's phase, HiFi-GAN's
edge padding) left it, and with sample rates whose clip is not a whole number of
hops (44.1 kHz: 70,560 samples = 137.8 hops of 512) each clip even ends in a
few milliseconds of padding silence.

We instead join the clips' log-mel spectrograms into ONE spectrogram on the
global hop grid and vocode it once (:func:`vocode_clips`). A vocoder synthesises
by overlapping windows (Griffin-Lim's inverse STFT is a windowed overlap-add;
HiFi-GAN is convolutional), so a seam is treated like any other instant: the
wave stays continuous and any change of sound between clips is spread over one
analysis window (64 ms at 16 kHz) instead of one sample. Joining: column ``t`` of
clip ``k`` describes the audio centred on sample ``k * N + t * hop + hop / 2``
(see :func:`mmldm.data.audio_image.log_mel`); the joined spectrogram's column
``j`` is centred on ``j * hop + hop / 2`` and is linearly interpolated (in log
magnitude) between the two clip columns around it. When a clip is a whole
number of hops (the 16 kHz preset: 25,600 = 100 x 256) this is exactly the
concatenation.

Clips may also overlap (a2v / v2a over a span that is not a whole number of clips: the last
window ends where the span ends, see :mod:`mmldm.generator.tasks`): clip ``k`` then starts at
sample ``starts[k]`` and its columns count only from where clip ``k - 1`` ends, so each instant
is described by one clip, the earlier one.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..data.audio_image import AudioConfig, image_to_mel
from ..data.vocoders import Vocoder


def audio_image_to_log_mel(audio_image: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Decoded audio images ``[B, 3, H, W]`` in [-1, 1] -> log-mels ``[B, M, cfg.mel_frames]``."""
    return image_to_mel((audio_image.float() + 1.0) / 2.0, cfg)


def join_clip_mels(mels: list[torch.Tensor], cfg: AudioConfig, starts: list[int] | None = None) -> torch.Tensor:
    """Clips' log-mels ``K x [B, M, L]`` -> one log-mel on the global hop grid.

    ``starts``: the sample where each clip begins (increasing, the first 0; default ``k * N``, clips
    that follow each other); where clips overlap the earlier one describes the overlap (see the
    module docstring). Returns ``[B, M, cfg.frames_for(starts[-1] + N)]``.
    """
    clips = len(mels)
    per_clip = mels[0].shape[-1]
    n = cfg.clip_samples
    starts = [k * n for k in range(clips)] if starts is None else [int(s) for s in starts]
    if len(starts) != clips or starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise ValueError(f"clip starts {starts} must increase from 0, one per clip ({clips})")
    stacked = torch.cat(mels, dim=-1).float()  # [B, M, K * L]
    half = cfg.hop / 2.0
    local = torch.arange(per_clip, dtype=torch.float64) * cfg.hop + half  # [L] centres within a clip
    origins = torch.tensor(starts, dtype=torch.float64)  # [K]
    centres = (origins[:, None] + local[None, :]).reshape(-1)  # [K * L]
    # a column counts from where the clip before ends (all of them for clips that follow each other)
    previous_end = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), origins[:-1] + n])  # [K]
    counted = (centres >= previous_end.repeat_interleave(per_clip))  # [K * L]
    if not counted.all():
        stacked, centres = stacked[..., counted], centres[counted]
    total = cfg.frames_for(starts[-1] + n)
    targets = torch.arange(total, dtype=torch.float64) * cfg.hop + half  # [J]
    right = torch.searchsorted(centres, targets).clamp(1, centres.numel() - 1)  # [J]
    left = right - 1
    weight = ((targets - centres[left]) / (centres[right] - centres[left])).clamp(0.0, 1.0).float()  # [J]
    return stacked[..., left] * (1.0 - weight) + stacked[..., right] * weight  # [B, M, J]


@torch.no_grad()
def vocode_clips(audio_images: list[torch.Tensor], cfg: AudioConfig, vocoder: Vocoder,
                 starts: list[int] | None = None) -> torch.Tensor:
    """Waves of ``K`` clips, vocoded as one signal: ``K x [B, 3, H, W]`` -> ``[B, starts[-1] + N]``.

    ``starts``: the sample where each clip begins (:func:`join_clip_mels`; default: the clips
    follow each other, ``[B, K * N]``). With ``K == 1`` this is the clip's own wave (padded or
    trimmed to ``cfg.clip_samples``).
    """
    mels = [audio_image_to_log_mel(image, cfg) for image in audio_images]
    mel = mels[0] if len(mels) == 1 else join_clip_mels(mels, cfg, starts)
    wave = vocoder(mel.to(module_device(vocoder))).float().cpu()  # [B, J * hop]
    length = (len(mels) - 1) * cfg.clip_samples if starts is None else starts[-1]
    return torch.nn.functional.pad(wave, (0, length + cfg.clip_samples - wave.shape[-1]))  # pad or trim the end


def module_device(module: object) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for anything else)."""
    if isinstance(module, torch.nn.Module):
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            return tensor.device
    return torch.device("cpu")


__all__ = ["audio_image_to_log_mel", "join_clip_mels", "module_device", "vocode_clips"]
