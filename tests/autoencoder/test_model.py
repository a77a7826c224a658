"""Hierarchical multi-modal autoencoder: shapes, zero-init paths, dropout, adversarial gradient, training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmldm.autoencoder.config import AblationConfig, paper_config, tiny_config
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.autoencoder.signal_decoder import DecoderCondition
from mmldm.diffusion import DiffusionConfig
from mmldm.errors import ConfigError, DataError

SD_V1_UNET_PARAMETERS = 859_520_964  # Stable Diffusion v1 UNet (diffusers), class_embed_type identity adds none


def _perturb(model: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    """Add noise to every parameter, so zero-initialised paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# ----------------------------------------------------------------------------- shapes


def test_tiny_preset_shapes():
    cfg = tiny_config()
    model = HierarchicalAVAutoencoder(cfg).eval()
    b = 2
    video_latents = torch.randn(b, cfg.num_frames, 4, cfg.vae_latent_size, cfg.vae_latent_size)
    audio_latent = torch.randn(b, 4, cfg.vae_latent_size, cfg.vae_latent_size)
    with torch.no_grad():
        video_post, audio_post = model.encode(video_latents, audio_latent)
        assert video_post.mode().shape == (b, *cfg.video_latent_shape) == (b, 8, 8, 8)
        assert audio_post.mode().shape == (b, *cfg.audio_latent_shape) == (b, 8, 4, 4)
        semantic = model.semantic(video_post.mode(), audio_post.mode())
        assert semantic.video.shape == semantic.audio.shape == (b, 4, cfg.semantic.dim)
        assert semantic.class_logits.shape == (b, cfg.semantic.num_classes)
        frames = torch.tensor([[1, 9], [0, 15]])
        no_drop = torch.zeros(b, dtype=torch.bool)
        items = model._decoder_items(video_post.mode(), audio_post.mode(), semantic,
                                     semantic.class_logits.argmax(-1), frames, no_drop, no_drop)
        vc, ac = (model.decoder.condition(m, **items[m]) for m in ("video", "audio"))
        # context = prompt + class token + the other modality's 4 semantic tokens
        assert vc.context.shape == (2 * b, cfg.decoder.prompt_tokens + 1 + 4, 32)
        noisy = torch.randn(3 * b, 4, cfg.vae_latent_size, cfg.vae_latent_size)
        eps = model.decoder(noisy, torch.full((3 * b,), 500.0), DecoderCondition.cat([vc, ac]))
        assert eps.shape == noisy.shape


def test_paper_preset_shapes_on_meta_device():
    cfg = paper_config()
    with torch.device("meta"):
        model = HierarchicalAVAutoencoder(cfg)
        unet = model.decoder.unet
        assert sum(p.numel() for p in unet.parameters()) == SD_V1_UNET_PARAMETERS
        assert unet.config.cross_attention_dim == 768 and list(unet.config.block_out_channels) == [320, 640, 1280, 1280]
        assert len(model.decoder.branches["video"].zero_convs) == 12  # one per SD v1 input block
        b = 2
        video_post, audio_post = model.encode(torch.randn(b, 16, 4, 32, 32), torch.randn(b, 4, 32, 32))
        assert video_post.mode().shape == (b, 16, 16, 16)
        assert audio_post.mode().shape == (b, 16, 8, 8)
        semantic = model.semantic(video_post.mode(), audio_post.mode())
        assert semantic.video.shape == semantic.audio.shape == (b, 4, 768)
        context = model.decoder.context("video", semantic.audio, torch.zeros(b, dtype=torch.long),
                                        torch.zeros(b, dtype=torch.bool))
        assert context.shape == (b, 77 + 1 + 4, 768)
        losses = model.training_losses(torch.randn(b, 16, 4, 32, 32), torch.randn(b, 4, 32, 32),
                                       torch.tensor([1, 2]))
        assert losses["loss/model"].shape == ()
        disc = model.build_discriminator()
        image = torch.randn(b, 3, 256, 256)
        assert disc(image, image, image).shape == (b,)


def test_bad_input_shapes_raise_data_error(cfg):
    model = HierarchicalAVAutoencoder(cfg)
    with pytest.raises(DataError, match="video latents"):
        model.encode_video(torch.randn(1, 5, 4, 8, 8))
    with pytest.raises(DataError, match="audio latent"):
        model.encode_audio(torch.randn(1, 4, 16, 16))


