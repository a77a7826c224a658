"""Micro networks shared by the tests: 16x16 frames, 8 frames, 4x8x8 KL-VAE latents.

``micro_autoencoder_config()`` maps 4x8x8 VAE latents to a video perceptual latent of
4x4x4 and an audio one of 4x2x2; ``micro_vae()`` is a KL-f2 VAE (16x16 <-> 4x8x8).
"""

from __future__ import annotations

from mmldm.autoencoder.config import (AudioEncoderConfig, AutoencoderConfig, DiscriminatorConfig, SamplingConfig,
                                      SemanticConfig, SignalDecoderConfig, VideoEncoderConfig)
from mmldm.vae.kl_vae import KLVAE


def micro_unet() -> dict:
    return {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [16, 32],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
            "cross_attention_dim": 16, "attention_head_dim": 8, "norm_num_groups": 8}


def micro_autoencoder_config(**overrides) -> AutoencoderConfig:
    """8 frames, 4x8x8 VAE latents -> video 4x4x4, audio 4x2x2 perceptual latents; 3 decoder steps."""
    kwargs = dict(
        vae_latent_channels=4, vae_latent_size=8, num_frames=8,
        video_encoder=VideoEncoderConfig(key_frames=[0, 3, 5, 7], channels=[16, 16], head_dim=8, latent_channels=4),
        audio_encoder=AudioEncoderConfig(channels=[16, 16, 16], head_dim=8, latent_channels=4),
        semantic=SemanticConfig(dim=16, token_grid=2, projector_channels=16, head_dim=8, num_classes=3,
                                contrastive_dim=16),
        decoder=SignalDecoderConfig(unet=micro_unet(), prompt_tokens=2, feature_channels=[8, 16], content_pool_size=2),
        discriminator=DiscriminatorConfig(channels=[8, 16], head_dim=8),
        sampling=SamplingConfig(steps=3, chunk_size=8),
    )
    kwargs.update(overrides)
    return AutoencoderConfig(**kwargs)


def micro_vae(sample_size: int = 16) -> KLVAE:
    """A KL-f2 VAE: 16x16 images <-> 4x8x8 latents (random weights)."""
    return KLVAE.from_preset("tiny", block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                             up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8, sample_size=sample_size)
