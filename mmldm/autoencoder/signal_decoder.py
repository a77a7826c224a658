"""The signal decoder: ONE conditional UNet shared by video frames and audio images.

It denoises the KL-VAE latent of a video frame or of an audio image (paper
Sec. 3.1, "Signal Decoding", Fig. 3b), built on diffusers'
``UNet2DConditionModel`` so it can start from a local Stable Diffusion v1 UNet
(the paper's initialisation) or from scratch. Conditioning:

1. **Content feature** -> time embedding. The item's own perceptual latent is
   average-pooled, flattened and passed through an MLP whose last layer is
   zero-initialised. The UNet is built with ``class_embed_type="identity"`` and
   the result is given as ``class_labels``: diffusers then adds it to the time
   embedding. The identity embedding has no parameters, so Stable Diffusion
   weights load unchanged and the MLP lives here, where its zero-init is ours.
2. **Multi-scale features** -> the UNet's down path. A small residual branch per
   modality maps the perceptual latent (nearest-upsampled to the UNet's input
   size) to every resolution level; one zero-initialised 1x1 convolution per
   UNet skip (12 for SD v1, plus one for the middle block) maps the level's
   features to that skip's channels. They are passed as diffusers'
   ``down_block_additional_residuals`` / ``mid_block_additional_residual`` and
   so are added to the skip connections of the UNet encoder (ControlNet style).
   Upstream added them to each input block's output, which also feeds the next
   block; the skip form keeps the pretrained UNet's forward untouched (no
   re-implementation or hooks) and is the proven way of adding dense spatial
   control to a pretrained SD UNet. Video branches add a frame-index
   embedding (sinusoidal of ``i / T``) inside their first residual block.
   With ``decoder.input_features`` (not in the paper) the branch's
   full-resolution features are also concatenated to the noisy input: the
   UNet's ``conv_in`` gets extra input channels (zero weights on a pretrained
   UNet, so it starts as the pretrained function), and the condition shapes
   the whole down path from the first step instead of only the skips.
3. **Cross-attention context** = [modality prompt (P tokens), class token,
   the OTHER modality's semantic tokens through a zero-initialised linear].
   For classifier-free guidance a dropped item gets the *null context*: the
   same prompt, a learned null class token and learned null semantic tokens
   (initialised to zero, so the null and conditional contexts agree at init).

The ablation switches of :class:`~mmldm.autoencoder.config.AblationConfig`
remove the prompt, class token, semantic tokens or content feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange, repeat
from torch import nn

from ..errors import ConfigError, WeightsError
from .blocks import ResBlock, downsample, zero_module
from .config import AutoencoderConfig, SignalDecoderConfig

MODALITIES = ("video", "audio")


# --------------------------------------------------------------------------- UNet


def _architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """UNet constructor arguments from a config mapping, without diffusers' private keys and the
    class embedding (which the decoder sets itself)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()
            if not k.startswith("_") and k != "class_embed_type"}


def load_pretrained_unet(path: str | Path, class_embed_type: str | None) -> UNet2DConditionModel:
    """Load a local Stable Diffusion v1 UNet (a pipeline folder with ``unet/`` or a UNet folder).

    Raises :class:`WeightsError` when no diffusers UNet is found there.
    """
    path = Path(path)
    if (path / "unet" / "config.json").is_file():
        folder, subfolder = path, "unet"
    elif (path / "config.json").is_file():
        folder, subfolder = path, None
    else:
        raise WeightsError(path, "Stable Diffusion v1 UNet",
                           "no unet/config.json or config.json here; give a local diffusers Stable Diffusion "
                           "v1 folder (e.g. a copy of stable-diffusion-v1-5) or its unet/ folder")
    weights = folder / subfolder if subfolder else folder
    if not any(weights.glob("diffusion_pytorch_model*.safetensors")) and not any(
            weights.glob("diffusion_pytorch_model*.bin")):
        raise WeightsError(weights, "Stable Diffusion v1 UNet", "no diffusion_pytorch_model weights in the folder")
    try:
        # class_embed_type overrides the folder's config; "identity" adds no parameters
        return UNet2DConditionModel.from_pretrained(folder, subfolder=subfolder, class_embed_type=class_embed_type)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(weights, "Stable Diffusion v1 UNet", " ".join(str(exc).split())[:300]) from None


def build_unet(cfg: SignalDecoderConfig, content_feature: bool) -> UNet2DConditionModel:
    """The UNet of the signal decoder, pretrained or freshly initialised."""
    class_embed_type = "identity" if content_feature else None
    if cfg.pretrained_unet:
        return load_pretrained_unet(cfg.pretrained_unet, class_embed_type)
    try:
        return UNet2DConditionModel(**_architecture(cfg.unet), class_embed_type=class_embed_type)
    except TypeError as exc:
        raise ConfigError(f"autoencoder decoder.unet: {exc}") from None


