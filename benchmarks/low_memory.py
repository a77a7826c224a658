"""Peak memory of one sample at the paper's scale, with and without ``mmldm generate --low-memory``.

The paper's Landscape models are built with random weights as ``benchmarks/paper_cost.py`` builds
them (``configs/paper/landscape/*.yaml``: AVDiT-XL, the autoencoder whose signal decoder is the
Stable Diffusion v1 UNet, the SD v1 KL-VAE; 16 frames of 256x256 at 10 fps, 44.1 kHz audio with
the ``paper-44k`` audio preset, Griffin-Lim), assembled into a model folder
(``SoundingVideoPipeline.assemble(...).save_pretrained``) in a temporary folder, and
``mmldm generate --model FOLDER --task svg --n 1`` runs once per mode, each in a fresh process
whose peak resident set (``os.wait4``'s ``ru_maxrss``: the process and nothing else) is the
figure. The step counts only change the time: every step runs the same networks on the same
batch, so ``--steps 2 --decoder-steps 2`` (the default here) peak as high as the paper's 50 and 50.

Modes (``--modes``): ``fp32`` (``--precision fp32``), ``bf16`` (``--precision bf16``: float32 weights, every network
resident, bf16 autocast: what the paper configuration peaked at before), ``low-memory``
(``--low-memory``: one stage's weights at a time, read from the model folder when it runs, bf16
where the CPU multiplies it natively).

    python benchmarks/low_memory.py --out benchmarks/results/DATE-low-memory.json
    python benchmarks/low_memory.py --model-dir /tmp/paper-model --modes low-memory   # keep / reuse the folder
    python benchmarks/low_memory.py --scale tiny                                      # seconds, for a check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, markdown_table, note, record, run_script
from paper_cost import SCALES, model_configs

from mmldm.errors import ConfigError

#: the issue's target for one sample on a CPU with --low-memory
TARGET_GIB = 4.0

#: mode -> the flags of ``mmldm generate`` it adds
MODES: dict[str, list[str]] = {"fp32": ["--precision", "fp32"], "bf16": ["--precision", "bf16"],
                               "low-memory": ["--low-memory"]}


def build_model_folder(scale: str, directory: Path) -> Path:
    """A random-weight model folder of ``scale`` (the configs of :func:`paper_cost.model_configs`)."""
    from mmldm.autoencoder.model import HierarchicalAVAutoencoder
    from mmldm.data.audio_image import AudioConfig
    from mmldm.generator.dit import AVDiT
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.vae.kl_vae import KLVAE

    configs = model_configs(scale)
    torch.manual_seed(0)
    ae_cfg = configs.autoencoder.model
    fps = configs.autoencoder.data.fps
    audio_cfg = dataclasses.replace(AudioConfig.for_sample_rate(configs.autoencoder.data.sample_rate),
                                    clip_seconds=ae_cfg.num_frames / fps)
    pipe = SoundingVideoPipeline.assemble(
        vae=KLVAE.from_preset(configs.vae.model.preset, chunk_size=configs.vae.model.chunk_size),
        autoencoder=HierarchicalAVAutoencoder(ae_cfg), generator=AVDiT(configs.generator.model.dit_config()),
        objective=configs.generator.diffusion, audio_cfg=audio_cfg)
    return pipe.save_pretrained(directory)


def measure(model_dir: Path, mode: str, steps: int, decoder_steps: int, threads: int, out: Path) -> dict[str, Any]:
    """One ``mmldm generate`` in a fresh process: its peak RSS, wall time and what it recorded."""
    command = [sys.executable, "-m", "mmldm", "generate", "--model", str(model_dir), "--task", "svg", "--n", "1",
               "--steps", str(steps), "--decoder-steps", str(decoder_steps), "--out", str(out), "--no-preview",
               "--quiet", *MODES[mode]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"mmldm generate ({mode}) failed with status {proc.returncode}:\n{output[-3000:]}")
    settings = json.loads((out / "settings.json").read_text())
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux
    return {"mode": mode, "flags": " ".join(MODES[mode]) or "(none)", "peak_gib": peak / 2**30,
            "wall_s": seconds, "dtype": settings.get("dtype"), "low_memory": settings.get("low_memory"),
            "weights": settings.get("low_memory_weights") or "float32",
            "warnings": [line for line in output.splitlines() if "warning" in line],
            "command": " ".join(["mmldm", *command[3:]])}


def run(scale: str, modes: list[str], steps: int, decoder_steps: int, threads: int,
        model_dir: Path | None) -> dict[str, Any]:
    notes: list[str] = []
    keep = model_dir is not None
    work = Path(tempfile.mkdtemp(prefix="mmldm-low-memory-"))
    try:
        folder = model_dir if keep else work / "model"
        if keep and (folder / "model_index.json").is_file():
            note(notes, f"reusing the model folder {folder}")
        else:
            # in a child process, so that building (every network in float32 at once) touches none of the
            # measured processes
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build-only", str(folder), "--scale", scale], check=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            note(notes, f"built the {scale} model folder with random weights in {time.perf_counter() - started:.0f} s")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows = []
        for mode in modes:
            row = measure(folder, mode, steps, decoder_steps, threads, work / f"out-{mode}")
            row["target"] = ("-" if mode != "low-memory" else
                             f"{'met' if row['peak_gib'] <= TARGET_GIB else 'missed'} (<= {TARGET_GIB:g} GiB)")
            rows.append(row)
            print(f"{mode}: peak {row['peak_gib']:.2f} GiB, {row['wall_s']:.0f} s", flush=True)
            for line in row["warnings"]:
                note(notes, f"{mode}: {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = {"scale": scale, "configs": {stage: path for stage, (path, _) in SCALES[scale].items()},
                "task": "svg", "n": 1, "steps": steps, "decoder_steps": decoder_steps, "threads": threads,
                "model_folder_gib": size / 2**30,
                "peak_memory": "os.wait4 ru_maxrss of the generate process (its own peak resident set)"}
    return record("low_memory", torch.device("cpu"), settings, {"peak": rows}, notes)


COLUMNS: list[Column] = [
    ("mode", "mode", ""), ("flags", "flags", ""), ("weights", "weights", ""), ("compute", "dtype", ""),
    ("peak RSS (GiB)", "peak_gib", ".2f"), ("wall (s)", "wall_s", ".0f"), ("target", "target", ""),
]


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"Peak memory of one {s['scale']}-scale sample (svg, n 1, {s['steps']} generator and "
             f"{s['decoder_steps']} decoder steps, {s['threads']} thread(s); model folder "
             f"{s['model_folder_gib']:.2f} GiB)")
    parts = [title, markdown_table(result["tables"]["peak"], COLUMNS)]
    if result.get("notes"):
        parts.append("\n".join(f"- note: {text}" for text in result["notes"]))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="paper", choices=list(SCALES))
    parser.add_argument("--modes", nargs="+", default=["bf16", "low-memory"], choices=list(MODES))
    parser.add_argument("--steps", type=int, default=2, help="generator steps (default 2)")
    parser.add_argument("--decoder-steps", type=int, default=2, help="signal decoder steps (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="build the model folder here and keep it (reused when it is there already)")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    if args.build_only is not None:
        build_model_folder(args.scale, args.build_only)
        return
    for name in ("steps", "decoder_steps", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    result = run(args.scale, args.modes, args.steps, args.decoder_steps, args.threads, args.model_dir)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
