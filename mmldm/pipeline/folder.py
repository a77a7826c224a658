"""The model folder: everything :class:`SoundingVideoPipeline` needs, in one directory.

Layout (``docs/generation.md`` explains every file)::

    DIR/model_index.json     format name and version, mmldm version, component folders
    DIR/vae/                 KL-VAE, diffusers folder (config.json + diffusion_pytorch_model.safetensors)
    DIR/autoencoder/         multi-modal autoencoder (config.json + model.safetensors)
    DIR/generator/           AVDiT (config.json + model.safetensors) and generation.json
                             (its diffusion objective, latent scales, sampling defaults)
    DIR/audio.yaml           AudioConfig (``audio:``) and the vocoder spec (``vocoder:``):
                             "griffin-lim" or a path relative to DIR of HiFi-GAN files
    DIR/vocoder/             HiFi-GAN checkpoint + config.json (only for a HiFi-GAN vocoder)
    DIR/decoder_student/     optional few-step signal decoder distilled from the autoencoder's
                             (config.json + model.safetensors; ``mmldm export decoder-student``)
    DIR/frame_decoder/       optional light frame decoder distilled from the KL-VAE's decoder
                             (config.json + model.safetensors; ``mmldm export frame-decoder``)
    DIR/sync_critic/         optional pixel-domain sync critic that ranks decoded candidates
                             (config.json + model.safetensors; ``mmldm export sync-critic``)
    DIR/config.yaml          resolved configs of all stages (for people; the files above rule)

Every problem (missing folder or file, corrupt JSON/YAML, weights that do not fit)
is a one-line :class:`~mmldm.errors.WeightsError` or
:class:`~mmldm.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import __version__
from ..assets import (
    HIFIGAN_UNIVERSAL,
    HIFIGAN_UNIVERSAL_NAME,
    assets_folder,
    find_asset,
)
from ..autoencoder.model import HierarchicalAVAutoencoder
from ..autoencoder.signal_decoder import SignalDecoder
from ..autoencoder.student import STUDENT_NAME, StudentInfo, load_student, save_student
from ..config import atomic_write_text, dump_yaml, from_dict, make_folder, to_dict
from ..critic.network import (
    SYNC_CRITIC_NAME,
    SyncCritic,
    SyncCriticInfo,
    load_sync_critic,
    save_sync_critic,
)
from ..data.audio_image import AudioConfig
from ..data.vocoders import GriffinLim, HiFiGAN, Vocoder, build_vocoder, save_hifigan
from ..errors import ConfigError, MMLDMError, WeightsError, warn
from ..files import give_new_modes_under
from ..generator.dit import AVDiT
from ..generator.generation import (
    GENERATION_NAME,
    GenerationConfig,
    read_generation_config,
)
from ..vae.kl_vae import KLVAE
from ..vae.light_decoder import (
    FRAME_DECODER_NAME,
    FrameDecoderInfo,
    LightFrameDecoder,
    load_frame_decoder,
    save_frame_decoder,
)
from ..weights import read_config_json

if TYPE_CHECKING:
    from .pipeline import SoundingVideoPipeline

FORMAT_NAME = "mmldm-sounding-video"
#: 2: generation.json holds its sampling defaults under ``sampling`` and the autoencoder its
#: decoder objective under ``diffusion`` (version 1 folders, flat, are still read)
FORMAT_VERSION = 2
INDEX_NAME = "model_index.json"
AUDIO_NAME = "audio.yaml"
CONFIG_NAME = "config.yaml"
COMPONENTS = {"vae": "vae", "autoencoder": "autoencoder", "generator": "generator"}
HIFIGAN_CHECKPOINT = "vocoder/g_00000000"


def resolve_vocoder(vocoder: Vocoder | str | Path, audio_cfg: AudioConfig,
                    base: Path | None) -> tuple[Vocoder, str]:
    """``(vocoder module, spec)``; a string spec is "griffin-lim", "hifigan-universal-v1" (the released
    HiFi-GAN found among the assets; Griffin-Lim with a warning where it is missing) or a HiFi-GAN
    checkpoint (a file with its ``config.json`` beside it, or a folder holding one), relative to ``base``
    (a model folder) when given; the spec of a path from outside a model folder is the path itself."""
    if isinstance(vocoder, GriffinLim):
        return vocoder, "griffin-lim"
    if isinstance(vocoder, HiFiGAN):
        return vocoder, HIFIGAN_CHECKPOINT
    if isinstance(vocoder, (str, Path)):
        spec = str(vocoder)
        if spec == "griffin-lim":
            return build_vocoder(spec, audio_cfg), spec
        if spec == HIFIGAN_UNIVERSAL_NAME:  # the release by name: not copied into every model folder
            found = find_asset(HIFIGAN_UNIVERSAL)
            if found is None:
                warn(f"the vocoder {spec} (HiFi-GAN universal V1) is not in {assets_folder()}; `make assets` "
                     "fetches it. Vocoding with Griffin-Lim instead")
                return build_vocoder("griffin-lim", audio_cfg), "griffin-lim"
            return build_vocoder(found, audio_cfg), spec
        path = Path(spec)
        if base is None:
            return build_vocoder(path, audio_cfg), str(path)
        return build_vocoder(path if path.is_absolute() else base / path, audio_cfg), spec
    raise ConfigError(f"vocoder must be 'griffin-lim', a HiFi-GAN path or a GriffinLim/HiFiGAN module, "
                      f"got {type(vocoder).__name__}")


# --------------------------------------------------------------------------- loading

@dataclass
class FolderParts:
    vae: KLVAE
    autoencoder: HierarchicalAVAutoencoder
    generator: AVDiT
    generation: GenerationConfig
    audio_cfg: AudioConfig
    vocoder: Vocoder
    vocoder_spec: str
    #: the few-step signal decoder and how it samples, where the folder has one
    decoder_student: tuple[SignalDecoder, StudentInfo] | None = None
    #: the light frame decoder and what it decodes, where the folder has one
    frame_decoder: tuple[LightFrameDecoder, FrameDecoderInfo] | None = None
    #: the pixel-domain sync critic and the clips it judges, where the folder has one
    sync_critic: tuple[SyncCritic, SyncCriticInfo] | None = None


def _component(directory: Path, index: dict, name: str) -> Path:
    sub = index.get("components", {}).get(name)
    if not isinstance(sub, str):
        raise WeightsError(directory / INDEX_NAME, "model index", f"names no '{name}' component folder")
    path = directory / sub
    if not path.is_dir():
        raise WeightsError(path, f"{name} component", "folder missing from the model folder")
    return path


def read_index(directory: Path) -> dict:
    """``model_index.json`` of the model folder ``directory``, checked (format name and version)."""
    if not directory.is_dir():
        raise WeightsError(directory, "model folder", f"not found or not a folder (a model folder holds "
                                                      f"{INDEX_NAME}; SoundingVideoPipeline.save_pretrained "
                                                      "writes one)")
    index = read_config_json(directory / INDEX_NAME, "model index")
    if index.get("format") != FORMAT_NAME:
        raise WeightsError(directory / INDEX_NAME, "model index", f"is not an {FORMAT_NAME} model index")
    version = index.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(directory / INDEX_NAME, "model index",
                           f"format version {version!r} is newer than this mmldm reads ({FORMAT_VERSION}); "
                           "upgrade mmldm")
    return index


def read_audio(directory: Path) -> tuple[AudioConfig, Vocoder, str]:
    """``audio.yaml`` of the model folder ``directory``: (audio config, vocoder, vocoder spec)."""
    audio_path = directory / AUDIO_NAME
    if not audio_path.is_file():
        raise WeightsError(audio_path, "audio config", "missing")
    try:
        audio = yaml.safe_load(audio_path.read_text())
    except yaml.YAMLError as exc:
        raise WeightsError(audio_path, "audio config", f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(audio, dict) or not isinstance(audio.get("vocoder"), str):
        raise WeightsError(audio_path, "audio config", "needs 'audio:' settings and a 'vocoder:' spec")
    unknown = sorted(set(audio) - {"audio", "vocoder"})
    if unknown:
        raise WeightsError(audio_path, "audio config", f"unknown key(s) {', '.join(map(str, unknown))} "
                                                       "(known: audio, vocoder)")
    try:
        audio_cfg = from_dict(AudioConfig, audio.get("audio"), prefix="audio.")
        vocoder, spec = resolve_vocoder(audio["vocoder"], audio_cfg, base=directory)
    except MMLDMError as exc:
        raise WeightsError(audio_path, "audio config", str(exc)) from None
    return audio_cfg, vocoder, spec


def load_folder(directory: Path) -> FolderParts:
    """Read every component of a model folder (see the module docstring)."""
    index = read_index(directory)
    vae = KLVAE.from_pretrained(_component(directory, index, "vae"))
    autoencoder = HierarchicalAVAutoencoder.from_pretrained(_component(directory, index, "autoencoder"))
    generator_dir = _component(directory, index, "generator")
    generator = AVDiT.from_pretrained(generator_dir)
    generation = read_generation_config(generator_dir / GENERATION_NAME)
    student = (load_student(_component(directory, index, STUDENT_NAME), autoencoder)
               if STUDENT_NAME in index.get("components", {}) else None)
    frame_decoder = (load_frame_decoder(_component(directory, index, FRAME_DECODER_NAME))
                     if FRAME_DECODER_NAME in index.get("components", {}) else None)

    audio_cfg, vocoder, spec = read_audio(directory)
    return FolderParts(vae, autoencoder, generator, generation, audio_cfg, vocoder, spec, student, frame_decoder,
                       read_sync_critic(directory, index))


def read_sync_critic(directory: Path, index: dict) -> tuple[SyncCritic, SyncCriticInfo] | None:
    """The folder's sync critic (``sync_critic/``), or None where it has none."""
    if SYNC_CRITIC_NAME not in index.get("components", {}):
        return None
    return load_sync_critic(_component(directory, index, SYNC_CRITIC_NAME))