def test_config_rejects_inconsistent_sizes(make_config):
    with pytest.raises(ConfigError, match="key_frames"):
        make_config(num_frames=4)
    with pytest.raises(ConfigError, match="target_frames"):
        make_config(decoder=dataclasses.replace(make_config().decoder, target_frames=1))


# ----------------------------------------------------------------------------- zero init

ZERO_INIT_PATHS = [
    "video_encoder.head.logvar.2",
    "audio_encoder.head.logvar.2",
    "decoder.content_mlps.video.net.2",
    "decoder.content_mlps.audio.net.2",
    "decoder.branches.video.zero_convs",
    "decoder.branches.audio.zero_convs",
    "decoder.branches.video.mid_zero_conv",
    "decoder.branches.audio.mid_zero_conv",
    "decoder.semantic_to_context",
    "decoder.null_semantic",
]


@pytest.mark.parametrize("path", ZERO_INIT_PATHS)
def test_zero_initialised_path_is_zero(cfg, path):
    model = HierarchicalAVAutoencoder(cfg)
    params = {name: p for name, p in model.named_parameters() if name == path or name.startswith(path + ".")}
    assert params, f"no parameters under {path}"
    for name, p in params.items():
        assert torch.count_nonzero(p) == 0, name


def test_decoder_ignores_latents_and_semantics_at_init(cfg, make_batch):
    """All paths from the perceptual latent and the other modality into the UNet start at zero."""
    model = HierarchicalAVAutoencoder(cfg).eval()
    batch = make_batch()
    g = torch.Generator().manual_seed(0)
    noisy, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10.0, 700.0])
    keep, labels = torch.zeros(2, dtype=torch.bool), batch["labels"]
    outs = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        latent, tokens = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 16, generator=g)
        cond = model.decoder.condition("video", latent, tokens, labels, keep, torch.tensor([0.25, 0.5]))
        assert cond.content.abs().max() == 0
        assert all(r.abs().max() == 0 for r in cond.down_residuals) and cond.mid_residual.abs().max() == 0
        with torch.no_grad():
            outs.append(model.decoder(noisy, t, cond))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    post = model.encode_audio(batch["audio_latent"])
    assert post.logvar.abs().max() == 0  # unit-variance posterior at init


# ----------------------------------------------------------------------------- guidance dropout


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_condition_dropout_rate(make_config, rate):
    cfg = make_config(decoder=dataclasses.replace(make_config().decoder, condition_dropout=rate))
    model = HierarchicalAVAutoencoder(cfg)
    g = torch.Generator().manual_seed(0)
    video_drop, audio_drop = model.condition_drop(40_000, torch.device("cpu"), g)
    tol = 4 * math.sqrt(rate * (1 - rate) / 40_000) + 1e-9
    assert abs(video_drop.float().mean().item() - rate) <= tol
    assert abs(audio_drop.float().mean().item() - rate) <= tol
    # independent per modality
    assert abs((video_drop & audio_drop).float().mean().item() - rate * rate) <= tol + 1e-3


def test_dropped_items_get_the_null_context(cfg):
    model = HierarchicalAVAutoencoder(cfg)
    _perturb(model)
    tokens_a, tokens_b = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    classes_a, classes_b = torch.tensor([0, 1]), torch.tensor([2, 2])
    drop = torch.tensor([True, False])
    ctx_a = model.decoder.context("audio", tokens_a, classes_a, drop)
    ctx_b = model.decoder.context("audio", tokens_b, classes_b, drop)
    torch.testing.assert_close(ctx_a[0], ctx_b[0])  # dropped: independent of class and semantics
    assert not torch.allclose(ctx_a[1], ctx_b[1])  # kept: depends on them


# ----------------------------------------------------------------------------- adversarial


