"""Latent cache speed: clips per second written by ``write_latent_cache`` with the KL-VAE.

Two numbers: end to end (decode mp4 + audio image + encode + write shards) and
encoding alone (the same clips already in memory), so that the bottleneck shows.

    python benchmarks/latent_cache.py                                   # 24 fresh Sounding Shapes clips, tiny VAE
    python benchmarks/latent_cache.py --clips 4 --workers 0 --size 32   # smoke run
    python benchmarks/latent_cache.py data/landscape --vae runs/vae/export --size 256 --out cache.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    Column,
    add_device_argument,
    finish,
    record,
    render,
    resolve_device,
    run_script,
    synchronize,
    torch_threads,
)

from mmldm.data.datasets import VideoFolderDataset
from mmldm.data.latent_cache import write_latent_cache
from mmldm.timing import AVTiming
from mmldm.vae.kl_vae import KLVAE
from mmldm.vae.stage import load_vae

COLUMNS: list[Column] = [
    ("stage", "stage", ""), ("workers", "workers", ""), ("clips", "clips", ""), ("seconds", "seconds", ".2f"),
    ("clips/s", "clips_per_s", ".2f"),
]


def run(folder: Path | None = None, clips: int = 24, vae: Path | None = None, size: int = 64, batch_size: int = 8,
        shard_size: int = 16, workers: tuple[int, ...] = (0, 2), chunk_size: int = 64, device: str = "cpu",
        threads: int | None = None) -> dict[str, Any]:
    """End-to-end and encode-only clips/s over ``folder`` (default: ``clips`` fresh Sounding Shapes clips)."""
    settings = {**locals(), "folder": str(folder) if folder else f"synthesized Sounding Shapes ({clips} clips)",
                "vae": str(vae) if vae else "random tiny preset"}
    dev = resolve_device(device)
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        if folder is None:
            from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

            folder = Path(tmp) / "shapes"
            write_dataset(folder, n=clips, seed=0, cfg=ShapesConfig(size=size))
        dataset = VideoFolderDataset(folder, AVTiming(), size=size, split="all")
        torch.manual_seed(0)
        network = (load_vae(vae, chunk_size=chunk_size) if vae is not None
                   else KLVAE.from_preset("tiny", chunk_size=chunk_size))
        network = network.to(dev).eval().requires_grad_(False)
        config = {"benchmark": True}
        rows = []
        for n in workers:
            stats = write_latent_cache(dataset, network.encode_clips, Path(tmp) / f"cache_w{n}", config,
                                       shard_size=shard_size, batch_size=batch_size, num_workers=n)
            rows.append({"stage": "end to end", "workers": n, "clips": stats.items_encoded,
                         "seconds": stats.seconds, "clips_per_s": stats.items_per_second})
        items = [dataset[i] for i in range(len(dataset))]
        start = time.perf_counter()
        for first in range(0, len(items), batch_size):
            chunk = items[first:first + batch_size]
            network.encode_clips({k: torch.stack([it[k] for it in chunk]) for k in ("frames", "audio_image")})
        synchronize(dev)
        seconds = time.perf_counter() - start
        rows.append({"stage": "encode only", "workers": 0, "clips": len(items), "seconds": seconds,
                     "clips_per_s": len(items) / seconds})
        return record("latent_cache", dev, settings, {"cache": rows})


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"Latent cache speed ({s['folder']}, VAE: {s['vae']}, {s['size']}x{s['size']}, "
             f"16 frames + audio image per clip)")
    return render(result, [(title, "cache", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="video folder (default: synthesize Sounding Shapes)")
    parser.add_argument("--clips", type=int, default=24, help="clips to synthesize when no folder is given")
    parser.add_argument("--vae", type=Path, default=None, help="trained VAE (default: random tiny preset)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--chunk-size", type=int, default=64, help="images per VAE call")
    parser.add_argument("--threads", type=int, default=None)
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.folder, args.clips, args.vae, args.size, args.batch_size, args.shard_size,
                 tuple(args.workers), args.chunk_size, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
