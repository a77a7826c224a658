"""Micro configs for the autoencoder tests: 8x8 VAE latents, widths 8-32, CPU-fast."""

from __future__ import annotations

import pytest
import torch

from micro_models import micro_autoencoder_config
from micro_models import micro_vae as shared_micro_vae
from mmldm.autoencoder.config import AutoencoderConfig, LossConfig, SamplingConfig
from mmldm.vae.kl_vae import KLVAE


def micro_config(**overrides) -> AutoencoderConfig:
    """The shared micro config with a short adversarial warm-up and small decoder chunks."""
    kwargs = dict(loss=LossConfig(adversarial_start_step=0), sampling=SamplingConfig(steps=3, chunk_size=4))
    kwargs.update(overrides)
    return micro_autoencoder_config(**kwargs)


def micro_vae() -> KLVAE:
    """A frozen KL-f2 VAE: 16x16 images <-> 4x8x8 latents."""
    return shared_micro_vae().eval().requires_grad_(False)


def micro_batch(batch: int = 2, seed: int = 0, frames: int = 8) -> dict[str, torch.Tensor]:
    """Random VAE latents of ``frames`` frames and an audio image, with labels."""
    g = torch.Generator().manual_seed(seed)
    return {"video_latents": torch.randn(batch, frames, 4, 8, 8, generator=g),
            "audio_latent": torch.randn(batch, 4, 8, 8, generator=g),
            "labels": torch.randint(0, 3, (batch,), generator=g)}


@pytest.fixture
def cfg() -> AutoencoderConfig:
    return micro_config()


@pytest.fixture
def make_config():
    """``make_config(**overrides)`` -> a micro :class:`AutoencoderConfig`."""
    return micro_config


@pytest.fixture
def make_batch():
    """``make_batch(batch=2, seed=0)`` -> dict of random latents and labels."""
    return micro_batch


@pytest.fixture(scope="module")
def vae() -> KLVAE:
    torch.manual_seed(0)
    return micro_vae()
