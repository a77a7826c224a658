"""Worker for the multi-process tests: ``torchrun --nproc_per_node 2 ddp_worker.py OUT_DIR [MAX_STEPS [auto]]``.

Trains the toy stage (with its critic group) through the Python API and writes,
per process, the final trainable weights and the local loss values it saw, so
the test can compare processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_stage import ToyConfig, ToyStage  # noqa: E402

from mmldm.config import from_dict  # noqa: E402
from mmldm.training.engine import Trainer  # noqa: E402


class RecordingToyStage(ToyStage):
    """The toy stage, remembering this process's own loss values per step."""

    def __init__(self) -> None:
        super().__init__()
        self.local: dict[int, list[float]] = {}

    def losses(self, modules, batch, step, generator=None):
        terms = super().losses(modules, batch, step, generator)
        self.local.setdefault(step, []).append(float(terms["loss/model"].detach()))
        return terms


def main(out_dir: Path, max_steps: int, resume: str | None) -> None:
    cfg = from_dict(ToyConfig, {
        "model": {"critic": True},
        "train": {"max_steps": max_steps, "batch_size": 4, "grad_accum": 2, "mixed_precision": "no",
                  "optim": {"lr": 1e-2}, "out_dir": str(out_dir),
                  "log": {"every": 1, "record_data_order": True, "tensorboard": False, "progress_bar": False},
                  "checkpoint": {"every": 3}, "ema": {"warmup_steps": 2}},
    })
    stage = RecordingToyStage()
    trainer = Trainer(stage, cfg, resume=resume)
    rank = trainer.rank
    initial = {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.wrapped["model"]).state_dict().items()}
    result = trainer.fit()
    weights = {f"{key}.{name}": value for key in trainer.trainable_keys
               for name, value in trainer.accelerator.unwrap_model(trainer.wrapped[key]).state_dict().items()}
    weights.update({f"initial.{name}": value for name, value in initial.items()})
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out_dir / f"weights_rank{rank}.safetensors"))
    (out_dir / f"losses_rank{rank}.json").write_text(json.dumps({
        "num_processes": trainer.num_processes,
        "local": {str(step): values for step, values in stage.local.items()},
        "logged": {str(step): values["loss/model"] for step, values in result.history},
    }))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3, sys.argv[3] if len(sys.argv) > 3 else None)