# --------------------------------------------------------------------------- saving

def check_replaceable(directory: Path) -> None:
    """Refuse to put a model folder where something else is: a file, or a folder that is
    neither empty nor a model folder (saving replaces the whole folder)."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ConfigError(f"{directory}: is a file; a model folder cannot replace it")
    if (directory / INDEX_NAME).is_file() or not any(directory.iterdir()):
        return
    raise ConfigError(f"{directory}: folder holds other files and no {INDEX_NAME}; saving a model there would "
                      "delete them, so give a new or empty folder")


def save_folder(pipe: SoundingVideoPipeline, directory: Path, text_encoder: bool = True) -> Path:
    """Write ``pipe`` as a model folder at ``directory``, atomically; ``text_encoder`` False leaves a
    text-conditioned model's text encoder out (``generation.json`` names where it came from).

    Everything goes to a temporary folder beside ``directory`` first; it is renamed
    into place only when complete. An existing folder is moved aside first and
    deleted after the rename, so ``directory`` is always either the old or the new model.
    """
    directory = directory.absolute()
    check_replaceable(directory)
    make_folder(directory.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        pipe.vae.save_pretrained(tmp / COMPONENTS["vae"])
        pipe.autoencoder.save_pretrained(tmp / COMPONENTS["autoencoder"])
        pipe.generator.save_pretrained(tmp / COMPONENTS["generator"])
        atomic_write_text(tmp / COMPONENTS["generator"] / GENERATION_NAME,
                          json.dumps(to_dict(pipe.generation), indent=2) + "\n")
        components = dict(COMPONENTS)
        if pipe.decoder_student is not None:
            save_student(*pipe.decoder_student, tmp / STUDENT_NAME)
            components[STUDENT_NAME] = STUDENT_NAME
        if pipe.frame_decoder is not None:
            save_frame_decoder(*pipe.frame_decoder, tmp / FRAME_DECODER_NAME)
            components[FRAME_DECODER_NAME] = FRAME_DECODER_NAME
        if pipe.sync_critic is not None:
            save_sync_critic(*pipe.sync_critic, tmp / SYNC_CRITIC_NAME)
            components[SYNC_CRITIC_NAME] = SYNC_CRITIC_NAME
        if pipe.text_encoder is not None and text_encoder:
            pipe.text_encoder.save_pretrained(tmp)  # text_encoder/ and tokenizer/
        spec = pipe.vocoder_spec
        if isinstance(pipe.vocoder, HiFiGAN) and spec != HIFIGAN_UNIVERSAL_NAME:  # the release stays a name
            save_hifigan(pipe.vocoder, tmp / HIFIGAN_CHECKPOINT)
            spec = HIFIGAN_CHECKPOINT
        atomic_write_text(tmp / AUDIO_NAME, dump_yaml({"audio": to_dict(pipe.audio_cfg), "vocoder": spec}))
        atomic_write_text(tmp / CONFIG_NAME, dump_yaml(pipe.resolved_config()))
        index = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "mmldm_version": __version__,
                 "components": components, "audio": AUDIO_NAME, "config": CONFIG_NAME}
        atomic_write_text(tmp / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        give_new_modes_under(tmp)  # mkdtemp made it 0700: the model folder reads like any other
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, old / "model")
        try:
            os.replace(tmp, directory)
        except OSError:
            if old is not None:  # put the old model back
                os.replace(old / "model", directory)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
