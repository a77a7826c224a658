"""How much of a clip survives the model's own encoders and decoders: the ceiling each stage
puts on what generation can reach (Sounding Shapes measures of real clips passed through)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def reconstruction_measures(pipe: Any, files: list[Path]) -> dict[str, Any]:
    """Shapes measures of real clips passed through the model's own encoders and decoders:
    the ceiling each stage puts on what generation can reach.

    * ``vae``: frames and audio image through the KL-VAE alone, audio by the model's vocoder;
    * ``autoencoder``: through the KL-VAE and the multi-modal autoencoder (posterior mode,
      the signal decoder's own DDIM settings), as generated latents are decoded.
    """
    import torch

    from ..data.audio_image import waveform_to_audio_image
    from ..data.media_io import read_av
    from ..pipeline.audio import vocode_clips
    from .shapes_measures import measure_pairs

    pairs: dict[str, list[tuple[Any, Any]]] = {"vae": [], "autoencoder": []}
    generator = torch.Generator().manual_seed(0)
    for path in files:
        clip = read_av(path, fps=pipe.fps, sample_rate=pipe.audio_cfg.sample_rate)
        frames = torch.as_tensor(clip.frames).permute(0, 3, 1, 2).float()[None] / 127.5 - 1.0  # [1, T, 3, H, W]
        wave = torch.as_tensor(clip.audio).float().reshape(1, -1)[:, : pipe.clip_samples]
        image = waveform_to_audio_image(wave, pipe.audio_cfg, pipe.frame_size) * 2.0 - 1.0  # [1, 3, H, W]
        with torch.no_grad():
            vae_frames = pipe.vae.decode_frames(pipe.vae.encode_frames(frames)).float().clamp(-1, 1)
            vae_image = pipe.vae.decode_audio_image(pipe.vae.encode_audio_image(image)).float().clamp(-1, 1)
            latents = {"video": pipe.encode_video(frames), "audio": pipe.encode_audio(wave)}
            ae_frames, ae_image = pipe.decode(latents, generator=generator)
        pairs["vae"].append((vae_frames[0], vocode_clips([vae_image], pipe.audio_cfg, pipe.vocoder)[0]))
        pairs["autoencoder"].append((ae_frames[0], vocode_clips([ae_image], pipe.audio_cfg, pipe.vocoder)[0]))
    return {stage: measure_pairs(clips, pipe.audio_cfg.sample_rate, pipe.fps) for stage, clips in pairs.items()}


__all__ = ["reconstruction_measures"]
