"""Stage 1 for the training engine: train the hierarchical multi-modal autoencoder.

    mmldm train autoencoder --config configs/autoencoder/tiny.yaml    # Sounding Shapes, CPU
    mmldm train autoencoder --config configs/autoencoder/paper.yaml   # the paper's sizes (GPUs)

Each step reads clips (frames + audio image + class), flips the frames of half
the clips horizontally (paper: p = 0.5 in this stage), encodes frames and audio
images with the frozen KL-VAE (or reads their latents from a KL-VAE latent cache,
``data.latent_cache``) and returns the losses of
:meth:`HierarchicalAVAutoencoder.training_losses`. Two optimiser groups:
``model`` (the autoencoder) and ``disc`` (the audio-video discriminator; absent
when the adversarial loss is ablated).

The trained model is loaded for later stages with :func:`load_autoencoder`
(a run checkpoint, EMA weights by default, or a ``save_pretrained`` folder) and
exported with :func:`export_pretrained`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import rng
from ..config import load_config
from ..errors import ConfigError, DataError, WeightsError
from ..data.config import ClipDataConfig
from ..training.checkpoint import is_training_checkpoint, load_trained_weights
from ..training.config import TrainConfig
from ..vae.kl_vae import KLVAE
from .config import AutoencoderConfig
from ..weights import CONFIG_NAME
from .model import HierarchicalAVAutoencoder
from .signal_decoder import unet_architecture


@dataclass
class KLVAESourceConfig:
    """The frozen KL-VAE of stage 0."""

    #: a diffusers folder, an original single file or a ``mmldm train vae`` checkpoint
    #: (None: a random network of ``preset``, only for smoke tests)
    path: str | None = None
    preset: Literal["sd-v1", "tiny"] = "tiny"
    #: images per VAE call when encoding the clips
    chunk_size: int = 64


@dataclass
class AutoencoderDataConfig(ClipDataConfig):
    #: probability of flipping a clip's frames horizontally (paper: 0.5 for this stage; pixel data only)
    hflip: float = 0.5
    #: a KL-VAE latent cache of the training clips (``mmldm cache``; made with ``vae``): train on its
    #: latents instead of decoding and encoding videos each step (no flip; the discriminator's real
    #: pixels are then the VAE's decodes of the cached latents)
    latent_cache: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"data.hflip must be in [0, 1], got {self.hflip}")


@dataclass
class AutoencoderStageConfig:
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    vae: KLVAESourceConfig = field(default_factory=KLVAESourceConfig)
    data: AutoencoderDataConfig = field(default_factory=AutoencoderDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.num_frames != self.model.num_frames:
            raise ValueError(f"data.num_frames ({self.data.num_frames}) must equal model.num_frames "
                             f"({self.model.num_frames})")


def build_frozen_vae(cfg: KLVAESourceConfig) -> KLVAE:
    """The stage-0 KL-VAE, frozen, in eval mode."""
    if cfg.path is None:
        vae = KLVAE.from_preset(cfg.preset, chunk_size=cfg.chunk_size)
    else:
        from ..vae.stage import load_vae

        vae = load_vae(cfg.path, preset=cfg.preset, chunk_size=cfg.chunk_size)
    return vae.eval().requires_grad_(False)


class AutoencoderStage:
    """Stage 1 (paper Sec. 3.1): see the module docstring."""

    name = "autoencoder"
    config_cls = AutoencoderStageConfig

    def __init__(self) -> None:
        self.cfg: AutoencoderStageConfig | None = None

    def build(self, cfg: AutoencoderStageConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        vae = build_frozen_vae(cfg.vae)
        side = cfg.data.size // (2 ** (len(vae.autoencoder.config.block_out_channels) - 1))
        if side != cfg.model.vae_latent_size or vae.latent_channels != cfg.model.vae_latent_channels:
            raise ConfigError(f"model.vae_latent_size/channels ({cfg.model.vae_latent_size}, "
                              f"{cfg.model.vae_latent_channels}) do not match the VAE's latents of "
                              f"{cfg.data.size}px images ({side}, {vae.latent_channels})")
        model = HierarchicalAVAutoencoder(cfg.model)
        # record the UNet's real architecture (a pretrained folder's own) in the config the engine
        # saves with each checkpoint, so load_autoencoder rebuilds it without that folder
        cfg.model.decoder.unet = unet_architecture(model.decoder.unet)
        modules: dict[str, nn.Module] = {"model": model, "vae": vae}
        if cfg.model.ablation.adversarial_loss:
            modules["disc"] = model.build_discriminator()
        return modules

    def optimizer_groups(self, cfg: AutoencoderStageConfig) -> dict[str, list[str]]:
        groups = {"model": ["model"]}
        if cfg.model.ablation.adversarial_loss:
            groups["disc"] = ["disc"]
        return groups

    def dataset(self, cfg: AutoencoderStageConfig, split: str) -> Dataset:
        if cfg.data.latent_cache is not None:
            from ..data.latent_cache import LatentCacheDataset

            return LatentCacheDataset(cfg.data.latent_cache)
        return cfg.data.dataset(split)

    def _labels(self, batch: dict[str, Any]) -> torch.Tensor | None:
        assert self.cfg is not None, "build() first"
        if self.cfg.model.semantic.num_classes == 0:
            return None
        labels = torch.as_tensor(batch["class_id"]).long()
        bad = (labels < 0) | (labels >= self.cfg.model.semantic.num_classes)
        if bad.any():
            raise DataError(f"autoencoder: class ids {labels[bad].tolist()} are outside "
                            f"[0, {self.cfg.model.semantic.num_classes}) (model.semantic.num_classes; "
                            "set it to 0 to train without labels)")
        return labels

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        assert self.cfg is not None, "build() first"
        vae: KLVAE = modules["vae"]
        frames = audio_image = None
        if "video_latent" in batch:  # a KL-VAE latent cache: [B,T,C,h,w], [B,C,h,w]
            video_latents, audio_latent = batch["video_latent"], batch["audio_latent"]
        else:
            frames, audio_image = batch["frames"], batch["audio_image"]  # [B,T,3,H,W], [B,3,H,W]
            flip = rng.rand((frames.shape[0],), generator, frames.device) < self.cfg.data.hflip
            frames = torch.where(flip[:, None, None, None, None], frames.flip(-1), frames)
            with torch.no_grad():
                latents = vae.encode_clips({"frames": frames, "audio_image": audio_image})
            video_latents, audio_latent = latents["video_latent"], latents["audio_latent"]
        return modules["model"](video_latents.float(), audio_latent.float(), self._labels(batch), vae=vae,
                                discriminator=modules.get("disc"), video=frames, audio_image=audio_image,
                                step=step, generator=generator)

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """4 frames of each clip beside their reconstructions ("video" [B, 8, 3, H, W]) and each audio
        image beside its reconstruction ("image" [2B, 3, H, W])."""
        model: HierarchicalAVAutoencoder = modules["model"]  # the engine passes unwrapped (or EMA) modules
        vae: KLVAE = modules["vae"]
        num_frames = model.cfg.num_frames
        picked = torch.linspace(0, num_frames - 1, min(4, num_frames)).round().long().tolist()
        if "video_latent" in batch:  # latent cache: the originals are the VAE's decodes
            video_latents, audio_latent = batch["video_latent"].float(), batch["audio_latent"].float()
            frames, audio_image = vae.decode_frames(video_latents[:, picked]), vae.decode_audio_image(audio_latent)
        else:
            latents = vae.encode_clips(batch)
            video_latents, audio_latent = latents["video_latent"].float(), latents["audio_latent"].float()
            frames, audio_image = batch["frames"][:, picked], batch["audio_image"]
        video_post, audio_post = model.encode(video_latents, audio_latent)
        recon_frames, recon_audio = model.reconstruct(vae, video_post.mode(), audio_post.mode(), picked,
                                                      generator=torch.Generator(frames.device).manual_seed(0))
        video = torch.cat([frames, recon_frames.to(frames.dtype)], dim=1)
        image = torch.stack([audio_image, recon_audio.to(audio_image.dtype)], dim=1).flatten(0, 1)
        return {"video": video.clamp(-1, 1), "image": image.clamp(-1, 1)}


# --------------------------------------------------------------------------- loading


def _checkpoint_config(checkpoint: Path) -> AutoencoderStageConfig:
    config_path = checkpoint / "config.yaml"
    if not config_path.is_file():
        raise WeightsError(checkpoint, "autoencoder training checkpoint", "config.yaml is missing")
    return load_config(AutoencoderStageConfig, config_path)


def load_autoencoder(path: str | Path, use_ema: bool = True,
                     device: torch.device | str = "cpu") -> tuple[HierarchicalAVAutoencoder, KLVAESourceConfig | None]:
    """A trained autoencoder and (for a run checkpoint) the VAE it was trained with.

    ``path`` is a ``mmldm train autoencoder`` checkpoint folder (``model_model.safetensors``
    + ``config.yaml``; its EMA weights when present and ``use_ema``) or a folder written by
    :meth:`HierarchicalAVAutoencoder.save_pretrained` (the VAE is then None: give it separately).
    """
    path = Path(path)
    if is_training_checkpoint(path):
        cfg = _checkpoint_config(path)
        model_cfg = dataclasses.replace(cfg.model, decoder=dataclasses.replace(cfg.model.decoder,
                                                                              pretrained_unet=None))
        model = HierarchicalAVAutoencoder(model_cfg)
        load_trained_weights(model, path, "autoencoder training checkpoint", use_ema=use_ema)
        return model.to(device).eval(), cfg.vae
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return HierarchicalAVAutoencoder.from_pretrained(path, device=device).eval(), None
    raise WeightsError(path, "multi-modal autoencoder",
                       "not a training checkpoint (model_model.safetensors + config.yaml) nor a saved model "
                       "folder (config.json + model.safetensors)")


def export_pretrained(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True) -> Path:
    """Write a training checkpoint's autoencoder as a ``save_pretrained`` folder."""
    model, _ = load_autoencoder(checkpoint, use_ema=use_ema)
    return model.save_pretrained(out_dir)
