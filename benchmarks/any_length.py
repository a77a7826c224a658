"""Any-length a2v, v2a and continuations on Sounding Shapes: is every generated clip in sync?

    python benchmarks/any_length.py                                   # 16 inputs of 6.4 s and 5.6 s, a2v and v2a
    python benchmarks/any_length.py --inputs 4 --seconds 6.4 --tasks a2v --out a2v.json
    python benchmarks/any_length.py --tasks audio-continuation video-continuation

Inputs are held-out Sounding Shapes clips (dataset seed ``--data-seed``, never a training
seed of the recipe: it trains on dataset seed 0) of each length in ``--seconds``; a length
that is not a whole number of 1.6 s clips (5.6 s = 3.5 clips) checks the clip whose window
overlaps the one before (it fills only the frames after that clip's).
Each input is given whole to ``generate(task="a2v", audio=...)`` (its waveform) or
``generate(task="v2a", video=...)`` (its frames) with the model's default settings, which
generates one clip per clip of it, each conditioned on its window and on the clip before.
The output keeps the given modality; the Sounding Shapes law measures the sync error
(semitones) of every clip position ``k`` (the output frames clip ``k`` fills, with their audio),
so a clip that drifts from the given modality shows at its position. The continuations get
the same inputs and go on for one clip (the model's default ``continue_seconds``): their clip
positions are those the pipeline generated (windows aligned to the span's end; the second
fills less than a clip when the span is not a whole number of clips), and the last position is
the new clip, whose sound and video are both generated; for audio-continuation the largest
audio step at the end of the given audio (where the vocoded sound takes over, within 2 samples)
is set beside the largest step elsewhere (a click would stand far above it). A quality measure, not a speed one
(the wall time is printed for planning).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, finish, record, render, run_script, torch_threads

from mmldm.errors import ConfigError, check_positive_int
from mmldm.generator.tasks import window_starts

TASKS = ("a2v", "v2a", "audio-continuation", "video-continuation")
COLUMNS: list[Column] = [
    ("task", "task", ""), ("input s", "seconds", ".1f"), ("inputs", "inputs", ""), ("clip position", "position", ""),
    ("frames in clip", "frames", ""), ("median sync error (st)", "median", ".2f"), ("worst (st)", "worst", ".2f"),
    ("within 1 st", "within_1", ""), ("given kept exactly", "exact", ""),
    ("audio step at the span's end / elsewhere (max)", "seam", ""),
]


def held_out_inputs(count: int, seconds: float, data_seed: int) -> list[Any]:
    """``count`` Sounding Shapes clips of ``seconds`` (:class:`~mmldm.data.sounding_shapes.SynthClip`)."""
    from mmldm.data.sounding_shapes import ShapesConfig, clip_seed, synth_clip

    cfg = ShapesConfig(num_frames=round(seconds * ShapesConfig().fps))
    return [synth_clip(cfg, clip_seed(data_seed, index), class_id=index % 3) for index in range(count)]


def position_bounds(span: int, following: int, clip_frames: int, at_end: bool) -> list[tuple[int, int]]:
    """The output frames ``[begin, end)`` each generated clip fills: the span's windows
    (:func:`mmldm.generator.tasks.window_starts`; where two overlap the earlier clip keeps the
    overlap), then ``following`` frames of new clips (continuations)."""
    starts = window_starts(span, clip_frames, at_end)
    starts += [span + k * clip_frames for k in range(math.ceil(following / clip_frames))]
    total = span + following
    ends = [min(start + clip_frames, total) for start in starts]
    return [(max(start, 0, ends[k - 1] if k else 0), end) for k, (start, end) in enumerate(zip(starts, ends))]


def position_errors(frames: Any, audio: Any, fps: float, sample_rate: int,
                    bounds: list[tuple[int, int]]) -> list[float]:
    """The sync error of each clip position ``[begin, end)`` of one video."""
    from mmldm.evaluation.shapes_measures import sync_error

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    per_frame = round(sample_rate / fps)
    return [sync_error(frames[begin:end], audio[begin * per_frame:end * per_frame], sample_rate, fps)
            for begin, end in bounds]


def run(model: Path | None = None, inputs: int = 16, seconds: tuple[float, ...] = (6.4, 5.6),
        tasks: tuple[str, ...] = TASKS[:2], data_seed: int = 777, threads: int | None = None,
        candidates: int | None = None) -> dict[str, Any]:
    from mmldm.evaluation.long_video import seam_jumps
    from mmldm.pipeline import SoundingVideoPipeline

    check_positive_int(inputs, "--inputs")
    overrides = {} if candidates is None else {"candidates": check_positive_int(candidates, "--candidates")}
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"--tasks: {task!r} is not one of {', '.join(TASKS)}")
    rows, wall = [], {}
    with torch_threads(threads):
        pipe = SoundingVideoPipeline.from_pretrained(model)
        for length in seconds:
            clips = held_out_inputs(inputs, length, data_seed)
            for task in tasks:
                start, errors, exact, seams = time.perf_counter(), [], True, []
                given_frames = len(clips[0].frames)
                continues = task.endswith("continuation")
                total = given_frames + (pipe.num_frames if continues else 0)
                bounds = position_bounds(given_frames, total - given_frames, pipe.num_frames, continues)
                for index, clip in enumerate(clips):
                    given = ({"audio": torch.from_numpy(clip.audio.astype(np.float32))} if task.startswith("a")
                             else {"video": torch.from_numpy(clip.frames)})
                    out = pipe.generate(task, n=1, seed=index, progress=False, **given, **overrides)
                    frames, wave = out.frames[0], out.waveforms[0]
                    exact &= len(frames) == total and len(wave) == total * len(clip.audio) // given_frames
                    if "audio" in given:
                        exact &= torch.equal(wave[: len(given["audio"])], given["audio"])
                        if continues:
                            seams.append(seam_jumps(wave, [len(given["audio"])], radius=2))
                    else:
                        expected = given["video"].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                        exact &= torch.equal(frames[:given_frames], expected)
                    errors.append(position_errors(frames, wave, pipe.fps, out.sample_rate, bounds))
                wall[f"{task} {length:g} s"] = time.perf_counter() - start
                table = np.asarray(errors)  # [inputs, positions]
                for position, (begin, end) in enumerate(bounds):
                    column = table[:, position]
                    new = continues and position == len(bounds) - 1
                    rows.append({"task": task, "seconds": length, "inputs": len(clips),
                                 "position": f"{position + 1} (new)" if new else position + 1, "frames": end - begin,
                                 "median": float(np.median(column)), "worst": float(column.max()),
                                 "within_1": f"{int(np.sum(column <= 1.0))} of {len(column)}",
                                 "exact": "yes" if exact else "no", "errors": column.tolist(),
                                 "seam": (f"{max(a for a, _ in seams):.3f} / {max(b for _, b in seams):.3f}"
                                          if new and seams else "")})
                print(f"{task} {length:g} s: per position median "
                      f"{', '.join(f'{np.median(c):.2f}' for c in table.T)}; {int(np.sum(table <= 1.0))} of "
                      f"{table.size} clips within 1 ({wall[f'{task} {length:g} s']:.0f} s)", flush=True)
    settings = {"model": str(model) if model else "built-in", "inputs": inputs, "seconds": list(seconds),
                "tasks": list(tasks), "data_seed": data_seed, "sampling": "the model's defaults" + (f", {candidates} candidates" if overrides else ""),
                "threads": threads or torch.get_num_threads(), "wall_seconds": {k: round(v) for k, v in wall.items()}}
    return record("any_length", torch.device("cpu"), settings, {"positions": rows})


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"Any-length {' / '.join(s['tasks'])} of the {s['model']} model on held-out Sounding Shapes inputs "
             f"(dataset seed {s['data_seed']}), sync error of every generated clip position")
    rows = result["tables"]["positions"]
    everything = [e for row in rows for e in row["errors"]]
    return (render(result, [(title, "positions", COLUMNS)])
            + f"\n\nEvery clip: {sum(e <= 1.0 for e in everything)} of {len(everything)} within 1 semitone, "
              f"worst {max(everything):.2f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--inputs", type=int, default=16, help="inputs per length and task (default 16)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[6.4, 5.6], help="input lengths (default 6.4 5.6)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS[:2]),
                        help=f"some of {', '.join(TASKS)} (default: a2v v2a)")
    parser.add_argument("--data-seed", type=int, default=777, help="Sounding Shapes dataset seed of the inputs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--candidates", type=int, default=None,
                        help="latent candidates per output (default: the model's)")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.model, args.inputs, tuple(args.seconds), tuple(args.tasks), args.data_seed, args.threads,
                 args.candidates)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
