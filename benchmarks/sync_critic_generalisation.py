"""Does a sync critic judge clips it never saw? Its agreement on training windows against held-out ones.

    python benchmarks/sync_critic_generalisation.py                        # the built-in model's critic
    python benchmarks/sync_critic_generalisation.py --critic runs/recipe/runs/sync-critic \\
        --data runs/recipe/data/train --manifest manifest.jsonl --data runs/heldout --manifest manifest.jsonl
    python benchmarks/sync_critic_generalisation.py --out critic.json

A sync critic (``mmldm train sync-critic``; docs/generation.md, "The sync critic") ranks decoded
candidates by how well each frame agrees with its stretch of sound. That is only worth its decode
if it judges clips it did not learn from: a2v and v2a give it new sound or new frames. For each
``--data`` folder (with its ``--manifest``, in the same order; default: the built-in model's
critic on fresh Sounding Shapes clips it never saw, ``mmldm data synth`` into a temporary folder)
it reads ``--clips`` random windows (seed ``--seed``) and reports, in batches of 32 clips:

- frame retrieval: the share of frames whose own stretch of sound scores highest among all the
  batch's frames' (chance: 1 in 32 x frames per clip), as the critic trains;
- the mean cosine of each frame with its own sound, and with its clip's sound shifted by a quarter
  clip (a sync error);
- per clip: how often its own sound beats another clip's, and beats itself shifted.

``--critic`` is a model folder (its ``sync_critic/``), a critic folder, or a training run (its
newest checkpoint). A quality measure, not a speed one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, record, render, run_script, torch_threads

from mmldm.errors import ConfigError, check_positive_int

BATCH = 32
FRESH_SHAPES = "fresh Sounding Shapes clips (dataset seed 90210)"
COLUMNS: list[Column] = [
    ("clips of", "data", ""), ("windows there", "windows", ""), ("clips read", "clips", ""),
    ("frame retrieval", "frame_retrieval", ".3f"), ("chance", "chance", ".4f"),
    ("cosine, own sound", "own_cosine", ".3f"), ("cosine, sound shifted 1/4 clip", "shifted_cosine", ".3f"),
    ("own sound beats another clip's", "beats_other", ".3f"), ("own sound beats itself shifted", "beats_shifted", ".3f"),
]


def load_critic(path: Path) -> tuple[Any, dict[str, Any]]:
    """(critic in eval mode, its clip settings) from a model folder, a critic folder or a training run."""
    from mmldm.critic.network import SYNC_CRITIC_NAME, SyncCritic, load_sync_critic

    if (path / "checkpoints").is_dir():  # a training run: its newest complete checkpoint
        from mmldm.config import load_config
        from mmldm.critic.stage import SyncCriticTrainConfig
        from mmldm.training.checkpoint import complete_checkpoints, load_trained_weights

        found = complete_checkpoints(path / "checkpoints")
        if not found:
            raise ConfigError(f"{path}: a training run without a complete checkpoint")
        cfg = load_config(SyncCriticTrainConfig, found[-1] / "config.yaml")
        critic = SyncCritic(cfg.critic)
        load_trained_weights(critic, found[-1], "sync critic", use_ema=cfg.train.ema.enabled)
        clip = {"fps": cfg.data.fps, "num_frames": cfg.data.num_frames, "sample_rate": cfg.data.sample_rate,
                "size": cfg.critic.frame_size, "checkpoint": str(found[-1])}
        return critic.eval(), clip
    folder = path / SYNC_CRITIC_NAME if (path / SYNC_CRITIC_NAME).is_dir() else path
    critic, info = load_sync_critic(folder)
    clip = {"fps": info.fps, "num_frames": info.num_frames, "sample_rate": info.sample_rate,
            "size": info.critic.frame_size, "checkpoint": str(folder)}
    return critic, clip


@torch.no_grad()
def measure(critic: Any, frames: torch.Tensor, audio_image: torch.Tensor) -> dict[str, float]:
    """The table's numbers for clips ``frames [N, T, 3, H, W]`` and their ``audio_image [N, 3, H, W]``,
    in batches of :data:`BATCH` clips (N a multiple of it)."""
    from mmldm.critic.stage import frame_infonce

    retrieval, own, shifted, beats_other, beats_shifted = [], [], [], [], []
    for begin in range(0, len(frames), BATCH):
        f, a = frames[begin:begin + BATCH], audio_image[begin:begin + BATCH]
        retrieval.append(float(frame_infonce(critic, f, a)[1]))
        s = critic.frame_similarity(f, a).mean(1)  # [B] each clip with its own sound
        s_shifted = critic.frame_similarity(f, a.roll(max(1, a.shape[-1] // 4), dims=-1)).mean(1)
        s_other = critic.frame_similarity(f, a.roll(1, dims=0)).mean(1)  # the next clip's sound
        own.append(s)
        shifted.append(s_shifted)
        beats_other.append((s > s_other).float())
        beats_shifted.append((s > s_shifted).float())
    return {"frame_retrieval": sum(retrieval) / len(retrieval), "chance": 1 / (BATCH * frames.shape[1]),
            "own_cosine": float(torch.cat(own).mean()), "shifted_cosine": float(torch.cat(shifted).mean()),
            "beats_other": float(torch.cat(beats_other).mean()), "beats_shifted": float(torch.cat(beats_shifted).mean())}


def read_windows(root: Path, manifest: str | None, clip: dict[str, Any], clips: int, seed: int
                 ) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(windows in the folder, frames, audio images) of ``clips`` random windows, read as the critic trained."""
    from mmldm.data.config import ClipDataConfig

    data = ClipDataConfig(root=str(root), manifest=manifest, fps=clip["fps"], num_frames=clip["num_frames"],
                          sample_rate=clip["sample_rate"], size=clip["size"], val_fraction=0.0)
    dataset = data.dataset("train")
    if len(dataset) < clips:
        raise ConfigError(f"{root}: {len(dataset)} windows, fewer than --clips {clips}")
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:clips].tolist()
    items = [dataset[i] for i in picks]
    return (len(dataset), torch.stack([item["frames"] for item in items]).float(),
            torch.stack([item["audio_image"] for item in items]).float())


