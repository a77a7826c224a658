"""Throughput of VideoFolderDataset through a DataLoader (clips per second).

    python benchmarks/dataloader.py                      # a fresh 48-clip Sounding Shapes folder
    python benchmarks/dataloader.py data/landscape --size 256 --workers 0 2 4 --out dl.json

Prints a markdown table (workers, batches, clips/s, time to first batch) and writes
the same rows as JSON with --out. The first batch (worker start-up, first decode)
is timed separately and not counted in clips/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmldm.data.datasets import VideoFolderDataset
from mmldm.timing import AVTiming


def measure(dataset: VideoFolderDataset, workers: int, batch_size: int, max_batches: int) -> dict:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=False)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - start
    clips = 0
    start = time.perf_counter()
    for count, batch in enumerate(batches, start=1):
        clips += batch["frames"].shape[0]
        if count >= max_batches:
            break
    elapsed = time.perf_counter() - start
    return {
        "workers": workers,
        "batch_size": batch_size,
        "timed_clips": clips,
        "clips_per_s": clips / elapsed if clips else float("nan"),
        "first_batch_s": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="video folder (default: synthesize Sounding Shapes)")
    parser.add_argument("--synth-clips", type=int, default=48, help="clips to synthesize when no folder is given")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5, help="timed batches per setting (after the first)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    timing = AVTiming(fps=args.fps, num_frames=args.num_frames, sample_rate=args.sample_rate)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder
        if folder is None:
            from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

            folder = Path(scratch) / "shapes"
            write_dataset(folder, n=args.synth_clips, seed=0,
                          cfg=ShapesConfig(size=args.size, sample_rate=args.sample_rate))
        manifest = folder / "manifest.jsonl"
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            dataset = VideoFolderDataset(folder, timing, size=args.size, split="all",
                                         manifest=manifest if manifest.is_file() else None)
        for warning in skipped:
            print(f"warning: {warning.message}")
        rows = [measure(dataset, workers, args.batch_size, args.batches) for workers in args.workers]

    print(f"\n{dataset!r}\n")
    print("| workers | batch | timed clips | clips/s | first batch (s) |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['workers']} | {row['batch_size']} | {row['timed_clips']} | "
              f"{row['clips_per_s']:.1f} | {row['first_batch_s']:.2f} |")
    if args.out is not None:
        result = {
            "folder": str(args.folder) if args.folder else f"synthesized Sounding Shapes ({args.synth_clips} clips)",
            "files": len(dataset.files),
            "windows": len(dataset),
            "size": args.size,
            "timing": {"fps": args.fps, "num_frames": args.num_frames, "sample_rate": args.sample_rate},
            "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
