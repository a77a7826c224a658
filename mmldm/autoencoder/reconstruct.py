"""Reconstruct one sounding clip through the autoencoder and measure how close it comes back.

    result = reconstruct_file("clip.mp4", model, vae, vocoder="griffin-lim", out="recon.mp4")
    print(format_measures(result.measures))

The clip's first ``num_frames`` frames (from ``start``) and their audio go through
the KL-VAE and the multi-modal autoencoder and back (DDIM + guidance, then the VAE
decoder, then the vocoder). Measures:

* ``frame_psnr`` -- PSNR in dB of the frames (pixels in [0, 1]), over the whole clip;
* ``audio_image_mel_l1`` -- mean |log-mel difference| (natural log) between the input
  and reconstructed audio images (no vocoder involved);
* ``waveform_mel_l1`` -- the same between the log-mels of the input and output waves;
* with ``shapes=True`` (Sounding Shapes clips): ``sync_error`` (semitones) and
  ``class_agreement`` of the reconstruction, beside the input's own values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from ..errors import MediaError
from ..timing import AVTiming
from .model import HierarchicalAVAutoencoder


@dataclass
class Reconstruction:
    """Input and reconstructed clip: frames [T, 3, H, W] in [-1, 1], waves [N], and the measures."""

    frames: torch.Tensor
    audio: torch.Tensor
    recon_frames: torch.Tensor
    recon_audio: torch.Tensor
    measures: dict[str, Any] = field(default_factory=dict)


def frame_psnr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """PSNR (dB) of images in [-1, 1], over all pixels: 10 log10(1 / MSE) on the [0, 1] scale."""
    mse = ((reference.float() - estimate.float()) / 2).pow(2).mean().item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def reconstruct_file(path: str | Path, model: HierarchicalAVAutoencoder, vae: Any, vocoder: str | Path = "griffin-lim",
                     timing: AVTiming | None = None, start: float = 0.0, shapes: bool = False,
                     out: str | Path | None = None, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", **decode_kwargs: Any) -> Reconstruction:
    """Read ``path``, reconstruct it, measure it and (if ``out``) write the reconstruction as mp4.

    ``timing`` defaults to 10 fps, 16 kHz and the model's frame count; the frame size is the
    VAE's image size for the model's latents. ``decode_kwargs`` go to
    :meth:`HierarchicalAVAutoencoder.decode` (steps, guidance, chunk size).
    """
    from ..data.audio_image import AudioConfig, audio_image_to_waveform, image_to_mel, log_mel, waveform_to_audio_image
    from ..data.media_io import read_av, write_av
    from ..data.vocoders import build_vocoder

    from ..data.media_io import check_writable_suffix

    cfg = model.cfg
    timing = timing or AVTiming(fps=10.0, num_frames=cfg.num_frames, sample_rate=16000)
    size = cfg.vae_latent_size * vae.downsample_factor
    if out is not None:  # a wrong output name or vocoder fails before the clip is decoded
        check_writable_suffix(out)
    audio_cfg = dataclasses.replace(AudioConfig.for_sample_rate(timing.sample_rate), clip_seconds=timing.seconds)
    voc = build_vocoder(vocoder, audio_cfg)
    if isinstance(voc, torch.nn.Module):
        voc = voc.to(device).eval()
    clip = read_av(path, fps=timing.fps, sample_rate=timing.sample_rate, size=size, start=start,
                   duration=timing.seconds)
    if clip.num_frames < cfg.num_frames:
        raise MediaError(path, f"holds {clip.num_frames} frames from {start:g} s at {timing.fps:g} fps; "
                               f"the autoencoder needs {cfg.num_frames}")
    frames = torch.from_numpy(clip.frames[:cfg.num_frames]).float().div(127.5).sub(1.0)
    frames = rearrange(frames, "t h w c -> t c h w").to(device)  # [T, 3, H, W]
    wave = torch.from_numpy(np.asarray(clip.audio[:timing.samples_per_clip], dtype=np.float32)).to(device)
    audio_image = waveform_to_audio_image(wave, audio_cfg, size) * 2.0 - 1.0  # [1, 3, H, W]

    latents = vae.encode_clips({"frames": frames[None], "audio_image": audio_image})
    video_post, audio_post = model.encode(latents["video_latent"].float(), latents["audio_latent"].float())
    recon_frames, recon_image = model.reconstruct(vae, video_post.mode(), audio_post.mode(), generator=generator,
                                                  **decode_kwargs)
    recon_frames, recon_image = recon_frames[0].float(), recon_image.float()  # [T, 3, H, W], [1, 3, H, W]
    recon_wave = audio_image_to_waveform((recon_image + 1) / 2, audio_cfg, voc)[0]  # [N]

    mel_in = image_to_mel((audio_image + 1) / 2, audio_cfg)
    mel_out = image_to_mel((recon_image + 1) / 2, audio_cfg)
    measures: dict[str, Any] = {
        "frame_psnr": frame_psnr(frames, recon_frames),
        "audio_image_mel_l1": (mel_in - mel_out).abs().mean().item(),
        "waveform_mel_l1": (log_mel(wave, audio_cfg) - log_mel(recon_wave.float(), audio_cfg)).abs().mean().item(),
    }
    if shapes:
        from ..evaluation.shapes_measures import class_agreement, sync_error

        for name, f, a in (("input", frames, wave), ("reconstruction", recon_frames, recon_wave)):
            f_np, a_np = f.cpu().numpy(), a.float().cpu().numpy()
            measures[f"sync_error_{name}"] = sync_error(f_np, a_np, timing.sample_rate, timing.fps)
            measures[f"class_agreement_{name}"] = bool(class_agreement(f_np, a_np, timing.sample_rate, timing.fps))
    if out is not None:
        write_av(out, recon_frames.clamp(-1, 1).cpu(), recon_wave.float().clamp(-1, 1).cpu().numpy(),
                 timing.fps, timing.sample_rate)
    return Reconstruction(frames.cpu(), wave.cpu(), recon_frames.cpu(), recon_wave.float().cpu(), measures)


def format_measures(measures: dict[str, Any]) -> str:
    """A two-column markdown table of the measures."""
    rows = ["| measure | value |", "|---|---|"]
    for key, value in measures.items():
        rows.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(rows)
