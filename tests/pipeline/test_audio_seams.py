"""Joining consecutive clips' audio without clicks or time drift (mmldm.pipeline.audio)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmldm.data.audio_image import AudioConfig, fit_to_clip, log_mel, mel_to_image
from mmldm.data.vocoders import GriffinLim
from mmldm.evaluation.long_video import seam_jumps
from mmldm.pipeline.audio import audio_image_to_log_mel, join_clip_mels, vocode_clips

RATE = 16000


def _sine(freq: float, samples: int, phase: float = 0.0) -> torch.Tensor:
    t = np.arange(samples) / RATE
    return torch.tensor(0.5 * np.sin(2 * np.pi * freq * t + phase), dtype=torch.float32)


def test_jump_measure_sees_a_click():
    cfg = AudioConfig(clip_seconds=0.8)
    n = cfg.clip_samples
    clicked = torch.cat([_sine(440, n), _sine(660, n, phase=np.pi / 2)])  # phase break at the seam
    at_seam, inside = seam_jumps(clicked, [n], radius=2)
    assert at_seam > 2 * inside


def test_joint_vocoding_of_discontinuous_clips_has_no_seam_click():
    """Two clips of different pitch with a phase break: vocoded as one spectrogram, the
    largest step at the seam is no larger than the largest step inside the clips."""
    cfg = AudioConfig(clip_seconds=0.8)
    n = cfg.clip_samples
    clips = [_sine(440, n), _sine(660, n, phase=np.pi / 2)]
    images = [mel_to_image(log_mel(c, cfg), 64, cfg) * 2 - 1 for c in clips]  # as decoded audio images
    wave = vocode_clips(images, cfg, GriffinLim(cfg))[0]
    assert wave.shape == (2 * n,)
    at_seam, inside = seam_jumps(wave, [n], radius=2)
    assert at_seam <= inside
    # and the sound is still there on both sides of the seam
    assert wave[: n // 2].abs().max() > 0.1 and wave[-n // 2:].abs().max() > 0.1


def test_join_is_plain_concatenation_when_clips_are_whole_hops():
    cfg = AudioConfig(clip_seconds=0.8)  # 12,800 samples = 50 hops of 256
    mels = [torch.randn(2, cfg.n_mels, cfg.mel_frames) for _ in range(3)]
    assert torch.equal(join_clip_mels(mels, cfg), torch.cat(mels, dim=-1))


def test_join_keeps_the_time_grid_when_clips_are_not_whole_hops():
    """0.81 s clips are 50.625 hops: concatenating mels drifts by 0.625 hop per clip; the join
    puts every event where the spectrogram of the whole signal has it."""
    cfg = AudioConfig(clip_seconds=0.81)
    n, clips = cfg.clip_samples, 3
    t = np.arange(clips * n) / RATE
    onsets = (0.5, 1.3, 2.1)  # one tone burst in each clip
    envelope = sum(np.exp(-((t - on) / 0.02) ** 2) for on in onsets)
    signal = torch.tensor(0.5 * np.sin(2 * np.pi * 440 * t) * envelope, dtype=torch.float32)
    mels = [log_mel(signal[k * n:(k + 1) * n], cfg) for k in range(clips)]
    whole = log_mel(signal, cfg)
    joined = join_clip_mels(mels, cfg)
    assert joined.shape == whole.shape
    naive = torch.cat(mels, dim=-1)

    def centre(mel: torch.Tensor, onset: float) -> float:
        energy = mel.exp().sum(dim=1)[0]
        column = int(onset * RATE / cfg.hop)
        index = torch.arange(column - 6, column + 7)
        return float((energy[index] * index).sum() / energy[index].sum())

    for onset in onsets:
        assert abs(centre(joined, onset) - centre(whole, onset)) < 0.05
    assert abs(centre(naive, onsets[-1]) - centre(whole, onsets[-1])) > 1.0  # what the join fixes


def _seam_and_typical_jump(wave: torch.Tensor, seams: list[int]) -> tuple[float, float]:
    """(largest step at a seam, 99th percentile of all steps)."""
    steps = (wave[1:] - wave[:-1]).abs()
    return max(float(steps[s - 1]) for s in seams), float(steps.quantile(0.99))


def test_per_clip_vocoding_clicks_and_joint_vocoding_does_not():
    """Four clips of different tones as 64 px audio images: vocoded clip by clip and concatenated,
    some seam step exceeds 99% of all steps (a click); vocoded jointly, no seam step does."""
    cfg = AudioConfig(clip_seconds=0.8)
    n = cfg.clip_samples
    vocoder = GriffinLim(cfg)
    images = [mel_to_image(log_mel(_sine(f, n, phase), cfg), 64, cfg) * 2 - 1
              for f, phase in [(440, 0.0), (660, 1.0), (550, 2.0), (880, 0.5)]]
    seams = [n, 2 * n, 3 * n]
    per_clip = torch.cat([fit_to_clip(vocoder(audio_image_to_log_mel(image, cfg)), cfg)[0] for image in images])
    seam, typical = _seam_and_typical_jump(per_clip, seams)
    assert seam > typical
    joint = vocode_clips(images, cfg, vocoder)[0]
    seam, typical = _seam_and_typical_jump(joint, seams)
    assert seam <= typical
    at_seams, inside = seam_jumps(joint, seams, radius=2)
    assert at_seams <= inside


def test_join_of_overlapping_clips_keeps_the_earlier_clip_and_the_rest_of_the_later():
    """Clip 1 starts half a clip into clip 0 (a span of 1.5 clips): the join is clip 0, then clip 1's
    columns from where clip 0 ends."""
    cfg = AudioConfig(clip_seconds=0.8)  # 50 hops of 256
    n, per_clip = cfg.clip_samples, cfg.mel_frames
    mels = [torch.randn(2, cfg.n_mels, per_clip) for _ in range(2)]
    joined = join_clip_mels(mels, cfg, starts=[0, n // 2])
    assert joined.shape[-1] == cfg.frames_for(n + n // 2) == per_clip + per_clip // 2
    assert torch.equal(joined, torch.cat([mels[0], mels[1][..., per_clip // 2:]], dim=-1))
    for starts in ([0, 0], [n // 2, n], [0]):
        with pytest.raises(ValueError, match="must increase from 0"):
            join_clip_mels(mels, cfg, starts=starts)
