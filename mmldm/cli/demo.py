"""``mmldm demo``: the README's main job.

Generates ``--n`` sounding videos (joint audio-video generation) with the
built-in model (``docs/default-model.md``: a small MM-LDM trained on Sounding
Shapes, shipped with the package), writes them as mp4 (H.264 + AAC) with a wav
and a PNG preview each, prints where they are, and scores each with the
dataset's exact measures (sync error in semitones, class agreement), so the
first run also shows how good the model is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help=COMMANDS["demo"])
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    demo.add_argument("--n", type=int, default=4, help="number of videos (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.sounding_shapes import CLASSES
    from ..errors import ConfigError
    from ..evaluation.shapes_measures import measure_clip
    from ..pipeline import SoundingVideoPipeline

    if args.n <= 0:
        raise ConfigError(f"--n must be positive, got {args.n}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; give a folder for the videos")
    which = "the built-in model" if args.model is None else str(args.model)
    print(f"generating {args.n} sounding video(s) with {which} ...", flush=True)
    pipe = SoundingVideoPipeline.from_pretrained(args.model)
    output = pipe.generate(task="svg", n=args.n, seed=args.seed, progress=False)
    videos = output.save(args.out, prefix="demo")
    print(f"{len(videos)} sounding videos ({output.frames.shape[1] / output.fps:.1f} s, {output.fps:g} fps, "
          f"{output.sample_rate} Hz) in {args.out}:")
    for path, frames, audio in zip(videos, output.frames, output.waveforms):
        m = measure_clip(frames, audio.numpy(), output.sample_rate, output.fps)
        shape = CLASSES[m["colour_class"]].shape if 0 <= m["colour_class"] < len(CLASSES) else "no object"
        tone = CLASSES[m["audio_class"]].tone if 0 <= m["audio_class"] < len(CLASSES) else "no tone"
        print(f"  {path}  (sync error {m['sync_error']:.2f} semitones; a {shape} on screen, a {tone} tone)")
    print(f"settings: {args.out / 'settings.json'}")
    return 0
