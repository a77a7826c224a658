"""Training checkpoints -> the folders generation loads (``mmldm export``).

    export_generator(CKPT, "out/generator")                 # AVDiT folder + generation.json
    export_model(CKPT, "models/shapes", vae=..., autoencoder=..., sampling=SamplingSettings(steps=12))

Export is where a trained model's final settings are decided: the generator's
objective and latent scales (from its training config), the class mix of its
training data, the sampling defaults of ``mmldm generate`` and the signal
decoder's sampling. Each is written once, into the folder
:meth:`SoundingVideoPipeline.save_pretrained` produces.

This module sits beside the CLI: it imports training (to read checkpoints) and the
pipeline (to write model folders); the pipeline itself never imports training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import atomic_write_text, dump_yaml, load_config, read_yaml, to_dict
from .diffusion import DiffusionConfig
from .errors import ConfigError, DataError
from .generator.generation import GENERATION_NAME, GenerationConfig, SamplingSettings
from .generator.latents import class_frequencies
from .generator.stage import GeneratorDataConfig, GeneratorStageConfig, load_generator
from .timing import AVTiming


def exported_generation(checkpoint: str | Path, diffusion: DiffusionConfig, num_classes: int,
                        sampling: SamplingSettings | None = None) -> GenerationConfig:
    """The generation settings an export writes: the objective, the latent scales of the
    checkpoint's training data, its cache's class frequencies (``class_prior``: the class mix
    of reranked generation without a class; uniform, ``()``, without classes or without the
    cache) and the sampling defaults."""
    data = _data_config_of(Path(checkpoint))
    has_cache = bool(data.cache) and Path(data.cache).is_dir()
    prior = class_frequencies(data.cache, num_classes) if num_classes and has_cache else ()
    return GenerationConfig(diffusion=diffusion, audio_latent_scale=data.audio_latent_scale,
                            video_latent_scale=data.video_latent_scale, class_prior=prior,
                            sampling=sampling or SamplingSettings())


def export_generator(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True,
                     sampling: SamplingSettings | None = None) -> Path:
    """Write a checkpoint's generator as the ``generator/`` folder of a model folder:
    ``config.json`` + ``model.safetensors`` (``AVDiT.save_pretrained``) and ``generation.json``
    (:func:`exported_generation`)."""
    model, diffusion = load_generator(checkpoint, use_ema=use_ema)
    generation = exported_generation(checkpoint, diffusion, model.cfg.num_classes, sampling)
    out = model.save_pretrained(out_dir)
    atomic_write_text(out / GENERATION_NAME, json.dumps(to_dict(generation), indent=2) + "\n")
    return out


def export_model(checkpoint: str | Path, out_dir: str | Path, *, vae: str | Path, autoencoder: str | Path,
                 vae_preset: str = "sd-v1", vocoder: str | Path = "griffin-lim", timing: AVTiming | None = None,
                 use_ema: bool = True, sampling: SamplingSettings | None = None,
                 decoder_sampling: dict[str, Any] | None = None) -> Path:
    """Write a complete model folder (KL-VAE + autoencoder + generator + vocoder) for ``mmldm generate``.

    ``vae``: diffusers folder, ``mmldm train vae`` checkpoint or single file; ``autoencoder``:
    ``mmldm train autoencoder`` checkpoint or ``save_pretrained`` folder; ``vocoder``:
    "griffin-lim" or a HiFi-GAN checkpoint; ``timing``: the clips' timing (default: from the
    config of the generator's training cache); ``sampling``: the model's sampling defaults
    (``generation.json``); ``decoder_sampling``: fields of the signal decoder's own sampling
    settings to replace (:class:`~mmldm.autoencoder.config.SamplingConfig`: steps, guidance...).
    """
    from .autoencoder.stage import load_autoencoder
    from .data.audio_image import AudioConfig
    from .pipeline import SoundingVideoPipeline
    from .pipeline.folder import check_replaceable
    from .vae.stage import load_vae

    checkpoint = Path(checkpoint)
    check_replaceable(Path(out_dir).absolute())  # before any loading: a wrong --out fails at once
    generator, diffusion = load_generator(checkpoint, use_ema=use_ema)
    if timing is None:
        timing = clip_timing_of(_data_config_of(checkpoint).cache)
    audio_cfg = dataclasses.replace(AudioConfig.for_sample_rate(timing.sample_rate), clip_seconds=timing.seconds)
    generation = exported_generation(checkpoint, diffusion, generator.cfg.num_classes, sampling)
    text_encoder = _text_encoder_of(checkpoint, generator.cfg.n_ctx)
    if text_encoder is not None:  # where it came from, for a folder saved without it
        generation = dataclasses.replace(generation, text_encoder=str(text_encoder.source))
    model = load_autoencoder(autoencoder)[0]
    if timing.num_frames != model.cfg.num_frames:
        raise ConfigError(f"timing: {timing.num_frames} frames per clip, but the autoencoder ({autoencoder}) "
                          f"makes clips of {model.cfg.num_frames} frames")
    if decoder_sampling:
        try:
            decoder = dataclasses.replace(model.cfg.sampling, **decoder_sampling)
        except TypeError as exc:
            raise ConfigError(f"decoder sampling: {exc}") from None
        model.cfg = dataclasses.replace(model.cfg, sampling=decoder)
    pipe = SoundingVideoPipeline.assemble(
        vae=load_vae(vae, preset=vae_preset), autoencoder=model,
        generator=generator, objective=diffusion, audio_cfg=audio_cfg, vocoder=vocoder, generation=generation,
        text_encoder=text_encoder)
    return pipe.save_pretrained(out_dir)


def clip_timing_of(cache_dir: str | Path) -> AVTiming:
    """The clip timing (fps, frames, sample rate) a perceptual latent cache was made with (its config's ``data``)."""
    from .data.latent_cache import LatentCacheDataset

    data = LatentCacheDataset(cache_dir).config.get("data") or {}
    try:
        return AVTiming(fps=float(data["fps"]), num_frames=int(data["num_frames"]),
                        sample_rate=int(data["sample_rate"]))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"latent cache {cache_dir}: its config names no clip timing (data.fps, num_frames, "
                        "sample_rate); pass the timing explicitly") from None