def test_adversarial_gradient_reaches_the_signal_decoder(cfg, make_batch, vae):
    model = HierarchicalAVAutoencoder(cfg)
    disc = model.build_discriminator()
    batch = make_batch()
    losses = model.training_losses(batch["video_latents"], batch["audio_latent"], batch["labels"], vae=vae,
                                   discriminator=disc, step=0, generator=torch.Generator().manual_seed(0))
    losses["ae/adversarial"].backward(retain_graph=True)
    unet_grads = [p.grad for p in model.decoder.unet.parameters() if p.grad is not None]
    assert unet_grads and max(g.abs().max().item() for g in unet_grads) > 0
    # the generator loss leaves the discriminator's gradients alone ...
    assert all(p.grad is None for p in disc.parameters())
    # ... and the discriminator loss trains the discriminator only
    model.zero_grad(set_to_none=True)
    losses["loss/disc"].backward()
    assert all(p.grad is None for p in model.parameters())
    assert max(p.grad.abs().max().item() for p in disc.parameters() if p.grad is not None) > 0


def test_adversarial_loss_waits_for_its_start_step(make_config, make_batch, vae):
    cfg = make_config(loss=dataclasses.replace(make_config().loss, adversarial_start_step=100))
    model = HierarchicalAVAutoencoder(cfg)
    batch = make_batch()
    losses = model.training_losses(batch["video_latents"], batch["audio_latent"], batch["labels"], vae=vae,
                                   discriminator=model.build_discriminator(), step=99)
    assert "ae/adversarial" not in losses and losses["loss/disc"].item() == 0.0


