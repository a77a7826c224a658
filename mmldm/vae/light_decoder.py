"""A light frame decoder: a small conv net distilled from the KL-VAE decoder (not in the paper).

Same latent space as the KL-VAE (its scaled latents, ``C x H/f x W/f``) -> RGB in [-1, 1], at a
fraction of the full decoder's cost: at the paper's 256x256 the SD v1 KL-VAE decoder costs about
620 GFLOP per image, which dominates a sample once the signal decoder is a few-step student
(``docs/speed.md``). The layout is TAESD's decoder (Bohan, 2023, "Tiny AutoEncoder for Stable
Diffusion"): a soft clamp of the latents, a 3x3 conv, then per scale a few residual blocks of
three 3x3 convs with ReLU, and a nearest 2x upsampling + 3x3 conv between scales; no
normalisation and no attention (the full decoder's mid-block attention and GroupNorms are a large
part of its cost and memory).

On disk it is a model folder's ``frame_decoder/`` component (``config.json`` + ``model.safetensors``,
:func:`save_frame_decoder` / :func:`load_frame_decoder`); this module imports no training code.
Training: :mod:`mmldm.vae.light_decoder_distill` (``mmldm train frame-decoder-distill``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, check_positive_int

#: a model folder's component holding the light frame decoder (config.json + model.safetensors)
FRAME_DECODER_NAME = "frame_decoder"
FRAME_DECODER_WHAT = "light frame decoder"


@dataclass
class LightDecoderConfig:
    """The network's layout. ``channels[0]`` is the width at the latent's scale, each further entry
    the width after one nearest 2x upsampling (so ``len(channels) - 1`` upsamplings: the VAE's
    downsampling factor is ``2 ** (len(channels) - 1)``); ``blocks[i]`` residual blocks at scale i."""

    latent_channels: int = 4
    channels: tuple[int, ...] = (64, 64, 64, 64)
    blocks: tuple[int, ...] = (3, 3, 3, 1)
    out_channels: int = 3

    def __post_init__(self) -> None:
        self.channels, self.blocks = tuple(self.channels), tuple(self.blocks)
        check_positive_int(self.latent_channels, "frame decoder latent_channels")
        check_positive_int(self.out_channels, "frame decoder out_channels")
        if not self.channels or len(self.channels) != len(self.blocks):
            raise ConfigError(f"frame decoder: channels {list(self.channels)} and blocks {list(self.blocks)} "
                              "need one entry per scale each")
        for value in self.channels:
            check_positive_int(value, "frame decoder channels")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in self.blocks):
            raise ConfigError(f"frame decoder blocks must be whole numbers >= 0, got {list(self.blocks)}")

    @property
    def upsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


#: ``tiny``: for the built-in model's tiny KL-f4 VAE (64 px frames from 4 x 16 x 16 latents);
#: ``sd-v1``: TAESD's decoder layout for the SD v1 KL-f8 VAE (256 px from 4 x 32 x 32)
PRESETS: dict[str, LightDecoderConfig] = {
    "tiny": LightDecoderConfig(channels=(32, 32, 32), blocks=(2, 2, 1)),
    "sd-v1": LightDecoderConfig(channels=(64, 64, 64, 64), blocks=(3, 3, 3, 1)),
}


def preset(name: str) -> LightDecoderConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown light frame decoder preset '{name}'; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return LightDecoderConfig(p.latent_channels, p.channels, p.blocks, p.out_channels)


def _conv(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


class _Block(nn.Module):
    """TAESD's residual block: ``relu(conv(relu(conv(relu(conv(x))))) + x)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + x)


class LightFrameDecoder(nn.Module):
    """Scaled KL-VAE latents [N, C, h, w] -> images [N, 3, h*f, w*f], roughly in [-1, 1] (unclamped:
    the pipeline clamps, as it clamps the full decoder's output)."""

    def __init__(self, cfg: LightDecoderConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [_conv(cfg.latent_channels, cfg.channels[0]), nn.ReLU()]
        for i, (width, blocks) in enumerate(zip(cfg.channels, cfg.blocks)):
            if i > 0:  # nearest 2x, then a conv to this scale's width (no bias: TAESD's)
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(cfg.channels[i - 1], width, bias=False)]
            layers += [_Block(width) for _ in range(blocks)]
        layers.append(_conv(cfg.channels[-1], cfg.out_channels))
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        # TAESD's soft clamp: latents far outside the training range cannot blow the ReLU stack up
        return self.layers(torch.tanh(latents / 3.0) * 3.0)

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """Images of scaled ``latents``, ``chunk_size`` at a time: [N, C, h, w] -> [N, 3, h*f, w*f]."""
        return torch.cat([self(chunk) for chunk in latents.split(chunk_size)])


@dataclass
class FrameDecoderInfo:
    """``frame_decoder/config.json``: the network and the KL-VAE latent space it decodes."""

    decoder: LightDecoderConfig = field(default_factory=LightDecoderConfig)
    #: the scaling factor of the VAE it was distilled from (its latents are read as the VAE scales them)
    vae_scaling_factor: float = 0.18215
    #: the VAE's latent channels and downsampling factor (checked against the model's VAE)
    vae_latent_channels: int = 4
    vae_downsample_factor: int = 8

    def fits(self, vae: object) -> str | None:
        """None when this decoder decodes ``vae``'s latents (a :class:`~mmldm.vae.kl_vae.KLVAE`), else why not."""
        ours = (self.vae_latent_channels, self.vae_downsample_factor, self.decoder.upsample_factor)
        theirs = (vae.latent_channels, vae.downsample_factor, vae.downsample_factor)
        if ours != theirs:
            return (f"decodes {self.vae_latent_channels}-channel latents upsampled {self.decoder.upsample_factor}x, "
                    f"the KL-VAE has {vae.latent_channels} channels at 1/{vae.downsample_factor}")
        if abs(self.vae_scaling_factor - vae.scaling_factor) > 1e-6 * max(1.0, abs(vae.scaling_factor)):
            return (f"was distilled for latents scaled by {self.vae_scaling_factor:g}, the KL-VAE scales "
                    f"by {vae.scaling_factor:g}")
        return None


def save_frame_decoder(decoder: LightFrameDecoder, info: FrameDecoderInfo, directory: Path) -> Path:
    """Write the decoder as a folder: ``config.json`` (:class:`FrameDecoderInfo`) + ``model.safetensors``."""
    from ..config import to_dict
    from ..weights import save_pretrained_folder

    return save_pretrained_folder(directory, to_dict(info), decoder)


def read_frame_decoder_info(directory: Path) -> FrameDecoderInfo:
    """``config.json`` of a :func:`save_frame_decoder` folder; one :class:`WeightsError` line when bad."""
    from ..weights import read_folder_info

    return read_folder_info(directory, FrameDecoderInfo, FRAME_DECODER_WHAT)


def load_frame_decoder(directory: Path, device: torch.device | str = "cpu"
                       ) -> tuple[LightFrameDecoder, FrameDecoderInfo]:
    """The decoder and its info from a :func:`save_frame_decoder` folder (frozen, eval mode)."""
    from ..weights import load_folder_module

    info = read_frame_decoder_info(directory)
    return load_folder_module(LightFrameDecoder(info.decoder), directory, FRAME_DECODER_WHAT, device), info


__all__ = [
    "FRAME_DECODER_NAME",
    "FRAME_DECODER_WHAT",
    "PRESETS",
    "FrameDecoderInfo",
    "LightDecoderConfig",
    "LightFrameDecoder",
    "load_frame_decoder",
    "preset",
    "read_frame_decoder_info",
    "save_frame_decoder",
]
