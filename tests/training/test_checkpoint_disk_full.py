"""Training whose checkpoint save finds the disk full: one error line, no temporary folder left,
and ``--resume auto`` continues from the previous checkpoint exactly as an unbroken run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from toy_stage import ToyConfig, ToyStage

from mmldm.config import from_dict
from mmldm.errors import DiskFullError
from mmldm.training import checkpoint as ckpt
from mmldm.training.engine import Trainer


def _cfg(out: Path) -> ToyConfig:
    return from_dict(ToyConfig, {"train": {
        "max_steps": 6, "batch_size": 4, "mixed_precision": "no", "out_dir": str(out), "optim": {"lr": 1e-2},
        "checkpoint": {"every": 3}, "log": {"every": 1, "progress_bar": False, "tensorboard": False}}})


def test_full_disk_at_a_checkpoint_then_resume(tmp_path, monkeypatch):
    straight = Trainer(ToyStage(), _cfg(tmp_path / "straight")).fit()

    real_save_file = ckpt.save_file

    def full_at_step_6(tensors, filename, metadata=None):
        if ".tmp_step_000006" in str(filename):
            Path(filename).write_bytes(b"\0" * 64)  # what got written before the disk was full
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", full_at_step_6)
    run = tmp_path / "run"
    with pytest.raises(DiskFullError) as info:
        Trainer(ToyStage(), _cfg(run)).fit()
    assert str(info.value).startswith(f"no space left on device: {run / 'checkpoints'} (writing the checkpoint "
                                      "step_000006 failed")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000003"]

    monkeypatch.setattr(ckpt, "save_file", real_save_file)  # space again
    resumed = Trainer(ToyStage(), _cfg(run), resume="auto").fit()
    assert resumed.checkpoint == run / "checkpoints" / "step_000006"
    for name in ("model_model", "ema_model"):
        a = load_file(str(straight.checkpoint / f"{name}.safetensors"))
        b = load_file(str(resumed.checkpoint / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
