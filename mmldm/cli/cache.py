"""``mmldm cache --config CONFIG --out DIR [--set key=value ...] [--vae PATH] [--autoencoder PATH]``: encode a dataset once.

Runs the frozen KL-VAE over the dataset of a VAE stage config and writes the
latents (``video_latent`` [T,4,h,w], ``audio_latent`` [4,h,w] per clip, posterior
means, scaled) to a sharded cache (:mod:`mmldm.data.latent_cache`). Resumable:
run the same command again after a crash. Several processes: set RANK and
WORLD_SIZE (or --rank/--world-size); the last one to finish writes the index.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help=COMMANDS["cache"],
                           description="Encode every clip of a dataset with the frozen KL-VAE, once.")
    cache.add_argument("--config", type=Path, required=True,
                       help="VAE stage config naming the data and the VAE, e.g. configs/vae/tiny.yaml")
    cache.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                       help="dotted override, e.g. --set data.root=data/shapes")
    cache.add_argument("--out", type=Path, required=True, help="cache folder")
    cache.add_argument("--vae", type=Path, default=None,
                       help="VAE to use instead of the config's model: a diffusers folder, a `mmldm train vae` "
                            "checkpoint folder, or an original single file")
    cache.add_argument("--autoencoder", type=Path, default=None,
                       help="trained autoencoder (checkpoint or exported folder): store its perceptual latents "
                            "'audio' and 'video' (posterior mode) for `mmldm train generator` instead")
    cache.add_argument("--split", choices=["train", "val", "all"], default="train")
    cache.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    cache.add_argument("--batch-size", type=int, default=8)
    cache.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding video")
    cache.add_argument("--no-progress", action="store_true", help="no progress bar")
    cache.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                       help="storage dtype of the latents")
    cache.add_argument("--rank", type=int, default=None, help="this process (default: $RANK or 0)")
    cache.add_argument("--world-size", type=int, default=None, help="number of processes (default: $WORLD_SIZE or 1)")
    cache.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    cache.set_defaults(func=_cache)


def _cache(args: argparse.Namespace) -> int:
    import torch

    from ..config import load_config, to_dict
    from ..errors import ConfigError
    from ..data.latent_cache import module_digest, write_latent_cache
    from ..vae.stage import VAEStage, VAEStageConfig, build_vae, load_vae

    overrides = [item for group in args.overrides for item in group]
    cfg = load_config(VAEStageConfig, args.config, overrides)
    if args.vae is not None:
        vae = load_vae(args.vae, preset=cfg.model.preset, chunk_size=cfg.model.chunk_size)
    elif cfg.model.pretrained is not None:
        vae = build_vae(cfg.model)
    else:
        raise ConfigError(f"{args.config}: model.pretrained is not set; give the trained VAE with --vae "
                          "(a diffusers folder, a `mmldm train vae` checkpoint or a single file)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = vae.to(device).eval().requires_grad_(False)
    dataset = VAEStage().dataset(cfg, args.split)
    config = {
        "encoder": "kl-vae",
        "vae_config": dict(vae.autoencoder.config),
        "vae_weights": module_digest(vae),
        "data": to_dict(cfg.data),
        "split": args.split,
        "latent": "posterior mean * scaling_factor",
    }
    encode = vae.encode_clips
    if args.autoencoder is not None:  # perceptual latents for the generator (mmldm.generator.latents)
        from ..generator.latents import perceptual_encoder

        encode = perceptual_encoder(args.autoencoder, vae, device)
        config = encode.cache_config(to_dict(cfg.data), args.split, cfg.data.timing.seconds)
    stats = write_latent_cache(
        dataset, encode, args.out, config, shard_size=args.shard_size, batch_size=args.batch_size,
        num_workers=args.num_workers, rank=args.rank, world_size=args.world_size,
        store_dtype=getattr(torch, args.dtype), progress=not args.no_progress,
    )
    state = "index written" if stats.index_written else "index not written yet (other ranks still running)"
    print(f"cached {stats.items_encoded} clips ({stats.shards_written} shards written, {stats.shards_skipped} "
          f"already done) in {stats.seconds:.1f}s: {stats.items_per_second:.2f} clips/s; {state}; {args.out}")
    return 0
