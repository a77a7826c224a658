"""``mmldm train STAGE --config FILE [--set key=value ...] [--out DIR] [--resume auto|PATH] [--max-steps N]``.

The same command runs on one process or many: ``accelerate launch -m mmldm train ...``
or ``torchrun --nproc_per_node 8 -m mmldm train ...`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    from ..training.registry import stage_names

    train = sub.add_parser("train", help=COMMANDS["train"],
                           description="Train one MM-LDM stage with the shared training engine.")
    train.add_argument("stage", metavar="STAGE",
                       help=f"stage name ({', '.join(stage_names())}) or package.module:Class")
    train.add_argument("--config", type=Path, default=None,
                       help="YAML preset, e.g. configs/vae/tiny.yaml (default: built-in defaults)")
    train.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                       help="dotted override, e.g. --set model.depth=12 train.optim.lr=1e-4")
    train.add_argument("--out", type=Path, default=None, help="run folder (overrides train.out_dir)")
    train.add_argument("--resume", default=None, metavar="auto|PATH",
                       help="'auto': newest complete checkpoint in the run folder (fresh start if none); "
                            "or a checkpoint folder, or another run folder (its newest checkpoint)")
    train.add_argument("--max-steps", type=int, default=None, help="overrides train.max_steps")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from ..config import from_dict, load_config, merge, to_dict
    from ..training.engine import Trainer
    from ..training.registry import get_stage

    stage_cls = get_stage(args.stage)
    overrides = [item for group in args.overrides for item in group]
    cfg = load_config(stage_cls.config_cls, args.config, overrides)
    command_line: dict = {}
    if args.out is not None:
        command_line["out_dir"] = str(args.out)
    if args.max_steps is not None:
        command_line["max_steps"] = args.max_steps
    if command_line:
        cfg = from_dict(stage_cls.config_cls, merge(to_dict(cfg), {"train": command_line}))
    Trainer(stage_cls(), cfg, resume=args.resume).fit()
    return 0