def widen_conv_in(unet: UNet2DConditionModel, extra: int, zero: bool) -> None:
    """Give ``unet.conv_in`` ``extra`` more input channels (the condition features concatenated
    after the noisy latent). The existing weights are kept; the new ones are zero when ``zero``
    (a pretrained UNet then computes exactly what it did), else PyTorch's default init.
    ``unet.config.in_channels`` keeps naming the latent channels."""
    old = unet.conv_in
    new = nn.Conv2d(old.in_channels + extra, old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        if zero:
            new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new


def unet_architecture(unet: UNet2DConditionModel) -> dict[str, Any]:
    """The architecture arguments of ``unet`` (to rebuild it without the pretrained folder)."""
    return _architecture(unet.config)


def skip_levels(unet: UNet2DConditionModel) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``(channels, level)`` of each down-path skip of ``unet`` and of its middle block.

    A level ``l`` is the resolution ``sample_size / 2**l``. The skips are, in order:
    ``conv_in``; per down block ``layers_per_block`` layer outputs; its downsampler
    (at the next level) unless it is the last block.
    """
    cfg = unet.config
    if not isinstance(cfg.layers_per_block, int):
        raise ConfigError("autoencoder decoder.unet.layers_per_block must be one integer")
    channels = list(cfg.block_out_channels)
    skips = [(channels[0], 0)]
    for level, width in enumerate(channels):
        skips += [(width, level)] * cfg.layers_per_block
        if level < len(channels) - 1:
            skips.append((width, level + 1))
    return skips, (channels[-1], len(channels) - 1)


# --------------------------------------------------------------------------- conditions


@dataclass
class DecoderCondition:
    """Everything the UNet is conditioned on, for N items (frames or audio images).

    ``content`` [N, E] (None when the content feature is ablated), ``down_residuals``
    one [N, C_k, H_k, W_k] per UNet skip, ``mid_residual`` [N, C, H, W], ``context`` [N, L, D],
    ``input_features`` [N, F_0, s, s] (None unless ``decoder.input_features``).
    """

    content: torch.Tensor | None
    down_residuals: list[torch.Tensor]
    mid_residual: torch.Tensor
    context: torch.Tensor
    input_features: torch.Tensor | None = None

    @staticmethod
    def cat(conditions: list[DecoderCondition]) -> DecoderCondition:
        first = conditions[0]
        return DecoderCondition(
            content=None if first.content is None else torch.cat([c.content for c in conditions]),
            down_residuals=[torch.cat(parts) for parts in zip(*(c.down_residuals for c in conditions))],
            mid_residual=torch.cat([c.mid_residual for c in conditions]),
            context=torch.cat([c.context for c in conditions]),
            input_features=(None if first.input_features is None
                            else torch.cat([c.input_features for c in conditions])),
        )

    def with_context(self, context: torch.Tensor) -> DecoderCondition:
        return DecoderCondition(self.content, self.down_residuals, self.mid_residual, context, self.input_features)

    def index(self, rows: torch.Tensor) -> DecoderCondition:
        """The conditions of the items ``rows`` ([R] indices)."""
        return DecoderCondition(
            content=None if self.content is None else self.content[rows],
            down_residuals=[r[rows] for r in self.down_residuals], mid_residual=self.mid_residual[rows],
            context=self.context[rows],
            input_features=None if self.input_features is None else self.input_features[rows])


class FeatureBranch(nn.Module):
    """Multi-scale features of one modality's perceptual latent for every UNet skip.

    Shapes: ``latent`` [N, Z, p, p] (nearest-upsampled to the UNet side s),
    ``frame_bias`` [N, F_0] or None -> (one [N, C_k, s/2^l_k, s/2^l_k] per skip, mid residual,
    full-resolution features [N, F_0, s, s]). The skip and mid outputs pass through
    zero-initialised 1x1 convolutions (``zero_convs``, ``mid_zero_conv``).
    """

    def __init__(self, latent_channels: int, feature_channels: list[int], skips: list[tuple[int, int]],
                 mid: tuple[int, int]):
        super().__init__()
        self.stem = nn.Conv2d(latent_channels, feature_channels[0], 3, padding=1)
        self.downsamples = nn.ModuleList()
        self.levels = nn.ModuleList()
        width = feature_channels[0]
        for level, out in enumerate(feature_channels):
            self.downsamples.append(downsample(width) if level > 0 else nn.Identity())
            self.levels.append(ResBlock(width, out))
            width = out
        self.skip_levels = [level for _, level in skips]
        self.zero_convs = nn.ModuleList(
            zero_module(nn.Conv2d(feature_channels[level], channels, 1)) for channels, level in skips)
        self.mid_level = mid[1]
        self.mid_zero_conv = zero_module(nn.Conv2d(feature_channels[mid[1]], mid[0], 1))

    def forward(self, latent: torch.Tensor, size: int,
                frame_bias: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        x = self.stem(F.interpolate(latent, size=(size, size), mode="nearest"))
        features = []
        for level, (down, block) in enumerate(zip(self.downsamples, self.levels)):
            x = block(down(x), frame_bias if level == 0 else None)
            features.append(x)
        residuals = [conv(features[level]) for conv, level in zip(self.zero_convs, self.skip_levels)]
        return residuals, self.mid_zero_conv(features[self.mid_level]), features[0]


class ContentMLP(nn.Module):
    """Pooled perceptual latent -> time-embedding offset. [N, Z, p, p] -> [N, E]; last layer zero-init."""

    def __init__(self, latent_channels: int, latent_size: int, pool_size: int, embed_dim: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(min(pool_size, latent_size))
        pooled = latent_channels * min(pool_size, latent_size) ** 2
        self.net = nn.Sequential(nn.Linear(pooled, embed_dim), nn.SiLU(), zero_module(nn.Linear(embed_dim, embed_dim)))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(latent).flatten(1))


# --------------------------------------------------------------------------- decoder


class SignalDecoder(nn.Module):
    """Shared conditional UNet + per-modality conditioning networks (see the module docstring)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        dec, ablation = cfg.decoder, cfg.ablation
        self.cfg = cfg
        self.unet = build_unet(dec, ablation.content_feature)
        unet_cfg = self.unet.config
        if unet_cfg.in_channels != cfg.vae_latent_channels or unet_cfg.out_channels != cfg.vae_latent_channels:
            raise ConfigError(f"autoencoder decoder UNet has {unet_cfg.in_channels}->{unet_cfg.out_channels} "
                              f"channels but the VAE latent has {cfg.vae_latent_channels}")
        if len(dec.feature_channels) != len(unet_cfg.block_out_channels):
            raise ConfigError(f"autoencoder decoder.feature_channels needs one width per UNet level "
                              f"({len(unet_cfg.block_out_channels)}), got {dec.feature_channels}")
        if dec.input_features:
            widen_conv_in(self.unet, dec.feature_channels[0], zero=bool(dec.pretrained_unet))
        self.context_dim = int(unet_cfg.cross_attention_dim)
        embed_dim = self.unet.time_embedding.linear_2.out_features
        skips, mid = skip_levels(self.unet)
        shapes = {"video": cfg.video_latent_shape, "audio": cfg.audio_latent_shape}
        # readout key_frames: the video branch also gets the channel group of the item's own time
        self.key_frames = cfg.video_encoder.key_frames if cfg.video_encoder.readout == "key_frames" else None
        group = shapes["video"][0] // len(cfg.video_encoder.key_frames)
        inputs = {"video": shapes["video"][0] + (group if self.key_frames else 0), "audio": shapes["audio"][0]}
        self.branches = nn.ModuleDict(
            {m: FeatureBranch(inputs[m], dec.feature_channels, skips, mid) for m in MODALITIES})
        self.content_mlps = nn.ModuleDict(
            {m: ContentMLP(shapes[m][0], shapes[m][1], dec.content_pool_size, embed_dim) for m in MODALITIES}
        ) if ablation.content_feature else None
        frame_dim = dec.feature_channels[0]
        self.frame_embed_dim = max(32, 2 * math.ceil(frame_dim / 2))
        self.frame_mlp = nn.Sequential(nn.Linear(self.frame_embed_dim, frame_dim), nn.SiLU(),
                                       nn.Linear(frame_dim, frame_dim))
        # context parts (paper Fig. 3b)
        self.prompts = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(dec.prompt_tokens, self.context_dim) * 0.02) for m in MODALITIES}
        ) if ablation.modality_prompt else None
        num_class_tokens = max(cfg.semantic.num_classes, 1) + 1  # the last one is the null token
        self.null_class = num_class_tokens - 1
        self.class_tokens = nn.Embedding(num_class_tokens, self.context_dim) if ablation.class_embedding else None
        if ablation.semantic_condition:
            self.semantic_to_context = zero_module(nn.Linear(cfg.semantic.dim, self.context_dim))
            self.null_semantic = nn.Parameter(torch.zeros(cfg.semantic.token_grid**2, self.context_dim))
        else:
            self.semantic_to_context = None
            self.null_semantic = None

    # -- conditioning ---------------------------------------------------------

    def context(self, modality: str, other_tokens: torch.Tensor, class_ids: torch.Tensor,
                drop: torch.Tensor) -> torch.Tensor:
        """Cross-attention context of N items of ``modality``.

        Shapes: ``other_tokens`` [N, S, D_sem] (the other modality's semantic tokens),
        ``class_ids`` [N] long, ``drop`` [N] bool (True -> null class and semantic tokens)
        -> [N, L, D] with L = prompt_tokens + 1 + S when nothing is ablated.
        """
        n = other_tokens.shape[0]
        parts = []
        if self.prompts is not None:
            parts.append(repeat(self.prompts[modality], "l d -> n l d", n=n))
        if self.class_tokens is not None:
            ids = torch.where(drop, torch.full_like(class_ids, self.null_class), class_ids)
            parts.append(self.class_tokens(ids)[:, None])
        if self.semantic_to_context is not None:
            semantic = self.semantic_to_context(other_tokens)  # [N, S, D]
            parts.append(torch.where(drop[:, None, None], self.null_semantic.to(semantic.dtype), semantic))
        if not parts:  # everything ablated: cross-attention still needs one (constant) token
            parts.append(other_tokens.new_zeros(n, 1, self.context_dim))
        return torch.cat(parts, dim=1)

    def frame_bias(self, frame_pos: torch.Tensor) -> torch.Tensor:
        """Frame-index embedding: ``frame_pos`` [N] = i / T in [0, 1) -> [N, F_0]."""
        return self.frame_mlp(get_timestep_embedding(frame_pos * 1000.0, self.frame_embed_dim))

    def frame_group(self, latent: torch.Tensor, frame_pos: torch.Tensor) -> torch.Tensor:
        """The channel group of a key-frame-readout video latent at each item's frame, linearly
        interpolated between the two nearest key frames (exact at a key frame).

        Shapes: ``latent`` [N, Z, p, p] (Z = K groups of G channels), ``frame_pos`` [N] = i / T
        -> [N, G, p, p].
        """
        k = len(self.key_frames)
        groups = rearrange(latent, "n (k g) h w -> n k g h w", k=k)
        if k == 1:
            return groups[:, 0]
        keys = torch.tensor(self.key_frames, dtype=torch.float32, device=latent.device)  # [K], increasing
        frame = (frame_pos.float() * self.cfg.num_frames).clamp(keys[0], keys[-1]).contiguous()  # [N]
        right = torch.searchsorted(keys, frame).clamp(1, k - 1)  # [N]
        left = right - 1
        w_right = ((frame - keys[left]) / (keys[right] - keys[left])).clamp(0, 1)[:, None]  # [N, 1]
        weights = F.one_hot(left, k) * (1 - w_right) + F.one_hot(right, k) * w_right  # [N, K]
        return torch.einsum("nk,nkghw->nghw", weights.to(latent.dtype), groups)

    def condition(self, modality: str, latent: torch.Tensor, other_tokens: torch.Tensor,
                  class_ids: torch.Tensor, drop: torch.Tensor,
                  frame_pos: torch.Tensor | None = None) -> DecoderCondition:
        """All conditions of N items of ``modality``.

        Shapes: ``latent`` [N, Z, p, p] (each item's own perceptual latent),
        ``other_tokens`` [N, S, D_sem], ``class_ids`` [N], ``drop`` [N] bool,
        ``frame_pos`` [N] (video only: frame index / T).
        """
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        if (frame_pos is None) != (modality == "audio"):
            raise ValueError("frame_pos is required for video items and not used for audio items")
        bias = self.frame_bias(frame_pos).to(latent.dtype) if frame_pos is not None else None
        branch_input = latent
        if modality == "video" and self.key_frames is not None:  # [N, Z + G, p, p]
            branch_input = torch.cat([latent, self.frame_group(latent, frame_pos)], dim=1)
        residuals, mid, full = self.branches[modality](branch_input, self.cfg.vae_latent_size, bias)
        content = self.content_mlps[modality](latent) if self.content_mlps is not None else None
        return DecoderCondition(content, residuals, mid, self.context(modality, other_tokens, class_ids, drop),
                                full if self.cfg.decoder.input_features else None)

    # -- denoising ------------------------------------------------------------

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: DecoderCondition) -> torch.Tensor:
        """Predict epsilon (or velocity, flow objective).

        Shapes: ``noisy`` [N, C_vae, s, s], ``timesteps`` [N] -> [N, C_vae, s, s].
        """
        if cond.input_features is not None:
            noisy = torch.cat([noisy, cond.input_features.to(noisy.dtype)], dim=1)  # [N, C_vae + F_0, s, s]
        return self.unet(
            noisy, timesteps,
            encoder_hidden_states=cond.context,
            class_labels=cond.content,
            down_block_additional_residuals=cond.down_residuals,
            mid_block_additional_residual=cond.mid_residual,
        ).sample
