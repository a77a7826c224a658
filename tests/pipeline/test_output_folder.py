"""One run per output folder: a folder holding another run's outputs is refused (or, asked for,
replaced) before any work, so runs never mix and evaluate never scores two runs as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmldm.errors import ConfigError
from mmldm.pipeline.output import SoundingVideoOutput, save_in_batches


def _batches(task: str, fail: bool = False):
    calls = []

    def make_batch(count: int, first_seed: int) -> SoundingVideoOutput:
        calls.append(first_seed)
        if fail:
            raise RuntimeError("generation failed")
        gen = torch.Generator().manual_seed(first_seed)
        return SoundingVideoOutput(torch.rand(count, 8, 3, 16, 16, generator=gen) * 2 - 1,
                                   torch.rand(count, 12800, generator=gen) - 0.5, fps=10.0, sample_rate=16000,
                                   settings={"task": task})

    make_batch.calls = calls
    return make_batch


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_second_run_into_a_used_folder_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    save_in_batches(_batches("svg"), 4, 0, 2, out, preview=False)
    before = _names(out)
    second = _batches("a2v")
    with pytest.raises(ConfigError) as info:
        save_in_batches(second, 1, 0, 1, out, preview=False)
    assert "another run" in str(info.value) and "--overwrite" in str(info.value) and "\n" not in str(info.value)
    assert second.calls == [] and _names(out) == before


def test_overwrite_replaces_the_previous_runs_files_only(tmp_path):
    out = tmp_path / "out"
    save_in_batches(_batches("svg"), 4, 0, 2, out, preview=True)
    (out / "notes.txt").write_text("mine")
    save_in_batches(_batches("a2v"), 1, 0, 1, out, preview=False, overwrite=True)
    assert _names(out) == ["config.yaml", "notes.txt", "sample-000.mp4", "sample-000.wav", "settings.json"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["task"] == "a2v" and settings["files"] == ["sample-000.mp4"]


def test_a_failed_overwrite_leaves_the_previous_run_as_it_was(tmp_path):
    out = tmp_path / "out"
    save_in_batches(_batches("svg"), 2, 0, 2, out, preview=False)
    before = {name: (out / name).read_bytes() for name in _names(out)}
    with pytest.raises(RuntimeError):
        save_in_batches(_batches("a2v", fail=True), 1, 0, 1, out, preview=False, overwrite=True)
    assert {name: (out / name).read_bytes() for name in _names(out)} == before


def test_files_of_the_same_name_without_a_run_are_not_overwritten_silently(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sample-000.mp4").write_bytes(b"someone's video")
    with pytest.raises(ConfigError, match="sample-000.mp4"):
        save_in_batches(_batches("svg"), 1, 0, 1, out, preview=False)
    assert (out / "sample-000.mp4").read_bytes() == b"someone's video"
    save_in_batches(_batches("svg"), 1, 0, 1, out, preview=False, prefix="other")  # other names: fine
