"""SoundingVideoPipeline: the trained MM-LDM parts composed for generation.

    pipe = SoundingVideoPipeline.from_pretrained("models/shapes", device="cpu")
    out = pipe(task="svg", n=4, seed=0)                      # SoundingVideoOutput
    out.save("samples/")                                     # mp4 + wav + png + settings.json
    out = pipe(task="a2v", audio="rain.wav", guidance=(1.0, 9.0))
    out = pipe(task="long", seconds=6.4)                     # 4 clips of 1.6 s

One :meth:`SoundingVideoPipeline.generate` serves the CLI (``mmldm generate``),
the tests and evaluation. Data flow of one clip (paper Fig. 2)::

    noise --AVDiT + sampler (+ cross-modal guidance, Eq. 9)--> audio / video perceptual latents
          --autoencoder signal decoder (DDIM)--> KL-VAE latents of the frames and the audio image
          --KL-VAE decoder--> frames [T, 3, H, W] and audio image [3, H, W]
          --image_to_mel + vocoder--> waveform [N]

Given clips go the other way (frames / waveform -> KL-VAE -> autoencoder
encoder -> posterior mode). The model folder format is described in
``docs/generation.md`` and :mod:`mmldm.pipeline.folder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..autoencoder.model import HierarchicalAVAutoencoder
from ..config import to_dict
from ..data.audio_image import AudioConfig, waveform_to_audio_image
from ..data.vocoders import Vocoder
from ..diffusion import Objective, critic_guided_denoiser, guided_denoiser, make_objective, sample
from ..errors import ConfigError, check_positive_int
from ..generator.dit import AVDiT
from ..generator.tasks import branch_conditions, load_audio, load_video, long_clip_count, resolve_task
from ..timing import AVTiming
from ..vae.kl_vae import KLVAE
from . import folder
from .audio import vocode_clips
from .folder import GenerationConfig, diffusion_config_of
from .output import SoundingVideoOutput

#: the built-in model (trained by ``mmldm recipe sounding-shapes``, shipped with the package)
BUILTIN_MODEL = Path(__file__).resolve().parent.parent / "default_model"


def builtin_model_folder() -> Path:
    """The built-in model's folder; :class:`ConfigError` when the package ships none."""
    if not (BUILTIN_MODEL / "model_index.json").is_file():
        raise ConfigError(f"the built-in model is missing ({BUILTIN_MODEL / 'model_index.json'}); reinstall "
                          "mmldm, or pass a model folder written by SoundingVideoPipeline.save_pretrained")
    return BUILTIN_MODEL

Guidance = float | Sequence[float] | Mapping[str, float] | None


