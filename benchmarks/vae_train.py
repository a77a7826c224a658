"""Training speed of the KL-VAE stage (optimiser steps per second), data loading excluded.

One step is what the engine does for the VAE stage: ``VAEStage.losses`` on a
batch (random frames of each clip + its audio image), backward, AdamW. The batch
is synthetic (fixed random clips) so that only the network is timed; see
benchmarks/dataloader.py for decoding speed.

    python benchmarks/vae_train.py                                   # tiny preset, 64x64, fp32 and bf16
    python benchmarks/vae_train.py --steps 3 --warmup 1 --batch-size 2   # smoke run
    python benchmarks/vae_train.py --preset sd-v1 --size 256 --mode decoder --precision bf16 --out vae.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch

from mmldm.config import load_config
from mmldm.vae.stage import VAEStage, VAEStageConfig


def measure(preset: str, mode: str, size: int, batch_size: int, frames_per_clip: int, precision: str,
            steps: int, warmup: int, seed: int) -> dict:
    cfg = load_config(VAEStageConfig, None, [
        f"model.preset={preset}", f"model.train_mode={mode}", "loss.lpips_weight=0.0",
        f"data.size={size}", f"data.frames_per_clip={frames_per_clip}",
    ])
    torch.manual_seed(seed)
    stage = VAEStage()
    modules = stage.build(cfg)
    model = modules["model"].train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "frames": torch.rand(batch_size, cfg.data.num_frames, 3, size, size, generator=gen) * 2 - 1,
        "audio_image": torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1,
    }
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with autocast:
            loss = stage.losses(modules, batch, step, gen)["loss/model"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    timed = times[warmup:]
    images = batch_size * (frames_per_clip + 1)
    return {
        "preset": preset, "mode": mode, "size": size, "precision": precision, "batch_clips": batch_size,
        "images_per_step": images, "steps": steps,
        "steps_per_s": len(timed) / sum(timed), "images_per_s": images * len(timed) / sum(timed),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sd-v1"])
    parser.add_argument("--mode", default="full", choices=["full", "decoder"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="clips per step")
    parser.add_argument("--frames-per-clip", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [measure(args.preset, args.mode, args.size, args.batch_size, args.frames_per_clip, precision,
                    args.steps, args.warmup, args.seed) for precision in args.precision]
    print(f"VAE training speed ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__})\n")
    print("| preset | mode | size | precision | images/step | steps/s | images/s | trainable params |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['mode']} | {r['size']} | {r['precision']} | {r['images_per_step']} | "
              f"{r['steps_per_s']:.2f} | {r['images_per_s']:.1f} | {r['params_trainable'] / 1e6:.2f}M |")
    if args.out is not None:
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
