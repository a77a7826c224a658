"""SoundingVideoPipeline: the trained MM-LDM parts composed for generation.

    pipe = SoundingVideoPipeline.from_pretrained("models/shapes", device="cpu")
    out = pipe(task="svg", n=4, seed=0)                      # SoundingVideoOutput
    out.save("samples/")                                     # mp4 + wav + png + settings.json
    out = pipe(task="a2v", audio="rain.wav", guidance=(1.0, 9.0))
    out = pipe(task="long", seconds=6.4)                     # 4 clips of 1.6 s
    out = text_pipe(task="svg", prompt="a green square and a square wave, rising", text_guidance=3.0)

One :meth:`SoundingVideoPipeline.generate` serves the CLI (``mmldm generate``),
the tests and evaluation. Data flow of one clip (paper Fig. 2)::

    noise --AVDiT + sampler (+ cross-modal guidance, Eq. 9)--> audio / video perceptual latents
          --autoencoder signal decoder (DDIM)--> KL-VAE latents of the frames and the audio image
          --KL-VAE decoder--> frames [T, 3, H, W] and audio image [3, H, W]
          --image_to_mel + vocoder--> waveform [N]

Given clips go the other way (frames / waveform -> KL-VAE -> autoencoder
encoder -> posterior mode). The pipeline only composes: how to sample is a
:class:`~mmldm.generator.generation.SamplingSettings`, samplers and guidance are
:mod:`mmldm.diffusion`'s, the candidate critics :mod:`mmldm.pipeline.reranking`'s,
what a task conditions on :mod:`mmldm.generator.tasks`'. The model folder format is
described in ``docs/generation.md`` and :mod:`mmldm.pipeline.folder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..autoencoder.model import HierarchicalAVAutoencoder
from ..autoencoder.signal_decoder import SignalDecoder
from ..autoencoder.student import StudentInfo
from ..config import to_dict
from ..critic.network import SyncCritic, SyncCriticInfo
from ..data.audio_image import AudioConfig, waveform_to_audio_image
from ..data.vocoders import HiFiGAN, Vocoder
from ..diffusion import (
    DiffusionConfig,
    Objective,
    critic_guided_denoiser,
    default_sampler,
    guided_denoiser,
    make_objective,
    sample,
)
from ..errors import ConfigError, check_positive_int, warn
from ..generator.dit import AVDiT
from ..generator.generation import GenerationConfig, SamplingSettings
from ..generator.tasks import (
    TASKS,
    TaskSpec,
    branch_conditions,
    continuation_frames,
    load_audio,
    load_video,
    long_clip_count,
    resolve_task,
    window_starts,
)
from ..generator.text_encoder import TEXT_ENCODER_SUBFOLDER, TextEncoder
from ..timing import AVTiming
from ..vae.kl_vae import KLVAE
from ..vae.light_decoder import FrameDecoderInfo, LightFrameDecoder
from . import folder
from .audio import vocode_clips
from .low_memory import (
    LOW_MEMORY_DECODER_CHUNK,
    LOW_MEMORY_IMAGE_CHUNK,
    StagePlacement,
    low_memory_weight_dtype,
    read_parked_folder,
    stage_placement,
)
from .output import SoundingVideoOutput
from .reranking import (
    contrastive_similarity,
    draw_classes,
    generator_critic,
    generator_scores,
    pick_candidates,
)

#: clip-length windows of a given span encoded at a time
WINDOW_BATCH = 16
#: candidates decoded to pixels at a time for the sync critic
SYNC_CRITIC_CHUNK = 16

#: the models shipped with the package, by the name ``--model NAME`` / ``from_pretrained(NAME)`` takes:
#: ``shapes``, the built-in Sounding Shapes model (``mmldm recipe sounding-shapes``), and ``bbb``, the
#: model of Big Buck Bunny (``mmldm recipe bbb``)
MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED_MODELS = ("shapes", "bbb")
#: the default model
BUILTIN_MODEL = MODELS / "shapes"

#: ``callback(event)`` of :meth:`SoundingVideoPipeline.generate`: each event is a dict whose
#: "stage" says what happened (shapes: n samples, K candidates, ``latents`` = {"audio", "video"})
#:
#: * "settings": ``settings`` (the resolved :class:`SamplingSettings`), ``task``, ``n``, ``seed``
#: * "classes": ``classes`` [n], the class drawn for each sample (reranked svg / long without a class)
#: * "clip": ``clip`` index, before it is sampled: ``conditions`` and ``unconditional`` (the two
#:   guidance branches' keyword inputs of the generator, [n * K] rows; ``unconditional`` None when
#:   nothing is guided) and ``known`` (the given modality's latent, a2v / v2a)
#: * "step": ``clip``, then the sampler's own callback: ``i``, ``t`` [n * K], ``x`` (x_t latents),
#:   ``denoised`` (the x0 estimate)
#: * "candidates": ``clip``, ``pool`` (every candidate's latents, [n * K] sample-major), ``labels``
#:   ([n * K] or None), ``scores`` ({critic: [n, K]}, lower = more in sync), ``picks`` [n]  (K > 1 only)
#: * "latents": ``clip``, ``latents`` [n] the kept latents (generator scale), before decoding
Callback = Callable[[dict[str, Any]], None]


def builtin_model_folder() -> Path:
    """The built-in model's folder; :class:`ConfigError` when the package ships none."""
    if not (BUILTIN_MODEL / folder.INDEX_NAME).is_file():
        raise ConfigError(f"the built-in model is missing ({BUILTIN_MODEL / folder.INDEX_NAME}); reinstall "
                          "mmldm, or pass a model folder written by SoundingVideoPipeline.save_pretrained")
    return BUILTIN_MODEL


def model_folder(model: str | Path | None) -> Path:
    """The folder of ``model``: a model folder, the name of a shipped model (:data:`SHIPPED_MODELS`), or
    None for the built-in model. A folder of that name in the working directory wins over a shipped model."""
    if model is None:
        return builtin_model_folder()
    path = Path(model)
    if str(model) in SHIPPED_MODELS and not path.exists():
        if str(model) == "shapes":
            return builtin_model_folder()
        shipped = MODELS / str(model)
        if not (shipped / folder.INDEX_NAME).is_file():
            raise ConfigError(f"the shipped model '{model}' is not in this installation ({shipped}); reinstall "
                              "mmldm from a checkout that has it, or pass a model folder")
        return shipped
    return path


