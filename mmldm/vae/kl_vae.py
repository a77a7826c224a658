"""Stage 0: the KL-VAE that maps video frames and audio images to latents.

MM-LDM compresses every video frame and the audio image (the mel spectrogram
drawn as a 3-channel picture, see ``mmldm.data``) with the Stable Diffusion v1
KL-f8 autoencoder: 256x256x3 -> 4x32x32, latents multiplied by the scaling
factor 0.18215 so that they have roughly unit variance (paper Sec. 3.1,
"Modal-specific Perceptual Latent Spaces", and Sec. 4 implementation details;
the decoder fine-tune is the "Finetune KL-VAE decoder" row of the ablation table).

The network is diffusers' :class:`~diffusers.AutoencoderKL`; this module adds

* presets: ``sd-v1`` (the SD v1 KL-f8 layout) and ``tiny`` (a small net trained
  from scratch on 64x64 Sounding Shapes on a CPU);
* weight loading from a diffusers folder (``config.json`` +
  ``diffusion_pytorch_model.safetensors``) or from an original single-file
  checkpoint (LDM key names, optionally prefixed ``first_stage_model.`` as in a
  full SD checkpoint), converted with diffusers' own key mapping;
* :class:`KLVAE`, encoding/decoding frame stacks and audio images in chunks so
  that memory stays bounded whatever the batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange
from torch import nn

from ..errors import ConfigError, WeightsError
from ..weights import load_state_checked, load_state_dict_file, read_folder_config, read_folder_weights, save_pretrained_folder

#: Stable Diffusion v1 KL-f8 autoencoder (the ``first_stage_model`` of SD v1.x,
#: also ``stabilityai/sd-vae-ft-mse``): 8x downsampling, 4 latent channels.
SD_V1_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

#: A small KL-f4 autoencoder for CPU training from scratch: 64x64x3 -> 4x16x16.
#: Its scaling factor starts at 1.0; :func:`estimate_scaling_factor` measures one.
TINY_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
    "scaling_factor": 1.0,
}

PRESETS: dict[str, dict[str, Any]] = {"sd-v1": SD_V1_CONFIG, "tiny": TINY_CONFIG}

DIFFUSERS_CONFIG_NAME = "config.json"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The AutoencoderKL constructor arguments of ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown KL-VAE preset '{preset}'; choose one of {sorted(PRESETS)}")
    return {**PRESETS[preset], **overrides}


class KLVAE(nn.Module):
    """A KL autoencoder with chunked, scaled encode/decode of frames and audio images.

    Latents returned by the ``encode_*`` methods are already multiplied by the
    scaling factor (``z = scaling_factor * E(x)``); the ``decode_*`` methods
    divide it out again. Pixels are in [-1, 1].

    Args:
        autoencoder: the diffusers network.
        chunk_size: at most this many images go through the network at once in
            :meth:`encode_images` / :meth:`decode_images`.
    """

    def __init__(self, autoencoder: AutoencoderKL, chunk_size: int = 16):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.autoencoder = autoencoder
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, preset: str, chunk_size: int = 16, **overrides: Any) -> KLVAE:
        """A randomly initialised network of ``preset`` ("sd-v1" or "tiny")."""
        return cls(AutoencoderKL(**preset_config(preset, **overrides)), chunk_size=chunk_size)

    @classmethod
    def from_pretrained(cls, directory: str | Path, chunk_size: int = 16) -> KLVAE:
        """Load a diffusers-format folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).

        Read here rather than with ``AutoencoderKL.from_pretrained`` so that every
        missing, unexpected or mis-shaped tensor is one WeightsError line and no
        hub lookup can ever happen.
        """
        what = "KL-VAE diffusers folder"
        config = read_folder_config(directory, what, DIFFUSERS_CONFIG_NAME)
        try:
            with init_empty_weights():  # no random init of weights that are overwritten next
                autoencoder = AutoencoderKL.from_config(config)
        except (TypeError, ValueError) as exc:
            raise WeightsError(Path(directory) / DIFFUSERS_CONFIG_NAME, what,
                               f"config.json is not an AutoencoderKL config: {exc}") from None
        vae = cls(autoencoder, chunk_size=chunk_size)
        state, weights_path = read_folder_weights(directory, what, DIFFUSERS_WEIGHTS_NAME)
        load_state_checked(vae.autoencoder, state, weights_path, what, assign=True)
        return vae

    @classmethod
    def from_single_file(cls, path: str | Path, preset: str = "sd-v1", chunk_size: int = 16,
                         **overrides: Any) -> KLVAE:
        """Load original (CompVis/LDM key names) VAE weights into the ``preset`` network.

        Accepts a VAE-only file (``encoder.down.0.block.0.norm1.weight``...) or a
        full Stable Diffusion checkpoint whose VAE keys start with
        ``first_stage_model.``; ``.safetensors``, or ``.ckpt``/``.pt`` read with
        ``torch.load(weights_only=True)`` (a top-level ``state_dict`` entry is used).
        """
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        path = Path(path)
        what = f"KL-VAE single-file weights for preset '{preset}'"
        if not path.is_file():
            raise WeightsError(path, what, "file not found; give the original SD VAE weights "
                               "(e.g. vae-ft-mse-840000-ema-pruned.safetensors) or a full SD v1 checkpoint")
        state = load_state_dict_file(path, what, key="state_dict")
        vae_prefix = next((p for p in ("first_stage_model.", "vae.")
                           if any(k.startswith(p) for k in state)), "")
        if f"{vae_prefix}encoder.conv_in.weight" not in state:
            raise WeightsError(path, what, "holds no KL-VAE weights (no 'encoder.conv_in.weight' or "
                               "'first_stage_model.encoder.conv_in.weight' key)")
        if vae_prefix == "":
            # A VAE-only file: keep only its own keys (e.g. drop EMA bookkeeping entries).
            state = {k: v for k, v in state.items() if k.split(".")[0] in
                     ("encoder", "decoder", "quant_conv", "post_quant_conv")}
        config = preset_config(preset, **overrides)
        with init_empty_weights():
            vae = cls(AutoencoderKL(**config), chunk_size=chunk_size)
        try:
            converted = convert_ldm_vae_checkpoint(state, config)
        except (AttributeError, KeyError, IndexError) as exc:  # the converter assumes a complete checkpoint
            raise WeightsError(path, what, f"incomplete LDM VAE weights ({type(exc).__name__}: {exc})") from None
        load_state_checked(vae.autoencoder, converted, path, what, assign=True)
        return vae

    @classmethod
    def load(cls, path: str | Path, preset: str = "sd-v1", chunk_size: int = 16) -> KLVAE:
        """:meth:`from_pretrained` for a folder, :meth:`from_single_file` for a file."""
        path = Path(path)
        if path.is_dir():
            return cls.from_pretrained(path, chunk_size=chunk_size)
        if not path.exists():
            raise WeightsError(path, "KL-VAE weights", "not found; give a diffusers folder (config.json + "
                               f"{DIFFUSERS_WEIGHTS_NAME}) or the original single file "
                               "(e.g. vae-ft-mse-840000-ema-pruned.safetensors, or a full SD v1 checkpoint)")
        if path.suffix in SINGLE_FILE_SUFFIXES:
            return cls.from_single_file(path, preset=preset, chunk_size=chunk_size)
        raise WeightsError(path, "KL-VAE weights", "expected a diffusers folder or a "
                           f"{'/'.join(SINGLE_FILE_SUFFIXES)} file")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a diffusers-format folder that :meth:`from_pretrained` (and diffusers) can load."""
        config = json.loads(self.autoencoder.to_json_string())  # diffusers' own config.json content
        return save_pretrained_folder(directory, config, self.autoencoder, DIFFUSERS_WEIGHTS_NAME,
                                      DIFFUSERS_CONFIG_NAME)

    # ------------------------------------------------------------------ properties
    @property
    def scaling_factor(self) -> float:
        return float(self.autoencoder.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ training path
    def posterior(self, images: torch.Tensor) -> DiagonalGaussianDistribution:
        """q(z|x) of unscaled latents, for training (no chunking).

        Shapes: images [N,3,H,W] -> distribution over [N,C,H/f,W/f].
        """
        return self.autoencoder.encode(images).latent_dist

    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode unscaled latents [N,C,h,w] -> images [N,3,H,W] (no chunking, for training)."""
        return self.autoencoder.decode(latents).sample

    def forward(self, images: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``images`` (the training entry point; plain tensors out, for DDP).

        Shapes: images [N,3,H,W] -> (reconstruction [N,3,H,W], posterior mean and
        log-variance [N,C,H/f,W/f], unscaled). ``sample_posterior=False`` decodes the mean.
        """
        posterior = self.posterior(images)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode_unscaled(latents), posterior.mean, posterior.logvar

    # ------------------------------------------------------------------ chunked inference
    def encode_images(self, images: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of ``images``, ``chunk_size`` at a time.

        Shapes: images [N,3,H,W] in [-1,1] -> latents [N,C,H/f,W/f].
        ``sample=False`` uses the posterior mode (the mean), ``True`` draws with ``generator``.
        """
        out = []
        for chunk in images.split(self.chunk_size):
            dist = self.autoencoder.encode(chunk).latent_dist
            out.append(dist.sample(generator) if sample else dist.mode())
        return torch.cat(out) * self.scaling_factor

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Images of scaled ``latents``, ``chunk_size`` at a time: [N,C,h,w] -> [N,3,h*f,w*f]."""
        out = [self.autoencoder.decode(chunk / self.scaling_factor).sample
               for chunk in latents.split(self.chunk_size)]
        return torch.cat(out)

    def encode_frames(self, frames: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Shapes: frames [B,T,3,H,W] -> latents [B,T,C,H/f,W/f] (every frame on its own)."""
        batch = frames.shape[0]
        flat = self.encode_images(rearrange(frames, "b t c h w -> (b t) c h w"), sample, generator)
        return rearrange(flat, "(b t) c h w -> b t c h w", b=batch)

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Shapes: latents [B,T,C,h,w] -> frames [B,T,3,h*f,w*f]."""
        batch = latents.shape[0]
        flat = self.decode_images(rearrange(latents, "b t c h w -> (b t) c h w"))
        return rearrange(flat, "(b t) c h w -> b t c h w", b=batch)

    def encode_audio_image(self, audio_image: torch.Tensor, sample: bool = False,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Shapes: audio images [B,3,H,W] -> latents [B,C,H/f,W/f]."""
        return self.encode_images(audio_image, sample, generator)

    def decode_audio_image(self, latents: torch.Tensor) -> torch.Tensor:
        """Shapes: latents [B,C,h,w] -> audio images [B,3,h*f,w*f]."""
        return self.decode_images(latents)

    @torch.no_grad()
    def encode_clips(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Latents of a dataset batch, as the latent cache stores them (posterior means, scaled).

        Shapes: batch["frames"] [B,T,3,H,W], batch["audio_image"] [B,3,H,W] ->
        {"video_latent": [B,T,C,h,w], "audio_latent": [B,C,h,w]}.
        """
        device = next(self.parameters()).device
        return {"video_latent": self.encode_frames(batch["frames"].to(device)),
                "audio_latent": self.encode_audio_image(batch["audio_image"].to(device))}


@torch.no_grad()
def estimate_scaling_factor(vae: KLVAE, images: torch.Tensor) -> float:
    """1 / std of the unscaled posterior means of ``images`` [N,3,H,W].

    This is how the SD v1 factor 0.18215 was obtained; a VAE trained from
    scratch (the ``tiny`` preset) should store its own so that diffusion sees
    roughly unit-variance latents.
    """
    latents = vae.encode_images(images) / vae.scaling_factor
    return float(1.0 / latents.float().std().clamp_min(1e-8))
