"""``mmldm data synth`` and ``mmldm data inspect``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help=COMMANDS["data"])
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    synth = dsub.add_parser("synth", help="write a Sounding Shapes dataset (mp4 clips + manifest)")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--n", type=int, default=64, help="number of clips")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame size in pixels (square)")
    synth.add_argument("--sample-rate", type=int, default=16000)
    synth.add_argument("--num-frames", type=int, default=16,
                       help="frames per clip at 10 fps (the spec's clip is 16; longer clips train continuation)")
    synth.set_defaults(func=_synth)

    inspect = dsub.add_parser("inspect", help="print streams of media files and write contact sheets")
    inspect.add_argument("files", nargs="+", type=Path)
    inspect.add_argument("--sheet-dir", type=Path, default=None,
                         help="where contact sheets go (default: beside each file)")
    inspect.add_argument("--no-sheet", action="store_true", help="only print stream information")
    inspect.set_defaults(func=_inspect)

    data.set_defaults(func=lambda args: data.print_help())


def _synth(args: argparse.Namespace) -> int:
    from ..data.sounding_shapes import ShapesConfig, write_dataset

    cfg = ShapesConfig(size=args.size, sample_rate=args.sample_rate, num_frames=args.num_frames)
    manifest = write_dataset(args.out, n=args.n, seed=args.seed, cfg=cfg, progress=True)
    print(f"wrote {args.n} clips to {args.out} (manifest: {manifest})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..data.inspect import inspect_file

    failed = 0
    for path in args.files:
        try:
            report = inspect_file(path, sheet_dir=args.sheet_dir, sheet=not args.no_sheet)
        except Exception as exc:  # one line per bad file, keep going with the others
            from ..errors import MMLDMError

            if not isinstance(exc, (MMLDMError, OSError)):
                raise
            print(f"mmldm: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(report)
    return 2 if failed else 0
