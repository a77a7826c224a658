"""Throughput of VideoFolderDataset through a DataLoader (clips per second).

    python benchmarks/dataloader.py                      # a fresh 48-clip Sounding Shapes folder
    python benchmarks/dataloader.py data/landscape --size 256 --workers 0 2 4 --out dl.json

Prints a markdown table (workers, batches, clips/s, time to first batch) and writes
the record as JSON with --out. The first batch (worker start-up, first decode)
is timed separately and not counted in clips/s. Decoding runs on the CPU whatever
the device, so this benchmark has no ``--device``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, record, render, run_script
from torch.utils.data import DataLoader

from mmldm.data.datasets import VideoFolderDataset
from mmldm.timing import AVTiming

COLUMNS: list[Column] = [
    ("workers", "workers", ""), ("batch", "batch_size", ""), ("timed clips", "timed_clips", ""),
    ("clips/s", "clips_per_s", ".1f"), ("first batch (s)", "first_batch_s", ".2f"),
]


def measure(dataset: VideoFolderDataset, workers: int, batch_size: int, max_batches: int) -> dict[str, Any]:
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


def run(folder: Path | None = None, synth_clips: int = 48, workers: tuple[int, ...] = (0, 2), batch_size: int = 8,
        batches: int = 5, size: int = 64, fps: float = 10.0, num_frames: int = 16,
        sample_rate: int = 16000) -> dict[str, Any]:
    """Clips/s per worker count over ``folder`` (default: ``synth_clips`` fresh Sounding Shapes clips)."""
    settings = {**locals(), "folder": str(folder) if folder else f"synthesized Sounding Shapes ({synth_clips} clips)"}
    timing = AVTiming(fps=fps, num_frames=num_frames, sample_rate=sample_rate)
    notes = []
    with tempfile.TemporaryDirectory() as scratch:
        if folder is None:
            from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

            folder = Path(scratch) / "shapes"
            write_dataset(folder, n=synth_clips, seed=0, cfg=ShapesConfig(size=size, sample_rate=sample_rate))
        manifest = folder / "manifest.jsonl"
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            dataset = VideoFolderDataset(folder, timing, size=size, split="all",
                                         manifest=manifest if manifest.is_file() else None)
        notes += [f"warning: {warning.message}" for warning in skipped]
        rows = [measure(dataset, n, batch_size, batches) for n in workers]
    settings.update(files=len(dataset.files), windows=len(dataset), dataset=repr(dataset))
    return record("dataloader", torch.device("cpu"), settings, {"loader": rows}, notes)


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"Data loader speed ({s['folder']}: {s['files']} files, {s['windows']} windows, "
             f"{s['size']}x{s['size']}, {s['num_frames']} frames at {s['fps']} fps + audio)")
    return render(result, [(title, "loader", COLUMNS)])


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
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.folder, args.synth_clips, tuple(args.workers), args.batch_size, args.batches, args.size,
                 args.fps, args.num_frames, args.sample_rate)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
