"""``mmldm reconstruct INPUT.mp4 --model DIR --out OUT.mp4``: a clip through the autoencoder and back.

Prints frame PSNR, log-mel L1 and, with ``--shapes`` (Sounding Shapes clips), the
sync error and class agreement of the reconstruction beside the input's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help=COMMANDS["reconstruct"],
        description="Reconstruct one sounding video through the KL-VAE and the multi-modal autoencoder "
        "(DDIM with per-modality guidance), write it as mp4 and print frame PSNR and log-mel L1.",
    )
    p.add_argument("input", type=Path, help="video file with audio")
    p.add_argument("--model", type=Path, required=True,
                   help="a model folder (what `generate` takes: its autoencoder and KL-VAE are used), a "
                   "`mmldm train autoencoder` checkpoint folder or a saved autoencoder folder")
    p.add_argument("--vae", default=None,
                   help="KL-VAE (diffusers folder, single file or VAE checkpoint); default: the model "
                   "folder's, or the one the checkpoint was trained with")
    p.add_argument("--out", type=Path, required=True, help="output mp4")
    p.add_argument("--vocoder", default="griffin-lim", help="'griffin-lim' or a HiFi-GAN checkpoint")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's, 50)")
    p.add_argument("--video-guidance", type=float, default=None, help="video guidance scale (default 2.5)")
    p.add_argument("--audio-guidance", type=float, default=None, help="audio guidance scale (default 2.5)")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the input")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the training data's, else 10)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="audio sample rate (default: the training data's, else 16000)")
    p.add_argument("--shapes", action="store_true", help="also measure Sounding Shapes sync error and class agreement")
    p.add_argument("--no-ema", action="store_true", help="use a checkpoint's raw weights instead of its EMA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", type=Path, default=None, help="also write the measures here as JSON")
    p.set_defaults(func=_reconstruct)


def _reconstruct(args: argparse.Namespace) -> int:
    import torch

    from ..autoencoder.reconstruct import format_measures, reconstruct_file
    from ..autoencoder.stage import KLVAESourceConfig, _checkpoint_config, build_frozen_vae, load_autoencoder
    from ..config import atomic_write_text
    from ..errors import ConfigError
    from ..files import check_input_file
    from ..timing import AVTiming

    check_input_file(args.input)
    fps, sample_rate = 10.0, 16000
    autoencoder_path, folder_vae = args.model, None
    if (args.model / MODEL_INDEX).is_file():  # a model folder: its components and its clip settings
        autoencoder_path, folder_vae, clip = _model_folder_parts(args.model)
        fps, sample_rate = clip.get("fps", fps), clip.get("sample_rate", sample_rate)
    model, vae_cfg = load_autoencoder(autoencoder_path, use_ema=not args.no_ema, device=args.device)
    if vae_cfg is not None:  # a training checkpoint: its data settings are the defaults
        data = _checkpoint_config(args.model).data
        fps, sample_rate = data.fps, data.sample_rate
    if args.vae is None and folder_vae is not None:
        args.vae = str(folder_vae)
    if args.vae is not None:
        preset = vae_cfg.preset if vae_cfg is not None else ("sd-v1" if model.cfg.vae_latent_size >= 32 else "tiny")
        vae_cfg = KLVAESourceConfig(path=args.vae, preset=preset)
    if vae_cfg is None or vae_cfg.path is None:
        raise ConfigError("reconstruct: give the KL-VAE with --vae (the model folder does not name one)")
    vae = build_frozen_vae(vae_cfg).to(args.device)
    timing = AVTiming(fps=fps if args.fps is None else args.fps, num_frames=model.cfg.num_frames,
                      sample_rate=sample_rate if args.sample_rate is None else args.sample_rate)
    result = reconstruct_file(
        args.input, model, vae, vocoder=args.vocoder, timing=timing, start=args.start, shapes=args.shapes,
        out=args.out, generator=torch.Generator(args.device).manual_seed(args.seed), device=args.device,
        steps=args.steps, video_guidance=args.video_guidance, audio_guidance=args.audio_guidance,
    )
    print(f"{args.input} -> {args.out}")
    print(format_measures(result.measures))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result.measures, indent=2))
    return 0


#: the file that makes a folder a model folder (:mod:`mmldm.pipeline.folder`)
MODEL_INDEX = "model_index.json"


def _model_folder_parts(directory: Path) -> tuple[Path, Path, dict]:
    """A model folder's autoencoder and KL-VAE folders (from ``model_index.json``) and the clip
    settings of its ``config.yaml`` (fps, sample_rate; empty when it has none)."""
    import yaml

    from ..errors import WeightsError

    index_path = directory / MODEL_INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(index_path, "model index", f"cannot be read ({exc})") from None
    components = index.get("components") if isinstance(index, dict) else None
    parts = []
    for name in ("autoencoder", "vae"):
        sub = components.get(name) if isinstance(components, dict) else None
        if not isinstance(sub, str):
            raise WeightsError(index_path, "model index", f"names no '{name}' component folder")
        if not (directory / sub).is_dir():
            raise WeightsError(directory / sub, f"{name} component", "folder missing from the model folder")
        parts.append(directory / sub)
    clip: dict = {}
    config_path = directory / str(index.get("config", "config.yaml"))
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text())
        except yaml.YAMLError as exc:
            raise WeightsError(config_path, "model config", f"not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(config, dict) and isinstance(config.get("clip"), dict):
            clip = config["clip"]
    return parts[0], parts[1], clip
