"""A tiny random-weight pipeline (16x16 frames, 8 frames at 10 fps, 16 kHz), saved once per session.

The networks' zero-initialised layers (adaLN-Zero, condition paths, encoder heads,
decoder branches) are perturbed, so that every condition really changes the
output: a freshly initialised AVDiT ignores its conditions by design.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from micro_models import micro_autoencoder_config, micro_vae
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.data.audio_image import AudioConfig
from mmldm.generator.dit import AVDiT, DiTConfig
from mmldm.pipeline import SoundingVideoPipeline

FPS, FRAMES, RATE, SIZE = 10.0, 8, 16000, 16
CLIP_SAMPLES = int(FRAMES / FPS * RATE)  # 12,800


def perturb(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(std * torch.randn(param.shape, generator=g))


def tiny_pipeline(num_classes: int = 3, previous_clip: bool = True) -> SoundingVideoPipeline:
    torch.manual_seed(0)
    vae = micro_vae()
    autoencoder = HierarchicalAVAutoencoder(micro_autoencoder_config())
    generator = AVDiT(DiTConfig.preset("tiny", depth=2, width=32, num_heads=2, n_ctx=2, audio_channels=4,
                                       audio_size=(2, 2), video_channels=4, video_size=(4, 4),
                                       num_classes=num_classes, previous_clip=previous_clip))
    perturb(autoencoder, 1)
    perturb(generator, 2, std=0.2)
    return SoundingVideoPipeline.assemble(vae=vae, autoencoder=autoencoder, generator=generator,
                                          objective="epsilon", audio_cfg=AudioConfig(clip_seconds=FRAMES / FPS))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pipeline") / "model"
    tiny_pipeline().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def pipe(model_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(model_dir)


def tone(freq: float, samples: int = CLIP_SAMPLES, phase: float = 0.0) -> np.ndarray:
    t = np.arange(samples) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def moving_square(frames: int = FRAMES, seed: int = 0) -> np.ndarray:
    """uint8 [T, SIZE, SIZE, 3]: a bright square moving over a dark background."""
    rng = np.random.default_rng(seed)
    out = np.full((frames, SIZE, SIZE, 3), 20, np.uint8)
    x, y = rng.integers(0, SIZE - 6, size=2)
    for i in range(frames):
        xi = (x + i) % (SIZE - 6)
        out[i, y:y + 6, xi:xi + 6] = rng.integers(100, 255, size=3)
    return out


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Input files: a sounding mp4, an mp4 without audio, a wav, a too-short mp4 and wav."""
    from mmldm.data.media_io import write_av, write_wav

    folder = tmp_path_factory.mktemp("media")
    files = {
        "sounding": write_av(folder / "sounding.mp4", moving_square(12), tone(440, int(1.2 * RATE)), FPS, RATE),
        "silent_video": write_av(folder / "silent.mp4", moving_square(12, seed=1), None, FPS, RATE),
        "wav": write_wav(folder / "tone.wav", tone(660, int(1.0 * RATE)), RATE),
        "short_video": write_av(folder / "short.mp4", moving_square(4), tone(440, int(0.4 * RATE)), FPS, RATE),
        "short_wav": write_wav(folder / "short.wav", tone(440, int(0.3 * RATE)), RATE),
    }
    return files


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """Helpers and sizes for the tests (conftest modules are not importable with importlib mode)."""
    return SimpleNamespace(fps=FPS, frames=FRAMES, rate=RATE, size=SIZE, clip_samples=CLIP_SAMPLES, tone=tone,
                           moving_square=moving_square, tiny_pipeline=tiny_pipeline, perturb=perturb)
