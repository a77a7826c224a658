"""Training speed of the KL-VAE stage (optimiser steps per second), data loading excluded.

One step is what the engine does for the VAE stage: ``VAEStage.losses`` on a
batch (random frames of each clip + its audio image) under the precision's
autocast, backward, gradient clipping at 1.0, AdamW. The batch is synthetic
(fixed random clips) so that only the network is timed; see
benchmarks/dataloader.py for decoding speed.

    python benchmarks/vae_train.py                                   # tiny preset, 64x64, fp32 and bf16
    python benchmarks/vae_train.py --steps 3 --warmup 1 --batch-size 2   # smoke run
    python benchmarks/vae_train.py --preset sd-v1 --size 256 --mode decoder --precision bf16 --out vae.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    add_device_argument,
    finish,
    measure_stage,
    record,
    render,
    resolve_device,
    run_script,
    torch_threads,
)

from mmldm.config import load_config
from mmldm.vae.stage import VAEStage, VAEStageConfig

COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("mode", "mode", ""), ("size", "size", ""), ("precision", "precision", ""),
    ("images/step", "images_per_step", ""), ("steps/s", "steps_per_s", ".2f"), ("images/s", "images_per_s", ".1f"),
    ("trainable params (M)", "params_trainable_m", ".2f"),
]


def measure(preset: str, mode: str, size: int, batch_size: int, frames_per_clip: int, precision: str,
            steps: int, warmup: int, seed: int, device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Time ``steps`` VAE-stage optimiser steps (after ``warmup``) on one fixed synthetic batch."""
    cfg = load_config(VAEStageConfig, None, [
        f"model.preset={preset}", f"model.train_mode={mode}", "loss.lpips_weight=0.0",
        f"data.size={size}", f"data.frames_per_clip={frames_per_clip}",
    ])
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "frames": torch.rand(batch_size, cfg.data.num_frames, 3, size, size, generator=gen) * 2 - 1,
        "audio_image": torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1,
    }
    row = measure_stage(VAEStage(), cfg, batch, precision, steps, warmup, device, seed)
    images = batch_size * (frames_per_clip + 1)
    return {"preset": preset, "mode": mode, "size": size, "batch_clips": batch_size, "images_per_step": images,
            **row, "steps_per_s": 1.0 / row["mean_s"], "images_per_s": images / row["mean_s"]}


def run(preset: str = "tiny", mode: str = "full", size: int = 64, batch_size: int = 8, frames_per_clip: int = 2,
        precisions: tuple[str, ...] = PRECISIONS, steps: int = 20, warmup: int = 3, seed: int = 0,
        device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """The record of :func:`measure` for each precision."""
    settings = dict(locals())
    dev = resolve_device(device)
    with torch_threads(threads):
        rows = [measure(preset, mode, size, batch_size, frames_per_clip, precision, steps, warmup, seed, dev)
                for precision in precisions]
        return record("vae_train", dev, settings, {"steps": rows})


def markdown(result: dict[str, Any]) -> str:
    return render(result, [("VAE training speed", "steps", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sd-v1"])
    parser.add_argument("--mode", default="full", choices=["full", "decoder"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="clips per step")
    parser.add_argument("--frames-per-clip", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.preset, args.mode, args.size, args.batch_size, args.frames_per_clip, tuple(args.precision),
                 args.steps, args.warmup, args.seed, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
