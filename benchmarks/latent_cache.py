"""Latent cache speed: clips per second written by ``write_latent_cache`` with the KL-VAE.

Two numbers: end to end (decode mp4 + audio image + encode + write shards) and
encoding alone (the same clips already in memory), so that the bottleneck shows.

    python benchmarks/latent_cache.py                                   # 24 fresh Sounding Shapes clips, tiny VAE
    python benchmarks/latent_cache.py --clips 4 --workers 0 --size 32   # smoke run
    python benchmarks/latent_cache.py data/landscape --vae runs/vae/export --size 256 --out cache.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from mmldm.data.datasets import VideoFolderDataset
from mmldm.data.latent_cache import write_latent_cache
from mmldm.timing import AVTiming
from mmldm.vae.kl_vae import KLVAE
from mmldm.vae.stage import load_vae


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
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

            folder = Path(tmp) / "shapes"
            write_dataset(folder, n=args.clips, seed=0, cfg=ShapesConfig(size=args.size))
        dataset = VideoFolderDataset(folder, AVTiming(), size=args.size, split="all")
        torch.manual_seed(0)
        vae = (load_vae(args.vae, chunk_size=args.chunk_size) if args.vae is not None
               else KLVAE.from_preset("tiny", chunk_size=args.chunk_size))
        vae = vae.eval().requires_grad_(False)
        config = {"benchmark": True}
        rows = []
        for workers in args.workers:
            out = Path(tmp) / f"cache_w{workers}"
            stats = write_latent_cache(dataset, vae.encode_clips, out, config, shard_size=args.shard_size,
                                       batch_size=args.batch_size, num_workers=workers)
            rows.append({"stage": "end to end", "workers": workers, "clips": stats.items_encoded,
                         "seconds": stats.seconds, "clips_per_s": stats.items_per_second})
        items = [dataset[i] for i in range(len(dataset))]
        start = time.perf_counter()
        for first in range(0, len(items), args.batch_size):
            chunk = items[first:first + args.batch_size]
            vae.encode_clips({k: torch.stack([it[k] for it in chunk]) for k in ("frames", "audio_image")})
        seconds = time.perf_counter() - start
        rows.append({"stage": "encode only", "workers": 0, "clips": len(items), "seconds": seconds,
                     "clips_per_s": len(items) / seconds})

    print(f"Latent cache speed ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{args.size}x{args.size}, 16 frames + audio image per clip)\n")
    print("| stage | workers | clips | seconds | clips/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['workers']} | {r['clips']} | {r['seconds']:.2f} | {r['clips_per_s']:.2f} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"size": args.size, "threads": torch.get_num_threads(), "rows": rows},
                                       indent=1))


if __name__ == "__main__":
    main()
