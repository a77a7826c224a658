"""Generator (AVDiT) presets: parameters and FLOPs beside the paper's Table 4, and CPU forward time.

Counts come from ``mmldm.generator.complexity`` (the same numbers as ``mmldm presets``):
meta device, one forward at batch 1, paper latent sizes. Timing builds the real
network for the presets named in ``--time`` and times a no-grad forward.

    python benchmarks/generator_presets.py --time tiny S --out generator_presets.json
    python benchmarks/generator_presets.py --time tiny --repeats 2      # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from mmldm.generator.complexity import markdown_table, preset_complexities
from mmldm.generator.dit import DIT_PRESETS, AVDiT, DiTConfig


def time_forward(name: str, batch: int, repeats: int, dtype: str, threads: int) -> dict:
    """Median seconds of one no-grad forward of preset ``name`` on CPU (after one warm-up)."""
    torch.set_num_threads(threads)
    cfg = DiTConfig.preset(name)
    torch.manual_seed(0)
    model = AVDiT(cfg).eval()
    g = torch.Generator().manual_seed(0)
    x = {"audio": torch.randn(batch, cfg.audio_channels, *cfg.audio_size, generator=g),
         "video": torch.randn(batch, cfg.video_channels, *cfg.video_size, generator=g)}
    t = torch.full((batch,), 500.0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    times = []
    with torch.inference_mode(), autocast:
        model(x, t)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - start)
    times.sort()
    return {"preset": name, "batch": batch, "dtype": dtype, "threads": threads,
            "median_s": times[len(times) // 2], "min_s": times[0], "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", nargs="*", default=["tiny", "S"], choices=list(DIT_PRESETS),
                        help="presets whose CPU forward is timed (default: tiny S)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16", help="bf16 = CPU autocast")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    rows = preset_complexities()
    print(markdown_table(rows))
    timings = [time_forward(name, args.batch, args.repeats, args.dtype, args.threads) for name in args.time]
    if timings:
        print()
        print("| preset | batch | dtype | threads | forward median (ms) | min (ms) |")
        print("|---|---|---|---|---|---|")
        for r in timings:
            print(f"| {r['preset']} | {r['batch']} | {r['dtype']} | {r['threads']} "
                  f"| {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"complexity": [dataclasses.asdict(r) for r in rows],
                                        "cpu_forward": timings}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
