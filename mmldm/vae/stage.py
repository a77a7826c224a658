"""Stage 0 for the training engine: train or fine-tune the KL-VAE on frames and audio images.

    mmldm train vae --config configs/vae/tiny.yaml            # tiny VAE from scratch (CPU)
    mmldm train vae --config configs/vae/sd-v1-finetune.yaml  # paper: SD v1 decoder fine-tune

Every step takes ``data.frames_per_clip`` random frames of each clip plus its
audio image, so one network learns both kinds of picture (as in the paper,
where one VAE serves video frames and audio images). Modes:

* ``model.train_mode: decoder`` freezes the encoder (and ``quant_conv``): the
  latent space of the pretrained VAE stays as it was, only reconstructions
  improve (the paper's per-dataset fine-tuning);
* ``model.train_mode: full`` trains everything (the ``tiny`` preset from scratch).

The trained network is exported for later stages with :func:`export_pretrained`
(a diffusers folder), or loaded straight from a run checkpoint with :func:`load_vae`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import rng
from ..config import load_config
from ..errors import ConfigError, WeightsError
from ..data.config import ClipDataConfig
from ..training.checkpoint import is_training_checkpoint, load_trained_weights, module_weights_name
from ..training.config import TrainConfig
from .kl_vae import KLVAE, estimate_scaling_factor
from .losses import (
    PatchDiscriminator,
    adaptive_gan_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_loss,
    load_lpips,
)


@dataclass
class VAEModelConfig:
    #: network layout: "sd-v1" (SD v1 KL-f8) or "tiny" (CPU, from scratch)
    preset: Literal["sd-v1", "tiny"] = "tiny"
    #: weights to start from: a diffusers folder or an original single file (None: random init)
    pretrained: str | None = None
    #: replaces the preset's / pretrained scaling factor (None: keep it)
    scaling_factor: float | None = None
    #: "decoder": encoder frozen (paper); "full": everything trains
    train_mode: Literal["decoder", "full"] = "full"
    #: images per network call in chunked encode/decode (previews, caching)
    chunk_size: int = 16
    #: train on samples of q(z|x) (True) or on its mean
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"model.chunk_size must be >= 1, got {self.chunk_size}")


@dataclass
class VAELossConfig:
    #: weight of the KL term (LDM meaning: KL sum over pixel-value count; SD v1 used 1e-6)
    kl_weight: float = 1e-6
    #: weight of LPIPS (used only when weights are given)
    lpips_weight: float = 1.0
    #: LPIPS weights: one file with the lpips package's names, or its linear heads (vgg.pth)
    lpips_path: str | None = None
    #: torchvision vgg16-397923af.pth when ``lpips_path`` holds only the linear heads
    vgg16_path: str | None = None
    #: weight of the adversarial term (0: no discriminator)
    disc_weight: float = 0.0
    #: optimiser step from which the discriminator trains and the adversarial term counts
    disc_start: int = 0
    disc_channels: int = 64
    disc_layers: int = 3
    #: scale the adversarial term by ||grad rec|| / ||grad gan|| at the last decoder layer (VQGAN eq. 7)
    adaptive_disc_weight: bool = True

    def __post_init__(self) -> None:
        for name in ("kl_weight", "lpips_weight", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class VAEDataConfig(ClipDataConfig):
    #: random frames of each clip per step (the clip's audio image is added when ``audio_image``)
    frames_per_clip: int = 2
    audio_image: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.frames_per_clip <= self.num_frames:
            raise ValueError(f"data.frames_per_clip must lie in [1, num_frames={self.num_frames}], "
                             f"got {self.frames_per_clip}")


@dataclass
class VAEStageConfig:
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def build_vae(model_cfg: VAEModelConfig) -> KLVAE:
    """The KL-VAE of ``model_cfg``: pretrained weights if given, else a random ``preset`` network."""
    if model_cfg.pretrained is not None:
        vae = KLVAE.load(model_cfg.pretrained, preset=model_cfg.preset, chunk_size=model_cfg.chunk_size)
        if model_cfg.scaling_factor is not None:
            vae.autoencoder.register_to_config(scaling_factor=model_cfg.scaling_factor)
        return vae
    overrides = {} if model_cfg.scaling_factor is None else {"scaling_factor": model_cfg.scaling_factor}
    return KLVAE.from_preset(model_cfg.preset, chunk_size=model_cfg.chunk_size, **overrides)


def _unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP/compile wrapper (for reading a parameter, never for calling)."""
    while hasattr(module, "module"):
        module = module.module
    return getattr(module, "_orig_mod", module)


