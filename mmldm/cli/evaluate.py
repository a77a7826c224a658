"""``mmldm evaluate``: FVD / KVD / FAD, AV-Align, the memorisation check (and Sounding Shapes
measures) of generated clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluation.protocol import PROTOCOLS

    p = sub.add_parser(
        "evaluate",
        help=COMMANDS["evaluate"],
        description="Score a folder of generated mp4 clips against a folder of reference videos. "
        "Feature-net weights are never downloaded: pass local files. Every protocol choice is "
        "printed and written to --out.",
    )
    p.add_argument("--generated", type=Path, required=True, help="folder of generated clips")
    p.add_argument("--reference", type=Path, required=True, help="folder of reference (training) videos")
    p.add_argument("--training", type=Path, default=None,
                   help="the training clips (a folder of videos, a manifest .jsonl, or a prepared folder: its "
                   "manifest.jsonl) for the memorisation check, which this adds: each generated clip's and each "
                   "reference clip's I3D distance to its nearest training window (--reference: held-out clips)")
    p.add_argument("--training-stride", type=int, default=None,
                   help="training windows start every this many frames of each clip (default: --num-frames)")
    p.add_argument("--training-windows", type=int, default=None,
                   help="score at most this many training windows, a seeded random subset (default: all)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="mm-diffusion",
                   help="mm-diffusion: the paper-era protocol (64 px letterbox, AudioCLIP FAD x1e4); "
                   "standard: native resolution, FAD unscaled (default: %(default)s)")
    p.add_argument("--metrics", default=None,
                   help="comma list of fvd,kvd,fad,memorisation,shapes,av-align (default: fvd,kvd,fad; shapes is "
                   "added for Sounding Shapes references, memorisation with --training; shapes and av-align need "
                   "no weights)")
    p.add_argument("--i3d", type=Path, default=None,
                   help="I3D weights for FVD/KVD: i3d_pretrained_400.pt, or DeepMind's converted by "
                   "`mmldm convert i3d` (.safetensors)")
    p.add_argument("--audio-net", choices=["audioclip", "vggish"], default=None,
                   help="audio feature net for FAD (protocol default: audioclip for mm-diffusion, vggish for standard)")
    p.add_argument("--audio-weights", type=Path, default=None,
                   help="audio net weights for FAD: AudioCLIP-Full-Training.pt or torchvggish vggish-10086976.pth")
    p.add_argument("--audioclip-input", choices=["int16", "unit"], default=None,
                   help="int16 (default): the range AudioCLIP expects; unit: [-1, 1] as the released evaluator fed it")
    p.add_argument("--features", choices=["pretrained", "random"], default="pretrained",
                   help="random: seeded random-weight nets, for smoke tests only (numbers mean nothing)")
    p.add_argument("--shapes", action="store_true", default=None,
                   help="also report Sounding Shapes measures (automatic when the reference has manifest.jsonl)")
    p.add_argument("--num-samples", type=int, default=None, help="clips per side (protocol default 2048)")
    p.add_argument("--num-frames", type=int, default=None,
                   help="frames per scored clip (protocol default 16, i.e. 1.6 s at 10 fps; AV-Align's offset "
                   "estimate is steadier on longer clips, e.g. 64)")
    p.add_argument("--covariance", choices=["unbiased", "biased"], default=None,
                   help="Frechet covariance estimator (protocol default: unbiased)")
    p.add_argument("--kvd-subsets", type=int, default=None,
                   help="KID-style subsets for KVD (protocol default 0: one estimate on all samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of file subsets, reference windows, random nets")
    p.add_argument("--reference-draws", type=int, default=1, metavar="K",
                   help="score FVD / KVD / FAD against K independent draws of reference windows and report their "
                   "mean and spread (default 1; at N = 64 the draw alone moves FVD by about +-100 on real footage)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="torch device for the feature nets (cpu, cuda, cuda:N)")
    p.add_argument("--out", type=Path, default=None, help="write the result record as JSON here")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from ..config import atomic_write_text
    from ..devices import check_device
    from ..errors import ConfigError
    from ..evaluation.evaluate import (
        ALL_METRICS,
        DEFAULT_METRICS,
        evaluate_folders,
        format_result,
    )
    from ..evaluation.protocol import get_protocol

    if args.out is not None and args.out.is_dir():  # before the (long) scoring, not after it
        raise ConfigError(f"--out {args.out}: is a folder; give a JSON file name")
    check_device(args.device)
    protocol = get_protocol(args.protocol).with_overrides(
        num_samples=args.num_samples, num_frames=args.num_frames, covariance=args.covariance,
        kvd_subsets=args.kvd_subsets,
        audio_net=args.audio_net, audioclip_input=args.audioclip_input,
    )
    if args.metrics is None:
        metrics = DEFAULT_METRICS
    else:
        metrics = tuple(m.strip().lower() for m in args.metrics.split(",") if m.strip())
        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown or not metrics:
            raise ConfigError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'} "
                              f"(choose from {', '.join(ALL_METRICS)})")
    result = evaluate_folders(
        args.generated, args.reference, protocol, metrics=metrics, i3d_path=args.i3d,
        audio_weights=args.audio_weights,
        random_features=args.features == "random", seed=args.seed, shapes=args.shapes,
        batch_size=args.batch_size, device=args.device, training=args.training,
        training_stride=args.training_stride, training_windows=args.training_windows,
        reference_draws=args.reference_draws,
    )
    print(format_result(result))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