def run(critic_path: Path | None, data: list[Path], manifests: list[str | None], clips: int, seed: int,
        threads: int | None) -> dict[str, Any]:
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    check_positive_int(clips, "clips")
    if clips % BATCH:
        raise ConfigError(f"--clips must be a multiple of {BATCH}, got {clips}")
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="sync-critic-generalisation-") as tmp:
        critic, clip = load_critic(critic_path or BUILTIN_MODEL)
        if not data:  # the built-in critic's own kind of clips, from a dataset seed it never saw
            from mmldm.cli.main import main as cli

            fresh = Path(tmp) / "shapes"
            if cli(["data", "synth", "--out", str(fresh), "--n", str(clips), "--seed", "90210", "--num-frames",
                    str(clip["num_frames"]), "--size", str(clip["size"]),
                    "--sample-rate", str(clip["sample_rate"])]) != 0:
                raise ConfigError("could not make fresh Sounding Shapes clips")
            data, manifests = [fresh], [None]
        if len(manifests) not in (0, len(data)):
            raise ConfigError(f"give one --manifest per --data folder ({len(data)}), or none")
        manifests = manifests or [None] * len(data)
        rows = []
        for root, manifest in zip(data, manifests):
            windows, frames, audio_image = read_windows(root, manifest, clip, clips, seed)
            name = FRESH_SHAPES if root.parent == Path(tmp) else f"{root}" + (f" ({manifest})" if manifest else "")
            rows.append({"data": name, "windows": windows,
                         "clips": clips, **measure(critic, frames, audio_image)})
    settings = {"critic": clip["checkpoint"], "clip": {k: v for k, v in clip.items() if k != "checkpoint"},
                "clips": clips, "seed": seed, "batch": BATCH}
    return record("sync_critic_generalisation", torch.device("cpu"), settings, {"critic": rows})


def markdown(result: dict[str, Any]) -> str:
    return render(result, [(f"Sync critic {result['settings']['critic']}", "critic", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critic", type=Path, default=None,
                        help="model folder, critic folder or training run (default: the built-in model's)")
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="a folder of clips (repeat for several; default: fresh Sounding Shapes clips)")
    parser.add_argument("--manifest", action="append", default=[],
                        help="the manifest of each --data folder, in order (default: the folder's own)")
    parser.add_argument("--clips", type=int, default=128, help="random windows per folder, a multiple of 32")
    parser.add_argument("--seed", type=int, default=0, help="which windows (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.critic, args.data, args.manifest, args.clips, args.seed, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
