"""Paper-sized autoencoder on a GPU: one bf16 training step with the adversarial term, and decoding."""

from __future__ import annotations

import pytest
import torch

from mmldm.autoencoder.config import paper_config
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.vae.kl_vae import KLVAE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paper_preset_training_step_and_decode_on_gpu():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = HierarchicalAVAutoencoder(paper_config()).to(device)
    disc = model.build_discriminator().to(device)
    vae = KLVAE.from_preset("sd-v1").to(device).eval().requires_grad_(False)
    g = torch.Generator(device).manual_seed(0)
    b = 2
    video_latents = torch.randn(b, 16, 4, 32, 32, device=device)
    audio_latent = torch.randn(b, 4, 32, 32, device=device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = model.training_losses(video_latents, audio_latent, torch.tensor([1, 2], device=device), vae=vae,
                                       discriminator=disc, step=10**6, generator=g)
    losses["loss/model"].backward()
    assert torch.isfinite(losses["loss/model"]) and "ae/adversarial" in losses
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.decoder.unet.parameters())
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        video_post, audio_post = model.encode(video_latents, audio_latent)
        frames, audio_image = model.reconstruct(vae, video_post.mode(), audio_post.mode(), [0, 15], steps=2,
                                                generator=g)
    assert frames.shape == (b, 2, 3, 256, 256) and audio_image.shape == (b, 3, 256, 256)
