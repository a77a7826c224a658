"""``mmldm export``: turn training checkpoints into folders that later steps load.

    mmldm export vae CKPT --out DIR [--calibration-clips N]
    mmldm export autoencoder CKPT --out DIR
    mmldm export model --generator CKPT --vae PATH --autoencoder PATH --out DIR [--vocoder V]
    mmldm export decoder-student CKPT --model DIR [--default]
    mmldm export frame-decoder CKPT --model DIR [--default]
    mmldm export sync-critic CKPT --model DIR [--default [--critics NAME ...]]

``model`` writes the complete folder ``mmldm generate --model`` loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help=COMMANDS["export"])
    esub = export.add_subparsers(dest="export_command", metavar="WHAT")

    vae = esub.add_parser("vae", help="a KL-VAE checkpoint -> diffusers folder")
    vae.add_argument("checkpoint", type=Path)
    vae.add_argument("--out", type=Path, required=True)
    vae.add_argument("--calibration-clips", type=int, default=0,
                     help="re-estimate the latent scaling factor on this many training clips "
                          "(needed for a VAE trained from scratch)")
    vae.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    vae.set_defaults(func=_vae)

    ae = esub.add_parser("autoencoder", help="an autoencoder checkpoint -> save_pretrained folder")
    ae.add_argument("checkpoint", type=Path)
    ae.add_argument("--out", type=Path, required=True)
    ae.add_argument("--no-ema", action="store_true")
    ae.set_defaults(func=_autoencoder)

    model = esub.add_parser("model", help="KL-VAE + autoencoder + generator -> a model folder for `mmldm generate`")
    model.add_argument("--generator", type=Path, required=True, help="`mmldm train generator` checkpoint")
    model.add_argument("--vae", type=Path, required=True,
                       help="diffusers folder, `mmldm train vae` checkpoint or single SD VAE file")
    model.add_argument("--autoencoder", type=Path, required=True,
                       help="`mmldm train autoencoder` checkpoint or save_pretrained folder")
    model.add_argument("--out", type=Path, required=True)
    model.add_argument("--vae-preset", default="sd-v1", help="VAE preset for a single-file VAE")
    model.add_argument("--vocoder", default="griffin-lim", help="'griffin-lim' or a HiFi-GAN checkpoint")
    model.add_argument("--no-ema", action="store_true")
    model.add_argument("--timing", nargs=3, metavar=("FPS", "FRAMES", "SAMPLE_RATE"), default=None,
                       help="clip timing, when the generator's latent cache does not record it")
    model.set_defaults(func=_model)

    student = esub.add_parser("decoder-student",
                              help="add a `mmldm train decoder-distill` student (few-step signal decoder) to a model folder")
    student.add_argument("checkpoint", type=Path)
    student.add_argument("--model", type=Path, required=True, help="the model folder of the student's teacher")
    student.add_argument("--default", action="store_true",
                         help="make the student's steps the model's default decoder steps (generation.json)")
    student.add_argument("--no-ema", action="store_true")
    student.set_defaults(func=_student)

    light = esub.add_parser("frame-decoder",
                            help="add a `mmldm train frame-decoder-distill` light frame decoder to a model folder")
    light.add_argument("checkpoint", type=Path)
    light.add_argument("--model", type=Path, required=True, help="the model folder of the decoder's KL-VAE")
    light.add_argument("--default", action="store_true",
                       help="make it the model's default frame decoder (generation.json)")
    light.add_argument("--no-ema", action="store_true")
    light.set_defaults(func=_frame_decoder)

    critic = esub.add_parser("sync-critic", help="add a `mmldm train sync-critic` sync critic to a model folder")
    critic.add_argument("checkpoint", type=Path)
    critic.add_argument("--model", type=Path, required=True, help="the model folder whose clips it judges")
    critic.add_argument("--default", action="store_true",
                        help="make --critics the default critics of the tasks given audio or video (generation.json)")
    critic.add_argument("--critics", nargs="+", default=["sync"],
                        help="with --default: the critics those tasks rank with (default: sync)")
    critic.add_argument("--no-ema", action="store_true")
    critic.set_defaults(func=_sync_critic)

    export.set_defaults(func=lambda args: export.print_help())


def _vae(args: argparse.Namespace) -> int:
    from ..vae.stage import export_pretrained

    out = export_pretrained(args.checkpoint, args.out, use_ema=not args.no_ema,
                            calibration_clips=args.calibration_clips)
    print(f"KL-VAE written to {out}")
    return 0


def _autoencoder(args: argparse.Namespace) -> int:
    from ..autoencoder.stage import export_pretrained

    out = export_pretrained(args.checkpoint, args.out, use_ema=not args.no_ema)
    print(f"autoencoder written to {out}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..export import export_model
    from ..timing import AVTiming

    timing = None
    if args.timing is not None:
        try:
            fps, frames, rate = float(args.timing[0]), int(args.timing[1]), int(args.timing[2])
        except ValueError:
            raise ConfigError(f"--timing takes FPS FRAMES SAMPLE_RATE, got {' '.join(args.timing)}") from None
        timing = AVTiming(fps=fps, num_frames=frames, sample_rate=rate)
    out = export_model(args.generator, args.out, vae=args.vae, autoencoder=args.autoencoder,
                       vae_preset=args.vae_preset, vocoder=args.vocoder, timing=timing,
                       use_ema=not args.no_ema)
    print(f"model folder written to {out} (use: mmldm generate --model {out})")
    return 0


def _student(args: argparse.Namespace) -> int:
    from ..export import export_student

    out = export_student(args.checkpoint, args.model, default=args.default, use_ema=not args.no_ema)
    print(f"few-step signal decoder written to {out}"
          + (" (the model's default decoder steps now select it)" if args.default else ""))
    return 0


def _frame_decoder(args: argparse.Namespace) -> int:
    from ..export import export_frame_decoder

    out = export_frame_decoder(args.checkpoint, args.model, default=args.default, use_ema=not args.no_ema)
    print(f"light frame decoder written to {out}"
          + (" (the model's default frame decoder now)" if args.default else " (select it with --frame-decoder light)"))
    return 0


def _sync_critic(args: argparse.Namespace) -> int:
    from ..export import SYNC_CRITIC_TASKS, export_sync_critic
    from ..generator.generation import SamplingSettings

    critics = SamplingSettings().replace(critics=args.critics).critics  # checked before anything is read
    out = export_sync_critic(args.checkpoint, args.model, default=args.default, critics=critics,
                             use_ema=not args.no_ema)
    print(f"sync critic written to {out}"
          + (f" (the default critics of {', '.join(SYNC_CRITIC_TASKS)} now: {', '.join(critics)})" if args.default
             else " (select it with --critics sync)"))
    return 0
