"""Every file mmldm writes gets the mode a plain ``open()`` would give it: ``0o666`` less the umask.

Atomic writes go through a temporary file, which ``tempfile.mkstemp`` (and safetensors) create
``0o600``: mp4, wav, png, synth clips, checkpoint weights and cache shards came out unreadable
for other users and web servers, while json/yaml (plain open) were ``0o644``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)


def test_media_files_and_contact_sheets(tmp_path, umask):
    from mmldm.data.inspect import write_contact_sheet
    from mmldm.data.media_io import probe, write_av

    mp4 = write_av(tmp_path / "clip.mp4", _frames(), np.zeros(12800, np.float32), 10.0, 16000, wav=True)
    sheet = write_contact_sheet(mp4, probe(mp4), tmp_path / "clip.png")
    for path in (mp4, mp4.with_suffix(".wav"), sheet):
        assert _mode(path) == 0o666 & ~umask, path.name


def test_synth_clips_and_manifest(tmp_path, umask):
    from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

    manifest = write_dataset(tmp_path / "shapes", n=2, seed=0, cfg=ShapesConfig(size=32))
    files = sorted(p for p in manifest.parent.rglob("*") if p.is_file())
    assert len(files) == 3
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}


def test_checkpoint_files(tmp_path, umask):
    from mmldm.training import checkpoint as ckpt

    tmp = ckpt.begin_checkpoint(tmp_path / "checkpoints", 1)
    ckpt.save_tensors(tmp / "model_model.safetensors", {"w": torch.ones(3)})
    ckpt.save_torch_state(tmp / "optim_model.pt", {"step": 1})
    ckpt.save_json(tmp / "state.json", {"step": 1})
    final = ckpt.commit_checkpoint(tmp, 1, keep_last=2)
    files = [p for p in final.iterdir()] + [tmp_path / "checkpoints" / "latest"]
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}


def test_cache_shards_and_index(tmp_path, umask):
    from mmldm.data.latent_cache import write_latent_cache

    items = [{"x": torch.full((2,), float(i)), "index": i} for i in range(3)]
    write_latent_cache(items, lambda batch: {"z": batch["x"] * 2}, tmp_path / "cache", {"encoder": "double"},
                       shard_size=2, batch_size=2)
    files = sorted((tmp_path / "cache").iterdir())
    assert [p.name for p in files] == ["index.json", "shard-00000-of-00002.safetensors",
                                       "shard-00001-of-00002.safetensors"]
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}


def test_replacing_a_file_keeps_its_mode(tmp_path):
    """As a plain open() would: a file made private by its owner stays private when rewritten."""
    from mmldm.config import atomic_write_text
    from mmldm.data.media_io import write_wav

    for path, write in ((tmp_path / "notes.json", lambda p: atomic_write_text(p, "{}\n")),
                        (tmp_path / "tone.wav", lambda p: write_wav(p, np.zeros(160, np.float32), 16000))):
        write(path)
        path.chmod(0o640)
        write(path)
        assert _mode(path) == 0o640, path.name


def test_folder_tree_modes(tmp_path, umask):
    """give_new_modes_under: what a tree written under mkdtemp by 0600-writing libraries needs."""
    import tempfile

    from mmldm.files import give_new_modes_under

    tree = Path(tempfile.mkdtemp(dir=tmp_path))  # 0o700
    (tree / "vae").mkdir(mode=0o700)
    (tree / "vae" / "model.safetensors").write_bytes(b"x")
    (tree / "vae" / "model.safetensors").chmod(0o600)
    give_new_modes_under(tree)
    assert _mode(tree) == _mode(tree / "vae") == 0o777 & ~umask
    assert _mode(tree / "vae" / "model.safetensors") == 0o666 & ~umask
