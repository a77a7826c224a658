"""How much of a clip survives the model's own encoders and decoders: the ceiling each stage
puts on what generation can reach.

:func:`audio_image_clip`, :func:`vae_clip` and :func:`autoencoder_clip` pass one real clip
through a pipeline's parts (the audio image and the vocoder alone; the KL-VAE alone; the
KL-VAE and the multi-modal autoencoder, as generated latents are decoded), audio vocoded by
the pipeline's vocoder; :func:`with_autoencoder` swaps in another
autoencoder (e.g. an ablation) decoded alike. :func:`reconstruction_measures` scores them with
the Sounding Shapes measures; the Big Buck Bunny recipe writes them as mp4 and scores the
folders with ``evaluate_folders``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np


def clip_tensors(pipe: Any, frames: np.ndarray, audio: np.ndarray) -> tuple[Any, Any]:
    """A decoded clip as the pipeline's parts take it, cut to one clip.

    Shapes: frames uint8 [T, H, W, 3] (H = W = the model's frame size), audio float [N] at the
    model's rate -> frames float [1, T', 3, H, W] in [-1, 1] (T' = min(T, num_frames)) and wave
    float [1, N'] (N' = min(N, clip samples)).
    """
    import torch

    video = torch.as_tensor(np.ascontiguousarray(frames[:pipe.num_frames])).permute(0, 3, 1, 2).float()
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1)[:, : pipe.clip_samples]
    return video[None] / 127.5 - 1.0, wave


def _audio_image(pipe: Any, wave: Any) -> Any:
    """wave [1, N] -> the model's audio image [1, 3, H, W] in [-1, 1] (what the KL-VAE encodes)."""
    from ..data.audio_image import waveform_to_audio_image

    return waveform_to_audio_image(wave, pipe.audio_cfg, pipe.frame_size) * 2.0 - 1.0


def audio_image_clip(pipe: Any, wave: Any) -> Any:
    """The sound through the audio image and the vocoder alone, no learned encoder: the ceiling
    the audio representation (a log-mel resized to the frame size) and the vocoder put on every
    later stage.

    Shapes: wave [1, N] (:func:`clip_tensors`) -> wave [clip samples].
    """
    import torch

    from ..pipeline.audio import vocode_clips

    with torch.no_grad():
        return vocode_clips([_audio_image(pipe, wave)], pipe.audio_cfg, pipe.vocoder)[0]


def vae_clip(pipe: Any, frames: Any, wave: Any) -> tuple[Any, Any]:
    """Frames and the audio image through the KL-VAE alone, audio by the model's vocoder.

    Shapes: frames [1, T, 3, H, W], wave [1, N] (:func:`clip_tensors`) -> frames [T, 3, H, W]
    in [-1, 1] and wave [clip samples].
    """
    import torch

    from ..pipeline.audio import vocode_clips

    image = _audio_image(pipe, wave)
    with torch.no_grad():
        out_frames = pipe.vae.decode_frames(pipe.vae.encode_frames(frames.to(pipe.device))).float().cpu()
        out_image = pipe.vae.decode_audio_image(pipe.vae.encode_audio_image(image.to(pipe.device))).float().cpu()
    return out_frames.clamp(-1, 1)[0], vocode_clips([out_image.clamp(-1, 1)], pipe.audio_cfg, pipe.vocoder)[0]


def autoencoder_clip(pipe: Any, frames: Any, wave: Any, generator: Any) -> tuple[Any, Any]:
    """Frames and audio through the KL-VAE and the multi-modal autoencoder (posterior mode, the
    signal decoder's own DDIM settings drawing from ``generator``), audio by the model's vocoder.

    Shapes as :func:`vae_clip`.
    """
    import torch

    from ..pipeline.audio import vocode_clips

    with torch.no_grad():
        latents = {"video": pipe.encode_video(frames), "audio": pipe.encode_audio(wave)}
        out_frames, out_image = pipe.decode(latents, generator=generator)
    return out_frames[0], vocode_clips([out_image], pipe.audio_cfg, pipe.vocoder)[0]


def with_autoencoder(pipe: Any, autoencoder: Any) -> Any:
    """A shallow copy of ``pipe`` whose autoencoder is ``autoencoder`` (moved to the pipeline's
    device, frozen), its signal decoder set to the pipeline's own sampling settings so that both
    decode alike (the settings are recorded in the model folder, not in a trained part)."""
    swapped = copy.copy(pipe)
    autoencoder.cfg = dataclasses.replace(autoencoder.cfg, sampling=pipe.autoencoder.cfg.sampling)
    swapped.autoencoder = autoencoder.to(pipe.device).eval().requires_grad_(False)
    swapped._check_components()
    return swapped


def reconstruction_measures(pipe: Any, files: list[Path]) -> dict[str, Any]:
    """Shapes measures of real clips passed through the model's own encoders and decoders:
    ``vae`` (:func:`vae_clip`) and ``autoencoder`` (:func:`autoencoder_clip`, one generator
    seeded 0 for all the clips in turn)."""
    import torch

    from ..data.media_io import read_av
    from .shapes_measures import measure_pairs

    pairs: dict[str, list[tuple[Any, Any]]] = {"vae": [], "autoencoder": []}
    generator = torch.Generator().manual_seed(0)
    for path in files:
        clip = read_av(path, fps=pipe.fps, sample_rate=pipe.audio_cfg.sample_rate)
        frames, wave = clip_tensors(pipe, clip.frames, clip.audio)
        pairs["vae"].append(vae_clip(pipe, frames, wave))
        pairs["autoencoder"].append(autoencoder_clip(pipe, frames, wave, generator))
    return {stage: measure_pairs(clips, pipe.audio_cfg.sample_rate, pipe.fps) for stage, clips in pairs.items()}


__all__ = ["audio_image_clip", "autoencoder_clip", "clip_tensors", "reconstruction_measures", "vae_clip",
           "with_autoencoder"]
