"""Training the light frame decoder: the frozen KL-VAE decoder distilled into it (not in the paper).

    mmldm train frame-decoder-distill --config configs/recipe/frame-decoder-distill.yaml \\
        --set vae=mmldm/models/shapes/vae data.latent_cache=runs/recipe/vae-latents --out RUN
    mmldm export frame-decoder RUN/checkpoints/step_002000 --model DIR [--default]

The student (:class:`~mmldm.vae.light_decoder.LightFrameDecoder`) learns to reproduce, pixel for
pixel, what the frozen KL-VAE decoder makes of the VAE latents of real training frames: either
a KL-VAE latent cache of the clips (``data.latent_cache``, ``mmldm cache``: the posterior means,
scaled, exactly what the pipeline's signal decoder is trained to produce) or clips encoded on the
fly (``data.root``). Each step takes ``data.frames_per_clip`` random frames of each clip.

The loss is L1 + MSE between the student's pixels and the teacher's (clamped to [-1, 1], as
the pipeline clamps them). No perceptual or adversarial term: the target is not a real image
whose fine texture a pixel loss would blur, but a deterministic function of the latent which the
student can match exactly in principle, so a pixel regression is the whole task (TAESD adds an
adversarial term because it learns from real images at SD's 8x compression, where the decoder
must invent texture; here the teacher already has). The L1 term keeps the flat backgrounds of
Sounding Shapes exact, the MSE term weighs the larger errors at object edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import rng
from ..data.config import ClipDataConfig
from ..errors import ConfigError, DataError, check_positive_int
from ..training.config import TrainConfig
from .kl_vae import KLVAE
from .light_decoder import LightDecoderConfig, LightFrameDecoder, preset


@dataclass
class FrameDecoderDataConfig(ClipDataConfig):
    #: a KL-VAE latent cache of the training clips (``mmldm cache`` with ``vae``); None: encode ``root``'s
    #: clips with the VAE every step
    latent_cache: str | None = None
    #: random frames of each clip per step
    frames_per_clip: int = 4
    val_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int(self.frames_per_clip, "data.frames_per_clip")


@dataclass
class FrameDecoderLossConfig:
    l1_weight: float = 1.0
    mse_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.l1_weight < 0 or self.mse_weight < 0 or self.l1_weight + self.mse_weight <= 0:
            raise ConfigError(f"loss: l1_weight and mse_weight must be >= 0 and not both 0, got "
                              f"{self.l1_weight} and {self.mse_weight}")


@dataclass
class FrameDecoderDistillConfig:
    #: the teacher: the KL-VAE (a model folder's vae/, a diffusers folder, a `mmldm train vae` checkpoint
    #: or an original single file)
    vae: str = "parts/vae"
    #: the VAE preset of an original single file
    vae_preset: str = "sd-v1"
    #: the light decoder's layout: a preset of :data:`mmldm.vae.light_decoder.PRESETS` ("tiny", "sd-v1")
    preset: str = "tiny"
    #: replace the preset's widths per scale / residual blocks per scale (empty: the preset's)
    channels: tuple[int, ...] = ()
    blocks: tuple[int, ...] = ()
    data: FrameDecoderDataConfig = field(default_factory=FrameDecoderDataConfig)
    loss: FrameDecoderLossConfig = field(default_factory=FrameDecoderLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def decoder_config(self, latent_channels: int) -> LightDecoderConfig:
        base = preset(self.preset)
        return LightDecoderConfig(latent_channels=latent_channels, channels=tuple(self.channels) or base.channels,
                                  blocks=tuple(self.blocks) or base.blocks, out_channels=base.out_channels)


def load_teacher_vae(cfg: FrameDecoderDistillConfig) -> KLVAE:
    from .stage import load_vae

    return load_vae(cfg.vae, preset=cfg.vae_preset)


class FrameDecoderDistillStage:
    """The light frame decoder (see the module docstring)."""

    name = "frame-decoder-distill"
    config_cls = FrameDecoderDistillConfig

    def __init__(self) -> None:
        self.cfg: FrameDecoderDistillConfig | None = None

    def build(self, cfg: FrameDecoderDistillConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        teacher = load_teacher_vae(cfg)
        decoder_cfg = cfg.decoder_config(teacher.latent_channels)
        if decoder_cfg.upsample_factor != teacher.downsample_factor:
            raise ConfigError(f"light frame decoder preset '{cfg.preset}' upsamples {decoder_cfg.upsample_factor}x "
                              f"({len(decoder_cfg.channels)} scales), the KL-VAE {cfg.vae} downsamples "
                              f"{teacher.downsample_factor}x; give a preset or channels with "
                              f"{teacher.downsample_factor.bit_length()} scales")
        return {"model": LightFrameDecoder(decoder_cfg), "teacher": teacher.eval().requires_grad_(False)}

    def optimizer_groups(self, cfg: FrameDecoderDistillConfig) -> dict[str, list[str]]:
        return {"model": ["model"]}

    def dataset(self, cfg: FrameDecoderDistillConfig, split: str) -> Dataset:
        if cfg.data.latent_cache:
            from ..data.latent_cache import LatentCacheDataset

            return LatentCacheDataset(cfg.data.latent_cache)
        return cfg.data.dataset(split)

    def latents(self, teacher: KLVAE, batch: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
        """Scaled KL-VAE latents of ``frames_per_clip`` random frames of each clip: [B * K, C, h, w]."""
        assert self.cfg is not None, "build() first"
        if "video_latent" in batch:
            clips = batch["video_latent"].float()  # [B, T, C, h, w]
        elif "frames" in batch:
            clips = None
        else:
            raise DataError("frame decoder distillation reads a KL-VAE latent cache (video_latent) or clips (frames)")
        source = clips if clips is not None else batch["frames"]
        b, t = source.shape[:2]
        k = min(self.cfg.data.frames_per_clip, t)
        device = source.device
        pick = rng.rand((b, t), generator, device).argsort(dim=1)[:, :k]  # [B, K]
        chosen = source[torch.arange(b, device=device)[:, None], pick].flatten(0, 1)  # [B*K, ...]
        if clips is not None:
            return chosen
        with torch.no_grad():
            return teacher.encode_images(chosen.float()).float()

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss/model``: L1 + MSE of the student's pixels against the teacher's, plus their PSNR."""
        assert self.cfg is not None, "build() first"
        teacher: KLVAE = modules["teacher"]
        latents = self.latents(teacher, batch, generator)
        with torch.no_grad():
            target = teacher.decode_unscaled(latents / teacher.scaling_factor).float().clamp(-1, 1)
        prediction = modules["model"](latents).float()
        l1 = F.l1_loss(prediction, target)
        mse = F.mse_loss(prediction, target)
        loss = self.cfg.loss.l1_weight * l1 + self.cfg.loss.mse_weight * mse
        with torch.no_grad():
            clamped = F.mse_loss(prediction.clamp(-1, 1), target)
            psnr = 10 * torch.log10(4.0 / clamped.clamp_min(1e-10))  # peak-to-peak 2: pixels in [-1, 1]
        return {"loss/model": loss, "distill/l1": l1.detach(), "distill/mse": mse.detach(), "distill/psnr": psnr}

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """``video``: each clip's chosen frames through the teacher, then through the student."""
        teacher: KLVAE = modules["teacher"]
        latents = self.latents(teacher, batch, torch.Generator().manual_seed(0))  # the same frames each time
        b = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
        full = teacher.decode_unscaled(latents / teacher.scaling_factor).float().clamp(-1, 1)
        light = modules["model"](latents).float().clamp(-1, 1)
        return {"video": torch.cat([full.unflatten(0, (b, -1)), light.unflatten(0, (b, -1))], dim=1)}


__all__ = ["FrameDecoderDataConfig", "FrameDecoderDistillConfig", "FrameDecoderDistillStage",
           "FrameDecoderLossConfig", "load_teacher_vae"]