def _data_config_of(checkpoint: Path) -> GeneratorDataConfig:
    """The data settings of a training checkpoint (defaults for an exported folder)."""
    if (checkpoint / "config.yaml").is_file():
        return load_config(GeneratorStageConfig, checkpoint / "config.yaml").data
    return GeneratorDataConfig()


def _text_encoder_of(checkpoint: Path, n_ctx: int) -> Any:
    """The text encoder a text-conditioned generator checkpoint trained with (``model.text_encoder``),
    or None."""
    if not (checkpoint / "config.yaml").is_file():
        return None
    folder = load_config(GeneratorStageConfig, checkpoint / "config.yaml").model.text_encoder
    if not folder:
        return None
    from .generator.text_encoder import TextEncoder

    return TextEncoder.from_folder(folder, length=n_ctx)



def export_student(checkpoint: str | Path, model_dir: str | Path, default: bool = False,
                   use_ema: bool = True) -> Path:
    """Add a ``mmldm train decoder-distill`` checkpoint's few-step signal decoder to a model folder
    (``decoder_student/``, listed in ``model_index.json``); ``--decoder-steps`` equal to its steps
    selects it, and ``default`` makes those steps the model's default (``generation.json``).

    The student must have been distilled from the folder's own autoencoder: where its teacher is
    still on disk, their decoders are compared tensor for tensor.
    """

    import torch

    from .autoencoder.distill import DecoderDistillConfig
    from .autoencoder.model import HierarchicalAVAutoencoder
    from .autoencoder.signal_decoder import SignalDecoder
    from .autoencoder.stage import load_autoencoder
    from .autoencoder.student import STUDENT_NAME, StudentInfo, save_student
    from .errors import warn
    from .pipeline.folder import INDEX_NAME
    from .training.checkpoint import load_trained_weights
    from .weights import read_config_json

    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    index = read_config_json(model_dir / INDEX_NAME, "model index")
    cfg = _component_checkpoint_config(checkpoint, DecoderDistillConfig, "decoder-distill")
    autoencoder = HierarchicalAVAutoencoder.from_pretrained(model_dir / index["components"]["autoencoder"])
    teacher_path = Path(cfg.teacher)
    if teacher_path.exists():
        teacher = load_autoencoder(teacher_path)[0].decoder.state_dict()
        ours = autoencoder.decoder.state_dict()
        if set(teacher) != set(ours) or any(not torch.equal(teacher[k], ours[k]) for k in ours):
            raise ConfigError(f"{checkpoint}: the student was distilled from {teacher_path}, not from the "
                              f"autoencoder of {model_dir}")
    else:
        warn(f"the student's teacher {teacher_path} is gone: cannot check that it is {model_dir}'s autoencoder")
    student = SignalDecoder(autoencoder.resolved_config())
    load_trained_weights(student, checkpoint, "few-step signal decoder", use_ema=use_ema)
    sampling = autoencoder.cfg.sampling
    info = StudentInfo(steps=cfg.student.steps, teacher_steps_per_step=cfg.student.teacher_steps_per_step,
                       video_guidance=sampling.video_guidance, audio_guidance=sampling.audio_guidance)
    return _add_component(model_dir, index, STUDENT_NAME, lambda folder: save_student(student, info, folder), info,
                          {"decoder_steps": info.steps} if default else None)


