"""The latent cache's config hash is the same in every process, whatever its ``PYTHONHASHSEED``.

diffusers records which values of a model's config were defaults as a list made from a set
(``_use_default_values``), whose order depends on the hash seed: the hash must not, or ``mmldm
cache`` could not resume, or run as a second rank, a cache whose ``--vae`` is a training checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmldm.data.latent_cache import config_hash

REPO = Path(__file__).resolve().parents[2]


def test_config_hash_ignores_set_order():
    keys = ["shift_factor", "force_upcast", "latents_mean", "latents_std", "use_quant_conv"]
    one = {"vae_config": {"_use_default_values": keys, "scaling_factor": 0.18}, "tags": {"a", "b", "c"}}
    other = {"tags": {"c", "a", "b"}, "vae_config": {"scaling_factor": 0.18, "_use_default_values": keys[::-1]}}
    assert config_hash(one) == config_hash(other)
    assert config_hash(one) != config_hash({**one, "vae_config": {**one["vae_config"], "scaling_factor": 0.2}})


def _vae_checkpoint(folder: Path) -> Path:
    """A `mmldm train vae` checkpoint folder of the tiny preset (random weights)."""
    from safetensors.torch import save_file

    from mmldm.config import load_config, save_config
    from mmldm.vae.stage import VAEStageConfig, build_vae

    cfg = load_config(VAEStageConfig, REPO / "configs" / "vae" / "tiny.yaml")
    vae = build_vae(cfg.model)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "model_model.safetensors"))
    save_config(cfg, folder / "config.yaml")
    return folder


def _cache(shapes_dir: Path, vae: Path, out: Path, rank: int, hash_seed: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "mmldm", "cache", "--config", str(REPO / "configs" / "vae" / "tiny.yaml"),
            "--set", f"data.root={shapes_dir}", "--vae", str(vae), "--out", str(out), "--split", "all",
            "--shard-size", "4", "--num-workers", "0", "--rank", str(rank), "--world-size", "2"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_cache_ranks_with_other_hash_seeds_make_one_cache(shapes_dir, tmp_path):
    """Rank 0 and rank 1 of one cache, each in a process with its own hash seed: both accepted,
    and the last one writes the index (before the fix rank 1 was refused: "another config")."""
    vae = _vae_checkpoint(tmp_path / "vae-checkpoint")
    out = tmp_path / "cache"
    first = _cache(shapes_dir, vae, out, rank=0, hash_seed=1)
    assert first.returncode == 0, first.stderr
    second = _cache(shapes_dir, vae, out, rank=1, hash_seed=2)
    assert second.returncode == 0, second.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["num_items"] == 9 and len(index["shards"]) == 3
