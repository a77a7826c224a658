"""The reconstruction ceilings of the Big Buck Bunny evaluation on a tiny pipeline: the sound
through the audio image and the vocoder alone keeps what the audio image holds."""

from __future__ import annotations

import torch

from mmldm.data.audio_image import waveform_to_audio_image
from mmldm.evaluation.reconstruction import audio_image_clip, clip_tensors


def test_audio_image_clip_keeps_the_sound_the_audio_image_holds(pipe, kit):
    frames = kit.moving_square()
    low, high = (clip_tensors(pipe, frames, kit.tone(freq))[1] for freq in (300.0, 2000.0))
    out = audio_image_clip(pipe, low)
    assert out.shape == (pipe.clip_samples,) and torch.isfinite(out).all()
    assert torch.equal(out, audio_image_clip(pipe, low))  # no randomness: a ceiling, measured once

    def image(wave: torch.Tensor) -> torch.Tensor:
        return waveform_to_audio_image(wave.reshape(1, -1), pipe.audio_cfg, pipe.frame_size).flatten()

    def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    # the vocoded sound's audio image is the input's, not another tone's
    assert similarity(image(out), image(low)) > 0.9
    assert similarity(image(out), image(low)) > similarity(image(out), image(high)) + 0.2
