"""Training step time and samples/s of each stage, through the stages' real losses.

One step is what the training engine does: ``stage.losses`` on a batch under the
precision's autocast (``train.mixed_precision: bf16`` or ``no``), a backward pass
per optimiser group, gradient clipping at 1.0 and AdamW (no accumulation, no EMA).
Each stage is built from its tiny YAML preset (``configs/<stage>/tiny.yaml``) with
random weights, and trains on one fixed synthetic batch, so only the networks are
timed (benchmarks/dataloader.py times decoding).

* ``vae tiny``: :class:`~mmldm.vae.stage.VAEStage` (L1 + KL; LPIPS needs weights), 64x64 clips.
* ``autoencoder tiny``: :class:`~mmldm.autoencoder.stage.AutoencoderStage` with a random frozen
  tiny KL-VAE and the adversarial loss on from step 0 (its steady state), 64x64 clips.
* ``generator tiny`` / ``generator S``: :class:`~mmldm.generator.stage.GeneratorStage` on
  perceptual latents (condition mixing and previous-clip inputs included).

    python benchmarks/train_step.py                               # all four, fp32 and bf16
    python benchmarks/train_step.py --only generator:S --device cuda --batch generator:S=32
    python benchmarks/train_step.py --steps 1 --only vae:tiny generator:tiny   # smoke run
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
    finish,
    measure_stage,
    note,
    record,
    render,
    resolve_device,
    run_script,
    torch_threads,
)

from mmldm.config import load_config
from mmldm.errors import ConfigError
from mmldm.training.registry import get_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: (stage, preset) -> (YAML preset, overrides); the batch size is a run setting
CASES: dict[str, tuple[str, list[str]]] = {
    "vae:tiny": ("vae/tiny.yaml", []),
    "autoencoder:tiny": ("autoencoder/tiny.yaml", ["vae.path=null", "model.loss.adversarial_start_step=0"]),
    "generator:tiny": ("generator/tiny.yaml", ["model.preset=tiny"]),
    "generator:S": ("generator/tiny.yaml", ["model.preset=S"]),
}
DEFAULT_BATCH = {"vae:tiny": 8, "autoencoder:tiny": 4, "generator:tiny": 32, "generator:S": 4}

COLUMNS: list[Column] = [
    ("stage", "stage", ""), ("preset", "preset", ""), ("precision", "precision", ""), ("batch", "batch", ""),
    ("step median (s)", "median_s", ".3f"), ("min (s)", "min_s", ".3f"), ("samples/s", "samples_per_s", ".2f"),
    ("trainable params (M)", "params_trainable_m", ".2f"), ("peak memory (MiB)", "peak_mib", ".0f"),
]


def synthetic_batch(stage: str, cfg: Any, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One fixed batch shaped like the stage's dataset items (clips for vae/autoencoder, latents for
    the generator: see :class:`~mmldm.generator.latents.GeneratorLatentDataset`)."""
    g = torch.Generator().manual_seed(seed)
    if stage in ("vae", "autoencoder"):
        size, frames = cfg.data.size, cfg.data.num_frames
        return {"frames": torch.rand(batch, frames, 3, size, size, generator=g) * 2 - 1,
                "audio_image": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
                "class_id": torch.randint(0, 3, (batch,), generator=g)}
    dit = cfg.model.dit_config()
    audio = (batch, dit.audio_channels, *dit.audio_size)
    video = (batch, dit.video_channels, *dit.video_size)
    return {"audio": torch.randn(audio, generator=g), "video": torch.randn(video, generator=g),
            "prev_audio": torch.randn(audio, generator=g), "prev_video": torch.randn(video, generator=g),
            "has_previous": torch.rand(batch, generator=g) < 0.5,
            "class_id": torch.randint(0, max(dit.num_classes, 1), (batch,), generator=g),
            "index": torch.arange(batch)}


def stage_config(case: str) -> tuple[Any, Any]:
    """(stage instance, its config) of ``case`` ("stage:preset", see :data:`CASES`)."""
    if case not in CASES:
        raise ConfigError(f"unknown training case '{case}' (choose from {', '.join(CASES)})")
    config, overrides = CASES[case]
    stage = get_stage(case.split(":")[0])()
    return stage, load_config(stage.config_cls, CONFIGS / config, overrides)


def measure(case: str, batch: int, precision: str, steps: int, warmup: int, device: torch.device,
            seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` optimiser steps of ``case`` ("stage:preset", see :data:`CASES`)."""
    stage_name, preset = case.split(":")
    stage, cfg = stage_config(case)
    row = measure_stage(stage, cfg, synthetic_batch(stage_name, cfg, batch, seed), precision, steps, warmup,
                        device, seed)
    return {"stage": stage_name, "preset": preset, "batch": batch, **row, "samples_per_s": batch / row["median_s"]}


def run(cases: tuple[str, ...] = tuple(CASES), batches: dict[str, int] | None = None,
        precisions: tuple[str, ...] = PRECISIONS, steps: int = 3, warmup: int = 1, seed: int = 0,
        device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Rows of :func:`measure` for each case and precision; a stage that cannot be imported is
    skipped with a printed note."""
    batches = {**DEFAULT_BATCH, **(batches or {})}
    settings = {**locals(), "batches": {case: batches[case] for case in cases}}
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with torch_threads(threads):
        for case in cases:
            if case not in CASES:
                raise ConfigError(f"unknown training case '{case}' (choose from {', '.join(CASES)})")
            try:
                get_stage(case.split(":")[0])
            except ConfigError as exc:  # the stage's module is not importable (not landed yet)
                note(notes, f"{case} skipped: {exc}")
                continue
            rows += [measure(case, batches[case], precision, steps, warmup, dev, seed) for precision in precisions]
        return record("train_step", dev, settings, {"steps": rows}, notes)


def markdown(result: dict[str, Any]) -> str:
    title = ("Training step (stage losses + backward + clip + AdamW; samples = clips for vae/autoencoder, "
             "latent pairs for the generator)")
    return render(result, [(title, "steps", COLUMNS)])


def _batch_setting(text: str) -> tuple[str, int]:
    case, _, size = text.partition("=")
    if case not in CASES or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected CASE=N with CASE one of {', '.join(CASES)}, got '{text}'")
    return case, int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=list(CASES), choices=list(CASES), help="cases to time")
    parser.add_argument("--batch", nargs="+", type=_batch_setting, default=[],
                        help=f"batch sizes as CASE=N (defaults: {DEFAULT_BATCH})")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case and precision")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(tuple(args.only), dict(args.batch), tuple(args.precision), args.steps, args.warmup, args.seed,
                 args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
