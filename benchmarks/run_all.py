"""Run every benchmark; write one JSON file and benchmarks/RESULTS.md (machine, date, all tables).

    python benchmarks/run_all.py                      # full CPU run: about 15 min on 2 idle cores
    python benchmarks/run_all.py --device cuda        # larger batches and presets
    python benchmarks/run_all.py --quick --out /tmp/bench.json --results /tmp/RESULTS.md   # smoke run

Benchmarks, in order (each is also a script of its own, see its docstring):
generator_presets (params/FLOPs beside Table 4, forward time), train_step (each stage's
optimiser step), autoencoder (stage-1 steps with and without the adversarial term, and
reconstruction time per clip), sampling (per sounding video, generator alone and to mp4), mfu (model FLOP
utilisation; reuses the forward and training-step times measured before it), dataloader
(clips/s) and latent_cache (clips/s). benchmarks/vae_train.py (VAE stage images/s, also for
the sd-v1 layout) is not part of the run: train_step covers the tiny VAE.

The JSON file is rewritten after each benchmark, so an interrupted run keeps what it
measured. ``--quick`` shrinks every setting (seconds, for smoke tests; the numbers mean
nothing) and writes RESULTS.md only when ``--results`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from common import machine_info, machine_line, now_iso, resolve_device, run_script, torch_threads, write_json

from mmldm.config import atomic_write_text

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("generator_presets", "train_step", "autoencoder", "sampling", "mfu", "dataloader", "latent_cache")


def plan(device: str, quick: bool) -> dict[str, dict[str, Any]]:
    """Settings (``run`` keyword arguments) of each benchmark for ``device`` and ``quick``."""
    if quick:
        return {
            "generator_presets": dict(time=("tiny",), batch=1, repeats=1, dtypes=("fp32", "bf16"),
                                      count=("tiny", "S")),
            "train_step": dict(cases=("vae:tiny", "autoencoder:tiny", "generator:tiny"),
                               batches={"vae:tiny": 1, "autoencoder:tiny": 1, "generator:tiny": 4},
                               precisions=("fp32", "bf16"), steps=1, warmup=0),
            "autoencoder": dict(batch_size=1, precisions=("fp32",), steps=1, warmup=0, ddim_steps=1),
            "sampling": dict(presets=("tiny",), steps=(2,), repeats=1, pipeline_presets=("tiny",),
                             pipeline_steps=(2,), decoder_steps=1),
            "mfu": dict(presets=("tiny",), forward_batch=1, train_batches={"tiny": 4}, repeats=1, steps=1,
                        matmul_size=256, matmul_repeats=2),
            "dataloader": dict(synth_clips=2, workers=(0,), batch_size=1, batches=1, size=32),
            "latent_cache": dict(clips=2, workers=(0,), size=32, batch_size=2, shard_size=2),
        }
    if device == "cuda":
        return {
            "generator_presets": dict(time=("tiny", "S", "B", "L"), batch=1, repeats=10, dtypes=("fp32", "bf16")),
            "train_step": dict(batches={"vae:tiny": 64, "autoencoder:tiny": 32, "generator:tiny": 256,
                                        "generator:S": 32}, steps=10, warmup=2),
            "autoencoder": dict(preset="paper", batch_size=8, steps=5, warmup=2, ddim_steps=50, recon_repeats=2),
            "sampling": dict(presets=("tiny", "S"), steps=(10, 25, 50), repeats=3, pipeline_presets=("tiny", "S"),
                             pipeline_samplers=("ddim", "euler"), pipeline_steps=(25, 50)),
            "mfu": dict(presets=("tiny", "S"), forward_batch=1, train_batches={"tiny": 256, "S": 32},
                        matmul_size=8192, matmul_repeats=20),
            "dataloader": dict(synth_clips=48, workers=(0, 2, 4), batch_size=8, batches=5),
            "latent_cache": dict(clips=24, workers=(0, 2)),
        }
    return {
        "generator_presets": dict(time=("tiny", "S"), batch=1, repeats=3, dtypes=("fp32", "bf16")),
        "train_step": dict(batches={"vae:tiny": 2, "autoencoder:tiny": 2, "generator:tiny": 32, "generator:S": 2},
                           steps=3, warmup=1),
        "autoencoder": dict(batch_size=2, steps=2, warmup=1, ddim_steps=50, recon_repeats=1),
        "sampling": dict(presets=("tiny", "S"), steps=(10, 25, 50), preset_steps={"S": (10, 25)}, repeats=2,
                         pipeline_presets=("tiny",), pipeline_samplers=("ddim",), pipeline_steps=(25,)),
        "mfu": dict(presets=("tiny", "S"), forward_batch=1, train_batches={"tiny": 32, "S": 2},
                    matmul_size=2048, matmul_repeats=5),
        "dataloader": dict(synth_clips=24, workers=(0, 2), batch_size=8, batches=2),
        "latent_cache": dict(clips=16, workers=(0,), batch_size=8),
    }


def results_markdown(run: dict[str, Any], sections: dict[str, str]) -> str:
    """RESULTS.md: how the numbers were made, then each benchmark's tables."""
    machine = run["machine"]
    lines = ["# Benchmark results", "",
             f"- date: {run['date']} (total {run['seconds']:.0f} s)",
             f"- machine: {machine_line(machine)}",
             f"- platform: {machine['platform']}, Python {machine['python']}",
             f"- command: `{run['command']}` (settings of every benchmark in the JSON record {run['json']})",
             "- random weights everywhere: the numbers measure speed, never quality", ""]
    for name, text in sections.items():
        lines += [f"## {name}", "", text, ""]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as RESULTS.md shows it)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (numbers meaningless)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON record (default: benchmarks/results/DATE-DEVICE[-quick].json)")
    parser.add_argument("--results", type=Path, default=None,
                        help="markdown summary (default: benchmarks/RESULTS.md; none for --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    out = args.out or HERE / "results" / f"{date}-{args.device}{'-quick' if args.quick else ''}.json"
    results_md = args.results or (None if args.quick else HERE / "RESULTS.md")
    settings = plan(args.device, args.quick)
    start = time.perf_counter()
    with torch_threads(args.threads):
        run: dict[str, Any] = {"date": now_iso(), "device": args.device, "quick": args.quick,
                               "command": shlex.join(["python", "benchmarks/run_all.py", *sys.argv[1:]]),
                               "machine": machine_info(device), "json": _shown(out), "seconds": 0.0,
                               "benchmarks": {}}
        sections: dict[str, str] = {}
        for name in args.only:
            print(f"\n=== {name}", flush=True)
            module = importlib.import_module(name)
            kwargs = dict(settings[name])
            if name != "dataloader":  # decoding runs on the CPU whatever the device
                kwargs["device"] = args.device
            if name == "mfu":  # reuse the timings measured above instead of timing them again
                done = run["benchmarks"]
                kwargs["forward_rows"] = done.get("generator_presets", {}).get("tables", {}).get("forward")
                kwargs["train_rows"] = done.get("train_step", {}).get("tables", {}).get("steps")
            began = time.perf_counter()
            result = module.run(**kwargs)
            result["seconds"] = time.perf_counter() - began
            run["benchmarks"][name] = result
            sections[name] = module.markdown(result)
            print(sections[name], flush=True)
            run["seconds"] = time.perf_counter() - start
            write_json(out, run)
    print(f"\nall benchmarks: {run['seconds']:.0f} s; wrote {out}")
    if results_md is not None:
        atomic_write_text(results_md, results_markdown(run, sections))
        print(f"wrote {results_md}")
    elif args.quick:
        print("quick run: no RESULTS.md written (give --results to write one)")


if __name__ == "__main__":
    run_script(main)
