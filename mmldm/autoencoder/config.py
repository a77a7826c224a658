"""Configuration of the hierarchical multi-modal autoencoder (paper Sec. 3.1).

One :class:`AutoencoderConfig` describes the whole stage-1 model; each part
takes its own sub-config. Two presets:

* :func:`tiny_config` -- CPU sized, for tests and the Sounding Shapes default
  model: 64x64 frames -> tiny KL-f4 VAE latents 4x16x16 -> video 8x8x8 and
  audio 8x4x4 perceptual latents (the paper's x2 / x4 encoder factors).
* :func:`paper_config` -- the paper's sizes: 256x256 frames -> 4x32x32 VAE
  latents -> video 16x16x16 and audio 16x8x8 perceptual latents, 768-wide
  semantic space with 4 tokens per modality, a Stable Diffusion v1 sized UNet.

The same presets live as YAML in ``configs/autoencoder/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diffusion.config import DiffusionConfig
from ..errors import ConfigError


@dataclass
class EncoderConfig:
    """Layout of a perceptual encoder."""

    #: width of each resolution level; one 2x spatial downsample between levels
    channels: list[int] = field(default_factory=lambda: [32, 64])
    #: residual blocks (each followed by attention) per level
    num_res_blocks: int = 1
    #: attention head width (paper: 64)
    head_dim: int = 16
    #: channels of the perceptual latent (paper: 16)
    latent_channels: int = 8


@dataclass
class VideoEncoderConfig(EncoderConfig):
    """Video encoder: its residual blocks are followed by spatial and temporal attention."""

    #: frames whose VAE latents the encoder sees (the content frame is put in front)
    key_frames: list[int] = field(default_factory=lambda: [0, 5, 10, 15])
    #: what the Gaussian head reads: "content_frame" (the paper: slot 0 gathers the clip into
    #: all latent channels) or "key_frames" (not in the paper: each key frame's slot gives
    #: latent_channels / K channels, stacked in key-frame order, so which channels belong to
    #: which time is fixed, not learnt; for fast motion, where a decoder otherwise has to learn
    #: to untangle K positions from one map)
    readout: str = "content_frame"


@dataclass
class AudioEncoderConfig(EncoderConfig):
    """Audio encoder: its residual blocks are followed by spatial attention; x4 by default."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])


@dataclass
class SemanticConfig:
    #: width of the shared semantic space (paper: 768)
    dim: int = 32
    #: semantic tokens per side: token_grid**2 tokens per modality (paper: 2 -> 4 tokens)
    token_grid: int = 2
    #: projector width
    projector_channels: int = 32
    head_dim: int = 16
    #: classes of the classification head; 0 = no labels (head disabled, class token constant)
    num_classes: int = 3
    #: contrastive embedding width (paper: 256)
    contrastive_dim: int = 64
    #: initial CLIP temperature (logit scale = 1 / temperature)
    temperature_init: float = 0.07
    #: the logit scale is clamped to [1, max_logit_scale] (CLIP: 100)
    max_logit_scale: float = 100.0


def tiny_unet() -> dict[str, Any]:
    """A two-level ``UNet2DConditionModel`` for 4x16x16 latents (CPU tests)."""
    return {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "norm_num_groups": 8,
    }


