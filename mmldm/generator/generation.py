"""How a trained generator samples: :class:`SamplingSettings` and ``generation.json``.

Every way of asking for a generation resolves into one :class:`SamplingSettings`,
validated once where it enters: the model folder's defaults
(``DIR/generator/generation.json``, :class:`GenerationConfig`), ``mmldm generate``'s
options and ``SoundingVideoPipeline.generate(**overrides)``. The pipeline adds only
what depends on the loaded model (the objective's default sampler, the signal
decoder's default steps, whether its autoencoder can act as a critic).

``generation.json`` also records what the generator was trained with and what
sampling must undo: its diffusion objective and the latent scales.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diffusion.config import DiffusionConfig
from ..diffusion.registry import SAMPLERS
from ..errors import ConfigError, WeightsError, check_positive_int

#: generation settings beside an exported AVDiT (in an exported generator folder and in a model folder's generator/)
GENERATION_NAME = "generation.json"

#: candidate critics (``SamplingSettings.critics``): "generator", the generator's own error in
#: predicting a candidate's audio from its video; "contrastive", the autoencoder's audio-video
#: contrastive similarity (its Eq. 1 head) of the candidate's two latents; "sync", the model folder's
#: pixel-domain sync critic (``sync_critic/``, :mod:`mmldm.critic`) on every candidate decoded
CRITICS = ("generator", "contrastive", "sync")

#: the frame decoders (``SamplingSettings.frame_decoder``): "full", the KL-VAE decoder; "light", the
#: model folder's light frame decoder distilled from it (``frame_decoder/``, :mod:`mmldm.vae.light_decoder`)
FRAME_DECODERS = ("full", "light")

#: a guidance request: one scale for both modalities, ``(audio, video)``, or ``{"audio": .., "video": ..}``
Guidance = float | Sequence[float] | Mapping[str, float]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingSettings:
    """The knobs of one generation (``mmldm generate`` options, ``generate(**overrides)``).

    Not in the paper: ``sync_guidance``, ``candidates``, ``critics`` and ``critic_times``
    (``docs/generation.md`` measures them).
    """

    #: the generator's sampler ("" = its objective's default: ddim for epsilon, euler for flow)
    sampler: str = ""
    #: sampler steps (paper: DDIM 50)
    steps: int = 50
    #: per-modality guidance scales of Eq. (9); 1 = no guidance (the authors' CLI used 9)
    audio_guidance: float = 1.0
    video_guidance: float = 1.0
    #: text-conditioned models: classifier-free guidance between the prompt and the null (empty) text,
    #: ``out(null) + s * (out(prompt) - out(null))``; 1 = the prompt alone, no null-text branch
    text_guidance: float = 1.0
    #: sampler steps of the autoencoder's signal decoder (None: its config's ``sampling.steps``)
    decoder_steps: int | None = None
    #: a2v only: x0 distance per sampler step down the generator's own video-to-audio error (0 = off)
    sync_guidance: float = 0.0
    #: latent candidates sampled per output (per clip of long); the one the critics find most in sync
    #: is decoded (1 = off)
    candidates: int = 1
    #: the critics that rank the candidates (names in :data:`CRITICS`); with more than one, each ranks a
    #: sample's candidates and the lowest sum of ranks wins
    critics: tuple[str, ...] = ("generator",)
    #: fractions of the forward process in (0, 1] at which the generator's critic compares, one noise
    #: draw each
    critic_times: tuple[float, ...] = (0.7, 0.5, 0.3)
    #: what decodes the video frames' KL-VAE latents to pixels (:data:`FRAME_DECODERS`); the audio image
    #: always takes the full KL-VAE decoder (the vocoder reads it)
    frame_decoder: str = "full"

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, str) or (self.sampler and self.sampler not in SAMPLERS):
            raise ConfigError(f"unknown sampler {self.sampler!r} (samplers: {', '.join(SAMPLERS)})")
        check_positive_int(self.steps, "steps")
        if self.decoder_steps is not None:
            check_positive_int(self.decoder_steps, "decoder steps")
        for name in ("audio_guidance", "video_guidance", "text_guidance"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(f"guidance scales must be finite numbers, got {name.split('_')[0]} {value!r}")
        if not _is_number(self.sync_guidance) or not math.isfinite(self.sync_guidance) or self.sync_guidance < 0:
            raise ConfigError(f"sync_guidance must be a finite number >= 0, got {self.sync_guidance!r}")
        check_positive_int(self.candidates, "candidates")
        critics = self.critics
        if (isinstance(critics, str) or not critics or len(set(critics)) != len(critics)
                or not all(isinstance(name, str) and name in CRITICS for name in critics)):
            raise ConfigError(f"critics must be one or more distinct names of {', '.join(CRITICS)}, "
                              f"got {list(critics) if not isinstance(critics, str) else critics!r}")
        if not self.critic_times or not all(_is_number(t) and 0 < t <= 1 for t in self.critic_times):
            raise ConfigError(f"critic_times must be one or more fractions in (0, 1], got {list(self.critic_times)}")
        if self.frame_decoder not in FRAME_DECODERS:
            raise ConfigError(f"frame decoder must be one of {', '.join(FRAME_DECODERS)}, got {self.frame_decoder!r}")

    @property
    def guidance(self) -> dict[str, float]:
        """``{"audio": s_a, "video": s_v}``."""
        return {"audio": float(self.audio_guidance), "video": float(self.video_guidance)}

    def replace(self, **overrides: Any) -> SamplingSettings:
        """These settings with ``overrides`` (field names; None keeps a field) applied and validated.

        ``guidance`` is accepted too: one number for both modalities, ``(audio, video)`` or
        ``{"audio": s_a, "video": s_v}``; a single critic name may be a string.
        """
        changes = {key: value for key, value in overrides.items() if value is not None}
        if "guidance" in changes:
            changes["audio_guidance"], changes["video_guidance"] = guidance_pair(changes.pop("guidance"))
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown sampling setting(s) {', '.join(unknown)} "
                              f"(known: guidance, {', '.join(f.name for f in dataclasses.fields(self))})")
        if isinstance(changes.get("critics"), str):
            changes["critics"] = (changes["critics"],)
        for key in ("critics", "critic_times"):
            if key in changes and not isinstance(changes[key], str):
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, **changes)


def guidance_pair(guidance: Guidance) -> tuple[float, float]:
    """``(audio_scale, video_scale)`` from one number, a pair (or a one-item list) or a dict."""
    if isinstance(guidance, Mapping):
        if set(guidance) != {"audio", "video"}:
            raise ConfigError(f"guidance must name audio and video, got {sorted(guidance)}")
        values = (guidance["audio"], guidance["video"])
    elif _is_number(guidance):
        values = (guidance, guidance)
    else:
        try:
            values = tuple(guidance) if not isinstance(guidance, (str, bytes)) else (guidance,)
        except TypeError:
            raise ConfigError(f"guidance scales must be numbers, got {guidance!r}") from None
        if len(values) == 1:
            values = values * 2
        if len(values) != 2:
            raise ConfigError(f"guidance takes one scale or two (audio video), got {len(values)}")
    if not all(_is_number(v) for v in values):
        raise ConfigError(f"guidance scales must be numbers, got {values!r}")
    audio_scale, video_scale = (float(v) for v in values)
    if not (math.isfinite(audio_scale) and math.isfinite(video_scale)):
        raise ConfigError(f"guidance scales must be finite numbers, got {audio_scale:g} {video_scale:g}")
    return audio_scale, video_scale


#: ``generation.json`` keys of the first layout, where the sampling defaults sat at the top level
_FLAT_SAMPLING_KEYS = ("sampler", "steps", "audio_guidance", "video_guidance", "sync_guidance", "candidates",
                       "critics", "critic_times")


@dataclass
class GenerationConfig:
    """``DIR/generator/generation.json``: how the generator was trained and samples by default."""

    #: the generator's training objective ("epsilon" DDPM of the paper, or "flow")
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    #: the generator sees ``perceptual latent * scale`` (1.0: the paper, "no rescaling")
    audio_latent_scale: float = 1.0
    video_latent_scale: float = 1.0
    #: how often each class is drawn when reranked svg / long runs without a class (one weight
    #: per class of a class-conditional generator; export writes the training data's class
    #: frequencies); empty or all equal: uniform
    class_prior: tuple[float, ...] = ()
    #: the sampling defaults of ``mmldm generate`` for this model
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    #: text-conditioned generators: the text encoder it was trained with, named for people (e.g.
    #: "openai/clip-vit-large-patch14"); a model folder without ``text_encoder/`` needs that folder
    #: passed (``--text-encoder DIR``)
    text_encoder: str = ""
    #: per task, sampling defaults that replace those of ``sampling`` (``{"a2v": {"critics": ["sync"]}}``):
    #: a setting worth its cost on one task may not be on another
    task_sampling: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.audio_latent_scale <= 0 or self.video_latent_scale <= 0:
            raise ConfigError("generation: latent scales must be positive")
        if self.class_prior and (not all(math.isfinite(w) and w >= 0 for w in self.class_prior)
                                 or sum(self.class_prior) <= 0):
            raise ConfigError(f"generation: class_prior must be weights >= 0 with a positive sum, "
                              f"got {list(self.class_prior)}")
        from .tasks import TASKS

        for task, overrides in self.task_sampling.items():
            if task not in TASKS:
                raise ConfigError(f"generation: task_sampling names unknown task {task!r} (tasks: {', '.join(TASKS)})")
            if not isinstance(overrides, dict):
                raise ConfigError(f"generation: task_sampling.{task} must map sampling settings to values")
            self.sampling_for(task)  # every override names a setting and gives it a valid value

    def sampling_for(self, task: str) -> SamplingSettings:
        """The model's sampling defaults for ``task``: ``sampling`` with the task's ``task_sampling``."""
        return self.sampling.replace(**self.task_sampling.get(task, {}))

    @staticmethod
    def upgrade_keys(data: dict[str, Any]) -> dict[str, Any]:
        """A ``generation.json`` of the first layout (sampling defaults at the top level) in this one."""
        flat = {key: data[key] for key in _FLAT_SAMPLING_KEYS if key in data}
        if not flat or "sampling" in data:
            return data
        rest = {key: value for key, value in data.items() if key not in flat}
        return {**rest, "sampling": flat}

    @property
    def scales(self) -> dict[str, float]:
        """``{"audio": ..., "video": ...}`` latent scales."""
        return {"audio": self.audio_latent_scale, "video": self.video_latent_scale}


def read_generation_config(path: str | Path) -> GenerationConfig:
    """A ``generation.json`` (either layout); every problem is one WeightsError line naming the file."""
    from ..config import from_dict
    from ..weights import read_config_json

    try:
        return from_dict(GenerationConfig, read_config_json(path, "generation config"))
    except ConfigError as exc:
        raise WeightsError(path, "generation config", str(exc)) from None


__all__ = ["CRITICS", "FRAME_DECODERS", "GENERATION_NAME", "GenerationConfig", "Guidance", "SamplingSettings", "guidance_pair", "read_generation_config"]
