"""Contrastive features gathered across two real processes (gloo, torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mmldm.autoencoder.config import SemanticConfig
from mmldm.autoencoder.semantic import ContrastiveHead

HERE = Path(__file__).resolve().parent


@pytest.mark.slow  # two torchrun processes importing torch + diffusers: ~30 s on this CPU
def test_contrastive_loss_gathers_features_across_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(HERE / "contrastive_worker.py"),
                           str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank_{r}.safetensors")) for r in (0, 1)]

    # the same computation in one process: rank r's rows against ALL columns of the batch of 6
    torch.manual_seed(0)
    head = ContrastiveHead(SemanticConfig(dim=8, contrastive_dim=4))
    g = torch.Generator().manual_seed(1)
    video, audio = torch.randn(6, 4, 8, generator=g), torch.randn(6, 4, 8, generator=g)
    for rank, result in enumerate(ranks):
        rows = slice(rank * 3, (rank + 1) * 3)
        local_video = video[rows].clone().requires_grad_(True)
        v, a = head.embed(local_video, audio[rows])
        with torch.no_grad():
            all_v, all_a = head.embed(video, audio)
        labels = torch.arange(3) + rank * 3
        scale = head.logit_scale()
        all_a = torch.cat([all_a[:rank * 3], a, all_a[(rank + 1) * 3:]])  # local part keeps its gradient
        all_v = torch.cat([all_v[:rank * 3], v, all_v[(rank + 1) * 3:]])
        loss = 0.5 * (F.cross_entropy(scale * v @ all_a.T, labels) + F.cross_entropy(scale * a @ all_v.T, labels))
        loss.backward()
        torch.testing.assert_close(result["loss"][0], loss.detach())
        torch.testing.assert_close(result["grad_video"], local_video.grad)
        assert local_video.grad.abs().max() > 0
    # gathering matters: a rank's loss differs from the loss of its half alone
    alone = head(video[:3], audio[:3]).detach()
    assert not torch.allclose(alone, ranks[0]["loss"][0])