class SoundingVideoPipeline:
    """KL-VAE + multi-modal autoencoder + AVDiT generator + vocoder, ready to generate.

    Build with :meth:`from_pretrained` (a model folder) or :meth:`assemble` (trained
    modules, e.g. at the end of training), write with :meth:`save_pretrained`.
    """

    def __init__(self, vae: KLVAE, autoencoder: HierarchicalAVAutoencoder, generator: AVDiT,
                 generation: GenerationConfig, audio_cfg: AudioConfig, vocoder: Vocoder,
                 vocoder_spec: str = "griffin-lim", model_dir: Path | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
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
        self._check_components()
        for module in (vae, autoencoder, generator, vocoder):
            if isinstance(module, nn.Module):
                module.to(self.device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ building

    @classmethod
    def assemble(cls, *, vae: KLVAE, autoencoder: HierarchicalAVAutoencoder, generator: AVDiT,
                 objective: Objective | str | Any = "epsilon", audio_cfg: AudioConfig,
                 vocoder: Vocoder | str | Path = "griffin-lim", generation: GenerationConfig | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> SoundingVideoPipeline:
        """A pipeline from trained modules (what training code calls to export a model folder).

        :param objective: the generator's training objective (an :class:`Objective`, its name
            or a :class:`~mmldm.diffusion.DiffusionConfig`); it overrides ``generation.diffusion``.
        :param vocoder: "griffin-lim", a HiFi-GAN checkpoint path, or a vocoder module.
        :param generation: latent scales and sampling defaults (default: :class:`GenerationConfig`).

        The modules are used, not copied: they are moved to ``device``, put in eval mode and
        frozen (``requires_grad_(False)``).
        """
        generation = dataclasses.replace(generation or GenerationConfig(), diffusion=diffusion_config_of(objective))
        vocoder_module, spec = folder.resolve_vocoder(vocoder, audio_cfg, base=None)
        return cls(vae, autoencoder, generator, generation, audio_cfg, vocoder_module, spec,
                   device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None) -> SoundingVideoPipeline:
        """Load a model folder written by :meth:`save_pretrained` (see ``docs/generation.md``);
        ``directory`` None: the built-in Sounding Shapes model (``docs/default-model.md``).

        :param dtype: compute dtype (e.g. ``torch.bfloat16``): the networks run under autocast
            in it; weights stay float32. None: float32.
        """
        directory = builtin_model_folder() if directory is None else Path(directory)
        parts = folder.load_folder(directory)
        return cls(parts.vae, parts.autoencoder, parts.generator, parts.generation, parts.audio_cfg,
                   parts.vocoder, parts.vocoder_spec, model_dir=directory, device=device, dtype=dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder atomically (a temporary folder beside it, then renamed)."""
        return folder.save_folder(self, Path(directory))

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
        }

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
        prior = self.generation.class_prior
        if prior and len(prior) != dit.num_classes:
            problems.append(f"generation class_prior has {len(prior)} weights, the generator "
                            f"{dit.num_classes} classes")
        if problems:
            raise ConfigError("pipeline components do not fit: " + "; ".join(problems))
        self._critics(None)  # the model's own critics must fit its autoencoder too
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

    # ------------------------------------------------------------------ generation

    def __call__(self, *args: Any, **kwargs: Any) -> SoundingVideoOutput:
        return self.generate(*args, **kwargs)

    @torch.no_grad()
    def generate(self, task: str = "svg", n: int = 1, steps: int | None = None, sampler: str | None = None,
                 guidance: Guidance = None, seed: int = 0, audio: Any = None, video: Any = None,
                 seconds: float | None = None, class_label: int | None = None,
                 decoder_steps: int | None = None, sync_guidance: float | None = None,
                 candidates: int | None = None, critics: Sequence[str] | None = None,
                 progress: bool = True) -> SoundingVideoOutput:
        """Generate ``n`` sounding videos for ``task`` (see :mod:`mmldm.generator.tasks`).

        :param guidance: ``(audio_scale, video_scale)``, ``{"audio": s_a, "video": s_v}`` or one
            number for both (paper Eq. 9); None: the model folder's defaults.
        :param audio: a2v / audio-continuation: an audio (or video) file, or a waveform [N] at
            the model's sample rate.
        :param video: v2a / video-continuation: a video file, or frames [T, 3, H, W] in [-1, 1].
        :param seconds: task long: how much to generate (a whole number of clips is sampled and
            the result trimmed to ``round(seconds * fps)`` frames).
        :param seed: sample ``i`` draws all its noise from a CPU ``torch.Generator`` seeded with
            ``seed + i``: the same on any device and whatever ``n`` (sample 2 of ``n=4, seed=0`` is
            sample 0 of ``n=1, seed=2``).
        :param decoder_steps: DDIM steps of the autoencoder's signal decoder (default: its
            config's ``sampling.steps``); it dominates the cost of a clip on a CPU.
        :param sync_guidance: a2v only (not in the paper): at every sampler step the video's
            clean estimate moves this far (in latent RMS units) down the gradient of the
            generator's OWN video-to-audio error: the audio the generator predicts from that
            video alone (pure-noise inputs, the video as ``video_cond``) against the given audio
            (:func:`mmldm.diffusion.critic_guided_denoiser`). It pulls the video towards one the
            model itself would sound like the given audio, the direction a small generator
            learns best. One extra forward and backward pass per step. 0 = off; None: the
            model's default (``generation.json``); other tasks ignore the default and refuse a value.
        :param candidates: every task (not in the paper): sample this many latent candidates
            per output (and per clip of long) and decode the one the model's own critics
            (``generation.json``'s ``critics``) find most in sync: the generator's denoising
            error of the audio with the video as ``video_cond``, summed over ``critic_times``,
            and / or the autoencoder's contrastive similarity (:meth:`_pick_candidates`).
            The latent sampler is cheap next to the signal decoder, which still runs once per
            output. 1 = off; None: the model's default. The critics find some classes easier
            than others, so ranking unconditional candidates would shift the class mix (the
            built-in model's svg went to 60 of 64 discs): for svg and long without
            ``class_label``, a class-conditional model first draws each sample's class from the
            sample's generator (``generation.class_prior``, default uniform;
            ``settings["sample_classes"]``) and ranks within it.
        :param critics: the critics that rank the candidates (names of
            :data:`mmldm.pipeline.folder.CRITICS`); None: the model's (``generation.json``).
        :return: frames [n, T', 3, H, W] and waveforms [n, N'] (T' = T except for long).
        """
        spec = resolve_task(task, audio, video, seconds)
        check_positive_int(n, "n (samples)")
        gen = self.generation
        steps = gen.steps if steps is None else steps
        check_positive_int(steps, "steps")
        sampler = sampler or gen.default_sampler()
        if sampler not in self.objective.samplers:
            raise ConfigError(f"sampler '{sampler}' does not fit this model's '{self.objective.name}' objective "
                              f"(use {' or '.join(self.objective.samplers)})")
        scale = self._guidance_scales(guidance)
        sync_step = self._sync_guidance(task, sync_guidance)
        candidates = check_positive_int(gen.candidates if candidates is None else candidates, "candidates")
        critics = self._critics(critics)
        labels = self._class_labels(class_label, n)
        uses_previous_clip = task == "long" or (spec.model_input or "").startswith("prev")
        if uses_previous_clip and not self.generator.cfg.previous_clip:
            raise ConfigError(f"task {task} needs a generator trained with previous-clip inputs "
                              "(generator config previous_clip: true)")
        decoder_steps = self.autoencoder.cfg.sampling.steps if decoder_steps is None else decoder_steps
        check_positive_int(decoder_steps, "decoder steps")
        generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(n)]
        drawn_classes = bool(labels is None and spec.given is None and candidates > 1
                             and self.generator.cfg.num_classes)
        if drawn_classes:  # reranking would shift the class mix towards the easiest class: fix it first
            labels = self._draw_classes(generators)

        given_audio = given_video = None
        inputs: dict[str, torch.Tensor] = {}
        if spec.given == "audio":
            given_audio = load_audio(audio, self.audio_cfg.sample_rate, self.clip_samples, spec.window, task)
            inputs[spec.model_input] = self.encode_audio(given_audio[None]).expand(n, -1, -1, -1)
        elif spec.given == "video":
            given_video = load_video(video, self.fps, self.frame_size, self.num_frames,
                                     self.audio_cfg.sample_rate, spec.window, task)
            inputs[spec.model_input] = self.encode_video(given_video[None]).expand(n, -1, -1, -1)

        clips, total_frames = (long_clip_count(seconds, self.fps, self.num_frames) if task == "long"
                               else (1, self.num_frames))
        guided = {"applied": False}
        latents_per_clip: list[dict[str, torch.Tensor]] = []
        picks_per_clip: list[torch.Tensor] = []  # [n] each: the candidate decoded
        for index in range(clips):
            if index > 0:  # long: condition on the clip before (the first clip is plain svg)
                previous = latents_per_clip[-1]
                inputs = {"prev_audio": previous["audio"], "prev_video": previous["video"]}
            # a2v / v2a: the given modality's x_t is its forward-noised latent (paper Sec. 3.3)
            known = {spec.given: inputs[spec.model_input]} if spec.keeps_given else {}
            latents, picks = self._sample_latents(n, inputs, labels, scale, steps, sampler, generators,
                                                  progress, guided, known, sync_step, candidates, critics)
            latents_per_clip.append(latents)
            picks_per_clip.append(picks)

        keep_audio = given_audio is not None and spec.keeps_given  # a2v: the output audio IS the given audio
        keep_video = given_video is not None and spec.keeps_given  # v2a: the output video IS the given video
        frames, waves = [], []
        for i, sample_generator in enumerate(generators):  # per sample: its noise is its own
            decoded = [self.decode({k: v[i:i + 1] for k, v in latents.items()},
                                   None if labels is None else labels[i:i + 1], sample_generator, progress,
                                   # v2a discards the generated video: decode one frame of it, not T
                                   frames=[0] if keep_video else None, steps=decoder_steps)
                       for latents in latents_per_clip]
            frames.append(torch.cat([clip_frames for clip_frames, _ in decoded], dim=1))  # [1, clips * T, 3, H, W]
            if not keep_audio:
                waves.append(vocode_clips([image for _, image in decoded], self.audio_cfg, self.vocoder))
        if keep_video:
            frames_out = given_video[None].expand(n, -1, -1, -1, -1).clone()
        else:
            frames_out = torch.cat(frames)[:, :total_frames]  # [n, T', 3, H, W]
        if keep_audio:
            waves_out = given_audio[None].expand(n, -1).clone()
        else:
            waves_out = torch.cat(waves)[:, : total_frames * self.clip_samples // self.num_frames]  # [n, N']

        settings = {
            "task": task, "n": n, "seed": int(seed), "sample_seeds": [int(seed) + i for i in range(n)],
            "steps": steps, "sampler": sampler,
            "decoder_steps": decoder_steps,
            "guidance": scale, "guidance_applied": guided["applied"], "sync_guidance": sync_step,
            "candidates": candidates, "critics": list(critics) if candidates > 1 else [],
            "critic_times": list(gen.critic_times) if candidates > 1 and "generator" in critics else [],
            # per sample, per clip: the candidate decoded (0..candidates-1)
            "chosen_candidates": torch.stack(picks_per_clip, dim=1).tolist(),
            "unconditional_branch_drops": spec.dropped if guided["applied"] else "nothing (no guidance)",
            "class_label": class_label, "seconds": seconds, "clips": clips,
            # per sample: the class drawn for it (svg / long with reranking and no class given)
            "sample_classes": labels.tolist() if drawn_classes else None,
            "frames": int(frames_out.shape[1]), "fps": self.fps, "sample_rate": self.audio_cfg.sample_rate,
            "input": _describe_input(audio if spec.given == "audio" else video if spec.given else None),
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "objective": self.objective.name, "vocoder": self.vocoder_spec,
            "device": str(self.device), "dtype": str(self.dtype or torch.float32).replace("torch.", ""),
            "mmldm_version": __version__,
        }
        return SoundingVideoOutput(frames_out.float().clamp(-1, 1), waves_out.float().clamp(-1, 1), self.fps,
                                   self.audio_cfg.sample_rate, settings, self.resolved_config())

    def _guidance_scales(self, guidance: Guidance) -> dict[str, float]:
        """``{"audio": s_a, "video": s_v}`` from a pair, a dict, one number or the defaults."""
        if guidance is None:
            return {"audio": self.generation.audio_guidance, "video": self.generation.video_guidance}
        if isinstance(guidance, Mapping):
            if set(guidance) != {"audio", "video"}:
                raise ConfigError(f"guidance must name audio and video, got {sorted(guidance)}")
            values = (guidance["audio"], guidance["video"])
        elif isinstance(guidance, (int, float)):
            values = (guidance, guidance)
        else:
            values = tuple(guidance)
            if len(values) == 1:
                values = values * 2
            if len(values) != 2:
                raise ConfigError(f"guidance takes one scale or two (audio video), got {len(values)}")
        try:
            audio_scale, video_scale = (float(v) for v in values)
        except (TypeError, ValueError):
            raise ConfigError(f"guidance scales must be numbers, got {values!r}") from None
        if not (math.isfinite(audio_scale) and math.isfinite(video_scale)):
            raise ConfigError(f"guidance scales must be finite numbers, got {audio_scale:g} {video_scale:g}")
        return {"audio": audio_scale, "video": video_scale}

    def _sync_guidance(self, task: str, value: float | None) -> float:
        """The a2v sync-guidance step: ``value``, else the model's default; 0 for other tasks."""
        if value is None:
            return self.generation.sync_guidance if task == "a2v" else 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"sync guidance must be a finite number >= 0, got {value!r}")
        if value and task != "a2v":
            raise ConfigError(f"sync guidance applies to task a2v only, not {task}")
        return float(value)

    def _critics(self, critics: Sequence[str] | None) -> tuple[str, ...]:
        """The candidate critics: ``critics`` (validated as ``generation.json``'s are), else the
        model's; the contrastive critic only with an autoencoder trained with a contrastive loss."""
        if isinstance(critics, str):
            critics = (critics,)
        chosen = (self.generation.critics if critics is None
                  else dataclasses.replace(self.generation, critics=tuple(critics)).critics)
        if "contrastive" in chosen and self.autoencoder.cfg.loss.contrastive <= 0:
            raise ConfigError("the contrastive critic needs an autoencoder trained with a contrastive loss "
                              "(this one's loss.contrastive is 0)")
        return chosen

    def _class_labels(self, class_label: int | None, n: int) -> torch.Tensor | None:
        classes = self.generator.cfg.num_classes
        if class_label is None:
            return None
        if not classes:
            raise ConfigError("this model has no classes (generator num_classes 0); drop --class")
        if isinstance(class_label, bool) or not isinstance(class_label, int) or not 0 <= class_label < classes:
            raise ConfigError(f"class {class_label!r} is not one of this model's classes 0..{classes - 1}")
        return torch.full((n,), class_label, dtype=torch.long, device=self.device)

    def _draw_classes(self, generators: list[torch.Generator]) -> torch.Tensor:
        """One class per sample ``[n]``, each the first draw of the sample's generator: from
        ``generation.class_prior``, or uniform when it is empty or all its weights are equal."""
        prior = self.generation.class_prior
        if not prior or len(set(prior)) == 1:
            draws = [torch.randint(self.generator.cfg.num_classes, (1,), generator=g) for g in generators]
        else:
            weights = torch.tensor(prior, dtype=torch.float64)
            draws = [torch.multinomial(weights, 1, generator=g) for g in generators]
        return torch.cat(draws).to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _denoiser_network(self, x: dict[str, torch.Tensor], t: torch.Tensor, **conditions: Any
                          ) -> dict[str, torch.Tensor]:
        """The generator under autocast, outputs in float32."""
        with self._autocast():
            out = self.generator(x, t, **conditions)
        return {k: v.float() for k, v in out.items()}

    def _sample_latents(self, n: int, inputs: dict[str, torch.Tensor], labels: torch.Tensor | None,
                        scale: dict[str, float], steps: int, sampler: str, generators: list[torch.Generator],
                        progress: bool, guided: dict[str, bool], known: dict[str, torch.Tensor],
                        sync_step: float = 0.0, candidates: int = 1, critics: Sequence[str] = ("generator",)
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One clip's perceptual latents ``{"audio": [n, Ca, Ha, Wa], "video": [n, Cv, Hv, Wv]}``
        in the generator's (scaled) space, by the sampler with cross-modal guidance (Eq. 9);
        ``known`` entries follow their forward process (:func:`mmldm.diffusion.sample`);
        ``sync_step`` > 0 (a2v) adds sync guidance on the video (:meth:`_sync_critic`).

        ``candidates`` > 1: ``n * candidates`` latents are sampled in one batch (candidate ``j``
        of sample ``i`` at row ``i * candidates + j`` draws its noise from ``generators[i]``
        after candidate ``j - 1``, so candidate 0 is what ``candidates=1`` samples) and the
        best of each sample's candidates is kept (:meth:`_pick_candidates`). Returns the
        latents and the index of the candidate kept per sample, ``[n]`` (zeros for 1).
        """
        if candidates > 1:  # [n, ...] -> [n * candidates, ...], sample-major
            generators = [g for g in generators for _ in range(candidates)]
            inputs, known = ({k: v.repeat_interleave(candidates, 0) for k, v in d.items()} for d in (inputs, known))
            labels = None if labels is None else labels.repeat_interleave(candidates, 0)
        noise = self._latent_noise(generators)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        cond, uncond = branch_conditions(inputs, labels, self.generator.null_class)
        if cond:  # something to drop: per-modality classifier-free guidance
            denoise = guided_denoiser(self._denoiser_network, cond, uncond, scale)
            guided["applied"] = True
        else:  # svg without a class: the unconditional branch would be the same model call
            denoise = lambda x, t: self._denoiser_network(x, t)  # noqa: E731
        if sync_step:
            critic = self._sync_critic(known["audio"], labels, generators)
            denoise = critic_guided_denoiser(denoise, self.objective, "video", critic, sync_step)
        latents = sample(denoise, noise, self.objective, sampler=sampler, steps=steps,
                         progress=progress, known=known)
        if candidates == 1:
            return latents, torch.zeros(n, dtype=torch.long)
        return self._pick_candidates(latents, labels, generators, candidates, critics)

    def _pick_candidates(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None,
                         generators: list[torch.Generator], candidates: int,
                         critics: Sequence[str] = ("generator",)
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Keep, per sample, the candidate the ``critics`` find most in sync.

        One critic: its lowest score (:meth:`_critic_scores`) wins. Several: each ranks a
        sample's candidates (0 = best) and the lowest sum of ranks wins (the first candidate on
        a tie), so no critic's scale matters.

        ``latents``: ``[n * candidates, ...]`` each, sample-major; returns ``[n, ...]`` each and
        the kept candidate per sample ``[n]`` (CPU).
        """
        scores = self._critic_scores(latents, labels, generators, candidates, critics)
        picks = (rank_sum(scores) if len(scores) > 1 else scores[0]).argmin(1)  # [n]
        rows = torch.arange(len(picks)) * candidates + picks
        return {k: v[rows.to(v.device)] for k, v in latents.items()}, picks

    def _critic_scores(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None,
                       generators: list[torch.Generator], candidates: int, critics: Sequence[str]
                       ) -> list[torch.Tensor]:
        """Each critic's score of every candidate, ``[n, candidates]`` (CPU), lower = more in sync.

        * "generator": the sum over ``generation.critic_times`` of :meth:`_sync_critic` at that
          time with the candidate's own audio as the target. A Monte Carlo estimate of the
          audio's conditional denoising loss given the video, i.e. of how likely the generator
          finds that audio for that video (the diffusion-classifier view); middle times, where
          the generator sees part of the audio, rank better than t = 1 alone (measured in
          docs/default-model.md). The candidates of one sample share its noise draws (one per
          time, from the sample's generator: common random numbers), so they are compared
          under the same noise and the draw's own variance does not reorder them.
        * "contrastive": minus :meth:`_contrastive_similarity`, the autoencoder's own score.

        ``latents``: ``[n * candidates, ...]`` each, sample-major; ``generators``: one per row
        (a sample's rows hold the sample's generator).
        """
        scores = []
        with torch.no_grad():
            for name in critics:
                if name == "generator":
                    score = sum(self._sync_critic(latents["audio"], labels, generators, time,
                                                  shared=candidates)(latents["video"])
                                for time in self.generation.critic_times)
                else:
                    score = -self._contrastive_similarity(latents)
                scores.append(score.float().view(-1, candidates).cpu())
        return scores

    def _contrastive_similarity(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B]``: cosine similarity of the audio and video embeddings of the autoencoder's
        contrastive head (paper Eq. 1: its semantic tokens, mean-pooled and projected) for
        generator latents ``{"audio": [B, Ca, Ha, Wa], "video": [B, Cv, Hv, Wv]}``.

        The autoencoder learnt it to tell matched audio-video pairs from the other pairs of a
        batch: a second judge of sync, trained apart from the generator.
        """
        video_z = latents["video"].float() / self.generation.video_latent_scale
        audio_z = latents["audio"].float() / self.generation.audio_latent_scale
        with self._autocast():
            semantic = self.autoencoder.semantic(video_z, audio_z)
            video, audio = self.autoencoder.contrastive.embed(semantic.video.float(), semantic.audio.float())
        return (video.float() * audio.float()).sum(-1)

    def _latent_noise(self, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        """Gaussian noise shaped like the generator's latents, ``{"audio": [n, Ca, Ha, Wa], "video":
        [n, Cv, Hv, Wv]}`` on the device; sample i draws its audio, then its video, from ``generators[i]``."""
        dit = self.generator.cfg
        shapes = {"audio": (1, dit.audio_channels, *dit.audio_size), "video": (1, dit.video_channels, *dit.video_size)}
        per_sample = [{k: torch.randn(shape, generator=g) for k, shape in shapes.items()} for g in generators]
        return {k: torch.cat([d[k] for d in per_sample]).to(self.device) for k in shapes}

    def _sync_critic(self, audio: torch.Tensor, labels: torch.Tensor | None,
                     generators: list[torch.Generator], time: float = 1.0, shared: int = 1
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``video x0 [n, Cv, Hv, Wv] -> [n]``: the generator's own error in predicting ``audio``
        ``[n, Ca, Ha, Wa]`` from that video (mean squared error of its audio estimate, per sample).

        Both entries are noised to ``time`` (a fraction of the forward process) and the video is
        also the ``video_cond`` (the v2a input). At ``time`` 1 the inputs are pure noise, so the
        audio estimate comes from the video alone, for every objective (an epsilon or v
        schedule's last step still keeps ``sqrt(alpha_bar_T)``, about 0.07, of the signal: a
        trace of the very audio being scored). The noise is drawn per row from its generator;
        ``shared`` > 1: each group of ``shared`` consecutive rows uses one draw, from the
        group's first generator (the candidates of one sample, compared under one noise).
        """
        noise = self._latent_noise(generators[::shared])
        if shared > 1:
            noise = {k: v.repeat_interleave(shared, 0) for k, v in noise.items()}
        n = len(generators)
        if self.objective.prediction == "velocity":
            t = torch.full((n,), float(time), device=self.device)
        else:
            last = self.objective.num_train_timesteps - 1
            t = torch.full((n,), round(time * last), dtype=torch.long, device=self.device)
        t_model = self.objective.model_timestep(t)
        conditions = {} if labels is None else {"class_labels": labels}

        def critic(video: torch.Tensor) -> torch.Tensor:
            clean = {"audio": audio, "video": video}
            x_t = dict(noise) if time >= 1 else self.objective.add_noise(clean, noise, t)
            out = self._denoiser_network(x_t, t_model, video_cond=video, **conditions)
            audio_x0 = self.objective.predict_x0(out["audio"], x_t["audio"], t)
            return (audio_x0 - audio).pow(2).flatten(1).mean(1)  # [n]

        return critic

    # ------------------------------------------------------------------ encode / decode

    @torch.no_grad()
    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Waves [B, N] (one clip each) -> audio perceptual latents [B, Ca, Ha, Wa] (generator scale)."""
        image = waveform_to_audio_image(waveforms.float(), self.audio_cfg, self.frame_size) * 2.0 - 1.0
        with self._autocast():
            latent = self.vae.encode_audio_image(image.to(self.device))
            z = self.autoencoder.encode_audio(latent).mode()
        return z.float() * self.generation.audio_latent_scale

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] in [-1, 1] -> video perceptual latents [B, Cv, Hv, Wv] (generator scale).

        Only the autoencoder's key frames go through the KL-VAE (the video encoder reads no other).
        """
        key_frames = self.autoencoder.cfg.video_encoder.key_frames
        with self._autocast():
            key_latents = self.vae.encode_frames(frames[:, key_frames].to(self.device))  # [B, K, C, s, s]
            latents = key_latents.new_zeros((frames.shape[0], frames.shape[1], *key_latents.shape[2:]))
            latents[:, key_frames] = key_latents  # [B, T, C, s, s], zeros where the encoder does not look
            z = self.autoencoder.encode_video(latents).mode()
        return z.float() * self.generation.video_latent_scale

    @torch.no_grad()
    def decode(self, latents: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, progress: bool = False,
               frames: list[int] | None = None, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator latents -> (frames [B, F, 3, H, W], audio images [B, 3, H, W]) in [-1, 1], on CPU.

        ``frames``: the frame indices to decode (default all T); ``steps``: the decoder's DDIM
        steps (default its config's).

        The autoencoder's signal decoder uses its own sampling settings (``sampling`` of its
        config: DDIM steps and guidance); its class token is ``labels`` when the autoencoder
        has the same classes as the generator, else its own prediction.
        """
        video_z = latents["video"].float() / self.generation.video_latent_scale
        audio_z = latents["audio"].float() / self.generation.audio_latent_scale
        same_classes = (labels is not None and
                        self.autoencoder.cfg.semantic.num_classes == self.generator.cfg.num_classes)
        with self._autocast():
            frames, audio_image = self.autoencoder.reconstruct(
                self.vae, video_z, audio_z, frames, steps=steps, class_ids=labels if same_classes else None,
                generator=generator, progress=progress)
        return frames.float().cpu(), audio_image.float().cpu()


def rank_sum(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """How several critics combine: each critic's scores ``[n, candidates]`` (lower = better)
    become ranks within each row (0 = best, ties in order), summed over the critics ``[n, candidates]``."""
    return sum(score.argsort(dim=1, stable=True).argsort(dim=1) for score in scores)


def _describe_input(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return str(Path(source))
    shape = tuple(getattr(source, "shape", ()))
    return f"in-memory {type(source).__name__} {list(shape)}"


__all__ = ["SoundingVideoPipeline", "rank_sum"]
