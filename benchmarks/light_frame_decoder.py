"""The light frame decoder against the full KL-VAE decoder: fidelity, sync quality, speed, cost.

    python benchmarks/light_frame_decoder.py --model runs/lfd/model --heldout runs/lfd/heldout \\
        --samples 32 --threads 1 --out benchmarks/results/2026-12-06-light-frame-decoder.json

``--model``: a Sounding Shapes model folder with a light frame decoder (``frame_decoder/``,
``mmldm export frame-decoder``). Four tables:

* **held-out clips** (``--heldout``, a Sounding Shapes folder the decoder never saw, e.g.
  ``mmldm data synth --seed 7``): every frame encoded by the model's KL-VAE (posterior mode, as the
  latent cache stores it), decoded by both decoders: PSNR of the light frames against the full
  decoder's (what it was trained to match) and of each against the real frames. PSNR on pixels in
  [-1, 1] (peak-to-peak 2: the same number as on 0..255), per clip, then averaged over the clips.
* **generated svg samples**: the same seeds through the pipeline with ``frame_decoder`` full and
  light (the frame decoder is the last step: both see the same KL-VAE latents, and the audio,
  decoded by the full KL-VAE either way, is identical): the Sounding Shapes measures (median sync
  error, class agreement, one-object frames) and the PSNR of the light frames against the full.
* **speed**: one clip's frames through each decoder (no grad; median of ``--repeats``).
* **cost**: GFLOP per frame of each decoder at this model's size, and the paper-scale table of
  ``paper_cost.py`` for the paper, fast and fast-8-steps settings (counts; the light decoder's
  ``sd-v1`` preset also timed, random weights).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, finish, record, render, run_script, time_call, torch_threads
from torch.utils.flop_counter import FlopCounterMode

from mmldm.errors import ConfigError, check_positive_int


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two pictures in [-1, 1] (peak-to-peak 2)."""
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(4.0 / mse)


def heldout_rows(pipe: Any, folder: Path, clips: int) -> list[dict[str, Any]]:
    from mmldm.data.config import ClipDataConfig

    data = ClipDataConfig(root=str(folder), num_frames=pipe.num_frames, fps=pipe.fps,
                          sample_rate=pipe.audio_cfg.sample_rate, size=pipe.frame_size, val_fraction=0.0).dataset("train")
    n = min(clips, len(data))
    light_full, full_real, light_real = [], [], []
    light = pipe.frame_decoder[0]
    with torch.no_grad():
        for i in range(n):
            frames = data[i]["frames"]  # [T, 3, H, W] in [-1, 1]
            latents = pipe.vae.encode_images(frames)
            full = pipe.vae.decode_images(latents).clamp(-1, 1)
            fast = light.decode_images(latents).clamp(-1, 1)
            light_full.append(psnr(fast, full))
            full_real.append(psnr(full, frames))
            light_real.append(psnr(fast, frames))
    return [{"clips": n, "frames": n * pipe.num_frames, "psnr_light_vs_full": float(np.mean(light_full)),
             "psnr_light_vs_full_min": float(np.min(light_full)), "psnr_full_vs_real": float(np.mean(full_real)),
             "psnr_light_vs_real": float(np.mean(light_real))}]


def generated_rows(pipe: Any, samples: int, seed: int, batch: int) -> list[dict[str, Any]]:
    from mmldm.evaluation.shapes_measures import aggregate, measure_clip

    outputs: dict[str, list[Any]] = {}
    rows = []
    for decoder in ("full", "light"):
        start, measures, frames, waves = time.perf_counter(), [], [], []
        for first in range(0, samples, batch):
            out = pipe.generate("svg", n=min(batch, samples - first), seed=seed + first, progress=False,
                                frame_decoder=decoder)
            assert out.settings["frame_decoder"] == decoder
            measures += [measure_clip(f, w, out.sample_rate, out.fps) for f, w in zip(out.frames, out.waveforms)]
            frames.append(out.frames)
            waves.append(out.waveforms)
        outputs[decoder] = [torch.cat(frames), torch.cat(waves)]
        summary = aggregate(measures)
        errors = np.array([m["sync_error"] for m in measures])
        rows.append({"frame_decoder": decoder, "clips": len(measures), "sync_error_median": summary["sync_error_median"],
                     "within_1_pct": summary["sync_error_within_1_semitone_pct"],
                     "class_agreement_pct": summary["class_agreement_pct"], "one_object_pct": summary["one_object_pct"],
                     "worst": float(errors.max()), "sync_errors": errors.tolist(),
                     "wall_s": time.perf_counter() - start})
    full_frames, full_waves = outputs["full"]
    light_frames, light_waves = outputs["light"]
    per_clip = [psnr(a, b) for a, b in zip(light_frames, full_frames)]
    rows[1]["psnr_light_vs_full"] = float(np.mean(per_clip))
    rows[1]["psnr_light_vs_full_min"] = float(np.min(per_clip))
    rows[1]["same_audio"] = bool(torch.equal(light_waves, full_waves))
    return rows


def speed_rows(pipe: Any, repeats: int) -> list[dict[str, Any]]:
    size = pipe.autoencoder.cfg.vae_latent_size
    latents = torch.randn(pipe.num_frames, pipe.vae.latent_channels, size, size,
                          generator=torch.Generator().manual_seed(0))
    light = pipe.frame_decoder[0]
    rows = []
    for name, fn in (("full KL-VAE decoder", lambda: pipe.vae.decode_images(latents)),
                     ("light frame decoder", lambda: light.decode_images(latents, pipe.vae.chunk_size))):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        with torch.no_grad():
            stats = time_call(fn, torch.device("cpu"), warmup=1, repeats=repeats)
        network = pipe.vae.autoencoder.decoder if name.startswith("full") else light
        params = sum(p.numel() for p in network.parameters())
        rows.append({"decoder": name, "frames": pipe.num_frames, "gflop_per_frame": counter.get_total_flops() / 1e9 /
                     pipe.num_frames, "params_m": params / 1e6, "ms_per_clip": 1e3 * stats.median_s})
    rows[1]["speedup"] = rows[0]["ms_per_clip"] / rows[1]["ms_per_clip"]
    rows[1]["flop_ratio"] = rows[1]["gflop_per_frame"] / rows[0]["gflop_per_frame"]
    return rows


