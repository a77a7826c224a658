"""The engine through its Python API, on the toy stage (one process, CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from toy_stage import ToyConfig, ToyStage

from mmldm.cli.main import main
from mmldm.config import dump_yaml, from_dict, merge
from mmldm.errors import ConfigError, DataError, TrainingError
from mmldm.training.config import ScheduleConfig
from mmldm.training.data import ShardedEpochSampler
from mmldm.training.engine import Trainer, lr_factor


def _cfg(out: Path, **train: Any) -> ToyConfig:
    base = {"train": {"max_steps": 4, "batch_size": 4, "mixed_precision": "no", "out_dir": str(out),
                      "optim": {"lr": 1e-2}, "log": {"every": 1, "progress_bar": False, "tensorboard": False}}}
    return from_dict(ToyConfig, merge(base, {"train": train}))


def _full_mse(trainer: Trainer) -> float:
    """Mean squared error of the current model on the whole toy dataset (eval mode)."""
    data = trainer.stage.dataset(trainer.cfg, "train")
    model = trainer.wrapped["model"].eval()
    with torch.no_grad():
        mse = (model(trainer.frozen["features"](data.x)) - data.y).pow(2).mean().item()
    model.train()
    return mse


def test_fit_trains_checkpoints_and_logs(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, max_steps=20, batch_size=16,
               log={"every": 5, "preview_every": 10, "tensorboard": True, "record_data_order": True},
               checkpoint={"every": 10, "keep_last": 1}, ema={"warmup_steps": 5})
    trainer = Trainer(ToyStage(), cfg)
    frozen_before = {k: v.clone() for k, v in trainer.frozen["features"].state_dict().items()}
    mse_before = _full_mse(trainer)
    result = trainer.fit()

    assert result.steps == 20 and result.checkpoint == tmp_path / "checkpoints" / "step_000020"
    assert [step for step, _ in result.history] == [5, 10, 15, 20]
    assert _full_mse(trainer) < 0.85 * mse_before  # it learns
    assert (tmp_path / "config.yaml").read_text() == dump_yaml(cfg)
    assert (result.checkpoint / "config.yaml").read_text() == dump_yaml(cfg)
    # trainable weights and EMA are saved; the frozen module is not, and did not change
    files = sorted(p.name for p in result.checkpoint.iterdir())
    assert files == ["COMPLETE", "config.yaml", "ema_model.safetensors", "model_model.safetensors",
                     "optim_model.pt", "rng_rank0.safetensors", "sched_model.pt", "state.json"]
    assert not trainer.frozen["features"].training
    for key, value in trainer.frozen["features"].state_dict().items():
        assert torch.equal(value, frozen_before[key])
    saved = load_file(str(result.checkpoint / "model_model.safetensors"))
    assert torch.equal(saved["0.weight"], trainer.wrapped["model"].state_dict()["0.weight"])
    ema = load_file(str(result.checkpoint / "ema_model.safetensors"))
    assert not torch.equal(ema["0.weight"], saved["0.weight"])

    # data order: 4 batches of 16 per epoch of the 64-item dataset, each epoch in its own order
    lines = (tmp_path / "data_order" / "rank_0.txt").read_text().split("\n")[:-1]
    assert len(lines) == 20
    for step, line in enumerate(lines):
        _, epoch, batch, indices = line.split()
        assert (int(epoch), int(batch)) == divmod(step, 4)
        assert list(map(int, indices.split(","))) == ShardedEpochSampler(64, 16, 0, int(epoch)).batch_indices(int(batch))

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "audio": 0}).Reload()
    tags = events.Tags()
    assert {"loss/model", "mse", "lr/model", "grad_norm/model", "perf/steps_per_second"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/model")] == [5, 10, 15, 20]
    assert {"preview/video", "preview/image"} <= set(tags["images"])
    assert [e.step for e in events.Images("preview/video")] == [10, 20]
    assert "preview/audio_0" in tags["audio"]


def test_resume_from_a_checkpoint_path_continues_exactly(tmp_path: Path) -> None:
    def cfg(out: Path, max_steps: int) -> ToyConfig:
        c = _cfg(out, max_steps=max_steps, grad_accum=2, num_workers=1, checkpoint={"every": 3},
                 ema={"warmup_steps": 2})
        c.model.critic = True
        return c

    straight = Trainer(ToyStage(), cfg(tmp_path / "a", 6)).fit()
    Trainer(ToyStage(), cfg(tmp_path / "b", 3)).fit()
    resumed = Trainer(ToyStage(), cfg(tmp_path / "b", 6), resume=tmp_path / "b" / "checkpoints" / "step_000003").fit()
    for name in ("model_model", "model_critic", "ema_model", "ema_critic"):
        a = load_file(str(straight.checkpoint / f"{name}.safetensors"))
        b = load_file(str(resumed.checkpoint / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert straight.history[-1][0] == resumed.history[-1][0] == 6
    assert straight.losses == resumed.losses


def test_group_settings_and_autocast(tmp_path: Path) -> None:
    seen: list[tuple[bool, torch.dtype]] = []

    class Recording(ToyStage):
        def losses(self, modules, batch, step, generator=None):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return super().losses(modules, batch, step, generator)

    cfg = _cfg(tmp_path, max_steps=2, mixed_precision="bf16", groups={"critic": {"lr": 1e-3, "grad_clip": 0}},
               schedule={"warmup_steps": 4})
    cfg.model.critic = True
    result = Trainer(Recording(), cfg).fit()
    assert seen == [(True, torch.bfloat16)] * 2
    last = result.history[-1][1]
    assert last["lr/model"] == pytest.approx(1e-2 * 3 / 4) and last["lr/critic"] == pytest.approx(1e-3 * 3 / 4)
    assert "grad_norm/model" in last and "grad_norm/critic" not in last  # clipping off for the critic
    assert {"optim_model.pt", "optim_critic.pt", "sched_critic.pt"} <= {p.name for p in result.checkpoint.iterdir()}


def test_nan_loss_stops_with_step_and_term_keeping_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, max_steps=10, checkpoint={"every": 2})
    cfg.data.nan_at_step = 3
    with pytest.raises(TrainingError, match=r"step 3: loss term 'loss/model' is nan") as err:
        Trainer(ToyStage(), cfg).fit()
    assert "step_000002" in str(err.value)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["latest", "step_000002"]
    weights = load_file(str(tmp_path / "checkpoints" / "step_000002" / "model_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_refusals(tmp_path: Path) -> None:
    Trainer(ToyStage(), _cfg(tmp_path, max_steps=1)).fit()
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        Trainer(ToyStage(), _cfg(tmp_path, max_steps=2))
    small = _cfg(tmp_path / "small", batch_size=8)
    small.data.num_items = 5
    with pytest.raises(DataError, match="5 items"):
        Trainer(ToyStage(), small).fit()

    class NoLoss(ToyStage):
        def losses(self, modules, batch, step, generator=None):
            return {"mse": super().losses(modules, batch, step, generator)["mse"]}

    with pytest.raises(TrainingError, match="no 'loss/model'"):
        Trainer(NoLoss(), _cfg(tmp_path / "noloss")).fit()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a GPU"):
            Trainer(ToyStage(), _cfg(tmp_path / "fp16", mixed_precision="fp16"))


def test_lr_schedule() -> None:
    cosine = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cosine, 110) == pytest.approx(0.1)
    assert lr_factor(9, cosine, 110) == pytest.approx(1.0)
    assert lr_factor(60, cosine, 110) == pytest.approx(0.55)
    assert lr_factor(110, cosine, 110) == pytest.approx(0.1)
    assert lr_factor(500, ScheduleConfig(), 10) == 1.0


def test_cli_train_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preset = tmp_path / "toy.yaml"
    preset.write_text("train: {mixed_precision: no, batch_size: 4, log: {progress_bar: false}}\n")
    out = tmp_path / "run"
    args = ["train", "toy_stage:ToyStage", "--config", str(preset), "--set", "model.hidden=6",
            "train.checkpoint.every=2", "--out", str(out), "--max-steps", "2"]
    assert main(args) == 0
    assert "trained steps 0->2 in " in (log := capsys.readouterr().out) and "(fp32)" in log  # mixed_precision: no
    saved = (out / "checkpoints" / "step_000002" / "config.yaml").read_text()
    assert "hidden: 6" in saved and "max_steps: 2" in saved and f"out_dir: {out}" in saved
    assert main(args[:-1] + ["4", "--resume", "auto"]) == 0
    assert "trained steps 2->4" in capsys.readouterr().out
    assert main(["train", "no-such-stage"]) == 2
    assert "unknown stage 'no-such-stage'" in capsys.readouterr().err


def test_dataset_hears_each_epoch_start(tmp_path: Path) -> None:
    epochs: list[int] = []

    class EpochAware(ToyStage):
        def dataset(self, cfg, split):
            data = super().dataset(cfg, split)
            data.set_epoch = epochs.append
            return data

    # 64 items in batches of 16: steps 0-3 are epoch 0, steps 4-5 epoch 1
    Trainer(EpochAware(), _cfg(tmp_path, max_steps=6, batch_size=16, checkpoint={"every": 6})).fit()
    assert epochs == [0, 1]
    state = (tmp_path / "checkpoints" / "step_000006" / "state.json").read_text()
    assert '"epoch": 1' in state and '"batch": 2' in state


def test_resume_with_a_new_module_starts_it_fresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Trainer(ToyStage(), _cfg(tmp_path, max_steps=1)).fit()
    with_critic = _cfg(tmp_path, max_steps=2)
    with_critic.model.critic = True  # e.g. a discriminator switched on for fine-tuning
    result = Trainer(ToyStage(), with_critic, resume="auto").fit()
    out = capsys.readouterr().out
    assert "no model_critic.safetensors; it starts fresh" in out
    assert "no state for optimiser group 'critic'" in out
    assert result.steps == 2 and (result.checkpoint / "model_critic.safetensors").is_file()
    bigger = _cfg(tmp_path, max_steps=3)
    bigger.model.hidden = 32
    with pytest.raises(TrainingError, match="weights do not fit the module"):
        Trainer(ToyStage(), bigger, resume="auto")


def test_idle_group_does_not_move(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, max_steps=2, checkpoint={"every": 1, "keep_last": 3}, ema={"enabled": False})
    cfg.model.critic = True
    cfg.model.critic_start_step = 1
    Trainer(ToyStage(), cfg).fit()
    steps = [load_file(str(tmp_path / "checkpoints" / f"step_00000{i}" / "model_critic.safetensors")) for i in (1, 2)]
    optim = torch.load(tmp_path / "checkpoints" / "step_000001" / "optim_critic.pt", weights_only=True)
    assert optim["state"] == {}  # no update in step 0
    assert not torch.equal(steps[0]["0.weight"], steps[1]["0.weight"])  # trained in step 1


def test_loss_scaling_with_two_groups_matches_unscaled_training(tmp_path: Path) -> None:
    # fp16 needs a GPU; a CPU GradScaler with a power-of-two scale exercises the same code
    # path (scale, per-group unscale and clip, step, one update) and must change nothing.
    def run(out: Path, scaled: bool):
        cfg = _cfg(out, max_steps=3, ema={"enabled": False}, grad_clip=0.5)
        cfg.model.critic = True
        trainer = Trainer(ToyStage(), cfg)
        if scaled:
            trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        return trainer.fit()

    plain, scaled = run(tmp_path / "plain", False), run(tmp_path / "scaled", True)
    for name in ("model_model", "model_critic"):
        a = load_file(str(plain.checkpoint / f"{name}.safetensors"))
        b = load_file(str(scaled.checkpoint / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.load(scaled.checkpoint / "scaler.pt", weights_only=True)["scale"] == 2.0**12


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_resolved_used_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      native: bool) -> None:
    from mmldm.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    seen: list[bool] = []

    class Recording(ToyStage):
        def losses(self, modules, batch, step, generator=None):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().losses(modules, batch, step, generator)

    cfg = _cfg(tmp_path, max_steps=1, mixed_precision="auto", device="cpu")
    result = Trainer(Recording(), cfg).fit()
    assert seen == [native]
    saved = yaml.safe_load((result.checkpoint / "config.yaml").read_text())
    assert saved["train"]["mixed_precision"] in (("bf16",) if native else ("no", False))  # YAML: no = false
