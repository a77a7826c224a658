"""Wall time of ``mmldm generate`` with the built-in model, model loading included (a fresh process).

    python benchmarks/builtin_model.py                       # svg --n 4 and the other tasks, 2 repeats
    python benchmarks/builtin_model.py --tasks svg --n 4 --repeats 3 --out builtin.json
    python benchmarks/builtin_model.py --model runs/recipe/model   # another model folder

Each run is the command a user types (``mmldm generate --task T --n N --out DIR --quiet``)
in a new process, timed from start to exit: interpreter start, imports, model loading,
sampling, decoding, vocoding and writing the mp4/wav/png files (the CLI's defaults:
``--device auto --precision auto``). A second table times the same call with the model
already loaded: ``SoundingVideoPipeline.from_pretrained(model, dtype="auto")`` once, one
warm-up call, then the median of ``--repeats`` calls of ``generate(task, n=N)`` (sampling,
decoding, vocoding; no files); with ``--compile`` the same again after
``SoundingVideoPipeline.compile()`` (``mmldm serve --compile``), the compilation in the warm-up
call and timed apart (``compile_s``). The issue's bound is
svg with ``--n 4`` in at most 60 s on a 2-core CPU. Inputs of a2v / v2a / continuation
are Sounding Shapes clips made here. Prints a table and writes the record as JSON with --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, record, render, run_script, torch_threads

from mmldm.errors import ConfigError

COLUMNS: list[Column] = [
    ("task", "task", ""), ("videos", "n", ""), ("seconds of video", "video_seconds", ".1f"),
    ("wall s (median)", "wall_s_median", ".1f"), ("wall s (min)", "wall_s_min", ".1f"),
    ("s per video", "s_per_video", ".1f"), ("runs", "repeats", ""),
]
LOADED_COLUMNS: list[Column] = [*COLUMNS[:4], ("s per video", "s_per_video", ".2f"), ("runs", "repeats", ""),
                                ("compiled", "compiled", ""), ("warm-up s (compiles)", "compile_s", ".1f")]
LONG_SECONDS = 6.4
#: the task's input arguments; {clip} is a Sounding Shapes clip made by the benchmark
TASK_INPUTS = {"svg": [], "a2v": ["--audio", "{clip}"], "v2a": ["--video", "{clip}"],
               "long": ["--seconds", str(LONG_SECONDS)]}


def _command(task: str, n: int, out: Path, model: Path | None, clip: Path) -> list[str]:
    argv = [sys.executable, "-m", "mmldm", "generate", "--task", task, "--n", str(n), "--out", str(out), "--quiet"]
    if model is not None:
        argv += ["--model", str(model)]
    return argv + [arg.format(clip=clip) for arg in TASK_INPUTS[task]]


def run(tasks: tuple[str, ...] = ("svg", "a2v", "v2a", "long"), n: int = 4, repeats: int = 2,
        model: Path | None = None, threads: int | None = None, compile: bool = False) -> dict[str, Any]:
    """Median and minimum wall time of ``mmldm generate`` per task (fresh process each run)."""
    unknown = set(tasks) - set(TASK_INPUTS)
    if unknown:
        raise ConfigError(f"unknown task(s) {sorted(unknown)}; choose from {sorted(TASK_INPUTS)}")
    if n < 1 or repeats < 1:
        raise ConfigError("--n and --repeats must be >= 1")
    settings = {"tasks": list(tasks), "n": n, "repeats": repeats, "model": str(model) if model else "built-in",
                "threads": threads or torch.get_num_threads(), "compile": compile}
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        from mmldm.data.sounding_shapes import write_dataset

        write_dataset(Path(scratch) / "inputs", n=1, seed=0)
        clip = sorted((Path(scratch) / "inputs").rglob("*.mp4"))[0]
        for task in tasks:
            times = []
            for i in range(repeats):
                out = Path(scratch) / f"{task}-{i}"
                start = time.perf_counter()
                done = subprocess.run(_command(task, n, out, model, clip), env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                if done.returncode:
                    raise ConfigError(f"benchmark: mmldm generate --task {task} failed: "
                                      f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
                videos = sorted(out.glob("*.mp4"))
                if len(videos) != n:
                    raise ConfigError(f"benchmark: mmldm generate --task {task} wrote {len(videos)} mp4, not {n}")
            rows.append({"task": task, "n": n, "video_seconds": LONG_SECONDS if task == "long" else 1.6,
                         "wall_s_median": statistics.median(times), "wall_s_min": min(times),
                         "s_per_video": statistics.median(times) / n, "repeats": repeats})
        loaded = _loaded(tasks, n, repeats, model, clip, threads, compile=False)
        if compile:
            loaded += _loaded(tasks, n, repeats, model, clip, threads, compile=True)
    return record("builtin_model", torch.device("cpu"), settings, {"generate": rows, "loaded": loaded})


def _loaded(tasks: tuple[str, ...], n: int, repeats: int, model: Path | None, clip: Path,
            threads: int | None, compile: bool) -> list[dict[str, Any]]:
    """Wall time of ``generate`` with the model loaded (in this process), compiled or not."""
    from mmldm.pipeline import SoundingVideoPipeline

    inputs = {"svg": {}, "a2v": {"audio": clip}, "v2a": {"video": clip}, "long": {"seconds": LONG_SECONDS}}
    rows = []
    with torch_threads(threads):
        pipe = SoundingVideoPipeline.from_pretrained(model, dtype="auto")
        if compile:
            pipe.compile()
        for task in tasks:
            start = time.perf_counter()
            pipe.generate(task, n=n, progress=False, **inputs[task])  # warm-up (and compilation)
            warm_up = time.perf_counter() - start
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                pipe.generate(task, n=n, progress=False, **inputs[task])
                times.append(time.perf_counter() - start)
            rows.append({"task": task, "n": n, "video_seconds": LONG_SECONDS if task == "long" else 1.6,
                         "wall_s_median": statistics.median(times), "wall_s_min": min(times),
                         "s_per_video": statistics.median(times) / n, "repeats": repeats,
                         "dtype": str(pipe.dtype or torch.float32).replace("torch.", ""),
                         "compiled": "yes" if compile else "no", "compile_s": warm_up if compile else None})
    return rows


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"`mmldm generate --n {s['n']}` with the {s['model']} model, wall time in a fresh process "
             f"(model loading and file writing included; {s['threads']} threads)")
    loaded = f"The same with the model loaded (`generate(task, n={s['n']})`, median of {s['repeats']} after a warm-up)"
    return render(result, [(title, "generate", COLUMNS), (loaded, "loaded", LOADED_COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["svg", "a2v", "v2a", "long"], choices=sorted(TASK_INPUTS))
    parser.add_argument("--n", type=int, default=4, help="videos per command (default 4)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the generate processes")
    parser.add_argument("--compile", action="store_true",
                        help="time the loaded model compiled too (SoundingVideoPipeline.compile)")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(tuple(args.tasks), args.n, args.repeats, args.model, args.threads, compile=args.compile)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
