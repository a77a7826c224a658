"""Reconstruction FVD of a few-step signal decoder against its teacher, on real held-out clips.

    python benchmarks/decoder_student_rfvd.py --model runs/bbb/model-student --clips runs/bbb/eval/baseline-real \\
        --training runs/bbb/data/train --i3d runs/bbb/parts/i3d.safetensors --out student-rfvd.json

Each clip of ``--clips`` (real held-out clips, e.g. the ones ``mmldm recipe bbb``'s evaluation
copied into ``eval/baseline-real``) goes through the model's KL-VAE and autoencoder encoders
and back through the signal decoder twice: the teacher at the model's own decoder steps and
the model folder's student (``decoder_student/``) at its steps, clip ``i`` drawing from seed
``i`` both times (the recipe's ``reconstruction-autoencoder`` set draws the same way), audio by
the model's vocoder. Both sets are scored as ``mmldm evaluate`` scores them: FVD / KVD against
``--training`` windows (protocol ``standard``, the given I3D weights, seed 0), the teacher's and
the student's clips against the same reference windows. Issue 22 asks the student's rFVD to be
within 10 % of the teacher's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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
    ("signal decoder", "decoder", ""), ("steps", "steps", ""), ("clips", "clips", ""), ("rFVD", "fvd", ".1f"),
    ("rKVD", "kvd", ".2f"), ("decode s per clip", "seconds_per_clip", ".2f"),
]


def reconstruct(pipe: Any, clips: list[Path], out: Path, steps: int) -> float:
    """Write each clip reconstructed with ``steps`` decoder steps into ``out``; seconds per clip."""
    import torch

    from mmldm.data.media_io import read_av, write_av
    from mmldm.evaluation.reconstruction import clip_tensors
    from mmldm.pipeline.audio import vocode_clips

    out.mkdir(parents=True, exist_ok=True)
    spent = 0.0
    for i, path in enumerate(clips):
        clip = read_av(path, fps=pipe.fps, sample_rate=pipe.audio_cfg.sample_rate,
                       duration=pipe.num_frames / pipe.fps)
        frames, wave = clip_tensors(pipe, clip.frames, clip.audio)
        begin = time.perf_counter()
        with torch.no_grad():
            latents = {"video": pipe.encode_video(frames), "audio": pipe.encode_audio(wave)}
            out_frames, out_image = pipe.decode(latents, generator=torch.Generator().manual_seed(i), steps=steps)
        spent += time.perf_counter() - begin
        audio = vocode_clips([out_image], pipe.audio_cfg, pipe.vocoder)[0]
        video = ((out_frames[0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        write_av(out / f"reconstruction-{i:04d}.mp4", video, audio.numpy(), pipe.fps, pipe.audio_cfg.sample_rate)
    return spent / max(len(clips), 1)


def run(model: Path, clips_dir: Path, training: Path, i3d: Path, work: Path, clips: int = 64,
        threads: int | None = None) -> dict[str, Any]:
    with torch_threads(threads):
        return _run(model, clips_dir, training, i3d, work, clips, threads)


def _run(model: Path, clips_dir: Path, training: Path, i3d: Path, work: Path, clips: int,
         threads: int | None) -> dict[str, Any]:
    from mmldm.pipeline import SoundingVideoPipeline

    pipe = SoundingVideoPipeline.from_pretrained(model)
    if pipe.decoder_student is None:
        raise ConfigError(f"{model}: the model folder has no decoder_student/ (mmldm export decoder-student adds one)")
    files = held_out_clips(clips_dir, clips)
    teacher_steps = pipe.autoencoder.cfg.sampling.steps
    rows = []
    for name, steps in (("teacher", teacher_steps), ("student", pipe.decoder_student[1].steps)):
        folder = work / name
        seconds = reconstruct(pipe, files, folder, steps)
        rows.append({"decoder": name, "steps": steps, **score_reconstructions(folder, training, i3d, len(files)),
                     "seconds_per_clip": seconds})
        print(f"{name}: rFVD {rows[-1]['fvd']:.1f}", flush=True)
    ratio = rows[1]["fvd"] / rows[0]["fvd"]
    settings = {"model": str(model), "clips": str(clips_dir), "training": str(training), "i3d": str(i3d),
                "protocol": "standard", "num_samples": len(files), "seed": 0, "threads": threads,
                "student_over_teacher_fvd": ratio, "within_10_percent": abs(ratio - 1) <= 0.10}
    return record("decoder_student_rfvd", torch.device("cpu"), settings, {"decoders": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reconstruction_arguments(parser, "decoder_student", "decoder-student-rfvd")
    args = parser.parse_args()
    result = run(args.model, args.clips, args.training, args.i3d, args.work, args.n, args.threads)
    settings = result["settings"]
    text = (render(result, [("Reconstruction of real held-out clips, teacher vs few-step student", "decoders",
                             COLUMNS)])
            + f"\n\nstudent rFVD / teacher rFVD = {settings['student_over_teacher_fvd']:.3f} "
            f"({'within' if settings['within_10_percent'] else 'NOT within'} 10 %)")
    finish(result, text, args.out)


if __name__ == "__main__":
    run_script(main)
