"""``mmldm reconstruct`` takes the model folder ``generate`` takes, and says what a bad input path is."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from mmldm.cli.main import main

FPS, FRAMES, RATE, SIZE = 10.0, 8, 16000, 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random-weight model folder: 16x16 frames, 8 frames at 10 fps, 16 kHz."""
    from micro_models import micro_autoencoder_config, micro_vae
    from mmldm.autoencoder.config import SamplingConfig
    from mmldm.autoencoder.model import HierarchicalAVAutoencoder
    from mmldm.data.audio_image import AudioConfig
    from mmldm.generator.dit import AVDiT, DiTConfig
    from mmldm.pipeline import SoundingVideoPipeline

    torch.manual_seed(0)
    generator = AVDiT(DiTConfig.preset("tiny", depth=1, width=32, num_heads=2, n_ctx=2, audio_channels=4,
                                       audio_size=(2, 2), video_channels=4, video_size=(4, 4), num_classes=3))
    pipe = SoundingVideoPipeline.assemble(
        vae=micro_vae(SIZE), autoencoder=HierarchicalAVAutoencoder(micro_autoencoder_config(
            sampling=SamplingConfig(steps=2, chunk_size=8))),
        generator=generator, objective="epsilon", audio_cfg=AudioConfig(clip_seconds=FRAMES / FPS))
    return pipe.save_pretrained(tmp_path_factory.mktemp("reconstruct") / "model")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from mmldm.data.media_io import write_av

    frames = np.full((FRAMES, SIZE, SIZE, 3), 30, np.uint8)
    for i in range(FRAMES):
        frames[i, 4:10, i:i + 6] = 220
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(FRAMES / FPS * RATE)) / RATE)).astype(np.float32)
    return write_av(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, tone, FPS, RATE)


def test_reconstruct_takes_the_model_folder(model_dir, clip, tmp_path, capsys):
    common = ["--steps", "2", "--seed", "1"]
    assert main(["reconstruct", str(clip), "--model", str(model_dir), "--out", str(tmp_path / "a.mp4"),
                 "--json", str(tmp_path / "a.json"), *common]) == 0
    assert main(["reconstruct", str(clip), "--model", str(model_dir / "autoencoder"), "--vae",
                 str(model_dir / "vae"), "--out", str(tmp_path / "b.mp4"), "--json", str(tmp_path / "b.json"),
                 *common]) == 0
    capsys.readouterr()
    # the same components: the same reconstruction
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def _error_line(argv, capsys) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 1 and err[0].startswith("mmldm: error:"), err
    return err[0]


def test_bad_input_paths_say_what_they_are(model_dir, tmp_path, capsys):
    folder = tmp_path / "x.mp4"
    folder.mkdir()
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    broken = tmp_path / "broken.mp4"
    os.symlink(tmp_path / "gone.mp4", broken)
    expected = {folder: "is a folder, not a file", loop: "symbolic link loop",
                broken: "broken symbolic link", tmp_path / "none.mp4": "file not found"}
    for path, words in expected.items():
        line = _error_line(["reconstruct", str(path), "--model", str(model_dir), "--out", str(tmp_path / "o.mp4")],
                           capsys)
        assert str(path) in line and words in line, line
    assert "symbolic link loop" in _error_line(["data", "inspect", str(loop), "--no-sheet"], capsys)
    assert "is a folder" in _error_line(["data", "inspect", str(folder), "--no-sheet"], capsys)
