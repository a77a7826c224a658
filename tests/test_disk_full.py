"""A full disk: one line "no space left on device: PATH", no temporary file left, resume unaffected.

Each case runs twice where it can: on a real 2 MB-ish tmpfs (needs root to mount; skipped
otherwise) and with the failing write simulated by patching (everywhere).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from small_fs import mounted_tmpfs

from mmldm.cli.main import main
from mmldm.errors import DiskFullError
from mmldm.training import checkpoint as ckpt

ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip("\n").split("\n") if "%|" not in line]  # progress bars are not errors
    assert len(lines) == 1 and lines[0].startswith("mmldm: error: "), err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


def _checkpoint(root: Path, step: int, tensors: dict[str, torch.Tensor]) -> Path:
    tmp = ckpt.begin_checkpoint(root, step)
    ckpt.save_tensors(tmp / "model_model.safetensors", tensors)
    ckpt.save_torch_state(tmp / "optim_model.pt", {"state": tensors})
    ckpt.save_json(tmp / "state.json", {"step": step})
    return ckpt.commit_checkpoint(tmp, step, keep_last=3)


# --------------------------------------------------------------------------- checkpoints

def _check_failed_checkpoint(run: Path, exc: DiskFullError) -> None:
    root = run / "checkpoints"
    assert str(exc).startswith(f"no space left on device: {root} (writing the checkpoint step_000002 failed")
    assert not (root / ".tmp_step_000002").exists()  # removed: it would only hold the space
    assert ckpt.resolve_resume(run, "auto") == root / "step_000001"
    assert ckpt.load_tensors(root / "step_000001" / "model_model.safetensors")["w"][0] == 1.0


@pytest.mark.parametrize("what", ["safetensors", "torch.save"])
def test_checkpoint_on_a_full_disk(tmp_path, what):
    with mounted_tmpfs(tmp_path / "fs", size="2m") as fs:
        run = fs / "run"
        _checkpoint(run / "checkpoints", 1, {"w": torch.ones(4)})
        tmp = ckpt.begin_checkpoint(run / "checkpoints", 2)
        big = {"w": torch.ones(1_000_000)}  # 4 MB
        with pytest.raises(DiskFullError) as info:
            if what == "safetensors":
                ckpt.save_tensors(tmp / "model_model.safetensors", big)
            else:
                ckpt.save_torch_state(tmp / "optim_model.pt", {"state": big})
        _check_failed_checkpoint(run, info.value)
        # the space is free again: the next checkpoint of the resumed run is written
        assert ckpt.is_complete(_checkpoint(run / "checkpoints", 2, {"w": torch.full((4,), 2.0)}))


def test_checkpoint_write_failure_simulated(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    run = tmp_path / "run"
    _checkpoint(run / "checkpoints", 1, {"w": torch.ones(4)})

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # what it wrote before the disk was full
        raise SafetensorError(ENOSPC_TEXT)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    tmp = ckpt.begin_checkpoint(run / "checkpoints", 2)
    with pytest.raises(DiskFullError) as info:
        ckpt.save_tensors(tmp / "model_model.safetensors", {"w": torch.ones(4)})
    _check_failed_checkpoint(run, info.value)


def test_torch_save_reports_the_os_error(tmp_path):
    from mmldm.files import torch_save

    with mounted_tmpfs(tmp_path / "fs", size="1m") as fs:
        with pytest.raises(OSError) as info:  # torch itself says only "[enforce fail at inline_container.cc]"
            torch_save({"w": torch.ones(1_000_000)}, fs / "state.pt")
        assert info.value.errno == errno.ENOSPC


def test_atomic_write_text_on_a_full_disk(tmp_path):
    from mmldm.config import atomic_write_text

    with mounted_tmpfs(tmp_path / "fs", size="1m") as fs:
        atomic_write_text(fs / "settings.json", "{}\n")
        with pytest.raises(DiskFullError, match=f"no space left on device: {fs / 'settings.json'}$"):
            atomic_write_text(fs / "settings.json", "x" * 3_000_000)
        assert _files_under(fs) == ["settings.json"] and (fs / "settings.json").read_text() == "{}\n"


# --------------------------------------------------------------------------- latent cache

def test_cache_on_a_full_disk(tmp_path):
    from mmldm.data.latent_cache import shard_name, write_latent_cache

    items = [{"x": torch.full((100_000,), float(i)), "index": i} for i in range(6)]  # 400 kB per item
    with mounted_tmpfs(tmp_path / "fs", size="1m") as fs:
        with pytest.raises(DiskFullError) as info:
            write_latent_cache(items, lambda batch: {"z": batch["x"]}, fs / "cache", {"encoder": "copy"},
                               shard_size=2, batch_size=2)
        assert str(info.value) == f"no space left on device: {fs / 'cache' / shard_name(1, 3)}"
        # the finished shard stays for a rerun to skip; no temporary file is left
        assert _files_under(fs) == ["cache", f"cache/{shard_name(0, 3)}"]


# --------------------------------------------------------------------------- data synth

def test_synth_on_a_full_disk(tmp_path, capsys):
    with mounted_tmpfs(tmp_path / "fs", size="300k") as fs:
        code = main(["data", "synth", "--out", str(fs / "shapes"), "--n", "60", "--size", "128"])
        line = _one_error_line(capsys)
        assert code == 2
        assert line.startswith(f"mmldm: error: no space left on device: {fs / 'shapes'}/") and line.endswith(".mp4")
        assert "/." not in line  # the clip's own name, not its hidden temporary one
        assert _files_under(fs) == []  # no clip without a manifest, no temporary file, no empty folder


def test_synth_write_failure_simulated(tmp_path, capsys, monkeypatch):
    import mmldm.data.media_io as media_io
    from mmldm.data.sounding_shapes import CLASSES

    real_open = media_io._open
    opened = []

    def open_until_full(path, mode="r", **kwargs):
        if mode == "w":
            opened.append(path)
            if len(opened) == 3:  # as PyAV says it, naming the temporary file
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(media_io, "_open", open_until_full)
    (tmp_path / "keep.txt").write_text("not this run's\n")
    code = main(["data", "synth", "--out", str(tmp_path / "shapes"), "--n", "5"])
    line = _one_error_line(capsys)
    clip = tmp_path / "shapes" / CLASSES[2].name / "00002.mp4"
    assert code == 2 and line == f"mmldm: error: no space left on device: {clip}"
    assert _files_under(tmp_path) == ["keep.txt"]


# --------------------------------------------------------------------------- generated samples

def _noise_batches(size: int):
    from mmldm.pipeline.output import SoundingVideoOutput

    def make_batch(count: int, first_seed: int) -> SoundingVideoOutput:
        gen = torch.Generator().manual_seed(first_seed)
        frames = torch.rand(count, 8, 3, size, size, generator=gen) * 2 - 1  # noise: incompressible
        waves = torch.rand(count, 12800, generator=gen) - 0.5
        return SoundingVideoOutput(frames, waves, fps=10.0, sample_rate=16000, settings={"task": "svg"})

    return make_batch


def test_generated_samples_on_a_full_disk(tmp_path):
    from mmldm.pipeline.output import save_in_batches

    with mounted_tmpfs(tmp_path / "fs", size="1m") as fs:
        with pytest.raises(DiskFullError) as info:
            save_in_batches(_noise_batches(128), n=8, seed=0, batch_size=2, out_dir=fs / "out")
        assert str(info.value).startswith(f"no space left on device: {fs / 'out'}/sample-0")
        assert "/." not in str(info.value)
        assert _files_under(fs) == []


# --------------------------------------------------------------------------- the CLI's last line of defence

@pytest.mark.parametrize("error, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/clip.mp4"),
     "mmldm: error: no space left on device: /data/out/clip.mp4"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "mmldm: error: a file could not be written; is the disk full?"),
    (OSError(errno.EROFS, "Read-only file system", "/data/out"),
     "mmldm: error: /data/out: cannot write there (Read-only file system)"),
])
def test_cli_names_a_failed_write_not_an_internal_error(error, expected, monkeypatch, capsys):
    import mmldm.cli.data as data_cli

    def fail(args):
        raise error

    monkeypatch.setattr(data_cli, "_synth", fail)
    assert main(["data", "synth", "--out", "/nowhere"]) == 2
    assert _one_error_line(capsys).startswith(expected)
