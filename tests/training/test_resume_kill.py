"""Exact resume after ``kill -9``, with real ``mmldm train`` subprocesses.

Run A trains 8 steps straight. Run B is killed (SIGKILL) in the middle of step 6,
after its checkpoint at step 4, then resumed with ``--resume auto``. Weights,
EMA, optimiser states and the data order must match A bitwise (CPU, bf16
autocast, dropout, engine-generator noise, two optimiser groups, gradient
accumulation, an epoch boundary at step 5, warm-up + cosine schedule).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmldm.training.checkpoint import complete_checkpoints

HERE = Path(__file__).resolve().parent

CONFIG = """\
model: {critic: true, dropout: 0.2}
data: {num_items: 40}
train:
  max_steps: 8
  batch_size: 4
  grad_accum: 2
  mixed_precision: bf16
  optim: {lr: 0.01}
  schedule: {kind: cosine, warmup_steps: 2}
  ema: {decay: 0.9, warmup_steps: 3}
  checkpoint: {every: 4, keep_last: 2}
  log: {every: 1, record_data_order: true, progress_bar: false, tensorboard: false}
"""


def _command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmldm", "train", "toy_stage:ToyStage", "--config", str(config),
            "--out", str(out), *extra]


def _order(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


def test_kill_9_then_resume_equals_straight_run(tmp_path: Path) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    pause_file = tmp_path / "paused"

    run_a = subprocess.Popen(_command(config, straight), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_b = subprocess.Popen(_command(config, broken, "--set", "data.pause_at_step=6",
                                      f"data.pause_file={pause_file}"),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not pause_file.exists():
        assert run_b.poll() is None, run_b.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "run B never reached step 6"
        time.sleep(0.05)
    os.kill(run_b.pid, signal.SIGKILL)
    run_b.wait()
    assert run_b.returncode == -signal.SIGKILL

    # Only the step-4 checkpoint exists; it is what --resume auto will take.
    assert [p.name for p in complete_checkpoints(broken / "checkpoints")] == ["step_000004"]
    assert (broken / "checkpoints" / "latest").read_text().strip() == "step_000004"
    first_part = _order(broken / "data_order" / "rank_0.txt")

    resumed = subprocess.run(_command(config, broken, "--resume", "auto"), env=env,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained steps 4->8" in resumed.stdout
    out_a, err_a = run_a.communicate(timeout=240)
    assert run_a.returncode == 0, err_a[-3000:]

    final_a = straight / "checkpoints" / "step_000008"
    final_b = broken / "checkpoints" / "step_000008"
    for name in ("model_model", "model_critic", "ema_model", "ema_critic"):
        a = load_file(str(final_a / f"{name}.safetensors"))
        b = load_file(str(final_b / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"
    for name in ("optim_model", "optim_critic"):
        a = torch.load(final_a / f"{name}.pt", weights_only=True)
        b = torch.load(final_b / f"{name}.pt", weights_only=True)
        for index, state in a["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b["state"][index][key]), f"{name} {index} {key}"
    # Same data order: steps 0-3 from the killed run, steps 4-7 from the resumed one.
    order_b = _order(broken / "data_order" / "rank_0.txt")
    kept = [line for line in first_part if int(line.split()[0]) < 4]
    replayed = order_b[len(first_part):]
    assert kept + replayed == _order(straight / "data_order" / "rank_0.txt")
    assert len(kept) + len(replayed) == 16  # 8 steps x 2 micro-batches, crossing an epoch at step 5