def _component_checkpoint_config(checkpoint: Path, cls: type, stage: str) -> Any:
    """The training config (``cls``) of a ``mmldm train STAGE`` checkpoint whose part is added to a model
    folder; a folder without one is one WeightsError line naming the command that makes it."""
    from .errors import WeightsError

    if not (checkpoint / "config.yaml").is_file():
        raise WeightsError(checkpoint, f"{stage} checkpoint", "config.yaml is missing (give a checkpoint "
                           f"folder of `mmldm train {stage}`)")
    return load_config(cls, checkpoint / "config.yaml")


def _add_component(model_dir: Path, index: dict, name: str, save: Any, info: Any,
                   default_sampling: dict[str, Any] | None,
                   task_sampling: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write an optional component (``save(folder)``) into ``model_dir/name`` (a temporary folder
    renamed into place when complete), list it in ``model_index.json``, and with
    ``default_sampling`` set those fields of the folder's sampling defaults (``generation.json``),
    with ``task_sampling`` those of the named tasks' defaults. The folder's resolved config
    (``config.yaml``, for people) gets the component's ``info`` and the generation defaults."""
    import shutil
    import tempfile

    from .files import give_new_modes_under
    from .generator.generation import read_generation_config
    from .pipeline.folder import CONFIG_NAME, INDEX_NAME

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=model_dir))
    try:
        save(tmp)
        give_new_modes_under(tmp)
        target = model_dir / name
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    index["components"][name] = name
    atomic_write_text(model_dir / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    generation_path = model_dir / index["components"]["generator"] / GENERATION_NAME
    generation = read_generation_config(generation_path)
    if default_sampling or task_sampling:
        per_task = {**generation.task_sampling}
        for task, fields in (task_sampling or {}).items():
            per_task[task] = {**per_task.get(task, {}), **fields}
        generation = dataclasses.replace(generation, sampling=generation.sampling.replace(**(default_sampling or {})),
                                         task_sampling=per_task)
        atomic_write_text(generation_path, json.dumps(to_dict(generation), indent=2) + "\n")
    config_path = model_dir / index.get("config", CONFIG_NAME)
    if config_path.is_file():
        config = read_yaml(config_path)
        config[name] = to_dict(info)
        config["generation"] = to_dict(generation)
        atomic_write_text(config_path, dump_yaml(config))
    return model_dir / name


def export_frame_decoder(checkpoint: str | Path, model_dir: str | Path, default: bool = False,
                         use_ema: bool = True) -> Path:
    """Add a ``mmldm train frame-decoder-distill`` checkpoint's light frame decoder to a model folder
    (``frame_decoder/``, listed in ``model_index.json``); ``--frame-decoder light`` selects it, and
    ``default`` makes it the model's default frame decoder (``generation.json``).

    It must have been distilled from the folder's own KL-VAE: where its teacher is still on disk,
    their decoders (``decoder`` and ``post_quant_conv``) are compared tensor for tensor; the latent
    space (channels, downsampling, scaling factor) is checked in any case.
    """

    import torch

    from .errors import warn
    from .pipeline.folder import INDEX_NAME
    from .training.checkpoint import load_trained_weights
    from .vae.kl_vae import KLVAE
    from .vae.light_decoder import (
        FRAME_DECODER_NAME,
        FrameDecoderInfo,
        LightFrameDecoder,
        save_frame_decoder,
    )
    from .vae.light_decoder_distill import FrameDecoderDistillConfig, load_teacher_vae
    from .weights import read_config_json

    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    index = read_config_json(model_dir / INDEX_NAME, "model index")
    cfg = _component_checkpoint_config(checkpoint, FrameDecoderDistillConfig, "frame-decoder-distill")
    vae = KLVAE.from_pretrained(model_dir / index["components"]["vae"])
    teacher_path = Path(cfg.vae)
    if teacher_path.exists():
        teacher_vae = load_teacher_vae(cfg)
        teacher, ours = teacher_vae.autoencoder.state_dict(), vae.autoencoder.state_dict()
        keys = [k for k in ours if k.startswith(("decoder.", "post_quant_conv."))]
        if (any(k not in teacher or not torch.equal(teacher[k], ours[k]) for k in keys)
                or teacher_vae.scaling_factor != vae.scaling_factor):
            raise ConfigError(f"{checkpoint}: the light frame decoder was distilled from the KL-VAE {teacher_path}, "
                              f"not from the KL-VAE of {model_dir}")
    else:
        warn(f"the light frame decoder's teacher {teacher_path} is gone: cannot check that it is {model_dir}'s KL-VAE")
    decoder = LightFrameDecoder(cfg.decoder_config(vae.latent_channels))
    load_trained_weights(decoder, checkpoint, "light frame decoder", use_ema=use_ema)
    info = FrameDecoderInfo(decoder=decoder.cfg, vae_scaling_factor=vae.scaling_factor,
                            vae_latent_channels=vae.latent_channels, vae_downsample_factor=vae.downsample_factor)
    unfit = info.fits(vae)
    if unfit:
        raise ConfigError(f"{checkpoint}: the light frame decoder {unfit} of {model_dir}")
    return _add_component(model_dir, index, FRAME_DECODER_NAME,
                          lambda folder: save_frame_decoder(decoder, info, folder), info,
                          {"frame_decoder": "light"} if default else None)


#: the tasks ``export_sync_critic(default=True)`` gives the sync critic: those given a modality, whose
#: pools it ranks best; svg and long keep the latent critics (decoding every candidate would cost
#: them their speed)
SYNC_CRITIC_TASKS = ("a2v", "v2a", "audio-continuation", "video-continuation")


def export_sync_critic(checkpoint: str | Path, model_dir: str | Path, default: bool = False,
                       critics: tuple[str, ...] = ("sync",), use_ema: bool = True) -> Path:
    """Add a ``mmldm train sync-critic`` checkpoint's critic to a model folder (``sync_critic/``,
    listed in ``model_index.json``); ``--critics sync`` selects it, and ``default`` makes ``critics``
    the folder's default critics of :data:`SYNC_CRITIC_TASKS` (``generation.json``'s ``task_sampling``).

    It must judge the clips the model makes: the frame count, frame rate, sample rate and frame size
    it was trained on are checked against the folder's."""
    from .critic.network import (
        SYNC_CRITIC_NAME,
        SyncCritic,
        SyncCriticInfo,
        save_sync_critic,
    )
    from .critic.stage import SyncCriticTrainConfig
    from .pipeline.folder import INDEX_NAME
    from .training.checkpoint import load_trained_weights
    from .weights import read_config_json

    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    index = read_config_json(model_dir / INDEX_NAME, "model index")
    cfg = _component_checkpoint_config(checkpoint, SyncCriticTrainConfig, "sync-critic")
    critic = SyncCritic(cfg.critic)
    load_trained_weights(critic, checkpoint, SYNC_CRITIC_NAME.replace("_", " "), use_ema=use_ema)
    info = SyncCriticInfo(critic=cfg.critic, num_frames=cfg.data.num_frames, fps=cfg.data.fps,
                          sample_rate=cfg.data.sample_rate)
    from .pipeline import SoundingVideoPipeline

    pipe = SoundingVideoPipeline.from_pretrained(model_dir)
    unfit = info.fits(pipe.num_frames, pipe.fps, pipe.audio_cfg.sample_rate, pipe.frame_size)
    if unfit:
        raise ConfigError(f"{checkpoint}: the sync critic {unfit}")
    defaults = {task: {"critics": list(critics)} for task in SYNC_CRITIC_TASKS} if default else None
    return _add_component(model_dir, index, SYNC_CRITIC_NAME, lambda folder: save_sync_critic(critic, info, folder),
                          info, None, defaults)


__all__ = [
    "SYNC_CRITIC_TASKS",
    "clip_timing_of",
    "export_frame_decoder",
    "export_generator",
    "export_model",
    "export_student",
    "export_sync_critic",
    "exported_generation",
]
