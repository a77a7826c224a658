"""Speed of the multi-modal autoencoder (stage 1): training steps/s and reconstruction time per clip.

Training: one step is what the engine does for ``AutoencoderStage`` (frozen VAE encode
of the clip, ``HierarchicalAVAutoencoder.training_losses``, backward per optimiser
group, clipping, AdamW), timed before the adversarial warm-up ends ("no") and after
("yes": one-step x0 decode with gradients through the VAE + discriminator group).
Reconstruction: one clip's VAE encode, perceptual encode, DDIM decode of all frames
and the audio image with per-modality guidance, and the VAE decode. Synthetic
clips, so only the networks are timed.

    python benchmarks/autoencoder.py                                     # tiny preset, fp32 and bf16
    python benchmarks/autoencoder.py --steps 2 --warmup 1 --batch-size 2 --ddim-steps 2   # smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    add_device_argument,
    autocast,
    finish,
    measure_stage,
    record,
    render,
    resolve_device,
    run_script,
    time_call,
    torch_threads,
)

from mmldm.autoencoder.stage import AutoencoderStage, AutoencoderStageConfig
from mmldm.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "autoencoder"

TRAIN_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("precision", "precision", ""), ("adversarial", "adversarial", ""),
    ("clips/step", "batch_clips", ""), ("steps/s", "steps_per_s", ".2f"), ("clips/s", "clips_per_s", ".1f"),
    ("trainable params (M)", "params_trainable_m", ".2f"), ("peak MiB", "peak_mib", ".0f"),
]
RECON_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("precision", "precision", ""), ("DDIM steps", "ddim_steps", ""),
    ("frames", "frames", ""), ("s/clip", "seconds_per_clip", ".2f"),
]


def _config(preset: str, adversarial: bool, ddim_steps: int) -> AutoencoderStageConfig:
    start = 0 if adversarial else 10**9
    return load_config(AutoencoderStageConfig, CONFIGS / f"{preset}.yaml", [
        "vae.path=null", f"model.loss.adversarial_start_step={start}", f"model.sampling.steps={ddim_steps}",
        "model.decoder.pretrained_unet=null",
    ])


def _batch(cfg: AutoencoderStageConfig, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size, frames = cfg.data.size, cfg.data.num_frames
    return {"frames": torch.rand(batch_size, frames, 3, size, size, generator=gen) * 2 - 1,
            "audio_image": torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1,
            "class_id": torch.randint(0, max(cfg.model.semantic.num_classes, 1), (batch_size,), generator=gen)}


def measure_training(preset: str, batch_size: int, precision: str, adversarial: bool, steps: int, warmup: int,
                     seed: int, device: torch.device) -> dict[str, Any]:
    cfg = _config(preset, adversarial, 2)
    row = measure_stage(AutoencoderStage(), cfg, _batch(cfg, batch_size, seed), precision, steps, warmup, device, seed)
    return {"preset": preset, "adversarial": "yes" if adversarial else "no", "batch_clips": batch_size, **row,
            "steps_per_s": 1.0 / row["mean_s"], "clips_per_s": batch_size / row["mean_s"]}


def measure_reconstruction(preset: str, precision: str, ddim_steps: int, repeats: int, seed: int,
                           device: torch.device) -> dict[str, Any]:
    cfg = _config(preset, False, ddim_steps)
    torch.manual_seed(seed)
    stage = AutoencoderStage()
    modules = {key: module.to(device).eval() for key, module in stage.build(cfg).items()}
    model, vae = modules["model"], modules["vae"]
    batch = {k: v.to(device) for k, v in _batch(cfg, 1, seed).items()}

    @torch.no_grad()
    def reconstruct() -> None:
        with autocast(device, precision):
            latents = vae.encode_clips(batch)
            video_post, audio_post = model.encode(latents["video_latent"].float(), latents["audio_latent"].float())
            model.reconstruct(vae, video_post.mode(), audio_post.mode(),
                              generator=torch.Generator(device).manual_seed(seed))

    timing = time_call(reconstruct, device, warmup=0, repeats=repeats)
    return {"preset": preset, "precision": precision, "ddim_steps": ddim_steps, "frames": cfg.model.num_frames,
            **timing.as_dict(), "seconds_per_clip": timing.mean_s}


def run(preset: str = "tiny", batch_size: int = 8, precisions: tuple[str, ...] = PRECISIONS, steps: int = 10,
        warmup: int = 2, ddim_steps: int = 50, recon_repeats: int = 1, seed: int = 0, device: str = "cpu",
        threads: int | None = None) -> dict[str, Any]:
    settings = dict(locals())
    dev = resolve_device(device)
    with torch_threads(threads):
        train = [measure_training(preset, batch_size, precision, adversarial, steps, warmup, seed, dev)
                 for precision in precisions for adversarial in (False, True)]
        recon = [measure_reconstruction(preset, precision, ddim_steps, recon_repeats, seed, dev)
                 for precision in precisions]
        return record("autoencoder", dev, settings, {"training": train, "reconstruction": recon})


def markdown(result: dict[str, Any]) -> str:
    return render(result, [("Autoencoder training speed", "training", TRAIN_COLUMNS),
                           ("Autoencoder reconstruction time", "reconstruction", RECON_COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--batch-size", type=int, default=8, help="clips per training step")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps of the reconstruction")
    parser.add_argument("--recon-repeats", type=int, default=1, help="timed reconstructions")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.preset, args.batch_size, tuple(args.precision), args.steps, args.warmup, args.ddim_steps,
                 args.recon_repeats, args.seed, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
