"""``mmldm data synth``, ``mmldm data prepare`` and ``mmldm data inspect``."""

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
    synth.add_argument("--overwrite", action="store_true",
                       help="--out holds another dataset: replace it (default: refuse, so datasets never mix)")
    synth.set_defaults(func=_synth)

    prepare = dsub.add_parser(
        "prepare", help="cut long videos into a clip dataset (mp4 clips + manifest) that training reads",
        description="Cut long videos of any kind into small in-sync mp4 clips at the target fps, size and "
        "sample rate, with a manifest that `mmldm train ... --set data.root=OUT` reads. Memory stays "
        "bounded whatever the length of a video; an interrupted run goes on when the same command runs "
        "again. See docs/data.md.",
    )
    prepare.add_argument("sources", nargs="+", type=Path, metavar="SRC",
                         help="video files or folders of videos (searched recursively)")
    prepare.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or one to resume)")
    prepare.add_argument("--fps", type=float, default=10.0, help="frame rate of the clips (default 10)")
    prepare.add_argument("--num-frames", type=int, default=16,
                         help="frames of one training window (default 16); a clip holds a whole number of them")
    prepare.add_argument("--clip-seconds", type=float, default=None,
                         help="seconds per clip (default: one window, e.g. 1.6; 3.2 holds two windows and "
                         "trains continuation)")
    prepare.add_argument("--hop-seconds", type=float, default=None,
                         help="seconds between the starts of consecutive clips (default: the clip length)")
    prepare.add_argument("--size", type=int, default=64, help="frame size in pixels, square and even (default 64)")
    prepare.add_argument("--geometry", choices=["letterbox", "crop"], default="letterbox",
                         help="letterbox: whole frame, zero padding; crop: centre square (default letterbox)")
    prepare.add_argument("--sample-rate", type=int, default=16000,
                         help="audio rate of the clips in Hz (default 16000; 22050 for the hifigan-22k preset)")
    prepare.add_argument("--test-fraction", type=float, default=0.0,
                         help="share held out for testing (default 0)")
    prepare.add_argument("--split", choices=["time", "source"], default="time",
                         help="time: the last part of every source is test; source: whole files are (default time)")
    prepare.add_argument("--min-audio-rms", type=float, default=0.0,
                         help="leave out clips whose audio RMS is below this (default 0: keep all; silent clips "
                         "are flagged in the manifest)")
    prepare.add_argument("--incomplete-audio", choices=["skip", "flag"], default="skip",
                         help="clips reaching past the end of their source's audio: leave out or keep flagged "
                         "(default skip)")
    prepare.add_argument("--class-from-folder", action="store_true",
                         help="the first sub-folder below each SRC folder names the class of its videos")
    prepare.add_argument("--class-map", type=Path, default=None,
                         help="JSON {source name or stem: class name or id}")
    prepare.add_argument("--max-seconds", type=float, default=None,
                         help="use at most this many seconds of each source (default: all)")
    prepare.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    prepare.add_argument("--chunk-seconds", type=float, default=60.0,
                         help="seconds of a source per piece of work (what a worker takes; default 60)")
    prepare.add_argument("--crf", type=int, default=18, help="H.264 quality of the clips (default 18)")
    prepare.add_argument("--seed", type=int, default=0, help="salt of the choice of test sources (--split source)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(func=_prepare)

    inspect = dsub.add_parser("inspect", help="print streams of media files and write contact sheets")
    inspect.add_argument("files", nargs="+", type=Path)
    inspect.add_argument("--sheet-dir", type=Path, default=None,
                         help="where contact sheets go (default: beside each file)")
    inspect.add_argument("--no-sheet", action="store_true", help="only print stream information")
    inspect.set_defaults(func=_inspect)

    data.set_defaults(func=lambda args: data.print_help())


def _synth(args: argparse.Namespace) -> int:
    import json

    from ..data.sounding_shapes import MANIFEST_NAME, ShapesConfig, write_dataset
    from ..errors import ConfigError
    from ..files import remove_empty_folders

    old_manifest = args.out / MANIFEST_NAME
    previous: list[Path] = []
    if old_manifest.is_file():
        try:  # the clips of the dataset already there: replaced, or left alone
            previous = [args.out / Path(json.loads(line)["path"]) for line in old_manifest.read_text().splitlines()
                        if line.strip()]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            previous = []
        if not args.overwrite:
            raise ConfigError(f"{args.out}: holds another dataset ({len(previous)} clips in its {MANIFEST_NAME}); "
                              "give another folder, or --overwrite to replace it")
    cfg = ShapesConfig(size=args.size, sample_rate=args.sample_rate, num_frames=args.num_frames)
    manifest = write_dataset(args.out, n=args.n, seed=args.seed, cfg=cfg, progress=True)
    kept = {args.out / Path(json.loads(line)["path"]) for line in manifest.read_text().splitlines() if line.strip()}
    stale = [path for path in previous if path not in kept and args.out in path.parents]
    for path in stale:  # the replaced dataset's clips this one did not overwrite
        path.unlink(missing_ok=True)
    for folder in {path.parent for path in stale}:
        remove_empty_folders([folder])
    print(f"wrote {args.n} clips to {args.out} (manifest: {manifest})")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import MANIFEST_NAME, TEST_MANIFEST_NAME, PrepareConfig, prepare

    cfg = PrepareConfig(
        fps=args.fps, num_frames=args.num_frames, clip_seconds=args.clip_seconds, hop_seconds=args.hop_seconds,
        size=args.size, geometry=args.geometry, sample_rate=args.sample_rate, test_fraction=args.test_fraction,
        split=args.split, min_audio_rms=args.min_audio_rms, incomplete_audio=args.incomplete_audio,
        max_seconds=args.max_seconds, chunk_seconds=args.chunk_seconds, crf=args.crf, seed=args.seed,
    )
    summary = prepare(args.sources, args.out, cfg, workers=args.workers, class_from_folder=args.class_from_folder,
                      class_map=args.class_map, progress=not args.no_progress)
    clips = sum(summary.clips.values())
    test = f", test {summary.clips['test']} ({args.out / TEST_MANIFEST_NAME})" if args.test_fraction > 0 else ""
    rate = f", {summary.written / summary.seconds:.1f} clips/s" if summary.written and summary.seconds > 0 else ""
    kept = f", {clips - summary.written} were there already" if clips > summary.written else ""
    left_out = [f"{count} {why}" for count, why in (
        (summary.skipped_audio, "reaching past the end of their source's audio (--incomplete-audio flag keeps them)"),
        (summary.skipped_quiet, f"quieter than --min-audio-rms {args.min_audio_rms:g}")) if count]
    left = f"; left out {' and '.join(left_out)}" if left_out else ""
    print(f"prepared {clips} clips from {summary.sources_used} source(s): train {summary.clips['train']} "
          f"({args.out / MANIFEST_NAME}){test}; wrote {summary.written} in {summary.seconds:.1f} s{rate}{kept}{left}")
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