def cost_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import paper_cost

    settings = (paper_cost.PAPER_SETTINGS, paper_cost.FAST_SETTINGS, paper_cost.FAST_FEW_STEPS_SETTINGS)
    # the light decoder timed too (8 frames a call, scaled to 16; fp32, and bf16 where native)
    result = paper_cost.run("paper", settings=settings, time_components=["light-frame-decoder"], time_batch=8)
    decoders = [r for r in result["tables"]["cost"] if r.get("component") in ("kl-vae-decoder", "light-frame-decoder")]
    return decoders, result["tables"]["summary"]


def run(model: Path, heldout: Path, clips: int = 16, samples: int = 32, seed: int = 1000, batch: int = 8,
        repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    from mmldm.pipeline import SoundingVideoPipeline

    check_positive_int(samples, "--samples")
    check_positive_int(clips, "--clips")
    with torch_threads(threads):
        pipe = SoundingVideoPipeline.from_pretrained(model)
        if pipe.frame_decoder is None:
            raise ConfigError(f"{model}: no light frame decoder (frame_decoder/); `mmldm export frame-decoder` adds one")
        tables = {"heldout": heldout_rows(pipe, heldout, clips), "speed": speed_rows(pipe, repeats)}
        print("held-out and speed done", flush=True)
        tables["generated"] = generated_rows(pipe, samples, seed, batch)
        tables["decoder_cost"], tables["cost_summary"] = cost_rows()
    settings = {"model": str(model), "heldout": str(heldout), "clips": clips, "samples": samples, "seed": seed,
                "batch": batch, "repeats": repeats, "threads": threads or torch.get_num_threads(),
                "frame_decoder_info": pipe.resolved_config()["frame_decoder"]}
    return record("light_frame_decoder", torch.device("cpu"), settings, tables)


COLUMNS: dict[str, list[Column]] = {
    "heldout": [("clips", "clips", ""), ("frames", "frames", ""), ("PSNR light vs full (dB)", "psnr_light_vs_full", ".2f"),
                ("worst clip (dB)", "psnr_light_vs_full_min", ".2f"), ("PSNR full vs real", "psnr_full_vs_real", ".2f"),
                ("PSNR light vs real", "psnr_light_vs_real", ".2f")],
    "generated": [("frame decoder", "frame_decoder", ""), ("clips", "clips", ""),
                  ("median sync error (st)", "sync_error_median", ".3f"), ("within 1 st %", "within_1_pct", ".1f"),
                  ("class agreement %", "class_agreement_pct", ".1f"), ("one-object frames %", "one_object_pct", ".1f"),
                  ("PSNR vs full (dB)", "psnr_light_vs_full", ".2f"), ("same audio", "same_audio", ""),
                  ("wall s", "wall_s", ".0f")],
    "speed": [("decoder", "decoder", ""), ("frames", "frames", ""), ("GFLOP per frame", "gflop_per_frame", ".3f"),
              ("params (M)", "params_m", ".3f"), ("ms per clip", "ms_per_clip", ".1f"), ("speed-up", "speedup", ".2f"),
              ("FLOP ratio", "flop_ratio", ".3f")],
    "decoder_cost": [("settings", "settings", ""), ("row", "label", ""), ("GFLOP per call", "gflop", ",.1f"),
                     ("TFLOP per sample", "tflop", ",.2f"), ("s per call fp32", "s_per_call_fp32", ".3g"),
                     ("s per call bf16", "s_per_call_bf16", ".3g")],
    "cost_summary": [("settings", "settings", ""), ("TFLOP per sample", "tflop", ",.2f"),
                     ("x MM-Diffusion", "vs_mm_diffusion", ".3f"), ("target <= 17 TFLOP", "target", ""),
                     ("generator steps within the target", "generator_steps_within_target", "")],
}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    sections = [
        (f"Held-out clips ({s['heldout']}): KL-VAE latents decoded by both", "heldout", COLUMNS["heldout"]),
        (f"Generated svg samples, seeds {s['seed']}-{s['seed'] + s['samples'] - 1}", "generated", COLUMNS["generated"]),
        ("One clip's frames through each decoder (no grad)", "speed", COLUMNS["speed"]),
        ("Paper scale (256x256): the pixel decoders' rows", "decoder_cost", COLUMNS["decoder_cost"]),
        ("Paper scale: per sample, against the 17 TFLOP target", "cost_summary", COLUMNS["cost_summary"]),
    ]
    return render(result, sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model folder with frame_decoder/")
    parser.add_argument("--heldout", type=Path, required=True, help="a Sounding Shapes folder of held-out clips")
    parser.add_argument("--clips", type=int, default=16, help="held-out clips (default 16)")
    parser.add_argument("--samples", type=int, default=32, help="generated svg samples per decoder (default 32)")
    parser.add_argument("--seed", type=int, default=1000, help="sample i uses seed + i (default 1000)")
    parser.add_argument("--batch", type=int, default=8, help="samples per generate call (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per decoder (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.model, args.heldout, args.clips, args.samples, args.seed, args.batch, args.repeats, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
