"""Sync quality of a Sounding Shapes model under sampling settings, on seeds of your choosing.

    python benchmarks/sync_quality.py                                     # svg, 32 samples, seeds 1000-1031
    python benchmarks/sync_quality.py --task long --samples 16 --seed 100 \\
        --variants defaults guidance=1 guidance=3 --out long-guidance.json
    python benchmarks/sync_quality.py --variants candidates=1 steps=24,decoder_steps=25
    python benchmarks/sync_quality.py --samples 64 --variants defaults critics=sync     # the sync critic on svg
    python benchmarks/sync_quality.py --model runs/recipe/model
    python benchmarks/sync_quality.py --samples 64 --precision fp32 bf16    # bf16 autocast against float32
    python benchmarks/sync_quality.py --samples 64 --precision auto --compile both   # torch.compile against eager

For each variant (``defaults``, or comma-joined ``key=value`` pairs of
:meth:`mmldm.pipeline.SoundingVideoPipeline.generate` settings: steps, sampler, guidance,
decoder_steps, candidates, frame_decoder, critics joined by ``+``, e.g. ``critics=sync+generator``) it generates the samples through the pipeline, as
``mmldm generate`` does, and measures them with the Sounding Shapes law (the model must be
trained on Sounding Shapes, like the built-in one). svg: per clip sync error, class
agreement and one-object frames. long: every 1.6 s clip of each video (the issue's long
bound), the median per clip position, and the seam test. Every variant uses the same seeds.

The built-in model's evaluation (``mmldm recipe sounding-shapes --only evaluate``) uses
seeds 0-63 (svg) and 0-15 (long); this script's defaults (1000+, 100+) are other inputs, so
that settings are chosen on samples the evaluation never sees. A quality measure, not a
speed one (the wall time is printed for planning).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, finish, record, render, run_script, torch_threads

from mmldm.errors import ConfigError, check_positive_int

TASKS = ("svg", "long")
#: --compile: which pipelines each precision samples with (eager, compiled)
COMPILE = {"no": (False,), "yes": (True,), "both": (False, True)}


def critic_names(text: str) -> tuple[str, ...]:
    """``"sync+generator"`` -> ``("sync", "generator")``."""
    return tuple(text.split("+"))


#: generate() settings a variant may set, and how their values are read
SETTINGS = {"steps": int, "sampler": str, "guidance": float, "decoder_steps": int, "candidates": int,
            "frame_decoder": str, "critics": critic_names}
DEFAULT_SEED = {"svg": 1000, "long": 100}
COLUMNS: list[Column] = [
    ("variant", "variant", ""), ("clips", "clips", ""), ("median sync error (st)", "median", ".2f"),
    ("within 1 st", "within_1", ""), ("within 1 st %", "within_1_pct", ".1f"), ("worst (st)", "worst", ".2f"),
    ("class agreement %", "class_agreement_pct", ".1f"), ("one-object frames %", "one_object_pct", ".1f"),
    ("median per clip position", "median_per_position", ""), ("seam / inside jump", "jumps", ""),
    ("wall s", "wall_s", ".0f"),
]
#: per task, the columns only the other task has
OTHER_TASK_COLUMNS = {"svg": ("median_per_position", "jumps"), "long": ("class_agreement_pct", "one_object_pct")}


def parse_variant(text: str) -> dict[str, Any]:
    """``"defaults"`` -> ``{}``; ``"guidance=3,candidates=1"`` -> ``{"guidance": 3.0, "candidates": 1}``."""
    if text == "defaults":
        return {}
    settings: dict[str, Any] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or key not in SETTINGS:
            raise ConfigError(f"variant {text!r}: {pair!r} is not key=value with a key of {', '.join(SETTINGS)}")
        try:
            settings[key] = SETTINGS[key](value)
        except ValueError:
            raise ConfigError(f"variant {text!r}: {key} takes a {SETTINGS[key].__name__}, got {value!r}") from None
    return settings


def measure(task: str, out: Any, clip_frames: int) -> list[dict[str, Any]]:
    """The law's measures of each video of a :class:`~mmldm.pipeline.output.SoundingVideoOutput`:
    svg :func:`~mmldm.evaluation.shapes_measures.measure_clip`, long
    :func:`~mmldm.evaluation.long_video.long_clip_measures` (every clip-length window)."""
    from mmldm.evaluation.long_video import long_clip_measures
    from mmldm.evaluation.shapes_measures import measure_clip

    if task == "svg":
        return [measure_clip(f, w, out.sample_rate, out.fps) for f, w in zip(out.frames, out.waveforms)]
    return [long_clip_measures(f, w, out.fps, out.sample_rate, clip_frames) for f, w in zip(out.frames, out.waveforms)]


def summarise(task: str, videos: list[dict[str, Any]]) -> dict[str, Any]:
    """A table row from :func:`measure`'s items, summed up as the evaluation does (svg
    :func:`~mmldm.evaluation.shapes_measures.aggregate`, long :func:`~mmldm.evaluation.long_video.long_summary`),
    with the count within 1 semitone and the worst clip (long: every window of every video; an
    infinite error is a clip whose object vanished)."""
    from mmldm.evaluation.long_video import long_summary
    from mmldm.evaluation.shapes_measures import aggregate

    if task == "svg":
        summary = aggregate(videos)
        errors = np.array([v["sync_error"] for v in videos])
        extra = {key: summary[key] for key in ("class_agreement_pct", "one_object_pct")}
    else:
        summary = long_summary(videos)
        errors = np.array([e for v in videos for e in v["sync_error_per_window"]])
        extra = {"median_per_position": [round(m, 2) for m in summary["sync_error_median_per_position"]],
                 "jumps": f"{summary['seam_jump_max']:.3f} / {summary['inside_jump_max']:.3f}"}
    within = int(np.sum(errors <= 1.0))
    return {"clips": len(errors), "median": summary["sync_error_median"], "within_1": f"{within} of {len(errors)}",
            "within_1_pct": 100.0 * within / len(errors), "worst": float(errors.max()),
            "sync_errors": errors.tolist(), **extra}


def run(model: Path | None = None, task: str = "svg", samples: int = 32, seed: int | None = None,
        variants: tuple[str, ...] = ("defaults",), seconds: float = 6.4, batch: int = 8,
        threads: int | None = None, precisions: tuple[str, ...] = ("fp32",), compile: str = "no"
        ) -> dict[str, Any]:
    from mmldm.pipeline import SoundingVideoPipeline

    if task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    check_positive_int(samples, "--samples")
    check_positive_int(batch, "--batch")
    parsed = [(name, parse_variant(name)) for name in variants]
    if compile not in COMPILE:
        raise ConfigError(f"--compile must be one of {', '.join(COMPILE)}, got {compile!r}")
    seed = DEFAULT_SEED[task] if seed is None else seed
    extra = {"seconds": seconds} if task == "long" else {}
    rows = []
    with torch_threads(threads):
        for precision, compiled in [(p, c) for p in precisions for c in COMPILE[compile]]:
            pipe = SoundingVideoPipeline.from_pretrained(model, dtype=precision)
            if compiled:
                pipe.compile()
            for variant, settings in parsed:
                name = variant if precisions == ("fp32",) else f"{variant}, {precision} ({pipe.dtype or 'float32'})"
                name += ", compiled" if compiled else ""
                start, videos = time.perf_counter(), []
                for first in range(0, samples, batch):
                    out = pipe.generate(task, n=min(batch, samples - first), seed=seed + first, progress=False,
                                        **settings, **extra)
                    videos += measure(task, out, pipe.num_frames)
                row = {"variant": name, **summarise(task, videos), "wall_s": time.perf_counter() - start}
                rows.append(row)
                print(f"{name}: median {row['median']:.2f}, {row['within_1']} within 1 semitone, "
                      f"worst {row['worst']:.2f} ({row['wall_s']:.0f} s)", flush=True)
    run_settings = {"model": str(model) if model else "built-in", "task": task, "samples": samples, "seed": seed,
                    "seconds": seconds if task == "long" else None, "variants": list(variants), "batch": batch,
                    "threads": threads or torch.get_num_threads(), "precisions": list(precisions),
                    "compile": compile}
    return record("sync_quality", torch.device("cpu"), run_settings, {"variants": rows})


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    what = "svg clips" if s["task"] == "svg" else f"1.6 s clips of {s['seconds']:g} s long videos"
    title = (f"Sync of {what} from the {s['model']} model, measured with the Sounding Shapes law "
             f"({s['samples']} samples, seeds {s['seed']}-{s['seed'] + s['samples'] - 1})")
    columns = [c for c in COLUMNS if c[1] not in OTHER_TASK_COLUMNS[s["task"]]]
    return render(result, [(title, "variants", columns)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--task", choices=TASKS, default="svg", help="svg clips, or long videos (every clip measured)")
    parser.add_argument("--samples", type=int, default=32, help="clips (svg) or videos (long) per variant (default 32)")
    parser.add_argument("--seed", type=int, default=None,
                        help="sample i uses seed + i (default 1000 for svg, 100 for long: not the evaluation's)")
    parser.add_argument("--seconds", type=float, default=6.4, help="long: seconds per video (default 6.4)")
    parser.add_argument("--variants", nargs="+", default=["defaults"],
                        help="'defaults' or key=value[,key=value] with keys " + ", ".join(SETTINGS))
    parser.add_argument("--batch", type=int, default=8, help="samples per generate call (default 8)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16", "auto"),
                        help="compute precision(s) to sample in (mmldm generate --precision; default fp32)")
    parser.add_argument("--compile", choices=tuple(COMPILE), default="no",
                        help="sample with the pipeline compiled (SoundingVideoPipeline.compile): no (default), "
                             "yes, or both (each row eager, then compiled)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.model, args.task, args.samples, args.seed, tuple(args.variants), args.seconds, args.batch,
                 args.threads, tuple(args.precision), args.compile)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
