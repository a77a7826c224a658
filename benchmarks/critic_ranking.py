"""How well the candidate critics rank: every candidate decoded and measured.

    python benchmarks/critic_ranking.py                                   # built-in model, 24 samples x 16 candidates
    python benchmarks/critic_ranking.py --samples 8 --seed 4000 --out critics.json
    python benchmarks/critic_ranking.py --task long                       # the candidates of long's 2nd clip
    python benchmarks/critic_ranking.py --task a2v --samples 16 --seconds 6.4   # every clip of any-length a2v
    python benchmarks/critic_ranking.py --model runs/recipe/model

Generation with ``--candidates K`` decodes one candidate per output: the one the model's
critics rank best (docs/generation.md, "Candidate reranking"). This script samples svg
candidates (or, with ``--task long``, the candidates of a long generation's second
clip, which continue the kept first clip; with ``--task a2v``, the candidates of every clip
of any-length a2v for held-out inputs of ``--seconds``, as ``benchmarks/any_length.py``
gives them, each clip continuing the one kept before it) exactly as generation does,
decodes ALL of them, and measures each one's sync error with the Sounding Shapes law (a
model trained on Sounding Shapes, like the built-in one; for a2v against the given audio).
For each critic alone (the model's sync critic too, where its folder has one), for their sum of
ranks (what generation with all of them keeps: ``mmldm.pipeline.reranking.rank_sum``; the a2v
pools continue the clip it keeps), for the first candidate (no reranking) and for
the best candidate by the law (the oracle: what a perfect critic would keep) it reports the Spearman correlation of the
score with the measured error (mean over samples) and the kept candidates' median
error, share within 1 semitone and worst. The law is used to measure, never to choose.
A quality measure, not a speed one: each candidate costs one signal-decoder run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, finish, record, render, run_script, torch_threads

from mmldm.errors import ConfigError, check_positive_int

TASKS = ("svg", "long", "a2v")
COLUMNS: list[Column] = [
    ("kept by", "kept_by", ""), ("Spearman with sync error", "spearman", ".3f"),
    ("median sync error (st)", "median", ".2f"), ("within 1 st %", "within_1_pct", ".1f"),
    ("worst (st)", "worst", ".2f"), ("samples", "samples", ""),
]


def spearman(score: np.ndarray, error: np.ndarray) -> float:
    """Rank correlation of two rows (tied values share their mean rank; an infinite error ranks
    last); NaN where a row is constant (e.g. every candidate's object vanished): nothing to rank."""
    from scipy.stats import spearmanr

    if np.all(score == score[0]) or np.all(error == error[0]):
        return float("nan")
    return float(spearmanr(score, error).statistic)


def kept_row(name: str, picks: np.ndarray, errors: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
    """One table row: the candidates ``picks`` [samples] kept out of ``errors`` [samples, K]."""
    kept = errors[np.arange(len(picks)), picks]
    rhos = [] if scores is None else [spearman(s, e) for s, e in zip(scores, errors)]
    rho = float(np.nanmean(rhos)) if not all(np.isnan(rhos)) else None  # mean over the rankable samples
    return {"kept_by": name, "spearman": rho, "median": float(np.median(kept)),
            "within_1_pct": 100.0 * float(np.mean(kept <= 1.0)), "worst": float(kept.max()),
            "samples": len(picks), "picks": picks.tolist()}


def a2v_pools(pipe: Any, inputs: int, seconds: float, data_seed: int, candidates: int, critics: tuple[str, ...],
              decoder_steps: int | None) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Every clip's candidate pool of any-length a2v for ``inputs`` held-out clips of ``seconds``
    (input i generated with seed i, as ``benchmarks/any_length.py`` does): the sync error of each
    candidate's decoded video against the given audio of its window ``[pools, K]``, and each critic's
    scores ``{critic: [pools, K]}``. Every candidate of a pool decodes with the same decoder noise."""
    from any_length import held_out_inputs

    from mmldm.evaluation.shapes_measures import sync_error
    from mmldm.generator.tasks import window_starts

    errors, scores = [], {name: [] for name in critics}
    for index, clip in enumerate(held_out_inputs(inputs, seconds, data_seed)):
        ranked: list[dict[str, Any]] = []
        audio = torch.from_numpy(clip.audio.astype(np.float32))
        pipe.generate("a2v", n=1, seed=index, audio=audio, candidates=candidates, critics=critics, progress=False,
                      callback=lambda event: ranked.append(event) if event["stage"] == "candidates" else None)
        starts = window_starts(len(clip.frames), pipe.num_frames, False)
        window = pipe.num_frames * pipe.samples_per_frame
        for event in ranked:
            begin = starts[event["clip"]] * pipe.samples_per_frame
            frames, _ = pipe.decode(event["pool"], event["labels"], torch.Generator().manual_seed(index),
                                    steps=decoder_steps)
            errors.append([sync_error(video, clip.audio[begin:begin + window], pipe.audio_cfg.sample_rate, pipe.fps)
                           for video in frames])
            for name in critics:
                scores[name].append(event["scores"][name][0])
    return np.asarray(errors), {name: torch.stack(rows) for name, rows in scores.items()}


def run(model: Path | None = None, samples: int = 24, candidates: int = 16, seed: int = 4000,
        decoder_steps: int | None = None, threads: int | None = None, task: str = "svg",
        seconds: float = 6.4, data_seed: int = 777) -> dict[str, Any]:
    """``samples``: svg / long samples, or a2v inputs (each gives one pool per clip)."""
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.pipeline.reranking import rank_sum

    check_positive_int(samples, "--samples")
    check_positive_int(candidates, "--candidates")
    if task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if candidates < 2:
        raise ConfigError(f"--candidates must be >= 2 (one candidate leaves nothing to rank), got {candidates}")
    with torch_threads(threads):
        pipe = SoundingVideoPipeline.from_pretrained(model)
        critics = ("generator", "contrastive") if pipe.autoencoder.cfg.loss.contrastive > 0 else ("generator",)
        critics = ("sync", *critics) if pipe.sync_critic is not None else critics
        if task == "a2v":
            errors, pool_scores = a2v_pools(pipe, samples, seconds, data_seed, candidates, critics, decoder_steps)
        else:
            errors, pool_scores = generated_pool(pipe, task, samples, candidates, seed, critics, decoder_steps)
    scores = [pool_scores[name].numpy() for name in critics]
    pools = len(errors)
    rows = [kept_row(name, s.argmin(1), errors, s) for name, s in zip(critics, scores)]
    if len(critics) > 1:
        combined = rank_sum([pool_scores[name] for name in critics]).numpy()
        rows.append(kept_row(" + ".join(critics) + " (rank sum)", combined.argmin(1), errors, combined))
    rows.append(kept_row("first candidate (no reranking)", np.zeros(pools, dtype=int), errors, None))
    rows.append(kept_row("oracle (the law's best)", errors.argmin(1), errors, errors))
    settings = {"model": str(model) if model else "built-in", "task": task, "samples": samples,
                "candidates": candidates, "seed": seed, "critics": list(critics),
                **({"pools": pools, "seconds": seconds, "data_seed": data_seed} if task == "a2v" else {}),
                "decoder_steps": decoder_steps or pipe.autoencoder.cfg.sampling.steps,
                "threads": threads or torch.get_num_threads()}
    result = record("critic_ranking", torch.device("cpu"), settings, {"critics": rows})
    result["sync_errors"] = errors.tolist()  # [pools, candidates]
    return result


def generated_pool(pipe: Any, task: str, samples: int, candidates: int, seed: int, critics: tuple[str, ...],
                   decoder_steps: int | None) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """svg's candidates (long: those of the second clip, which continue the kept first clip), sample
    i with seed + i: each candidate's sync error ``[samples, K]`` and each critic's scores."""
    from mmldm.evaluation.shapes_measures import measure_clip
    from mmldm.pipeline.audio import vocode_clips

    ranked: list[dict[str, Any]] = []  # the candidate pools and each critic's scores, as generation ranks
    # the decode inside generate is discarded: one decoder step keeps it cheap, unless the sync critic
    # judges the candidates by it. long: two clips, and the pool kept is the last one ranked, the second clip's
    seconds = {"seconds": 2 * pipe.num_frames / pipe.fps} if task == "long" else {}
    inner_steps = decoder_steps if "sync" in critics else 1
    pipe.generate(task, n=samples, seed=seed, candidates=candidates, critics=critics, decoder_steps=inner_steps,
                  progress=False, callback=lambda event: ranked.append(event)
                  if event["stage"] == "candidates" else None, **seconds)
    pool = ranked[-1]
    errors = np.zeros((samples, candidates))
    for row in range(samples * candidates):
        latents = {k: v[row:row + 1] for k, v in pool["pool"].items()}
        labels = None if pool["labels"] is None else pool["labels"][row:row + 1]
        sample = row // candidates  # every candidate of a sample decodes with the same decoder noise
        frames, image = pipe.decode(latents, labels, torch.Generator().manual_seed(seed + sample),
                                    steps=decoder_steps)
        wave = vocode_clips([image], pipe.audio_cfg, pipe.vocoder)[0]
        errors.flat[row] = measure_clip(frames[0], wave, pipe.audio_cfg.sample_rate, pipe.fps)["sync_error"]
    return errors, pool["scores"]


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    if s["task"] == "a2v":
        title = (f"a2v candidates of every clip of the {s['model']} model for {s['samples']} held-out inputs of "
                 f"{s['seconds']:g} s (dataset seed {s['data_seed']}; {s['pools']} clips x {s['candidates']} "
                 "candidates), all decoded: how the critics rank")
    else:
        what = "svg candidates" if s["task"] == "svg" else "candidates of long's second clip"
        title = (f"{what} of the {s['model']} model, all decoded ({s['samples']} samples x {s['candidates']} "
                 f"candidates, seeds {s['seed']}-{s['seed'] + s['samples'] - 1}): how the critics rank")
    return render(result, [(title, "critics", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--task", choices=TASKS, default="svg",
                        help="svg: joint samples; long: the second clip of two-clip long samples; a2v: every clip "
                             "of any-length a2v for held-out inputs")
    parser.add_argument("--samples", type=int, default=24, help="samples, or a2v inputs (default 24)")
    parser.add_argument("--seconds", type=float, default=6.4, help="a2v: input length (default 6.4)")
    parser.add_argument("--data-seed", type=int, default=777,
                        help="a2v: Sounding Shapes dataset seed of the inputs (default 777)")
    parser.add_argument("--candidates", type=int, default=16, help="candidates per sample (default 16)")
    parser.add_argument("--seed", type=int, default=4000, help="sample i uses seed + i (default 4000)")
    parser.add_argument("--decoder-steps", type=int, default=None, help="signal decoder steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.model, args.samples, args.candidates, args.seed, args.decoder_steps, args.threads, args.task,
                 args.seconds, args.data_seed)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
