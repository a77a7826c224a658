"""How well the candidate critics rank: every candidate decoded and measured.

    python benchmarks/critic_ranking.py                                   # built-in model, 24 samples x 16 candidates
    python benchmarks/critic_ranking.py --samples 8 --seed 4000 --out critics.json
    python benchmarks/critic_ranking.py --task long                       # the candidates of long's 2nd clip
    python benchmarks/critic_ranking.py --model runs/recipe/model

Generation with ``--candidates K`` decodes one candidate per output: the one the model's
critics rank best (docs/generation.md, "Candidate reranking"). This script samples svg
candidates (or, with ``--task long``, the candidates of a long generation's second
clip, which continue the kept first clip) exactly as generation does, decodes ALL of
them, and measures each one's sync error with the Sounding Shapes law (a model trained
on Sounding Shapes, like the built-in one). For each critic alone, for their sum of
ranks (what generation keeps: ``mmldm.pipeline.reranking.rank_sum``), for the first
candidate (no reranking) and for the best candidate by the law (the oracle: what a
perfect critic would keep) it reports the Spearman correlation of the
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

TASKS = ("svg", "long")
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


def run(model: Path | None = None, samples: int = 24, candidates: int = 16, seed: int = 4000,
        decoder_steps: int | None = None, threads: int | None = None, task: str = "svg") -> dict[str, Any]:
    from mmldm.evaluation.shapes_measures import measure_clip
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.pipeline.audio import vocode_clips
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
        ranked: list[dict[str, Any]] = []  # the candidate pools and each critic's scores, as generation ranks
        # the decode inside generate is discarded: one decoder step keeps it cheap. long: two clips,
        # and the pool kept is the last one ranked, the second clip's
        seconds = {"seconds": 2 * pipe.num_frames / pipe.fps} if task == "long" else {}
        pipe.generate(task, n=samples, seed=seed, candidates=candidates, critics=critics, decoder_steps=1,
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
    scores = [pool["scores"][name].numpy() for name in critics]
    rows = [kept_row(name, s.argmin(1), errors, s) for name, s in zip(critics, scores)]
    if len(critics) > 1:
        combined = rank_sum([pool["scores"][name] for name in critics]).numpy()
        rows.append(kept_row(" + ".join(critics) + " (rank sum)", combined.argmin(1), errors, combined))
    rows.append(kept_row("first candidate (no reranking)", np.zeros(samples, dtype=int), errors, None))
    rows.append(kept_row("oracle (the law's best)", errors.argmin(1), errors, errors))
    settings = {"model": str(model) if model else "built-in", "task": task, "samples": samples,
                "candidates": candidates, "seed": seed, "critics": list(critics),
                "decoder_steps": decoder_steps or pipe.autoencoder.cfg.sampling.steps,
                "threads": threads or torch.get_num_threads()}
    result = record("critic_ranking", torch.device("cpu"), settings, {"critics": rows})
    result["sync_errors"] = errors.tolist()  # [samples, candidates]
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    what = "svg candidates" if s["task"] == "svg" else "candidates of long's second clip"
    title = (f"{what} of the {s['model']} model, all decoded ({s['samples']} samples x "
             f"{s['candidates']} candidates, seeds {s['seed']}-{s['seed'] + s['samples'] - 1}): how the critics rank")
    return render(result, [(title, "critics", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--task", choices=TASKS, default="svg",
                        help="svg: joint samples; long: the second clip of two-clip long samples")
    parser.add_argument("--samples", type=int, default=24, help="samples (default 24)")
    parser.add_argument("--candidates", type=int, default=16, help="candidates per sample (default 16)")
    parser.add_argument("--seed", type=int, default=4000, help="sample i uses seed + i (default 4000)")
    parser.add_argument("--decoder-steps", type=int, default=None, help="signal decoder steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.model, args.samples, args.candidates, args.seed, args.decoder_steps, args.threads, args.task)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
