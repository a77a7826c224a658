"""Micro configs for the autoencoder tests: 8x8 VAE latents, widths 8-32, CPU-fast."""

from __future__ import annotations

import pytest
import torch

from mmldm.autoencoder.config import (AudioEncoderConfig, AutoencoderConfig, DiscriminatorConfig, LossConfig,
                                      SamplingConfig, SemanticConfig, SignalDecoderConfig, VideoEncoderConfig)
from mmldm.vae.kl_vae import KLVAE


def micro_unet() -> dict:
    return {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [16, 32],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
            "cross_attention_dim": 16, "attention_head_dim": 8, "norm_num_groups": 8}


def micro_config(**overrides) -> AutoencoderConfig:
    """8 frames, 4x8x8 VAE latents -> video 4x4x4, audio 4x2x2 perceptual latents."""
    kwargs = dict(
        vae_latent_channels=4, vae_latent_size=8, num_frames=8,
        video_encoder=VideoEncoderConfig(key_frames=[0, 3, 5, 7], channels=[16, 16], head_dim=8, latent_channels=4),
        audio_encoder=AudioEncoderConfig(channels=[16, 16, 16], head_dim=8, latent_channels=4),
        semantic=SemanticConfig(dim=16, token_grid=2, projector_channels=16, head_dim=8, num_classes=3,
                                contrastive_dim=16),
        decoder=SignalDecoderConfig(unet=micro_unet(), prompt_tokens=2, feature_channels=[8, 16], content_pool_size=2),
        discriminator=DiscriminatorConfig(channels=[8, 16], head_dim=8),
        loss=LossConfig(adversarial_start_step=0),
        sampling=SamplingConfig(steps=3, chunk_size=4),
    )
    kwargs.update(overrides)
    return AutoencoderConfig(**kwargs)


def micro_vae() -> KLVAE:
    """A frozen KL-f2 VAE: 16x16 images <-> 4x8x8 latents."""
    vae = KLVAE.from_preset("tiny", block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8, sample_size=16)
    return vae.eval().requires_grad_(False)


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