def sd_v1_unet() -> dict[str, Any]:
    """Stable Diffusion v1's UNet (860M): 320 ch, mults 1,2,4,4, context 768, 8 heads."""
    return {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


@dataclass
class SignalDecoderConfig:
    #: ``UNet2DConditionModel`` architecture arguments (ignored when ``pretrained_unet`` is set:
    #: the pretrained folder's own config is used and written back on save)
    unet: dict[str, Any] = field(default_factory=tiny_unet)
    #: local Stable Diffusion v1 folder (with a ``unet/`` subfolder) or a diffusers UNet folder;
    #: null = random initialisation (Table 5 "weight initialization" ablation)
    pretrained_unet: str | None = None
    #: learnable modality prompt length (paper: 77; its width is the UNet's cross_attention_dim)
    prompt_tokens: int = 4
    #: widths of the multi-scale feature branch, one per UNet resolution level
    feature_channels: list[int] = field(default_factory=lambda: [16, 32])
    #: the perceptual latent is average-pooled to this side before the content MLP
    content_pool_size: int = 2
    #: per-item probability of dropping the cross-modal condition (classifier-free guidance)
    condition_dropout: float = 0.1
    #: video frames decoded per clip in training (paper: 2)
    target_frames: int = 2
    #: also concatenate the feature branch's full-resolution features (frame index included)
    #: to the UNet's noisy input (extra conv_in channels; zero-initialised on a pretrained UNet).
    #: Not in the paper, whose spatial condition reaches only the UNet's skips: with that alone a
    #: small decoder trained from scratch takes thousands of steps to follow its latent.
    input_features: bool = False


@dataclass
class DiscriminatorConfig:
    #: widths of the 3D discriminator levels (spatial 2x downsample between levels)
    channels: list[int] = field(default_factory=lambda: [16, 32])
    head_dim: int = 16


@dataclass
class LossConfig:
    #: Eq. (3) weights; paper defaults (Table 6 #3): kl 1e-8, cl 0.1, co 0.1, adversarial 0.1
    kl: float = 1e-8
    classification: float = 0.1
    contrastive: float = 0.1
    adversarial: float = 0.1
    #: training step from which the adversarial loss (and discriminator training) starts
    adversarial_start_step: int = 0
    #: clips of a batch used by the adversarial loss (0 = all): bounds the memory of the
    #: VAE decode with gradients
    adversarial_clips: int = 0


@dataclass
class AblationConfig:
    """Switches for the rows of the paper's Table 5 (all on = the full model).

    The "weight initialization" row is ``decoder.pretrained_unet: null``.
    """

    #: the other modality's semantic tokens in the cross-attention context
    semantic_condition: bool = True
    #: the (true / predicted) class token in the context
    class_embedding: bool = True
    #: the pooled perceptual latent added to the time embedding
    content_feature: bool = True
    #: the learnable modality prompt in the context
    modality_prompt: bool = True
    #: the audio-video adversarial loss
    adversarial_loss: bool = True


@dataclass
class SamplingConfig:
    #: sampler steps to decode a perceptual latent (DDIM for epsilon, Euler for flow)
    steps: int = 50
    #: DDIM stochasticity (epsilon objective only)
    eta: float = 0.0
    #: classifier-free guidance scale of each modality (1 = no guidance)
    video_guidance: float = 2.5
    audio_guidance: float = 2.5
    #: items (frames or audio images) per signal-decoder call
    chunk_size: int = 16


#: fields of the first layout that are now ``AutoencoderConfig.diffusion``'s
_FLAT_DIFFUSION_KEYS = ("objective", "num_train_timesteps", "beta_start", "beta_end", "logit_mean", "logit_std")


@dataclass
class AutoencoderConfig:
    #: channels and side of the KL-VAE latent of one frame / audio image
    vae_latent_channels: int = 4
    vae_latent_size: int = 16
    #: frames per clip
    num_frames: int = 16
    #: the signal decoder's objective: "epsilon" (the paper's DDPM: 1000 steps, scaled linear
    #: 0.00085..0.012, DDIM decoding) or "flow" (rectified flow, logit-normal timesteps, Euler
    #: decoding; it learns to follow its latent condition in far fewer steps, see docs/default-model.md)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    video_encoder: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    decoder: SignalDecoderConfig = field(default_factory=SignalDecoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self):
        self.validate()

    @staticmethod
    def upgrade_keys(data: dict[str, Any]) -> dict[str, Any]:
        """A config of the first layout, whose decoder objective fields sat at the top level
        (``objective: flow``, ``num_train_timesteps``...), in this one (``diffusion:``)."""
        flat = {key: data[key] for key in _FLAT_DIFFUSION_KEYS if key in data}
        if not flat or "diffusion" in data:
            return data
        return {**{key: value for key, value in data.items() if key not in flat}, "diffusion": flat}

    def validate(self) -> None:
        """Raise :class:`ConfigError` for sizes that cannot fit together."""
        frames = self.video_encoder.key_frames
        if not frames or min(frames) < 0 or max(frames) >= self.num_frames:
            raise ConfigError(f"autoencoder video_encoder.key_frames {frames} must lie in [0, {self.num_frames})")
        readout, keys = self.video_encoder.readout, len(frames)
        if readout not in ("content_frame", "key_frames"):
            raise ConfigError(f"autoencoder video_encoder.readout must be 'content_frame' or 'key_frames', "
                              f"got {readout!r}")
        if readout == "key_frames" and list(frames) != sorted(set(frames)):
            raise ConfigError(f"autoencoder video_encoder.key_frames {frames} must be increasing (readout key_frames)")
        if readout == "key_frames" and self.video_encoder.latent_channels % keys:
            raise ConfigError(f"autoencoder video_encoder.latent_channels {self.video_encoder.latent_channels} "
                              f"must be a multiple of the {keys} key frames (readout key_frames)")
        if not 1 <= self.decoder.target_frames <= self.num_frames:
            raise ConfigError(f"autoencoder decoder.target_frames must be in [1, {self.num_frames}]")
        if self.ablation.adversarial_loss and self.decoder.target_frames < 2:
            raise ConfigError("autoencoder: the adversarial loss needs decoder.target_frames >= 2 "
                              "(it scores audio with two frames)")
        if not 0.0 <= self.decoder.condition_dropout <= 1.0:
            raise ConfigError("autoencoder decoder.condition_dropout must be in [0, 1]")
        for name, channels in (("video_encoder", self.video_encoder.channels),
                               ("audio_encoder", self.audio_encoder.channels)):
            if not channels:
                raise ConfigError(f"autoencoder {name}.channels must not be empty")
            factor = 2 ** (len(channels) - 1)
            if self.vae_latent_size % factor:
                raise ConfigError(f"autoencoder {name}: {len(channels) - 1} downsamples do not divide "
                                  f"vae_latent_size {self.vae_latent_size}")
        for name, side in (("video", self.video_latent_size), ("audio", self.audio_latent_size)):
            grid = self.semantic.token_grid
            if side < grid or side % grid or (side // grid) & (side // grid - 1):
                raise ConfigError(f"autoencoder semantic.token_grid {grid} must divide the {name} latent side "
                                  f"{side} by a power of two")
        if self.semantic.num_classes < 0:
            raise ConfigError("autoencoder semantic.num_classes must be >= 0")
        if self.diffusion.objective not in ("epsilon", "flow"):
            raise ConfigError(f"autoencoder diffusion.objective must be 'epsilon' or 'flow', "
                              f"got {self.diffusion.objective!r}")
        if self.diffusion.objective == "flow" and self.sampling.eta != 0.0:
            raise ConfigError("autoencoder sampling.eta applies to the epsilon objective (DDIM) only")
        if self.sampling.steps < 1 or self.sampling.chunk_size < 1:
            raise ConfigError("autoencoder sampling.steps and sampling.chunk_size must be >= 1")

    @property
    def video_latent_size(self) -> int:
        """Side of the video perceptual latent."""
        return self.vae_latent_size // 2 ** (len(self.video_encoder.channels) - 1)

    @property
    def audio_latent_size(self) -> int:
        """Side of the audio perceptual latent."""
        return self.vae_latent_size // 2 ** (len(self.audio_encoder.channels) - 1)

    @property
    def video_latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the video perceptual latent (paper: 16x16x16)."""
        side = self.video_latent_size
        return (self.video_encoder.latent_channels, side, side)

    @property
    def audio_latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the audio perceptual latent (paper: 16x8x8)."""
        side = self.audio_latent_size
        return (self.audio_encoder.latent_channels, side, side)


def tiny_config() -> AutoencoderConfig:
    """CPU preset: 4x16x16 VAE latents -> video 8x8x8, audio 8x4x4 perceptual latents."""
    return AutoencoderConfig(loss=LossConfig(adversarial_start_step=1000))


def paper_config() -> AutoencoderConfig:
    """The paper's sizes (Sec. 4.1 and the authors' code): 256^2 frames, SD v1 UNet."""
    return AutoencoderConfig(
        vae_latent_channels=4,
        vae_latent_size=32,
        num_frames=16,
        video_encoder=VideoEncoderConfig(channels=[320, 640], num_res_blocks=2, head_dim=64, latent_channels=16),
        audio_encoder=AudioEncoderConfig(channels=[320, 640, 640], num_res_blocks=2, head_dim=64,
                                         latent_channels=16),
        semantic=SemanticConfig(dim=768, token_grid=2, projector_channels=512, head_dim=64, num_classes=9,
                                contrastive_dim=256),
        decoder=SignalDecoderConfig(unet=sd_v1_unet(), prompt_tokens=77, feature_channels=[64, 128, 256, 256],
                                    content_pool_size=4),
        discriminator=DiscriminatorConfig(channels=[64, 128, 256, 256], head_dim=64),
        loss=LossConfig(kl=1e-8, classification=0.1, contrastive=0.1, adversarial=0.1,
                        adversarial_start_step=5000, adversarial_clips=4),
        sampling=SamplingConfig(steps=50, video_guidance=2.5, audio_guidance=2.5, chunk_size=16),
    )


PRESETS = {"tiny": tiny_config, "paper": paper_config}