class VAEStage:
    """KL-VAE training: L1 + LPIPS + KL + hinge GAN (see :mod:`mmldm.vae.losses`)."""

    name = "vae"
    config_cls = VAEStageConfig

    def __init__(self) -> None:
        self.cfg: VAEStageConfig | None = None

    def build(self, cfg: VAEStageConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        vae = build_vae(cfg.model)
        if cfg.model.train_mode == "decoder":
            vae.autoencoder.encoder.requires_grad_(False)
            if vae.autoencoder.quant_conv is not None:
                vae.autoencoder.quant_conv.requires_grad_(False)
        modules: dict[str, nn.Module] = {"model": vae}
        loss = cfg.loss
        if loss.lpips_weight > 0:
            if loss.lpips_path is None:
                warnings.warn("LPIPS is off: no weights given (set loss.lpips_path, and loss.vgg16_path if that "
                              "file holds only the linear heads); training uses L1 + KL only", stacklevel=2)
            else:
                modules["lpips"] = load_lpips(loss.lpips_path, loss.vgg16_path)
        if loss.disc_weight > 0:
            modules["disc"] = PatchDiscriminator(base_channels=loss.disc_channels, num_layers=loss.disc_layers)
        return modules

    def optimizer_groups(self, cfg: VAEStageConfig) -> dict[str, list[str]]:
        groups = {"model": ["model"]}
        if cfg.loss.disc_weight > 0:
            groups["disc"] = ["disc"]
        return groups

    def dataset(self, cfg: VAEStageConfig, split: str) -> Dataset:
        return cfg.data.dataset(split)

    def training_images(self, batch: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
        """Random frames of each clip plus the audio images: [B*k (+ B), 3, H, W]."""
        assert self.cfg is not None, "build() first"
        frames = batch["frames"]  # [B,T,3,H,W]
        batch_size, num_frames = frames.shape[:2]
        k = self.cfg.data.frames_per_clip
        # k distinct frames per clip: the first k of a random permutation (argsort of uniform noise)
        choice = rng.rand((batch_size, num_frames), generator, frames.device).argsort(dim=1)[:, :k]
        picked = frames[torch.arange(batch_size, device=frames.device)[:, None], choice]
        images = picked.flatten(0, 1)  # [B*k,3,H,W]
        if self.cfg.data.audio_image:
            images = torch.cat([images, batch["audio_image"]])
        return images

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        assert self.cfg is not None, "build() first"
        loss_cfg = self.cfg.loss
        images = self.training_images(batch, generator)
        recon, mean, logvar = modules["model"](images, sample_posterior=self.cfg.model.sample_posterior,
                                               generator=generator)
        l1 = (images - recon.float()).abs().mean()
        rec = l1
        terms: dict[str, torch.Tensor] = {"rec/l1": l1.detach()}
        if "lpips" in modules:
            perceptual = modules["lpips"](images, recon).float().mean()
            rec = rec + loss_cfg.lpips_weight * perceptual
            terms["rec/lpips"] = perceptual.detach()
        with torch.autocast(device_type=images.device.type, enabled=False):
            kl = kl_loss(mean.float(), logvar.float(), images[0].numel())
        total = rec + loss_cfg.kl_weight * kl
        terms["kl"] = kl.detach()
        if "disc" in modules:
            disc = modules["disc"]
            if step >= loss_cfg.disc_start:
                gan = hinge_generator_loss(disc(recon).float())
                weight = torch.tensor(loss_cfg.disc_weight, device=images.device)
                if loss_cfg.adaptive_disc_weight:
                    last_layer = _unwrap(modules["model"]).autoencoder.decoder.conv_out.weight
                    weight = weight * adaptive_gan_weight(rec, gan, last_layer)
                total = total + weight * gan
                real_logits = disc(images).float()
                fake_logits = disc(recon.detach()).float()
                terms["loss/disc"] = hinge_discriminator_loss(real_logits, fake_logits)
                terms["gan/g"] = gan.detach()
                terms["gan/weight"] = weight.detach()
                terms["gan/logits_real"] = real_logits.mean().detach()
                terms["gan/logits_fake"] = fake_logits.mean().detach()
            else:
                # Before disc_start the discriminator neither trains nor counts: a constant with no path
                # to its parameters leaves their gradients None, so its optimiser skips them.
                terms["loss/disc"] = torch.zeros((), device=images.device, requires_grad=True)
        terms["loss/model"] = total
        return terms

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """Originals beside reconstructions: "video" [B, 2*4, 3, H, W] (4 frames, then their
        reconstructions) and "image" [2B, 3, H, W] (each audio image, then its reconstruction)."""
        vae: KLVAE = modules["model"]
        frames = batch["frames"]
        num_frames = frames.shape[1]
        picked = frames[:, torch.linspace(0, num_frames - 1, min(4, num_frames)).round().long()]
        recon = vae.decode_frames(vae.encode_frames(picked))
        media: dict[str, Any] = {"video": torch.cat([picked, recon.to(picked.dtype)], dim=1).clamp(-1, 1)}
        if "audio_image" in batch:
            audio = batch["audio_image"]
            audio_recon = vae.decode_audio_image(vae.encode_audio_image(audio)).to(audio.dtype)
            media["image"] = torch.stack([audio, audio_recon], dim=1).flatten(0, 1).clamp(-1, 1)
        return media


def _checkpoint_config(checkpoint: Path) -> VAEStageConfig:
    config_path = checkpoint / "config.yaml"
    if not config_path.is_file():
        raise WeightsError(checkpoint, "VAE training checkpoint", "config.yaml is missing")
    return load_config(VAEStageConfig, config_path)


def load_vae(path: str | Path, preset: str = "sd-v1", chunk_size: int = 16, use_ema: bool = True) -> KLVAE:
    """A KL-VAE from a diffusers folder, an original single file, or a ``mmldm train vae`` checkpoint.

    A checkpoint folder (``checkpoints/step_*`` with ``model_model.safetensors``)
    is rebuilt from its ``config.yaml``; its EMA weights are used when present
    and ``use_ema``.
    """
    path = Path(path)
    if is_training_checkpoint(path):
        cfg = _checkpoint_config(path)
        vae = build_vae(dataclasses.replace(cfg.model, pretrained=None, chunk_size=chunk_size))
        load_trained_weights(vae, path, f"VAE training checkpoint ('{cfg.model.preset}' preset)", use_ema=use_ema)
        return vae
    return KLVAE.load(path, preset=preset, chunk_size=chunk_size)


def export_pretrained(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True,
                      calibration_clips: int = 0) -> Path:
    """Write a training checkpoint's VAE as a diffusers folder (what later stages load).

    ``calibration_clips > 0`` replaces the scaling factor by
    :func:`~mmldm.vae.kl_vae.estimate_scaling_factor` over the frames and audio
    images of that many clips of the run's training data: needed for a VAE
    trained from scratch (``tiny``), whose latents are not unit-variance at
    factor 1. A decoder-only fine-tune keeps its encoder and so its factor.
    """
    checkpoint = Path(checkpoint)
    if calibration_clips < 0:
        raise ConfigError(f"calibration clips must be >= 0 (0: keep the checkpoint's scaling factor), "
                          f"got {calibration_clips}")
    if not is_training_checkpoint(checkpoint):
        raise ConfigError(f"{checkpoint} is not a VAE training checkpoint (no {module_weights_name('model')})")
    vae = load_vae(checkpoint, use_ema=use_ema).eval()
    if calibration_clips > 0:
        cfg = _checkpoint_config(checkpoint)
        data = VAEStage().dataset(cfg, "train")
        items = [data[i] for i in range(min(calibration_clips, len(data)))]
        images = torch.cat([torch.cat([item["frames"], item["audio_image"][None]]) for item in items])
        vae.autoencoder.register_to_config(scaling_factor=estimate_scaling_factor(vae, images))
    return vae.save_pretrained(out_dir)