def test_discriminator_sees_four_fake_pairings(cfg, make_batch, vae, monkeypatch):
    """Real triplet + all fake, two one-real-frame fakes, and the frame-swapped fake; G sees all fake."""
    model = HierarchicalAVAutoencoder(cfg)
    disc = model.build_discriminator()
    calls = []
    original = disc.forward
    monkeypatch.setattr(disc, "forward", lambda a, fa, fb: calls.append((a, fa, fb)) or original(a, fa, fb))
    video = torch.rand(2, 8, 3, 16, 16) * 2 - 1
    audio_image = torch.rand(2, 3, 16, 16) * 2 - 1
    batch = make_batch()
    model.training_losses(batch["video_latents"], batch["audio_latent"], batch["labels"], vae=vae,
                          discriminator=disc, video=video, audio_image=audio_image,
                          generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2  # real and the 4 fakes in one batch; the generator's all-fake triplet
    assert calls[0][0].shape[0] == 5 * 2
    real, all_fake, real_a, real_b, swapped = zip(*(slot.chunk(5) for slot in calls[0]))
    gen = calls[1]
    assert torch.equal(real[0], audio_image)
    assert all(torch.equal(x[0], all_fake[0]) for x in (real_a, real_b, swapped, gen))  # fake audio
    assert torch.equal(real_a[1], real[1]) and torch.equal(real_a[2], all_fake[2])  # real frame a
    assert torch.equal(real_b[1], all_fake[1]) and torch.equal(real_b[2], real[2])  # real frame b
    assert torch.equal(swapped[1], all_fake[2]) and torch.equal(swapped[2], all_fake[1])
    assert torch.equal(gen[1], all_fake[1]) and gen[1].requires_grad and not calls[0][1].requires_grad


# ----------------------------------------------------------------------------- semantic heads


def test_contrastive_head_prefers_matched_pairs_and_clamps_scale(cfg):
    model = HierarchicalAVAutoencoder(cfg)
    head = model.contrastive
    assert head.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    tokens = torch.randn(6, 4, 16)
    video, audio = head.embed(tokens, tokens)
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(6))
    with torch.no_grad():
        head.audio_proj.load_state_dict(head.video_proj.state_dict())
    matched = head(tokens, tokens)
    shuffled = head(tokens, tokens[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert matched < shuffled
    with torch.no_grad():
        head.log_scale.fill_(10.0)
    assert head.logit_scale().item() == pytest.approx(100.0)


def test_no_label_mode(make_config, make_batch):
    cfg = make_config(semantic=dataclasses.replace(make_config().semantic, num_classes=0))
    model = HierarchicalAVAutoencoder(cfg)
    assert model.classifier is None
    batch = make_batch()
    losses = model.training_losses(batch["video_latents"], batch["audio_latent"])
    assert "ae/classification" not in losses and torch.isfinite(losses["loss/model"])
    _perturb(model)
    tokens = torch.randn(2, 4, 16)
    keep = torch.zeros(2, dtype=torch.bool)
    ctx = model.decoder.context("video", tokens, torch.zeros(2, dtype=torch.long), keep)
    torch.testing.assert_close(ctx[0, cfg.decoder.prompt_tokens], ctx[1, cfg.decoder.prompt_tokens])


def test_labels_required_when_classes_configured(cfg, make_batch):
    model = HierarchicalAVAutoencoder(cfg)
    batch = make_batch()
    with pytest.raises(DataError, match="num_classes"):
        model.training_losses(batch["video_latents"], batch["audio_latent"])


@pytest.mark.parametrize("switch", [f.name for f in dataclasses.fields(AblationConfig)])
def test_ablation_switches(make_config, make_batch, switch):
    cfg = make_config(ablation=AblationConfig(**{switch: False}))
    model = HierarchicalAVAutoencoder(cfg)
    batch = make_batch()
    tokens = torch.randn(2, 4, 16)
    context = model.decoder.context("audio", tokens, batch["labels"], torch.zeros(2, dtype=torch.bool))
    full = cfg.decoder.prompt_tokens + 1 + 4
    expected = {"semantic_condition": full - 4, "class_embedding": full - 1, "modality_prompt": full - 2}
    assert context.shape[1] == expected.get(switch, full)
    if switch == "content_feature":
        assert model.decoder.content_mlps is None and model.decoder.unet.class_embedding is None
    losses = model.training_losses(batch["video_latents"], batch["audio_latent"], batch["labels"])
    assert torch.isfinite(losses["loss/model"])


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("objective", ["epsilon", "flow"])
def test_short_training_lowers_the_loss(make_config, objective):
    """30 AdamW steps on a fixed batch lower the loss measured with fixed noise and timesteps."""
    torch.manual_seed(0)
    model = HierarchicalAVAutoencoder(make_config(diffusion=DiffusionConfig(objective=objective)))
    g = torch.Generator().manual_seed(0)
    # structured latents: each clip is a smooth pattern drifting over time
    grid = torch.linspace(-1, 1, 8)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    phase = torch.rand(4, 1, 4, 1, 1, generator=g) * 6
    t = torch.arange(8).float()[None, :, None, None, None] / 8
    video = torch.sin(3 * xx + 2 * yy + phase + 4 * t)
    audio = torch.cos(2 * xx + phase[:, 0] * yy)
    labels = torch.tensor([0, 1, 2, 0])

    def evaluate() -> float:
        with torch.no_grad():
            losses = model.training_losses(video, audio, labels, generator=torch.Generator().manual_seed(123))
        return (losses["ae/mse_video"] + losses["ae/mse_audio"]).item()

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(30):
        losses = model.training_losses(video, audio, labels, step=step, generator=g)
        optimizer.zero_grad()
        losses["loss/model"].backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.7 * before, (before, after)


# ----------------------------------------------------------------------------- decoding


def test_decode_shapes_and_chunking_do_not_change_the_result(cfg, vae):
    model = HierarchicalAVAutoencoder(cfg).eval()
    _perturb(model)
    video_z, audio_z = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)
    big = model.decode(video_z, audio_z, [0, 4, 7], generator=torch.Generator().manual_seed(5), chunk_size=64)
    small = model.decode(video_z, audio_z, [0, 4, 7], generator=torch.Generator().manual_seed(5), chunk_size=1)
    assert big[0].shape == (2, 3, 4, 8, 8) and big[1].shape == (2, 4, 8, 8)
    torch.testing.assert_close(big[0], small[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(big[1], small[1], rtol=1e-4, atol=1e-5)
    frames, audio_image = model.reconstruct(vae, video_z, audio_z, [1, 2], steps=2,
                                            generator=torch.Generator().manual_seed(0))
    assert frames.shape == (2, 2, 3, 16, 16) and audio_image.shape == (2, 3, 16, 16)
    assert frames.abs().max() <= 1 and audio_image.abs().max() <= 1


def test_guidance_scale_changes_the_decoding(cfg):
    model = HierarchicalAVAutoencoder(cfg).eval()
    _perturb(model, scale=0.2)
    video_z, audio_z = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)
    plain = model.decode(video_z, audio_z, [0], audio_guidance=1.0, generator=torch.Generator().manual_seed(0))
    guided = model.decode(video_z, audio_z, [0], audio_guidance=4.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain[0], guided[0])  # video scale unchanged
    assert not torch.allclose(plain[1], guided[1])
