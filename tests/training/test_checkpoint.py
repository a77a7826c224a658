"""Checkpoint folders: atomic commit, manifest check, pruning, RNG round trip."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmldm.errors import TrainingError
from mmldm.training import checkpoint as ckpt


def _write(root: Path, step: int, keep_last: int = 5) -> Path:
    tmp = ckpt.begin_checkpoint(root, step)
    ckpt.save_tensors(tmp / "model_model.safetensors", {"w": torch.full((4,), float(step))})
    ckpt.save_json(tmp / "state.json", {"step": step})
    return ckpt.commit_checkpoint(tmp, step, keep_last)


def test_commit_points_latest_and_prunes(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        final = _write(root, step, keep_last=2)
    assert final == root / "step_000030"
    assert (root / "latest").read_text().strip() == "step_000030"
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step_000020", "step_000030"]
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000020", "step_000030"]
    assert ckpt.resolve_resume(tmp_path, "auto") == root / "step_000030"
    assert ckpt.resolve_resume(tmp_path / "elsewhere", tmp_path) == root / "step_000030"  # a run folder
    assert ckpt.load_tensors(final / "model_model.safetensors")["w"][0] == 30


def test_resuming_an_older_checkpoint_abandons_newer_ones(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        _write(root, step, keep_last=3)
    final = _write(root, 6, keep_last=2)  # a run resumed from step 4 reaches step 6
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step_000004", "step_000006"]
    assert ckpt.resolve_resume(tmp_path, "auto") == final


def test_auto_resume_skips_unfinished_and_damaged_folders(tmp_path: Path, capsys) -> None:
    root = tmp_path / "checkpoints"
    assert ckpt.resolve_resume(tmp_path, "auto") is None
    _write(root, 10)
    # a checkpoint being written when the process died
    tmp = ckpt.begin_checkpoint(root, 20)
    ckpt.save_json(tmp / "state.json", {"step": 20})
    # a step folder without manifest, and one whose file was truncated later
    (root / "step_000030").mkdir()
    damaged = _write(root, 40)
    with open(damaged / "model_model.safetensors", "r+b") as fh:
        fh.truncate(8)
    capsys.readouterr()
    assert ckpt.resolve_resume(tmp_path, "auto") == root / "step_000010"
    note = capsys.readouterr().err  # the skipped folders are named, in one line
    assert note.count("\n") == 1 and "step_000030, step_000040" in note and "step_000010" in note
    with pytest.raises(TrainingError, match="incomplete"):
        ckpt.resolve_resume(tmp_path, damaged)
    with pytest.raises(TrainingError, match="no checkpoint folder"):
        ckpt.resolve_resume(tmp_path, tmp_path / "nowhere")


def test_crash_during_rename_keeps_previous_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    _write(root, 10)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        _write(root, 20)
    monkeypatch.undo()
    assert (root / "latest").read_text().strip() == "step_000010"
    assert ckpt.resolve_resume(tmp_path, "auto") == root / "step_000010"
    _write(root, 20)  # the next attempt cleans the stale temporary folder
    assert not (root / ".tmp_step_000020").exists()
    assert ckpt.resolve_resume(tmp_path, "auto") == root / "step_000020"


def test_rng_states_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    tensors, metadata = ckpt.rng_state({"losses": gen})
    path = tmp_path / "rng.safetensors"
    ckpt.save_tensors(path, tensors, metadata)
    expected = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=gen)  # move all streams on
    gen_restored = torch.Generator()
    ckpt.restore_rng_state(path, {"losses": gen_restored})
    got = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen_restored))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


def test_torch_state_loads_without_unpickling_objects(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    ckpt.save_torch_state(path, opt.state_dict())
    assert ckpt.load_torch_state(path)["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]
    torch.save({"bad": object()}, path)
    with pytest.raises(TrainingError, match="cannot read checkpoint state"):
        ckpt.load_torch_state(path)


class _Crash(Exception):
    pass


def test_crash_at_any_point_of_a_commit_leaves_a_valid_latest(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill (simulated) before each file-system operation of writing, sealing and pruning."""
    names = ("save_tensors", "save_json", "_fsync_dir", "atomic_write_text", "_remove")
    originals = {name: getattr(ckpt, name) for name in names}
    originals["rename"] = os.rename
    crash_at = {"n": -1, "calls": 0}

    def counting(original):
        def wrapper(*args, **kwargs):
            crash_at["calls"] += 1
            if crash_at["calls"] == crash_at["n"]:
                raise _Crash()
            return original(*args, **kwargs)
        return wrapper

    for name in names:
        monkeypatch.setattr(ckpt, name, counting(originals[name]))
    monkeypatch.setattr(ckpt.os, "rename", counting(originals["rename"]))

    n = 1
    while True:
        root = tmp_path / f"run{n}" / "checkpoints"
        crash_at.update(n=-1, calls=0)
        _write(root, 10, keep_last=1)
        _write(root, 20, keep_last=1)
        crash_at.update(n=n, calls=0)
        try:
            _write(root, 30, keep_last=1)
        except _Crash:
            pass
        else:
            break  # n is past the last operation: every crash point was tried
        newest = ckpt.resolve_resume(root.parent, "auto")
        assert newest is not None and ckpt.is_complete(newest)
        latest = root / (root / "latest").read_text().strip()
        assert ckpt.is_complete(latest) and latest.name <= newest.name
        assert ckpt.load_tensors(newest / "model_model.safetensors")["w"][0] in (20.0, 30.0)
        n += 1
    assert n > 8  # the sweep covered the whole sequence
