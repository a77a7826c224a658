"""Generator (AVDiT) presets: parameters and FLOPs beside the paper's Table 4, and forward time.

Counts come from ``mmldm.generator.complexity`` (the same numbers as ``mmldm presets``):
meta device, one forward at batch 1, paper latent sizes. Timing builds the real
network for the presets named in ``--time`` and times a no-grad forward.

    python benchmarks/generator_presets.py --time tiny S --out generator_presets.json
    python benchmarks/generator_presets.py --time tiny --repeats 2      # smoke run
    python benchmarks/generator_presets.py --time S --device cuda --dtype fp32 bf16
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    add_device_argument,
    autocast,
    finish,
    record,
    render,
    resolve_device,
    run_script,
    time_call,
    torch_threads,
)

from mmldm.generator.complexity import markdown_table, preset_complexities
from mmldm.generator.dit import DIT_PRESETS, AVDiT, DiTConfig

FORWARD_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("batch", "batch", ""), ("dtype", "dtype", ""),
    ("forward median (ms)", "median_ms", ".1f"), ("min (ms)", "min_ms", ".1f"), ("repeats", "repeats", ""),
]


def time_forward(name: str, batch: int, repeats: int, dtype: str, device: torch.device = torch.device("cpu"),
                 warmup: int = 1) -> dict[str, Any]:
    """Seconds of one no-grad forward of preset ``name`` (``dtype``: "fp32" or "bf16" autocast)."""
    cfg = DiTConfig.preset(name)
    torch.manual_seed(0)
    model = AVDiT(cfg).to(device).eval()
    g = torch.Generator(device).manual_seed(0)
    x = {"audio": torch.randn(batch, cfg.audio_channels, *cfg.audio_size, generator=g, device=device),
         "video": torch.randn(batch, cfg.video_channels, *cfg.video_size, generator=g, device=device)}
    t = torch.full((batch,), 500.0, device=device)

    def forward() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(x, t)

    timing = time_call(forward, device, warmup=warmup, repeats=repeats)
    return {"preset": name, "batch": batch, "dtype": dtype, **timing.as_dict(),
            "median_ms": timing.median_s * 1e3, "min_ms": timing.min_s * 1e3}


def run(time: tuple[str, ...] = ("tiny", "S"), batch: int = 1, repeats: int = 5,
        dtypes: tuple[str, ...] = ("bf16",), device: str = "cpu", threads: int | None = None,
        count: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Counts of the presets in ``count`` (None: all) and forward timings of the presets in ``time``."""
    settings = dict(locals())
    dev = resolve_device(device)
    with torch_threads(threads):
        complexity = [dataclasses.asdict(r) for r in preset_complexities(list(count) if count else None)]
        forward = [time_forward(name, batch, repeats, dtype, dev) for name in time for dtype in dtypes]
        return record("generator_presets", dev, settings, {"complexity": complexity, "forward": forward})


def markdown(result: dict[str, Any]) -> str:
    from mmldm.generator.complexity import Complexity

    counts = markdown_table([Complexity(**row) for row in result["tables"]["complexity"]])
    return (f"Generator presets beside the paper's Table 4 (batch 1)\n\n{counts}\n\n"
            + render(result, [("Generator forward time (no grad)", "forward", FORWARD_COLUMNS)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", nargs="*", default=["tiny", "S"], choices=list(DIT_PRESETS),
                        help="presets whose forward is timed (default: tiny S)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", nargs="+", default=["bf16"], choices=PRECISIONS, help="bf16 = autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(tuple(args.time), args.batch, args.repeats, tuple(args.dtype), args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
