"""Runs that stop part way: Ctrl-C keeps the finished samples, a failed run leaves no empty folder,
and an output folder nothing can be written to is refused before any work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from small_fs import mounted_tmpfs

from mmldm.errors import ConfigError, DataError
from mmldm.pipeline.output import SoundingVideoOutput, save_in_batches


def _batches(interrupt_at: int | None = None):
    """make_batch for save_in_batches: 16x16 clips; Ctrl-C while generating batch ``interrupt_at``."""
    calls = []

    def make_batch(count: int, first_seed: int) -> SoundingVideoOutput:
        calls.append(first_seed)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        gen = torch.Generator().manual_seed(first_seed)
        return SoundingVideoOutput(torch.rand(count, 8, 3, 16, 16, generator=gen) * 2 - 1,
                                   torch.rand(count, 12800, generator=gen) - 0.5, fps=10.0, sample_rate=16000,
                                   settings={"task": "svg", "sample_classes": [first_seed + i for i in range(count)]})

    return make_batch


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_interrupt_between_batches_keeps_finished_samples(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        save_in_batches(_batches(interrupt_at=3), n=6, seed=10, batch_size=2, out_dir=out)
    assert _names(out) == sorted(["config.yaml", "settings.json"] + [f"sample-00{i}.{ext}" for i in range(4)
                                                                      for ext in ("mp4", "png", "wav")])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["files"] == [f"sample-00{i}.mp4" for i in range(4)]
    assert settings["n"] == 4 and settings["n_requested"] == 6 and settings["interrupted"] is True
    assert settings["sample_seeds"] == [10, 11, 12, 13] and settings["sample_classes"] == [10, 11, 12, 13]
    note = capsys.readouterr().err
    assert "kept the 4 finished sample(s) of 6" in note and "sample-003.mp4" in note


def test_interrupt_while_writing_removes_only_the_unfinished_sample(tmp_path, monkeypatch, capsys):
    import mmldm.data.inspect as inspect_module

    real_sheet = inspect_module.write_contact_sheet
    sheets = []

    def sheet_then_interrupt(path, info, out):
        sheets.append(out)
        if len(sheets) == 2:  # Ctrl-C while sample 1's mp4 and wav are written, its png not
            raise KeyboardInterrupt
        return real_sheet(path, info, out)

    monkeypatch.setattr(inspect_module, "write_contact_sheet", sheet_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        save_in_batches(_batches(), n=3, seed=0, batch_size=3, out_dir=out)
    assert _names(out) == ["config.yaml", "sample-000.mp4", "sample-000.png", "sample-000.wav", "settings.json"]
    assert json.loads((out / "settings.json").read_text())["files"] == ["sample-000.mp4"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_interrupt_between_a_samples_files_removes_them(tmp_path, monkeypatch):
    import mmldm.data.media_io as media_io

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(media_io, "write_wav", interrupted)  # Ctrl-C after the first mp4 is in place
    with pytest.raises(KeyboardInterrupt):
        save_in_batches(_batches(), n=2, seed=0, batch_size=2, out_dir=tmp_path / "out")
    assert _names(tmp_path) == []


def test_interrupt_before_any_sample_leaves_nothing(tmp_path, monkeypatch):
    import mmldm.data.media_io as media_io

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(media_io, "write_av", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_in_batches(_batches(), n=2, seed=0, batch_size=2, out_dir=tmp_path / "new" / "out")
    assert _names(tmp_path) == []


def test_failure_removes_all_of_the_run(tmp_path):
    def broken(count, first_seed):
        if first_seed > 0:
            raise RuntimeError("the generator broke")
        return _batches()(count, first_seed)

    with pytest.raises(RuntimeError):
        save_in_batches(broken, n=4, seed=0, batch_size=2, out_dir=tmp_path / "new" / "out")
    assert _names(tmp_path) == []


# --------------------------------------------------------------------------- a folder nothing can be written to

@pytest.fixture
def read_only_folder(tmp_path):
    """A folder where files cannot be created: a read-only tmpfs as root (root ignores modes), else mode 0555."""
    if os.geteuid() == 0:
        with mounted_tmpfs(tmp_path / "ro", size="64k", read_only=True) as folder:
            yield folder
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_check_writable_folder(read_only_folder, tmp_path):
    from mmldm.files import check_writable_folder

    assert check_writable_folder(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert not (tmp_path / "new").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for target in (read_only_folder, read_only_folder / "out"):
        with pytest.raises(ConfigError, match=f"^{target}: cannot write there: "):
            check_writable_folder(target)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(ConfigError, match="file is a file"):
        check_writable_folder(tmp_path / "file" / "out")


def test_samples_into_a_read_only_folder_fail_before_generating(read_only_folder):
    calls = []

    def make_batch(count, first_seed):
        calls.append(first_seed)
        return _batches()(count, first_seed)

    with pytest.raises(ConfigError, match=f"^{read_only_folder / 'out'}: cannot write there"):
        save_in_batches(make_batch, n=2, seed=0, batch_size=1, out_dir=read_only_folder / "out")
    assert calls == []


# --------------------------------------------------------------------------- failed data runs leave no empty folder

def test_failed_cache_leaves_no_folder(tmp_path):
    from mmldm.data.latent_cache import write_latent_cache

    with pytest.raises(DataError, match="empty"):
        write_latent_cache([], lambda batch: batch, tmp_path / "a" / "cache", {"encoder": "none"})
    assert _names(tmp_path) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError, match="empty"):
        write_latent_cache([], lambda batch: batch, tmp_path / "kept", {"encoder": "none"})
    assert _names(tmp_path) == ["kept"]  # not this run's: left alone


def test_interrupted_synth_leaves_nothing(tmp_path, monkeypatch):
    import mmldm.data.sounding_shapes as shapes

    real_clip = shapes.synth_clip
    made = []

    def clip_then_interrupt(*args, **kwargs):
        made.append(1)
        if len(made) == 4:
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(shapes, "synth_clip", clip_then_interrupt)
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "notes.txt").write_text("mine\n")
    with pytest.raises(KeyboardInterrupt):
        shapes.write_dataset(tmp_path / "shapes", n=6, seed=0, cfg=shapes.ShapesConfig(size=32))
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["shapes", "shapes/notes.txt"]
