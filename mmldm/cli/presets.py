"""``mmldm presets``: parameter counts and FLOPs of the generator (AVDiT) presets."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "presets", help=COMMANDS["presets"],
        description="Counts are taken on the meta device (no memory) for one forward at batch 1 at the "
                    "paper's latent sizes (tiny: its own small sizes). 'linear GMACs' are the multiply-adds "
                    "of the linear layers, which is the convention of the paper's GFLOPs column; "
                    "'total GFLOPs' counts every operation with a multiply-add as 2 FLOPs.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("names", nargs="*", metavar="PRESET", help="presets to show (default: all)")
    parser.set_defaults(func=_presets)


def _presets(args: argparse.Namespace) -> int:
    from ..generator.complexity import markdown_table, preset_complexities

    rows = preset_complexities(args.names or None)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        print(markdown_table(rows))
    return 0
