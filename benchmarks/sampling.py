"""Sampling time per sounding video, by preset, sampler and step count, with peak memory.

Two measurements:

* **generator alone**: ``mmldm.diffusion.sample`` over a random-weight AVDiT preset, from
  noise to perceptual latents (task svg without a class: one network call per step; Heun
  calls it ``2 * steps - 1`` times). Samplers: ddim and dpmpp (epsilon objective), euler and
  heun (flow objective).
* **to mp4**: :class:`~mmldm.pipeline.SoundingVideoPipeline` with random weights: generator
  sampling, the autoencoder's DDIM signal decoder (its own step count and guidance), KL-VAE
  decoding, Griffin-Lim vocoding, then ``SoundingVideoOutput.save`` (H.264 + AAC mp4 + wav).
  ``tiny`` uses the tiny KL-VAE and autoencoder (64x64 frames); ``S`` uses the paper's
  autoencoder and the SD v1 KL-VAE layout (256x256 frames: a GPU job).

Warm-up (untimed) before the timed runs of each setting: generator alone, one run of 2
sampler steps; to mp4, one whole run. Peak memory: CUDA ``max_memory_allocated``; CPU the process's
resident-set high-water mark (model weights included), reset before each measurement.

    python benchmarks/sampling.py                                     # tiny and S, 10/25/50 steps
    python benchmarks/sampling.py --presets tiny --steps 10 --repeats 1  # smoke run
    python benchmarks/sampling.py --device cuda --pipeline-presets tiny S
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    PeakMemory,
    add_device_argument,
    autocast,
    finish,
    note,
    record,
    render,
    resolve_device,
    run_script,
    time_call,
    torch_threads,
)

from mmldm.diffusion import make_objective, sample
from mmldm.errors import ConfigError
from mmldm.generator.dit import AVDiT, DiTConfig

#: sampler -> the objective it integrates
SAMPLER_OBJECTIVE = {"ddim": "epsilon", "dpmpp": "epsilon", "euler": "flow", "heun": "flow"}

GENERATOR_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("objective", "objective", ""), ("sampler", "sampler", ""), ("steps", "steps", ""),
    ("network calls", "network_calls", ""), ("batch", "batch", ""), ("precision", "precision", ""),
    ("s / video", "seconds_per_video", ".3f"), ("ms / network call", "ms_per_call", ".1f"),
    ("peak memory (MiB)", "peak_mib", ".0f"),
]
PIPELINE_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("sampler", "sampler", ""), ("steps", "steps", ""),
    ("decoder steps", "decoder_steps", ""), ("frame size (px)", "frame_size", ""), ("batch", "batch", ""),
    ("precision", "precision", ""), ("generate s / video", "generate_s_per_video", ".2f"),
    ("save mp4 s / video", "save_s_per_video", ".2f"), ("total s / video", "seconds_per_video", ".2f"),
    ("peak memory (MiB)", "peak_mib", ".0f"),
]


def network_calls(sampler: str, steps: int) -> int:
    """Denoiser evaluations of one sampling run (Heun: two per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def _generator(preset: str, device: torch.device) -> AVDiT:
    torch.manual_seed(0)
    return AVDiT(DiTConfig.preset(preset)).to(device).eval().requires_grad_(False)


def measure_generator(model: AVDiT, preset: str, sampler: str, steps: int, batch: int, precision: str,
                      repeats: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Seconds per sounding video of ``sampler`` over ``model`` (noise -> perceptual latents)."""
    if sampler not in SAMPLER_OBJECTIVE:
        raise ConfigError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLER_OBJECTIVE)})")
    objective = make_objective(SAMPLER_OBJECTIVE[sampler])
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    noise = {"audio": torch.randn(batch, cfg.audio_channels, *cfg.audio_size, generator=g).to(device),
             "video": torch.randn(batch, cfg.video_channels, *cfg.video_size, generator=g).to(device)}

    def run_sampler(n: int) -> None:
        with torch.inference_mode(), autocast(device, precision):
            sample(model, noise, objective, sampler=sampler, steps=n)

    run_sampler(2)
    with PeakMemory(device) as peak:
        timing = time_call(lambda: run_sampler(steps), device, warmup=0, repeats=repeats)
    calls = network_calls(sampler, steps)
    return {"preset": preset, "objective": objective.name, "sampler": sampler, "steps": steps,
            "network_calls": calls, "batch": batch, "precision": precision, **timing.as_dict(), "warmup": 1,
            "seconds_per_video": timing.median_s / batch, "ms_per_call": timing.median_s / calls * 1e3,
            "peak_mib": peak.peak_bytes / 2**20, "peak_memory": peak.method}


def build_pipeline(preset: str, objective: str, device: torch.device, precision: str,
                   decoder_steps: int | None = None) -> Any:
    """A random-weight :class:`~mmldm.pipeline.SoundingVideoPipeline` of generator ``preset`` ("tiny": tiny
    KL-VAE and autoencoder, 64x64 frames; "S": SD v1 KL-VAE layout and the paper's autoencoder, 256x256).
    ``decoder_steps`` replaces the autoencoder's DDIM decoding steps (None: its default, 50)."""
    from mmldm.autoencoder import HierarchicalAVAutoencoder, paper_config, tiny_config
    from mmldm.data.audio_image import AudioConfig
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.vae.kl_vae import KLVAE

    layouts = {"tiny": ("tiny", tiny_config), "S": ("sd-v1", paper_config)}
    if preset not in layouts:
        raise ConfigError(f"pipeline benchmark: no autoencoder layout for generator preset '{preset}' "
                          f"(choose from {', '.join(layouts)})")
    vae_preset, autoencoder_config = layouts[preset]
    torch.manual_seed(0)
    ae_cfg = autoencoder_config()
    if decoder_steps is not None:
        ae_cfg = dataclasses.replace(ae_cfg, sampling=dataclasses.replace(ae_cfg.sampling, steps=decoder_steps))
    return SoundingVideoPipeline.assemble(
        vae=KLVAE.from_preset(vae_preset), autoencoder=HierarchicalAVAutoencoder(ae_cfg),
        generator=AVDiT(DiTConfig.preset(preset)), objective=objective,
        audio_cfg=AudioConfig(clip_seconds=ae_cfg.num_frames / 10.0), device=device,
        dtype=torch.bfloat16 if precision == "bf16" else None)


def measure_pipeline(pipe: Any, preset: str, sampler: str, steps: int, batch: int, precision: str, repeats: int,
                     device: torch.device) -> dict[str, Any]:
    """Seconds per sounding video from noise to mp4 files (generate, then save)."""
    with tempfile.TemporaryDirectory() as tmp:
        def generate() -> Any:
            return pipe.generate(task="svg", n=batch, steps=steps, sampler=sampler, seed=0, progress=False)

        generate().save(Path(tmp) / "warmup", preview=False)
        outputs = []
        with PeakMemory(device) as peak:
            generation = time_call(lambda: outputs.append(generate()), device, warmup=0, repeats=repeats)
        saving = time_call(lambda: outputs[0].save(Path(tmp) / "timed", preview=False), device, warmup=0,
                           repeats=repeats)
    return {"preset": preset, "sampler": sampler, "steps": steps,
            "decoder_steps": pipe.autoencoder.cfg.sampling.steps, "frame_size": pipe.frame_size, "batch": batch,
            "precision": precision, "generate": generation.as_dict(), "save": saving.as_dict(),
            "generate_s_per_video": generation.median_s / batch, "save_s_per_video": saving.median_s / batch,
            "seconds_per_video": (generation.median_s + saving.median_s) / batch,
            "peak_mib": peak.peak_bytes / 2**20, "peak_memory": peak.method}


def run(presets: tuple[str, ...] = ("tiny", "S"), samplers: tuple[str, ...] = tuple(SAMPLER_OBJECTIVE),
        steps: tuple[int, ...] = (10, 25, 50), preset_steps: dict[str, tuple[int, ...]] | None = None,
        batch: int = 1, precision: str = "bf16", repeats: int = 2,
        pipeline_presets: tuple[str, ...] = ("tiny",), pipeline_samplers: tuple[str, ...] = ("ddim",),
        pipeline_steps: tuple[int, ...] = (25,), decoder_steps: int | None = None, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Generator-alone rows for every preset x sampler x step count (``preset_steps`` overrides the step
    counts of a preset), and pipeline rows (to mp4) for ``pipeline_presets``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    settings = dict(locals())
    dev = resolve_device(device)
    notes: list[str] = []
    generator_rows, pipeline_rows = [], []
    with torch_threads(threads):
        for preset in presets:
            model = _generator(preset, dev)
            for sampler in samplers:
                for n in (preset_steps or {}).get(preset, steps):
                    generator_rows.append(measure_generator(model, preset, sampler, n, batch, precision,
                                                            repeats, dev))
            del model
        if pipeline_presets:
            try:
                import mmldm.pipeline  # noqa: F401  (the pipeline may be absent from a partial install)
            except ImportError as exc:
                note(notes, f"sampling to mp4 skipped: mmldm.pipeline cannot be imported ({exc})")
                pipeline_presets = ()
        for preset in pipeline_presets:
            for sampler in pipeline_samplers:
                pipe = build_pipeline(preset, SAMPLER_OBJECTIVE[sampler], dev, precision, decoder_steps)
                for n in pipeline_steps:
                    pipeline_rows.append(measure_pipeline(pipe, preset, sampler, n, batch, precision, repeats, dev))
                del pipe
        return record("sampling", dev, settings, {"generator": generator_rows, "pipeline": pipeline_rows}, notes)


def markdown(result: dict[str, Any]) -> str:
    return render(result, [
        ("Sampling, generator alone (noise -> perceptual latents, random weights)", "generator", GENERATOR_COLUMNS),
        ("Sampling to mp4 (generator + autoencoder decoder + KL-VAE + Griffin-Lim + mp4 writing)", "pipeline",
         PIPELINE_COLUMNS),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["tiny", "S"], help="generator presets (generator alone)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_OBJECTIVE), choices=list(SAMPLER_OBJECTIVE))
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 25, 50])
    parser.add_argument("--batch", type=int, default=1, help="sounding videos per sampling run")
    parser.add_argument("--precision", default="bf16", choices=PRECISIONS, help="bf16 = autocast")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting")
    parser.add_argument("--pipeline-presets", nargs="*", default=["tiny"], choices=["tiny", "S"],
                        help="presets sampled to mp4 (none: skip)")
    parser.add_argument("--pipeline-samplers", nargs="+", default=["ddim"], choices=list(SAMPLER_OBJECTIVE))
    parser.add_argument("--pipeline-steps", nargs="+", type=int, default=[25])
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="DDIM steps of the autoencoder's decoder (default: its own, 50)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(tuple(args.presets), tuple(args.samplers), tuple(args.steps), None, args.batch, args.precision,
                 args.repeats, tuple(args.pipeline_presets), tuple(args.pipeline_samplers),
                 tuple(args.pipeline_steps), args.decoder_steps, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
