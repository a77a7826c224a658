"""Text prompts on Sounding Shapes: does a text-conditioned generator make the class its prompt names?

    python benchmarks/text_prompts.py prepare --out runs/text            # text encoder + starting generator
    mmldm train generator ...                                             # (docs/generation.md, "Text prompts")
    python benchmarks/text_prompts.py export --out runs/text --generator runs/text/train/checkpoints/step_003000
    python benchmarks/text_prompts.py evaluate --model runs/text/model --samples 64 \\
        --text-guidance 1 3 --json benchmarks/results/2026-12-06-text-prompts.json

``prepare`` writes a SMALL RANDOM-WEIGHT CLIP text model (2 layers, width 64, 16 tokens) whose
tokenizer holds every Sounding Shapes caption word as one token (the real CLIP-L weights cannot
be had here: its tokens carry no learned meaning, they only tell the captions apart), and a
starting generator: the built-in model's AVDiT with 16 prompt tokens (its 4 trained ones, 12
new) and a zero-initialised context projection of width 64, so it starts as the built-in model
with the null class. ``export`` puts the trained generator and the text encoder into a copy of
the built-in model (its KL-VAE, autoencoder and vocoder). ``evaluate`` generates ``--samples``
clips with prompts cycling over the 3 classes and the directions rising / falling (fixed seeds
from 2000), for each text guidance scale, and measures with the Sounding Shapes law whether the
clip's video colour class and audio timbre class are the prompted class.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmldm.data.sounding_shapes import CLASSES, caption, caption_words, pitch_direction
from mmldm.evaluation import shapes_measures as sm

#: text encoder of the experiment: width (= the generator's context_dim) and tokens (= n_ctx)
TEXT_WIDTH = 64
TEXT_TOKENS = 16
DIRECTIONS = ("rising", "falling")
#: how the measured model was made (docs/generation.md, "Text prompts"); written into every record
RECIPE = {
    "data": "mmldm data synth --out runs/text/shapes --n 480 --seed 7",
    "latents": "mmldm cache --config configs/recipe/vae.yaml --set data.root=runs/text/shapes "
               "--vae mmldm/models/shapes/vae --autoencoder mmldm/models/shapes/autoencoder --out runs/text/latents",
    "prepare": "python benchmarks/text_prompts.py prepare --out runs/text",
    "train": "OMP_NUM_THREADS=1 mmldm train generator --config configs/recipe/generator.yaml --out runs/text/train "
             "--max-steps 3000 --set data.cache=runs/text/latents data.audio_latent_scale=0.915863 "
             "data.video_latent_scale=3.81936 model.pretrained=runs/text/init model.text_encoder=runs/text/text_encoder "
             "model.dit.n_ctx=16 model.dit.context_dim=64 conditioning.context_dropout=1.0 "
             "conditioning.text_dropout=0.1 train.optim.lr=2.0e-4 train.log.preview_every=100000",
    "export": "python benchmarks/text_prompts.py export --out runs/text --generator "
              "runs/text/train/checkpoints/step_003000",
    "text_encoder": f"random-weight CLIPTextModel ({TEXT_TOKENS} tokens x {TEXT_WIDTH}, 2 layers; its tokenizer holds "
                    "every caption word): NOT CLIP-L, whose weights cannot be had here",
}


def prepare(out: Path) -> None:
    from mmldm.generator.dit import AVDiT
    from mmldm.generator.generation import GENERATION_NAME
    from mmldm.generator.text_encoder import random_text_encoder
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    encoder = random_text_encoder(caption_words(), hidden_size=TEXT_WIDTH, layers=2, heads=2,
                                  length=TEXT_TOKENS, seed=0)
    encoder.save_pretrained(out / "text_encoder")
    shipped = AVDiT.from_pretrained(BUILTIN_MODEL / "generator")
    cfg = dataclasses.replace(shipped.cfg, n_ctx=TEXT_TOKENS, context_dim=TEXT_WIDTH)
    torch.manual_seed(0)
    model = AVDiT(cfg)
    state = model.state_dict()
    for key, value in shipped.state_dict().items():
        if key == "prompt":
            state[key][: value.shape[0]] = value  # the trained prompt tokens first, then new ones
        else:
            state[key] = value
    state["context_proj.weight"].zero_()  # the text starts with no effect
    state["context_proj.bias"].zero_()
    model.load_state_dict(state)
    model.save_pretrained(out / "init")
    (out / "init" / GENERATION_NAME).write_text((BUILTIN_MODEL / "generator" / GENERATION_NAME).read_text())
    print(f"wrote {out / 'text_encoder'} (random CLIP text model, {TEXT_TOKENS} x {TEXT_WIDTH}) and {out / 'init'}")


def export(out: Path, generator: Path) -> None:
    from mmldm.generator.stage import load_generator
    from mmldm.generator.text_encoder import TextEncoder
    from mmldm.pipeline import SoundingVideoPipeline

    base = SoundingVideoPipeline.from_pretrained()
    model, _ = load_generator(generator)
    encoder = TextEncoder.from_folder(out / "text_encoder", length=model.cfg.n_ctx)
    # no class is drawn or given to a text model: the prompt names it; guidance 1 on the (null) class
    sampling = dataclasses.replace(base.generation.sampling, audio_guidance=1.0, video_guidance=1.0)
    generation = dataclasses.replace(base.generation, class_prior=(), sampling=sampling,
                                     text_encoder="random CLIP text model (benchmarks/text_prompts.py)")
    pipe = SoundingVideoPipeline.assemble(vae=base.vae, autoencoder=base.autoencoder, generator=model,
                                          objective=base.generation.diffusion, audio_cfg=base.audio_cfg,
                                          vocoder=base.vocoder, generation=generation, text_encoder=encoder)
    pipe.save_pretrained(out / "model")
    print(f"wrote {out / 'model'}")


def prompts(samples: int) -> list[tuple[int, str]]:
    """``(class id, prompt)`` of each sample: classes cycle, directions alternate every cycle."""
    return [(i % len(CLASSES), caption(i % len(CLASSES), DIRECTIONS[(i // len(CLASSES)) % 2]))
            for i in range(samples)]


def evaluate(model_dir: Path, samples: int, scales: list[float], seed: int, extra: dict) -> dict:
    """One row per text guidance scale, and a control row: the same seeds with the null text (the
    prompt withheld), scored against the class the prompt would have named."""
    from mmldm.pipeline import SoundingVideoPipeline

    pipe = SoundingVideoPipeline.from_pretrained(model_dir)
    asked = prompts(samples)
    rows = []
    for scale in [*scales, None]:
        start = time.perf_counter()
        video_ok = audio_ok = both = direction_ok = 0
        per_class = {cls.name: [0, 0] for cls in CLASSES}
        for i, (class_id, prompt) in enumerate(asked):
            out = pipe.generate("svg", n=1, seed=seed + i, prompt=prompt if scale is not None else "",
                                text_guidance=scale or 1.0, progress=False, **extra)
            frames, wave = out.frames[0], out.waveforms[0].numpy()
            video_class = sm.colour_class(frames)
            audio_class = sm.audio_class(wave, pipe.audio_cfg.sample_rate, pipe.fps)
            video_ok += video_class == class_id
            audio_ok += audio_class == class_id
            hit = video_class == class_id and audio_class == class_id
            both += hit
            per_class[CLASSES[class_id].name][0] += hit
            per_class[CLASSES[class_id].name][1] += 1
            f0 = sm.f0_per_frame(wave, pipe.audio_cfg.sample_rate, pipe.fps, pipe.num_frames)
            f0 = f0[np.isfinite(f0)]  # NaN where a window is silent
            heard = pitch_direction([f0[0], f0[-1]]) if len(f0) >= 2 else "steady"
            direction_ok += heard == prompt.rsplit(" ", 1)[-1]
        row = {"text_guidance": scale if scale is not None else "null text (prompt withheld)", "samples": samples,
               "video_class_follows_prompt_pct": 100.0 * video_ok / samples,
               "audio_class_follows_prompt_pct": 100.0 * audio_ok / samples,
               "both_follow_prompt_pct": 100.0 * both / samples,
               "per_class_both": {k: f"{v[0]}/{v[1]}" for k, v in per_class.items()},
               "pitch_direction_follows_prompt_pct": 100.0 * direction_ok / samples,
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row))
        rows.append(row)
    return {"model": str(model_dir), "seeds": [seed, seed + samples - 1], "prompts": sorted({p for _, p in asked}),
            "settings": extra, "results": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--generator", type=Path, required=True)
    v = sub.add_parser("evaluate")
    v.add_argument("--model", type=Path, required=True)
    v.add_argument("--samples", type=int, default=64)
    v.add_argument("--seed", type=int, default=2000)
    v.add_argument("--text-guidance", type=float, nargs="+", default=[1.0, 3.0])
    v.add_argument("--candidates", type=int, default=None)
    v.add_argument("--json", type=Path, default=None)
    for s in (p, e, v):
        s.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step == "prepare":
        prepare(args.out)
    elif args.step == "export":
        export(args.out, args.generator)
    else:
        extra = {} if args.candidates is None else {"candidates": args.candidates}
        result = evaluate(args.model, args.samples, args.text_guidance, args.seed, extra)
        result.update(command=" ".join(["python", *sys.argv]), threads=args.threads, recipe=RECIPE)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
