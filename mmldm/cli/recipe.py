"""``mmldm recipe NAME --out DIR [--scale default|smoke] [--only STEP ...]``: a shipped model, end to end.

The recipes live in :mod:`mmldm.recipes` (``sounding-shapes``: the built-in model; ``bbb``:
the real-data model of Big Buck Bunny; ``videos``: the same steps on your own videos, ``--source``);
each step is skipped when its output exists, so an
interrupted recipe resumes by running the same command again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .commands import COMMANDS

#: the recipes and their modules under mmldm.recipes (imported when one runs)
RECIPES = {"sounding-shapes": "sounding_shapes", "bbb": "real_video", "videos": "own_videos"}
#: the recipes that learn from the videos of --source
FROM_SOURCES = ("videos",)
#: training steps whose length ``--STEP-steps`` overrides (scale fields ``STEP_steps``)
TRAINED_STEPS = ("vae", "autoencoder", "generator")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("recipe", help=COMMANDS["recipe"],
                            description="Run a training recipe; each step is skipped when its output exists.")
    parser.add_argument("recipe", choices=list(RECIPES), help="sounding-shapes: the built-in model; bbb: the "
                        "real-data model of Big Buck Bunny (needs `make assets`); videos: the bbb recipe on your "
                        "own sounding videos (--source)")
    parser.add_argument("--source", type=Path, nargs="+", default=None, metavar="PATH",
                        help="recipe videos: video files or folders of them (the last 20 %% of each is held out)")
    parser.add_argument("--out", type=Path, required=True, help="working folder (data, runs, model, evaluation)")
    parser.add_argument("--scale", choices=["default", "smoke"], default="default",
                        help="default: the shipped model; smoke: a micro run checking the chain")
    parser.add_argument("--only", nargs="+", default=None, metavar="STEP",
                        help="run only these steps (the recipe's module lists them); their inputs must exist")
    for step in TRAINED_STEPS:
        parser.add_argument(f"--{step.replace('_', '-')}-steps", type=int, default=None,
                            help=f"override the scale's {step} steps")
    parser.add_argument("--eval-clips", type=int, default=None, help="override the scale's evaluation clips")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is fastest on a CPU shared with other jobs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import importlib

    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.source is not None and args.recipe not in FROM_SOURCES:  # a recipe of sources says when it has none
        raise ConfigError(f"recipe {args.recipe}: --source is for recipe videos; this recipe has its own data")
    module = importlib.import_module(f"mmldm.recipes.{RECIPES[args.recipe]}")
    overrides = {f"{step}_steps": getattr(args, f"{step}_steps") for step in TRAINED_STEPS}
    overrides["eval_clips"] = args.eval_clips
    scale = dataclasses.replace(module.SCALES[args.scale], **{k: v for k, v in overrides.items() if v is not None})
    for name, value in dataclasses.asdict(scale).items():
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ConfigError(f"recipe: {name} must be >= 1, got {value}")
    sources = {"sources": args.source} if args.source is not None else {}
    module.RECIPE(args.out, scale, progress=not args.quiet, **sources).run(args.only)
    return 0
