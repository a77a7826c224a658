"""Reconstruction FVD and PSNR of a light frame decoder against the full KL-VAE decoder, on real held-out clips.

    python benchmarks/light_frame_decoder_rfvd.py --model MODEL_WITH_FRAME_DECODER \\
        --clips runs/bbb/eval/baseline-real --training runs/bbb/data/train \\
        --i3d runs/bbb/parts/i3d.safetensors --out light-rfvd.json

The frames of each clip of ``--clips`` (real held-out clips, e.g. those ``mmldm recipe bbb``'s
evaluation copied into ``eval/baseline-real``) go through the model's KL-VAE encoder and back
through each frame decoder: the full KL-VAE decoder and the model folder's light one
(``frame_decoder/``, :mod:`mmldm.vae.light_decoder`), from the same latents. Each set is
scored as ``mmldm evaluate`` scores it: FVD / KVD against ``--training`` windows (protocol
``standard``, the given I3D weights, seed 0); the full decoder's row is the recipe's
``reconstruction-vae`` set. PSNR (frames in [0, 255]) of the light decoder against the full one
and of each against the real frames. Issue 22 asks the light decoder's quality measured against
the full decoder's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    Column,
    add_reconstruction_arguments,
    finish,
    held_out_clips,
    record,
    render,
    run_script,
    score_reconstructions,
    torch_threads,
)

from mmldm.errors import ConfigError

COLUMNS: list[Column] = [
    ("frame decoder", "decoder", ""), ("clips", "clips", ""), ("rFVD", "fvd", ".1f"), ("rKVD", "kvd", ".2f"),
    ("PSNR vs real (dB)", "psnr_real", ".2f"), ("PSNR vs full decoder (dB)", "psnr_full", ".2f"),
    ("decode s per clip", "seconds_per_clip", ".3f"),
]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of frames in [-1, 1], measured on the [0, 255] scale."""
    mse = float(((a.float() - b.float()) * 127.5).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def run(model: Path, clips_dir: Path, training: Path, i3d: Path, work: Path, clips: int = 64,
        threads: int | None = None) -> dict[str, Any]:
    from mmldm.data.media_io import read_av, write_av
    from mmldm.evaluation.reconstruction import clip_tensors
    from mmldm.pipeline import SoundingVideoPipeline

    with torch_threads(threads):
        pipe = SoundingVideoPipeline.from_pretrained(model)
        if pipe.frame_decoder is None:
            raise ConfigError(f"{model}: the model folder has no frame_decoder/ (mmldm export frame-decoder adds one)")
        files = held_out_clips(clips_dir, clips)
        decoders = {"full": pipe.vae.decode_images,
                    "light": lambda z: pipe.frame_decoder[0].decode_images(z, pipe.vae.chunk_size)}
        psnrs: dict[str, list[float]] = {"full": [], "light": [], "light_vs_full": []}
        seconds = {name: 0.0 for name in decoders}
        for i, path in enumerate(files):
            clip = read_av(path, fps=pipe.fps, sample_rate=pipe.audio_cfg.sample_rate,
                           duration=pipe.num_frames / pipe.fps)
            frames, wave = clip_tensors(pipe, clip.frames, clip.audio)  # [1, T, 3, H, W], [1, N]
            with torch.no_grad():
                latents = pipe.vae.encode_frames(frames)[0]  # [T, C, s, s], scaled
                decoded = {}
                for name, decode in decoders.items():
                    begin = time.perf_counter()
                    decoded[name] = decode(latents).float().clamp(-1, 1)  # [T, 3, H, W]
                    seconds[name] += time.perf_counter() - begin
            for name, out in decoded.items():
                psnrs[name].append(psnr(out, frames[0]))
                video = ((out.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                folder = work / name
                folder.mkdir(parents=True, exist_ok=True)
                write_av(folder / f"reconstruction-{i:04d}.mp4", video, wave[0].numpy(), pipe.fps,
                         pipe.audio_cfg.sample_rate)
            psnrs["light_vs_full"].append(psnr(decoded["light"], decoded["full"]))
        rows = []
        for name in decoders:
            rows.append({"decoder": name, **score_reconstructions(work / name, training, i3d, len(files)),
                         "psnr_real": float(np.mean(psnrs[name])),
                         "psnr_full": float(np.mean(psnrs["light_vs_full"])) if name == "light" else None,
                         "seconds_per_clip": seconds[name] / len(files)})
            print(f"{name}: rFVD {rows[-1]['fvd']:.1f}, PSNR vs real {rows[-1]['psnr_real']:.2f} dB", flush=True)
    settings = {"model": str(model), "clips": str(clips_dir), "training": str(training), "i3d": str(i3d),
                "protocol": "standard", "num_samples": len(files), "seed": 0, "threads": threads,
                "light_over_full_fvd": rows[1]["fvd"] / rows[0]["fvd"],
                "light_vs_full_psnr_worst_clip": float(np.min(psnrs["light_vs_full"]))}
    return record("light_frame_decoder_rfvd", torch.device("cpu"), settings, {"decoders": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reconstruction_arguments(parser, "frame_decoder", "light-frame-decoder-rfvd")
    args = parser.parse_args()
    result = run(args.model, args.clips, args.training, args.i3d, args.work, args.n, args.threads)
    title = (f"Light frame decoder vs the full KL-VAE decoder of {result['settings']['model']}: "
             f"{result['settings']['num_samples']} real held-out clips through the KL-VAE")
    finish(result, render(result, [(title, "decoders", COLUMNS)]), args.out)


if __name__ == "__main__":
    run_script(main)