def _stages_parked_after(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of the pipeline, after which (also after an error) no stage holds the device in
    low-memory mode."""
    @functools.wraps(method)
    def wrapper(self: SoundingVideoPipeline, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._placement is not None:
                self._placement.park_all()

    return wrapper


class SoundingVideoPipeline:
    """KL-VAE + multi-modal autoencoder + AVDiT generator + vocoder, ready to generate.

    Build with :meth:`from_pretrained` (a model folder) or :meth:`assemble` (trained
    modules, e.g. at the end of training), write with :meth:`save_pretrained`.
    """

    def __init__(self, vae: KLVAE, autoencoder: HierarchicalAVAutoencoder, generator: AVDiT,
                 generation: GenerationConfig, audio_cfg: AudioConfig, vocoder: Vocoder,
                 vocoder_spec: str = "griffin-lim", model_dir: Path | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None, low_memory: bool = False,
                 weight_files: dict[str, Path] | None = None,
                 decoder_student: tuple[SignalDecoder, StudentInfo] | None = None,
                 frame_decoder: tuple[LightFrameDecoder, FrameDecoderInfo] | None = None,
                 text_encoder: TextEncoder | None = None,
                 sync_critic: tuple[SyncCritic, SyncCriticInfo] | None = None):
        """``text_encoder``: the frozen text encoder of a text-conditioned generator (generator
        ``context_dim`` > 0; it runs once per generation, on the device; in low-memory mode on the
        CPU). ``low_memory``: the stages take the device one at a time, with bf16 weights where it is
        native (:mod:`mmldm.pipeline.low_memory`); ``weight_files``: the stages (by attribute name)
        whose weights are read from these safetensors files when they run (:meth:`from_pretrained`);
        ``decoder_student``: a few-step signal decoder distilled from the autoencoder's and how it
        samples (:mod:`mmldm.autoencoder.distill`), used when the decoder steps are its steps;
        ``frame_decoder``: a light frame decoder distilled from the KL-VAE's decoder and what it decodes
        (:mod:`mmldm.vae.light_decoder`), used for the video frames when the settings' ``frame_decoder``
        is "light"; ``sync_critic``: a pixel-domain sync critic and what it judges (:mod:`mmldm.critic`),
        the critic "sync" (small: resident on the device in every mode)."""
        self.vae = vae
        self.autoencoder = autoencoder
        self.generator = generator
        self.generation = generation
        self.objective: Objective = make_objective(generation.diffusion)
        self.audio_cfg = audio_cfg
        self.vocoder = vocoder
        self.vocoder_spec = vocoder_spec
        self.model_dir = model_dir
        self.device = torch.device(device)
        self.dtype = dtype
        self.decoder_student = decoder_student
        self.frame_decoder = frame_decoder
        self.sync_critic = sync_critic
        if sync_critic is not None:
            sync_critic[0].to(self.device).eval().requires_grad_(False)
        self._check_components()
        #: the frozen text encoder (None: the generator takes no text)
        self.text_encoder = text_encoder
        self._check_text_encoder()
        #: low-memory mode: the stages' placement and what the weights are (None: every stage resident)
        self._placement: StagePlacement | None = None
        self.low_memory_weights: str | None = None
        #: whether :meth:`compile` compiled the networks
        self.compiled = False
        if low_memory:
            weight_dtype, self.low_memory_weights = low_memory_weight_dtype(self.device)
            if weight_dtype != torch.float32:
                self.dtype = weight_dtype  # bf16 weights run under bf16 autocast
            else:
                warn(f"low-memory sampling: weights stay {self.low_memory_weights}; the stages still take "
                     "the device one at a time")
            for module in (vae, autoencoder, generator, vocoder, self._student_network, self._light_network):
                if isinstance(module, nn.Module):
                    module.eval().requires_grad_(False)
            vae.chunk_size = min(vae.chunk_size, LOW_MEMORY_IMAGE_CHUNK)
            self._placement = stage_placement({"generator": generator, "autoencoder": autoencoder, "vae": vae,
                                               "vocoder": vocoder, "decoder_student": self._student_network,
                                               "frame_decoder": self._light_network},
                                              self.device, weight_dtype, weight_files or {})
            return
        for module in (vae, autoencoder, generator, vocoder, self._student_network, self._light_network,
                       text_encoder):
            if isinstance(module, nn.Module):
                module.to(self.device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ building

    @classmethod
    def assemble(cls, *, vae: KLVAE, autoencoder: HierarchicalAVAutoencoder, generator: AVDiT,
                 objective: Objective | str | Any = "epsilon", audio_cfg: AudioConfig,
                 vocoder: Vocoder | str | Path = "griffin-lim", generation: GenerationConfig | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 low_memory: bool = False,
                 decoder_student: tuple[SignalDecoder, StudentInfo] | None = None,
                 frame_decoder: tuple[LightFrameDecoder, FrameDecoderInfo] | None = None,
                 text_encoder: TextEncoder | None = None,
                 sync_critic: tuple[SyncCritic, SyncCriticInfo] | None = None) -> SoundingVideoPipeline:
        """A pipeline from trained modules (what training code calls to export a model folder).

        :param objective: the generator's training objective (an :class:`Objective`, its name
            or a :class:`~mmldm.diffusion.DiffusionConfig`); it overrides ``generation.diffusion``.
        :param vocoder: "griffin-lim", a HiFi-GAN checkpoint path, or a vocoder module.
        :param generation: latent scales and sampling defaults (default: :class:`GenerationConfig`).

        The modules are used, not copied: they are moved to ``device``, put in eval mode and
        frozen (``requires_grad_(False)``). ``low_memory`` (see :meth:`from_pretrained`): they wait
        in CPU memory, their linear and convolution weights in bf16 where it is native, and move to
        ``device`` one at a time (on a CPU they all stay resident: only the bf16 weights and the smaller
        chunks save memory); the KL-VAE's ``chunk_size`` is lowered.
        """
        generation = dataclasses.replace(generation or GenerationConfig(), diffusion=_diffusion_config(objective))
        vocoder_module, spec = folder.resolve_vocoder(vocoder, audio_cfg, base=None)
        return cls(vae, autoencoder, generator, generation, audio_cfg, vocoder_module, spec,
                   device=device, dtype=dtype, low_memory=low_memory, decoder_student=decoder_student,
                   frame_decoder=frame_decoder,
                   text_encoder=text_encoder, sync_critic=sync_critic)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: torch.device | str = "cpu",
                        dtype: torch.dtype | str | None = None, vocoder: Vocoder | str | Path | None = None,
                        low_memory: bool = False,
                        text_encoder: str | Path | TextEncoder | None = None) -> SoundingVideoPipeline:
        """Load a model folder written by :meth:`save_pretrained` (see ``docs/generation.md``), or a
        shipped model by name (``"shapes"``, ``"bbb"``); ``directory`` None: the built-in Sounding Shapes
        model (``docs/default-model.md``).

        :param dtype: compute dtype (e.g. ``torch.bfloat16``): the networks run under autocast
            in it; weights stay float32. None: float32. "auto": bf16 where ``device`` multiplies it
            natively, else float32 (:func:`mmldm.devices.resolve_precision`, the CLI's default).
        :param vocoder: another vocoder than the folder's: "griffin-lim", a HiFi-GAN checkpoint
            (e.g. the released universal V1 for a model with the ``hifigan-22k`` audio preset) or a
            module; it must fit the model's audio settings.
        :param low_memory: sample with little memory (``docs/generation.md``, "Low-memory sampling"):
            the generator, the autoencoder (signal decoder), the KL-VAE (frame decoder) and the
            vocoder take the device one at a time, each stage's weights read from the folder when
            it runs and dropped after; bf16 weights (and compute) where the device multiplies bf16
            natively, else float32 (a warning says so). The KL-VAE takes
            :data:`~mmldm.pipeline.low_memory.LOW_MEMORY_IMAGE_CHUNK` images at a time, the signal
            decoder :data:`~mmldm.pipeline.low_memory.LOW_MEMORY_DECODER_CHUNK` frames.
        :param text_encoder: a text-conditioned model's text encoder when its folder does not carry
            one (``text_encoder/`` and ``tokenizer/``): a local CLIP text model folder (e.g. CLIP-L,
            what ``generation.json``'s ``text_encoder`` names) or a loaded :class:`TextEncoder`.
        """
        if isinstance(dtype, str):
            from ..devices import resolve_precision

            dtype = resolve_precision(dtype, str(torch.device(device)))
        directory = model_folder(directory)
        weight_files = None
        if low_memory:
            parked = read_parked_folder(directory)
            parts, weight_files = parked.parts, parked.weight_files
        else:
            parts = folder.load_folder(directory)
        vocoder_module, spec = ((parts.vocoder, parts.vocoder_spec) if vocoder is None
                                else folder.resolve_vocoder(vocoder, parts.audio_cfg, base=None))
        text = _folder_text_encoder(directory, parts.generator, parts.generation, text_encoder)
        return cls(parts.vae, parts.autoencoder, parts.generator, parts.generation, parts.audio_cfg,
                   vocoder_module, spec, model_dir=directory, device=device, dtype=dtype, low_memory=low_memory,
                   weight_files=weight_files, decoder_student=parts.decoder_student,
                   frame_decoder=parts.frame_decoder, text_encoder=text, sync_critic=parts.sync_critic)

    def save_pretrained(self, directory: str | Path, text_encoder: bool = True) -> Path:
        """Write the model folder atomically (a temporary folder beside it, then renamed).

        ``text_encoder``: a text-conditioned model's folder carries its text encoder
        (``text_encoder/`` and ``tokenizer/``); False leaves it out (a big one like CLIP-L), and
        loading then needs it passed (``from_pretrained(text_encoder=DIR)``)."""
        if self._placement is not None:
            raise ConfigError("save_pretrained: a low-memory pipeline holds bf16 or no weights between stages; "
                              "load it without low_memory to save it")
        return folder.save_folder(self, Path(directory), text_encoder=text_encoder)

    def compile(self) -> SoundingVideoPipeline:
        """Compile the networks that run at every sampler step with ``torch.compile`` (TorchInductor):
        the generator, the signal decoder's UNet (the autoencoder's and the few-step student's), the
        frame decoders and a HiFi-GAN vocoder. Each compiles on its first call (tens of seconds on a
        CPU, and again for a batch of a new shape) and runs faster after: for a loaded model that
        serves many calls (``mmldm serve --compile``), not for one ``mmldm generate``. The compiled
        networks compute the same functions with other rounding, so a seed's sample is not bitwise
        the eager one's (with candidates, another candidate may win). ``settings.json`` records
        ``compiled``. Returns the pipeline.

        A CPU needs a C++ compiler for it (one line says so when there is none); a low-memory
        pipeline, which reads its weights again for every stage, is not compiled."""
        if self._placement is not None:
            raise ConfigError("compile: a low-memory pipeline reads its weights again for every stage; "
                              "load it without low_memory to compile it")
        if self.device.type == "cpu":
            _check_cpp_compiler()
        networks = [self.generator, self.autoencoder.decoder.unet, self.vae.autoencoder.decoder]
        if self._student_network is not None:
            networks.append(self._student_network.unet)
        if self._light_network is not None:
            networks.append(self._light_network)
        if isinstance(self.vocoder, HiFiGAN):
            networks.append(self.vocoder)
        # diffusers' upsampling asks its lru_cache'd is_torch_version, a pure function: Dynamo's warning
        # that it traces through the cache would be printed at every compilation
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`-wrapped",
                                category=UserWarning)
        for network in networks:
            network.compile()
        self.compiled = True
        return self

    def _use(self, *stages: str) -> None:
        """Low-memory mode: give the device to ``stages`` ("generator", "autoencoder", "decoder_student",
        "vae", "frame_decoder" or "vocoder") before they run (the others leave it); otherwise nothing (every stage is
        resident)."""
        if self._placement is not None:
            self._placement.use(*stages)

    @property
    def _student_network(self) -> SignalDecoder | None:
        return None if self.decoder_student is None else self.decoder_student[0]

    @property
    def _light_network(self) -> LightFrameDecoder | None:
        return None if self.frame_decoder is None else self.frame_decoder[0]

    def uses_student(self, decoder_steps: int) -> bool:
        """Whether decoding with ``decoder_steps`` sampler steps runs the few-step student: the model
        folder has one and these are its steps (any other count runs the autoencoder's own decoder)."""
        return self.decoder_student is not None and decoder_steps == self.decoder_student[1].steps

    def resolved_config(self) -> dict[str, Any]:
        """The resolved configs of all stages (what ``config.yaml`` of a model folder holds)."""
        return {
            "mmldm_version": __version__,
            "clip": {"fps": self.fps, "num_frames": self.num_frames, "frame_size": self.frame_size,
                     "sample_rate": self.audio_cfg.sample_rate},
            "vae": dict(self.vae.autoencoder.config),
            "autoencoder": to_dict(self.autoencoder.resolved_config()),
            "generator": to_dict(self.generator.cfg),
            "generation": to_dict(self.generation),
            "audio": to_dict(self.audio_cfg),
            "vocoder": self.vocoder_spec,
            "decoder_student": None if self.decoder_student is None else to_dict(self.decoder_student[1]),
            "frame_decoder": None if self.frame_decoder is None else to_dict(self.frame_decoder[1]),
            "sync_critic": None if self.sync_critic is None else to_dict(self.sync_critic[1]),
        }

    @property
    def takes_text(self) -> bool:
        """Whether the generator is conditioned on a text prompt (``generate(prompt=...)``)."""
        return self.text_encoder is not None

    def _check_text_encoder(self) -> None:
        """A text-conditioned generator needs a text encoder whose tokens fit its context, and only it."""
        dit = self.generator.cfg
        if self.text_encoder is None:
            if dit.context_dim:
                raise ConfigError(f"this model's generator is conditioned on text ({dit.n_ctx} x {dit.context_dim} "
                                  "tokens) but no text encoder was given (pass text_encoder= / --text-encoder DIR)")
            return
        if not dit.context_dim:
            raise ConfigError("a text encoder was given, but this model's generator takes no text (context_dim 0)")
        if (self.text_encoder.length, self.text_encoder.hidden_size) != (dit.n_ctx, dit.context_dim):
            raise ConfigError(f"text encoder {self.text_encoder.source or ''} gives {self.text_encoder.length} x "
                              f"{self.text_encoder.hidden_size} tokens, the generator takes {dit.n_ctx} x "
                              f"{dit.context_dim}")

    def _check_components(self) -> None:
        """Refuse parts whose sizes do not fit together (one line naming the mismatch)."""
        ae, dit, vae = self.autoencoder.cfg, self.generator.cfg, self.vae
        problems = []
        if vae.latent_channels != ae.vae_latent_channels:
            problems.append(f"KL-VAE latent channels {vae.latent_channels} != autoencoder "
                            f"vae_latent_channels {ae.vae_latent_channels}")
        if (dit.audio_channels, *dit.audio_size) != ae.audio_latent_shape:
            problems.append(f"generator audio latent {(dit.audio_channels, *dit.audio_size)} != autoencoder "
                            f"audio latent {ae.audio_latent_shape}")
        if (dit.video_channels, *dit.video_size) != ae.video_latent_shape:
            problems.append(f"generator video latent {(dit.video_channels, *dit.video_size)} != autoencoder "
                            f"video latent {ae.video_latent_shape}")
        if getattr(self.vocoder, "sample_rate", None) != self.audio_cfg.sample_rate:
            problems.append(f"vocoder sample rate {getattr(self.vocoder, 'sample_rate', None)} != audio config "
                            f"{self.audio_cfg.sample_rate}")
        if self.frame_decoder is not None:
            unfit = self.frame_decoder[1].fits(vae)
            if unfit:
                problems.append(f"the light frame decoder {unfit}")
        elif self.generation.sampling.frame_decoder == "light":
            problems.append("generation's default frame decoder is 'light' but the model has no light frame "
                            "decoder (frame_decoder/)")
        if self.sync_critic is not None:
            unfit = self.sync_critic[1].fits(self.num_frames, self.fps, self.audio_cfg.sample_rate, self.frame_size)
            if unfit:
                problems.append(f"the sync critic {unfit}")
        prior = self.generation.class_prior
        if prior and len(prior) != dit.num_classes:
            problems.append(f"generation class_prior has {len(prior)} weights, the generator "
                            f"{dit.num_classes} classes")
        if problems:
            raise ConfigError("pipeline components do not fit: " + "; ".join(problems))
        for task in TASKS:  # the model's own critics must fit its autoencoder and components too
            self._check_critics(self.generation.sampling_for(task))
        timing = AVTiming(self.fps, self.num_frames, self.audio_cfg.sample_rate)
        if timing.samples_per_clip != self.audio_cfg.clip_samples:
            raise ConfigError(f"pipeline: {self.num_frames} frames at {self.fps:g} fps need "
                              f"{timing.samples_per_clip} audio samples, the audio config's clip has "
                              f"{self.audio_cfg.clip_samples}")

    # ------------------------------------------------------------------ clip geometry

    @property
    def num_frames(self) -> int:
        """Frames per clip T."""
        return self.autoencoder.cfg.num_frames

    @property
    def fps(self) -> float:
        """Frame rate: T frames last one audio clip (``clip_seconds``)."""
        return self.num_frames / self.audio_cfg.clip_seconds

    @property
    def frame_size(self) -> int:
        """Side of the square frames (and audio images) in pixels."""
        return self.autoencoder.cfg.vae_latent_size * self.vae.downsample_factor

    @property
    def clip_samples(self) -> int:
        return self.audio_cfg.clip_samples

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame (whole: the pipeline's timing checks it)."""
        return self.clip_samples // self.num_frames

    # ------------------------------------------------------------------ generation

    def __call__(self, *args: Any, **kwargs: Any) -> SoundingVideoOutput:
        return self.generate(*args, **kwargs)

    def resolve_settings(self, task: str, settings: SamplingSettings | None = None,
                         **overrides: Any) -> SamplingSettings:
        """The settings :meth:`generate` samples ``task`` with: ``settings`` (default: the model's,
        ``generation.json``) with ``overrides`` (:meth:`SamplingSettings.replace`), completed with
        this model's defaults (the objective's sampler, the signal decoder's steps) and checked
        against it. Sync guidance applies to a2v only: asked for by an override on another task it is
        an error, coming from ``settings`` it is switched off."""
        resolved = (self.generation.sampling_for(task) if settings is None else settings).replace(**overrides)
        if not self.takes_text:
            if overrides.get("text_guidance") not in (None, 1, 1.0):
                raise ConfigError("text guidance needs a text-conditioned model; this one takes no prompt")
            resolved = dataclasses.replace(resolved, text_guidance=1.0)
        if task != "a2v":
            if overrides.get("sync_guidance"):
                raise ConfigError(f"sync guidance applies to task a2v only, not {task}")
            resolved = dataclasses.replace(resolved, sync_guidance=0.0)
        sampler = resolved.sampler or default_sampler(self.objective)
        if sampler not in self.objective.samplers:
            raise ConfigError(f"sampler '{sampler}' does not fit this model's '{self.objective.name}' objective "
                              f"(use {' or '.join(self.objective.samplers)})")
        self._check_critics(resolved)
        if resolved.frame_decoder == "light" and self.frame_decoder is None:
            raise ConfigError("frame decoder 'light': this model has no light frame decoder (frame_decoder/; "
                              "`mmldm export frame-decoder` adds one); use 'full'")
        return dataclasses.replace(resolved, sampler=sampler,
                                   decoder_steps=resolved.decoder_steps or self.autoencoder.cfg.sampling.steps)

    @torch.no_grad()
    @_stages_parked_after
    def generate(self, task: str = "svg", n: int = 1, seed: int = 0, *, audio: Any = None, video: Any = None,
                 seconds: float | None = None, start: float | None = None, continue_seconds: float | None = None,
                 class_label: int | None = None, prompt: str | None = None, settings: SamplingSettings | None = None,
                 callback: Callback | None = None, progress: bool = True, **overrides: Any) -> SoundingVideoOutput:
        """Generate ``n`` sounding videos for ``task`` (see :mod:`mmldm.generator.tasks`).

        :param audio: a2v / audio-continuation: an audio (or video) file, or a waveform [N] at
            the model's sample rate.
        :param video: v2a / video-continuation: a video file, or frames [T, 3, H, W] in [-1, 1].
        :param seconds: task long: how much to generate (a whole number of clips is sampled and
            the result trimmed to ``round(seconds * fps)`` frames); a task with a given clip: the
            length of the span of it to use, from ``start`` seconds (default: all of it). a2v, v2a and
            the continuations generate one clip per clip of the span, each conditioned on its window of
            the given modality and on the clip generated before it (:mod:`mmldm.generator.tasks`).
        :param continue_seconds: continuations: how much sounding video follows the span (default:
            one clip), clip after clip, each clip conditioned on the one before.
        :param seed: sample ``i`` draws all its noise from a CPU ``torch.Generator`` seeded with
            ``seed + i``: the same on any device and whatever ``n`` (sample 2 of ``n=4, seed=0`` is
            sample 0 of ``n=1, seed=2``).
        :param settings: how to sample (default: the model's, ``generation.json``);
            ``overrides`` replace single fields, e.g. ``steps=12, guidance=(1.0, 9.0),
            candidates=16`` (:meth:`resolve_settings`, :class:`SamplingSettings` documents each).
        :param prompt: text-conditioned models (:attr:`takes_text`): what to make, e.g. "a green square
            and a square wave, rising"; None or "" is the null text. A prompt for a model without text
            conditioning is an error. ``text_guidance`` (a setting) guides between the prompt and the
            null text.
        :param callback: observes the generation (:data:`Callback` lists the events).

        Sampling with ``candidates`` > 1 draws the candidates of a sample in one batch, candidate
        ``j`` after candidate ``j - 1`` from the sample's generator (so candidate 0 is what one
        candidate samples), and decodes the one the critics rank best
        (:mod:`mmldm.pipeline.reranking`); the latent sampler is cheap next to the signal decoder,
        which still runs once per output. For svg and long without ``class_label``, a
        class-conditional model first draws each sample's class from the sample's generator
        (``generation.class_prior``) and ranks within it. ``sync_guidance`` (a2v) moves the
        video's clean estimate at every sampler step down the generator's own video-to-audio
        error of the given audio (:func:`~mmldm.pipeline.reranking.generator_critic`).

        :return: frames [n, T', 3, H, W] and waveforms [n, N'] (T' frames: one clip, the span of a2v /
            v2a, the span and what follows it for a continuation, or the length of long; N' = T' *
            sample_rate / fps).

        Low-memory mode (``low_memory=True``): every stage has left the device when this returns.
        """
        spec = resolve_task(task, audio, video, seconds, start, continue_seconds)
        check_positive_int(n, "n (samples)")
        settings = self.resolve_settings(task, settings, **overrides)
        labels = self._class_labels(class_label, n)
        text = self._text_tokens(prompt, n)
        uses_previous_clip = task == "long" or spec.continues
        if uses_previous_clip and not self.generator.cfg.previous_clip:
            raise ConfigError(f"task {task} needs a generator trained with previous-clip inputs "
                              "(generator config previous_clip: true)")
        notify = callback or (lambda event: None)
        notify({"stage": "settings", "settings": settings, "task": task, "n": n, "seed": int(seed)})
        generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(n)]
        # a text model makes what its prompt names: no class is drawn for it
        drawn_classes = bool(labels is None and spec.given is None and settings.candidates > 1
                             and self.generator.cfg.num_classes and not self.takes_text)
        if drawn_classes:  # reranking would shift the class mix towards the easiest class: fix it first
            labels = draw_classes(generators, self.generator.cfg.num_classes, self.generation.class_prior)
            labels = labels.to(self.device)
            notify({"stage": "classes", "classes": labels})

        self._check_rows(n, settings)
        max_frames = self._max_frames(n)
        if task == "long":
            clips, total_frames = long_clip_count(seconds, self.fps, self.num_frames)
            self._check_length(total_frames, max_frames, n)
        following = continuation_frames(continue_seconds, self.fps, self.num_frames) if spec.continues else 0
        if following:  # what follows the span must fit with at least one clip of it, before anything is read
            self._check_length(following + self.num_frames, max_frames, n)
        # the span is read only if it fits beside what follows it, so the whole output fits
        given_audio, given_video, windows, starts = self._given_inputs(spec, audio, video, start, seconds,
                                                                       max_frames - following)
        if spec.given:
            span_frames = len(given_video) if given_video is not None else len(given_audio) // self.samples_per_frame
            clips, total_frames = len(windows) + math.ceil(following / self.num_frames), span_frames + following
            # the new clips of a continuation follow the span's end, one after the other
            starts += [span_frames + k * self.num_frames for k in range(clips - len(windows))]
        else:
            if task != "long":
                clips, total_frames = 1, self.num_frames
            starts = [k * self.num_frames for k in range(clips)]
        # one bar for the whole call: each clip sampled (all samples at once), then decoded per sample
        bar = tqdm(total=clips * (n + 1), desc=f"generate {task}", unit="clip", disable=not progress,
                   dynamic_ncols=True)
        kept: list[dict[str, torch.Tensor]] = []
        picks: list[torch.Tensor] = []  # [n] per clip: the candidate decoded
        judged: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # per clip: the sync critic's decode of it
        guided = False
        judging = settings.candidates > 1 and "sync" in settings.critics
        for index in range(clips):
            inputs = {}
            in_span = windows is not None and index < len(windows)
            if in_span:  # the clip's window of the given modality
                inputs[spec.model_input] = windows[index:index + 1].to(self.device).expand(n, -1, -1, -1)
            # and the clip generated before it, where that clip ends where this window starts: an
            # overlapping window (the last of a span that is not a whole number of clips) would read its
            # previous clip shifted, which the generator never saw in training; it is given none
            if index > 0 and self.generator.cfg.previous_clip and starts[index] == starts[index - 1] + self.num_frames:
                inputs.update(prev_audio=kept[-1]["audio"], prev_video=kept[-1]["video"])
            # the given modality's x_t is its forward-noised latent (paper Sec. 3.3)
            known = {spec.given: inputs[spec.model_input]} if in_span and spec.keeps_given else {}
            judge = (self._judged_window(spec.given if in_span else None, given_audio, given_video, starts, index,
                                         total_frames) if judging else None)
            latents, clip_picks, clip_guided, clip_decoded = self._sample_clip(index, inputs, known, labels,
                                                                               generators, settings, notify, text,
                                                                               judge)
            bar.update(1)
            notify({"stage": "latents", "clip": index, "latents": latents})
            kept.append(latents)
            judged.append(clip_decoded)
            picks.append(clip_picks)
            guided = guided or clip_guided

        with bar:
            frames_out, waves_out = self._decode_clips(kept, labels, generators, settings, bar, given_audio,
                                                       given_video, total_frames, starts, judged)
        record = {
            "task": task, "n": n, "seed": int(seed), "sample_seeds": [int(seed) + i for i in range(n)],
            "steps": settings.steps, "sampler": settings.sampler, "decoder_steps": settings.decoder_steps,
            "signal_decoder": "few-step student" if self.uses_student(settings.decoder_steps) else "autoencoder",
            # what decoded the video frames ("light": frame_decoder/; the audio image: always the full KL-VAE)
            "frame_decoder": settings.frame_decoder,
            "guidance": settings.guidance, "guidance_applied": guided, "sync_guidance": settings.sync_guidance,
            "candidates": settings.candidates,
            "critics": list(settings.critics) if settings.candidates > 1 else [],
            "critic_times": (list(settings.critic_times) if settings.candidates > 1 and "generator" in settings.critics
                             else []),
            # per sample, per clip: the candidate decoded (0..candidates-1)
            "chosen_candidates": torch.stack(picks, dim=1).tolist(),
            "unconditional_branch_drops": spec.dropped if guided else "nothing (no guidance)",
            "class_label": class_label,
            "prompt": (prompt or "") if self.takes_text else None,
            "text_guidance": settings.text_guidance if self.takes_text else None,
            "text_encoder": (self.text_encoder.source or self.generation.text_encoder) if self.takes_text else None,
            "seconds": seconds, "start": start, "clips": clips,
            "continue_seconds": (following / self.fps) if spec.continues else None,
            # per sample: the class drawn for it (svg / long with reranking and no class given)
            "sample_classes": labels.tolist() if drawn_classes else None,
            "frames": int(frames_out.shape[1]), "fps": self.fps, "sample_rate": self.audio_cfg.sample_rate,
            "input": _describe_input(audio if spec.given == "audio" else video if spec.given else None),
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "objective": self.objective.name, "vocoder": self.vocoder_spec,
            "device": str(self.device), "dtype": str(self.dtype or torch.float32).replace("torch.", ""),
            # the stages one at a time (pipeline low_memory / --low-memory) and what their weights were
            "low_memory": self._placement is not None, "low_memory_weights": self.low_memory_weights,
            "compiled": self.compiled,
            "mmldm_version": __version__,
        }
        return SoundingVideoOutput(frames_out.clamp_(-1, 1), waves_out.clamp_(-1, 1), self.fps,
                                   self.audio_cfg.sample_rate, record, self.resolved_config())

    def _given_inputs(self, spec: TaskSpec, audio: Any, video: Any, start: float | None, seconds: float | None,
                      max_frames: int
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, list[int]]:
        """``(given waveform [N] or None, given frames [F, 3, H, W] or None, window latents [K, ...] or
        None, window starts)``: the task's given span, read and trimmed to whole frames, the latent of
        each of its clip-length windows in the generator's scale, and the span frame where each window
        starts (:func:`~mmldm.generator.tasks.window_starts`). A span shorter than one clip has one window, padded at its
        end (audio with silence, video by repeating its last frame), or at its front for
        continuations (silence, the first frame repeated), where it starts before the span."""
        rate, clip_frames = self.audio_cfg.sample_rate, self.num_frames
        at_end = spec.window == "end"
        if spec.given == "audio":
            wave = load_audio(audio, rate, self.clip_samples, spec.name, start, seconds,
                              max_frames * self.samples_per_frame)
            wave = wave[: len(wave) // self.samples_per_frame * self.samples_per_frame]
            starts = window_starts(len(wave) // self.samples_per_frame, self.num_frames, at_end)
            missing = max(self.clip_samples - len(wave), 0)
            padded = torch.nn.functional.pad(wave, (missing, 0) if at_end else (0, missing))
            first = min(starts[0], 0) * self.samples_per_frame  # the padded span's sample 0 in the span
            offsets = [s * self.samples_per_frame - first for s in starts]
            latents = torch.cat([self.encode_audio(torch.stack([padded[o:o + self.clip_samples] for o in group]))
                                 for group in _groups(offsets, WINDOW_BATCH)])  # windows [<= WINDOW_BATCH, N]
            return wave, None, latents, starts
        if spec.given == "video":
            frames = load_video(video, self.fps, self.frame_size, clip_frames, rate, spec.name, start, seconds,
                                max_frames)
            starts = window_starts(len(frames), clip_frames, at_end)
            missing = max(clip_frames - len(frames), 0)
            if not missing:  # the span itself: a copy of a long video's frames would double its memory
                padded = frames
            elif at_end:
                padded = torch.cat([frames[:1].expand(missing, -1, -1, -1), frames])
            else:
                padded = torch.cat([frames, frames[-1:].expand(missing, -1, -1, -1)])
            offsets = [s - min(starts[0], 0) for s in starts]
            latents = torch.cat([self.encode_video(torch.stack([padded[o:o + clip_frames] for o in group]))
                                 for group in _groups(offsets, WINDOW_BATCH)])  # windows [<= WINDOW_BATCH, T, ...]
            return None, frames, latents, starts
        return None, None, None, []

    def _judged_window(self, given: str | None, given_audio: torch.Tensor | None, given_video: torch.Tensor | None,
                       starts: list[int], index: int, total_frames: int) -> dict[str, Any]:
        """What the sync critic needs of clip ``index`` besides its candidates: ``given``, the clip's
        window of the given modality in pixels (``{"audio_image": [1, 3, H, W]}`` or ``{"frames":
        [1, T, 3, H, W]}``; empty where the clip generates both), padded as :meth:`_given_inputs` pads
        it (silence; the first or last frame repeated), and ``frames``, the clip's frames that reach
        the output (where clips overlap the earlier one's are kept), which alone are scored."""
        clip_frames, first = self.num_frames, starts[index]
        begin, end = _clip_output_frames(starts, index, clip_frames, total_frames)
        scored = slice(begin - first, end - first) if end > begin else slice(0, clip_frames)
        window: dict[str, torch.Tensor] = {}
        if given == "audio":
            rate = self.samples_per_frame
            wave = torch.zeros(self.clip_samples)
            lo, hi = max(first * rate, 0), min((first + clip_frames) * rate, len(given_audio))
            wave[lo - first * rate:hi - first * rate] = given_audio[lo:hi]
            window["audio_image"] = waveform_to_audio_image(wave[None], self.audio_cfg, self.frame_size) * 2.0 - 1.0
        elif given == "video":
            rows = torch.arange(first, first + clip_frames).clamp(0, len(given_video) - 1)
            window["frames"] = given_video[rows][None]
        return {"given": window, "frames": scored}

    def _sample_clip(self, index: int, inputs: dict[str, torch.Tensor], known: dict[str, torch.Tensor],
                     labels: torch.Tensor | None, generators: list[torch.Generator], settings: SamplingSettings,
                     notify: Callback, text: tuple[torch.Tensor, torch.Tensor] | None = None,
                     judge: dict[str, Any] | None = None
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool, tuple[torch.Tensor, torch.Tensor] | None]:
        """One clip's perceptual latents ``{"audio": [n, Ca, Ha, Wa], "video": [n, Cv, Hv, Wv]}`` in the
        generator's (scaled) space, the candidate kept per sample ``[n]``, whether guidance applied, and
        the kept candidates' signal-decoder output where the sync critic decoded them (KL-VAE latents of
        the frames ``[n, F, C, s, s]`` and of the audio image ``[n, C, s, s]``; else None).

        ``settings.candidates`` K > 1: ``n * K`` latents are sampled in one batch, candidate ``j``
        of sample ``i`` at row ``i * K + j``, drawing its noise from ``generators[i]`` after
        candidate ``j - 1``; the critics keep one per sample. The sync critic (``judge``:
        :meth:`_judged_window`) decodes every candidate, each drawing the decoder's noise from its
        sample's generator in turn, and the kept one's decode is what the output shows.

        ``text``: a text model's (prompt, null text) tokens ``[n, n_ctx, context_dim]`` each; text
        guidance (``settings.text_guidance``) runs inside the guidance over the other conditions, so
        each of that guidance's branches keeps the prompt.
        """
        n, candidates = len(generators), settings.candidates
        if candidates > 1:  # [n, ...] -> [n * K, ...], sample-major
            generators = [g for g in generators for _ in range(candidates)]
            inputs, known = ({k: v.repeat_interleave(candidates, 0) for k, v in d.items()} for d in (inputs, known))
            labels = None if labels is None else labels.repeat_interleave(candidates, 0)
            text = None if text is None else tuple(t.repeat_interleave(candidates, 0) for t in text)
        network = self._text_network(text, settings)
        noise = self.latent_noise(generators)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        cond, uncond = branch_conditions(inputs, labels, self.generator.null_class)
        notify({"stage": "clip", "clip": index, "conditions": cond, "unconditional": uncond if cond else None,
                "known": known})
        if cond:  # something to drop: per-modality classifier-free guidance
            denoise = guided_denoiser(network, cond, uncond, settings.guidance)
        else:  # svg without a class: the unconditional branch would be the same model call
            denoise = lambda x, t: network(x, t)
        if settings.sync_guidance:
            critic = generator_critic(self._critic_network(text), self.objective, known["audio"],
                                      self.latent_noise(generators),
                                      1.0, labels)
            denoise = critic_guided_denoiser(denoise, self.objective, "video", critic, settings.sync_guidance)
        latents = sample(denoise, noise, self.objective, sampler=settings.sampler, steps=settings.steps, known=known,
                         callback=lambda step: notify({"stage": "step", "clip": index, **step}))
        if candidates == 1:
            return latents, torch.zeros(n, dtype=torch.long), bool(cond), None
        scores = self.critic_scores(latents, labels, generators, settings, None if text is None else text[0])
        decoded = None
        if "sync" in settings.critics:
            scores["sync"], decoded = self._sync_scores(latents, labels, generators, settings, judge)
        scores = {name: scores[name] for name in settings.critics}
        kept, picks = pick_candidates(latents, list(scores.values()))
        notify({"stage": "candidates", "clip": index, "pool": latents, "labels": labels, "scores": scores,
                "picks": picks})
        if decoded is not None:
            rows = torch.arange(n) * candidates + picks
            decoded = tuple(part[rows.to(part.device)] for part in decoded)
        return kept, picks, bool(cond), decoded

    def _sync_scores(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None,
                     generators: list[torch.Generator], settings: SamplingSettings, judge: dict[str, Any]
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The sync critic's score of every candidate ``[n, K]`` (CPU; minus the mean cosine over the
        clip's scored frames, lower = more in sync) and the signal decoder's output for all of them.

        Every candidate is decoded as the output would be (``decoder_steps``, ``frame_decoder``; the
        frames only where the clip generates them) and judged against the given modality's window
        where there is one; the pixels, ``SYNC_CRITIC_CHUNK`` candidates at a time."""
        given = judge["given"]
        video_latents, audio_latents = self._signal_decode(latents, labels, generators,
                                                           frames=[0] if "frames" in given else None,
                                                           steps=settings.decoder_steps)
        critic = self.sync_critic[0]
        scores = []
        for begin in range(0, len(generators), SYNC_CRITIC_CHUNK):
            part = slice(begin, begin + SYNC_CRITIC_CHUNK)
            frames, image = self._pixels(video_latents[part], audio_latents[part], settings.frame_decoder)
            frames = given["frames"].expand(len(image), -1, -1, -1, -1) if "frames" in given else frames
            image = given["audio_image"].expand(len(image), -1, -1, -1) if "audio_image" in given else image
            with self._autocast():
                similarity = critic.frame_similarity(frames.to(self.device), image.to(self.device)).float()
            scores.append(-similarity[:, judge["frames"]].mean(1).cpu())  # [chunk]
        return torch.cat(scores).view(-1, settings.candidates), (video_latents, audio_latents)

    def critic_scores(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None,
                      generators: list[torch.Generator], settings: SamplingSettings,
                      context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each latent critic's score of every candidate, ``{critic: [n, K]}`` (CPU), lower = more in sync
        (the sync critic, which decodes the candidates, is :meth:`_sync_scores`).

        ``latents``: ``[n * K, ...]`` each, sample-major; ``generators``: one per row (a sample's
        rows hold the sample's generator). The generator's critic draws one noise per critic time
        from each sample's generator and scores all the sample's candidates under it (common random
        numbers: the draw's own variance does not reorder them). ``context``: a text model's prompt
        tokens ``[n * K, n_ctx, context_dim]`` (the generator's critic judges under the prompt).
        """
        candidates = settings.candidates
        scores = {}
        for name in settings.critics:
            if name == "sync":
                continue
            if name == "generator":
                noises = [self.latent_noise(generators[::candidates], repeat=candidates)
                          for _ in settings.critic_times]
                network = self._critic_network(None if context is None else (context, context))
                score = generator_scores(network, self.objective, latents, noises, settings.critic_times, labels)
            else:
                self._use("autoencoder")
                with self._autocast():
                    score = -contrastive_similarity(self.autoencoder, latents, self.generation.scales)
            scores[name] = score.float().view(-1, candidates).cpu()
        return scores

    def _text_tokens(self, prompt: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A text model's (prompt, null text) tokens ``[n, n_ctx, context_dim]`` each on the device (None for
        a model without text; a prompt for one is an error)."""
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError(f"the prompt must be a string, got {type(prompt).__name__}")
        if not self.takes_text:
            if prompt:
                raise ConfigError("this model has no text conditioning (generator context_dim 0): drop the prompt")
            return None
        tokens = self.text_encoder.encode_cached([prompt or "", ""], self.device)  # [2, n_ctx, context_dim]
        return tokens[:1].expand(n, -1, -1), tokens[1:].expand(n, -1, -1)

    def _text_network(self, text: tuple[torch.Tensor, torch.Tensor] | None,
                      settings: SamplingSettings) -> Callable[..., dict[str, torch.Tensor]]:
        """The generator under the prompt, text-guided against the null text (:meth:`denoise` without text)."""
        if text is None:
            return self.denoise
        prompt_tokens, null_tokens = text
        return guided_denoiser(self.denoise, {"context": prompt_tokens}, {"context": null_tokens},
                               settings.text_guidance)

    def _critic_network(self, text: tuple[torch.Tensor, torch.Tensor] | None) -> Callable[..., dict[str, torch.Tensor]]:
        """The generator as a critic sees it: under the prompt (no text guidance)."""
        if text is None:
            return self.denoise
        return functools.partial(self.denoise, context=text[0])

    def denoise(self, x: dict[str, torch.Tensor], t: torch.Tensor, **conditions: Any) -> dict[str, torch.Tensor]:
        """The generator ``(x_t, t_model, **conditions) -> outputs`` under the pipeline's autocast,
        outputs in float32 (what samplers, guidance and the critics call)."""
        self._use("generator")
        with self._autocast():
            out = self.generator(x, t, **conditions)
        return {k: v.float() for k, v in out.items()}

    def latent_noise(self, generators: list[torch.Generator], repeat: int = 1) -> dict[str, torch.Tensor]:
        """Gaussian noise shaped like the generator's latents, ``{"audio": [n * repeat, Ca, Ha, Wa],
        "video": [n * repeat, Cv, Hv, Wv]}`` on the device; sample i draws its audio, then its video,
        from ``generators[i]`` and its draw fills ``repeat`` consecutive rows."""
        dit = self.generator.cfg
        shapes = {"audio": (1, dit.audio_channels, *dit.audio_size), "video": (1, dit.video_channels, *dit.video_size)}
        per_sample = [{k: torch.randn(shape, generator=g) for k, shape in shapes.items()} for g in generators]
        noise = {k: torch.cat([d[k] for d in per_sample]).to(self.device) for k in shapes}
        return {k: v.repeat_interleave(repeat, 0) for k, v in noise.items()} if repeat > 1 else noise

    def _decode_clips(self, kept: list[dict[str, torch.Tensor]], labels: torch.Tensor | None,
                      generators: list[torch.Generator], settings: SamplingSettings, bar: tqdm,
                      given_audio: torch.Tensor | None, given_video: torch.Tensor | None,
                      total_frames: int, starts: list[int],
                      judged: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's clips decoded and joined: frames [n, T', 3, H, W] and waves [n, N'], float32
        on the CPU. Clip ``k`` covers the output's frames ``[starts[k], starts[k] + T)`` (``starts``
        increasing; the first may be < 0, a padded window); where clips overlap, the earlier one is
        kept. The given modality (a2v, v2a, a continuation's span) fills the output's start as given,
        the decoded clips the rest. ``judged``: per clip, the signal decoder's output the sync critic
        already made of it (None: decode it here).

        The outputs are allocated once and filled clip by clip, so a long generation holds one
        copy of its frames (not the clips, their join and a trimmed copy)."""
        n, clip_frames = len(generators), self.num_frames
        total_samples = total_frames * self.samples_per_frame
        given_frames = 0 if given_video is None else len(given_video)
        given_samples = 0 if given_audio is None else len(given_audio)
        frames_out = torch.empty(n, total_frames, 3, self.frame_size, self.frame_size)
        frames_out[:, :given_frames] = given_video if given_frames else 0
        waves_out = torch.empty(n, total_samples)
        waves_out[:, :given_samples] = given_audio if given_samples else 0
        def written(index: int) -> tuple[int, int, int]:
            """(the output frame of clip ``index``'s first frame, the output frames it fills [begin, end))"""
            return starts[index], *_clip_output_frames(starts, index, clip_frames, total_frames, given_frames)

        def fills(index: int) -> bool:
            _, begin, end = written(index)
            return end > begin

        # stage after stage, each over every clip (low-memory mode: each stage takes the device once), every
        # sample of a clip in one batch. Each sample draws the signal decoder's noise from its own generator,
        # clip after clip, as it would decoded alone, so neither the batching nor the order of the stages
        # changes what a sample gets (up to the arithmetic of batched kernels).
        judged = judged or [None] * len(kept)

        def signal(index: int, latents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            decoded = judged[index]
            if decoded is not None and (decoded[0].shape[1] == clip_frames or not fills(index)):
                return decoded
            return self._signal_decode(latents, labels, generators, frames=None if fills(index) else [0],
                                       steps=settings.decoder_steps)

        signal_latents = [signal(index, latents) for index, latents in enumerate(kept)]  # [clips] of
        # ([n, F, C, s, s], [n, C, s, s])
        images = []  # [clips] audio images [n, 3, H, W]
        for index, (video_latents, audio_latents) in enumerate(signal_latents):
            frames, image = self._pixels(video_latents, audio_latents, settings.frame_decoder)
            first, begin, end = written(index)
            if end > begin:
                frames_out[:, begin:end] = frames[:, begin - first:end - first]
            images.append(image)
            bar.update(n)
        if total_samples > given_samples:  # one vocoding over all clips: no clicks at their seams
            self._use("vocoder")
            offset = -starts[0] * self.samples_per_frame  # the output's sample 0 in the vocoded wave
            sample_starts = [(first - starts[0]) * self.samples_per_frame for first in starts]
            # every sample in one batch (a vocoder's row does not depend on its batch)
            waves = vocode_clips(images, self.audio_cfg, self.vocoder, sample_starts)  # [n, ...]
            waves_out[:, given_samples:] = waves[:, offset + given_samples:offset + total_samples]
        return frames_out, waves_out

    def _max_frames(self, n: int) -> int:
        """The longest output (in frames) that fits in the memory available with ``n`` samples at once:
        their float32 frames and waves, the given span (a2v / v2a) and the vocoder's working copy
        of one sample's wave, within 80 % of the available memory."""
        import psutil

        frame_bytes = 3 * self.frame_size * self.frame_size * 4
        wave_bytes = self.samples_per_frame * 4
        per_frame = n * (frame_bytes + wave_bytes) + frame_bytes + 9 * wave_bytes
        return int(0.8 * psutil.virtual_memory().available // per_frame)

    def _check_length(self, total_frames: int, max_frames: int, n: int) -> None:
        """Refuse, before any work, an output longer than :meth:`_max_frames` allows."""
        if total_frames > max_frames:
            raise ConfigError(f"{n} sounding video(s) of {total_frames / self.fps:g} s do not fit in the memory "
                              f"available here ({max_frames / self.fps:.1f} s at most); generate fewer seconds "
                              "or fewer samples at a time (--batch-size)")

    def _max_rows(self, decodes_candidates: bool = False) -> int:
        """The most latent rows (samples x candidates) one sampling batch may hold in the memory
        available on the generator's device: per row, one guided generator call's transient
        activations (conditional and unconditional rows side by side: its residual stream, q/k/v,
        attention scores and MLP hidden state at float32) and the sampler's few latent copies,
        within half the available memory (the estimate ignores what the allocator keeps).

        ``decodes_candidates`` (the sync critic): every candidate's KL-VAE latents (its frames and
        audio image, float32) also stay until the clip is ranked."""
        import psutil

        dit = self.generator.cfg
        tokens = dit.sequence_length
        forward = tokens * dit.width * (dit.mlp_ratio + 6) + dit.num_heads * tokens * tokens
        latent = dit.audio_channels * math.prod(dit.audio_size) + dit.video_channels * math.prod(dit.video_size)
        per_row = 4 * (2 * forward + 16 * latent)
        if decodes_candidates:
            side = self.frame_size // self.vae.downsample_factor
            per_row += 4 * (self.num_frames + 1) * self.vae.latent_channels * side * side
        if self.device.type == "cuda":
            available = torch.cuda.mem_get_info(self.device)[0]
        else:
            available = psutil.virtual_memory().available
        return max(1, int(0.5 * available // per_row))

    def _check_rows(self, n: int, settings: SamplingSettings) -> None:
        """Refuse, before any work, more candidates than one sampling batch can hold."""
        candidates = settings.candidates
        max_rows = self._max_rows(decodes_candidates=candidates > 1 and "sync" in settings.critics)
        if n * candidates > max_rows:
            raise ConfigError(f"{n} sample(s) x {candidates} candidates do not fit in the memory available here "
                              f"({max_rows} latent rows at most in one batch); use fewer candidates or fewer "
                              "samples at a time (--batch-size)")

    def _check_critics(self, settings: SamplingSettings) -> None:
        if "contrastive" in settings.critics and self.autoencoder.cfg.loss.contrastive <= 0:
            raise ConfigError("the contrastive critic needs an autoencoder trained with a contrastive loss "
                              "(this one's loss.contrastive is 0)")
        if "sync" in settings.critics and self.sync_critic is None:
            raise ConfigError("the sync critic needs a model folder with one (sync_critic/: `mmldm train "
                              "sync-critic`, then `mmldm export sync-critic`); this model has none")

    def _class_labels(self, class_label: int | None, n: int) -> torch.Tensor | None:
        """``[n]`` labels of the asked class, checked here where the class enters (the network does not
        check its labels: that would cost a host sync every step)."""
        classes = self.generator.cfg.num_classes
        if class_label is None:
            return None
        if not classes:
            raise ConfigError("this model has no classes (generator num_classes 0); drop --class")
        if isinstance(class_label, bool) or not isinstance(class_label, int) or not 0 <= class_label < classes:
            raise ConfigError(f"class {class_label!r} is not one of this model's classes 0..{classes - 1}")
        return torch.full((n,), class_label, dtype=torch.long, device=self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------------ encode / decode

    @torch.no_grad()
    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Waves [B, N] (one clip each) -> audio perceptual latents [B, Ca, Ha, Wa] (generator scale)."""
        image = waveform_to_audio_image(waveforms.float(), self.audio_cfg, self.frame_size) * 2.0 - 1.0
        with self._autocast():
            self._use("vae")
            latent = self.vae.encode_audio_image(image.to(self.device))
            self._use("autoencoder")
            z = self.autoencoder.encode_audio(latent).mode()
        return z.float() * self.generation.audio_latent_scale

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] in [-1, 1] -> video perceptual latents [B, Cv, Hv, Wv] (generator scale).

        Only the autoencoder's key frames go through the KL-VAE (the video encoder reads no other).
        """
        key_frames = self.autoencoder.cfg.video_encoder.key_frames
        with self._autocast():
            self._use("vae")
            key_latents = self.vae.encode_frames(frames[:, key_frames].to(self.device))  # [B, K, C, s, s]
            latents = key_latents.new_zeros((frames.shape[0], frames.shape[1], *key_latents.shape[2:]))
            latents[:, key_frames] = key_latents  # [B, T, C, s, s], zeros where the encoder does not look
            self._use("autoencoder")
            z = self.autoencoder.encode_video(latents).mode()
        return z.float() * self.generation.video_latent_scale

    @torch.no_grad()
    def decode(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, progress: bool = False,
               frames: list[int] | None = None, steps: int | None = None,
               frame_decoder: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
        """Generator latents -> (frames [B, F, 3, H, W], audio images [B, 3, H, W]) in [-1, 1], on CPU.

        ``frames``: the frame indices to decode (default all T); ``steps``: the decoder's DDIM
        steps (default its config's); ``frame_decoder``: "light" decodes the frames with the light
        frame decoder.

        The autoencoder's signal decoder uses its own sampling settings (``sampling`` of its
        config: DDIM steps and guidance); its class token is ``labels`` when the autoencoder
        has the same classes as the generator, else its own prediction.
        """
        video_latents, audio_latent = self._signal_decode(latents, labels, generator, progress, frames, steps)
        return self._pixels(video_latents, audio_latent, frame_decoder)

    def _signal_decode(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
                       generator: torch.Generator | list[torch.Generator] | None = None, progress: bool = False,
                       frames: list[int] | None = None, steps: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The autoencoder's signal decoder (:meth:`decode`'s first half): generator latents -> KL-VAE
        latents of the frames [B, F, C, s, s] and of the audio images [B, C, s, s], on the device."""
        video_z = latents["video"].float() / self.generation.video_latent_scale
        audio_z = latents["audio"].float() / self.generation.audio_latent_scale
        same_classes = (labels is not None and
                        self.autoencoder.cfg.semantic.num_classes == self.generator.cfg.num_classes)
        chunk = None if self._placement is None else min(self.autoencoder.cfg.sampling.chunk_size,
                                                         LOW_MEMORY_DECODER_CHUNK)
        student = {}
        if self.uses_student(steps or self.autoencoder.cfg.sampling.steps):
            # guidance is folded into the student, and it learnt deterministic steps
            student = dict(decoder=self._student_network, video_guidance=1.0, audio_guidance=1.0, eta=0.0)
            self._use("autoencoder", "decoder_student")  # the autoencoder's encoders give its conditions
        else:
            self._use("autoencoder")
        with self._autocast():
            return self.autoencoder.decode(video_z.to(self.device), audio_z.to(self.device), frames, steps=steps,
                                           class_ids=labels if same_classes else None, generator=generator,
                                           chunk_size=chunk, progress=progress, **student)

    def _pixels(self, video_latents: torch.Tensor, audio_latent: torch.Tensor,
                frame_decoder: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
        """The KL-VAE decoder (:meth:`decode`'s second half, in the VAE's chunks): latents [B, F, C, s, s]
        and [B, C, s, s] -> frames [B, F, 3, H, W] and audio images [B, 3, H, W] in [-1, 1], float32 on the CPU.

        ``frame_decoder`` "light": the frames go through the light frame decoder instead; the audio image
        keeps the full decoder (the vocoder reads it, and the light decoder learnt frames only)."""
        light = frame_decoder == "light"
        if light and self.frame_decoder is None:
            raise ConfigError("frame decoder 'light': this model has no light frame decoder (frame_decoder/)")
        # both at once in low-memory mode: the light decoder is small, and alternating per clip would
        # re-read the KL-VAE for every audio image
        self._use(*(("vae", "frame_decoder") if light else ("vae",)))
        with self._autocast():
            flat = video_latents.flatten(0, 1)
            decoded = (self.frame_decoder[0].decode_images(flat, self.vae.chunk_size) if light
                       else self.vae.decode_images(flat))
            frames = decoded.unflatten(0, video_latents.shape[:2])
            audio_image = self.vae.decode_images(audio_latent)
        return frames.clamp(-1, 1).float().cpu(), audio_image.clamp(-1, 1).float().cpu()


def _folder_text_encoder(directory: Path, generator: AVDiT, generation: GenerationConfig,
                         given: str | Path | TextEncoder | None) -> TextEncoder | None:
    """The text encoder of a model folder's generator: ``given`` (a folder or a loaded encoder), else the
    one the folder carries (``DIR/text_encoder`` + ``DIR/tokenizer``); None for a generator without text."""
    dit = generator.cfg
    if not dit.context_dim:
        if given is not None:
            raise ConfigError(f"{directory}: this model takes no text (generator context_dim 0); drop the "
                              "text encoder")
        return None
    if isinstance(given, TextEncoder):
        return given
    if given is not None:
        return TextEncoder.from_folder(given, length=dit.n_ctx)
    if (directory / TEXT_ENCODER_SUBFOLDER).is_dir():
        return TextEncoder.from_folder(directory, length=dit.n_ctx)
    named = f" ({generation.text_encoder})" if generation.text_encoder else ""
    raise ConfigError(f"{directory}: the generator is conditioned on text ({dit.n_ctx} x {dit.context_dim} tokens) "
                      f"and the folder carries no {TEXT_ENCODER_SUBFOLDER}/: pass the text encoder's local folder"
                      f"{named} with --text-encoder DIR (from_pretrained(text_encoder=DIR))")


def _clip_output_frames(starts: list[int], index: int, clip_frames: int, total_frames: int,
                       given_frames: int = 0) -> tuple[int, int]:
    """The output frames ``[begin, end)`` clip ``index`` fills: its window (``starts[index]``, ``clip_frames``
    long) after the clip before it (where clips overlap the earlier one is kept), after the first
    ``given_frames`` (frames the output keeps as given) and within the output's ``total_frames``."""
    first = starts[index]
    previous_end = starts[index - 1] + clip_frames if index else first
    return max(first, previous_end, given_frames, 0), min(first + clip_frames, total_frames)


def _groups(items: list[int], size: int) -> list[list[int]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _check_cpp_compiler() -> None:
    """TorchInductor builds C++ kernels on a CPU: refuse in one line where there is no compiler."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception:  # torch found none (it raises when its search comes back empty)
        compiler = None
    if compiler is None or shutil.which(compiler) is None:
        raise ConfigError("compile: torch.compile on a CPU needs a C++ compiler (g++ or clang++) on the PATH; "
                          "none was found (install one, e.g. `apt install g++`, or leave compile off)")


def _describe_input(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return str(Path(source))
    shape = tuple(getattr(source, "shape", ()))
    return f"in-memory {type(source).__name__} {list(shape)}"


def _diffusion_config(objective: Objective | DiffusionConfig | str) -> DiffusionConfig:
    """The :class:`DiffusionConfig` of an objective given as itself, its config or its name."""
    if isinstance(objective, DiffusionConfig):
        return objective
    if isinstance(objective, str):
        return DiffusionConfig(objective=objective)
    if isinstance(objective, Objective):
        return objective.config()
    raise ConfigError(f"unknown objective {type(objective).__name__} (give an Objective, its name or a "
                      "DiffusionConfig)")


__all__ = ["Callback", "SoundingVideoPipeline"]
