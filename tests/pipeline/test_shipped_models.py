"""Shipped models by name, and a vocoder named instead of copied (the released HiFi-GAN)."""

from __future__ import annotations

import shutil

import pytest
import yaml

import mmldm.pipeline.pipeline as pipeline_module
from mmldm.assets import HIFIGAN_UNIVERSAL_NAME
from mmldm.data.vocoders import GriffinLim, HiFiGAN
from mmldm.errors import ConfigError
from mmldm.pipeline import SoundingVideoPipeline
from mmldm.pipeline.pipeline import BUILTIN_MODEL, model_folder


def test_model_names_resolve_to_shipped_folders(tmp_path, monkeypatch):
    assert model_folder(None) == model_folder("shapes") == BUILTIN_MODEL
    assert model_folder(tmp_path) == tmp_path  # a folder is itself
    monkeypatch.setattr(pipeline_module, "MODELS", tmp_path / "models")
    with pytest.raises(ConfigError, match="shipped model 'bbb' is not in this installation"):
        model_folder("bbb")
    shutil.copytree(BUILTIN_MODEL, tmp_path / "models" / "bbb")
    assert model_folder("bbb") == tmp_path / "models" / "bbb"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bbb").mkdir()
    assert model_folder("bbb").resolve() == (tmp_path / "bbb").resolve()  # a folder of that name wins


@pytest.mark.parametrize("name", ["shapes", "bbb"])
def test_a_shipped_folders_config_yaml_describes_what_it_loads(name):
    """config.yaml is for people: it must say what the folder really holds (its optional parts too)."""
    from mmldm.config import dump_yaml, read_yaml

    folder = model_folder(name)
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"the {name} model is not in this installation")
    pipe = SoundingVideoPipeline.from_pretrained(name)
    assert read_yaml(folder / "config.yaml") == yaml.safe_load(dump_yaml(pipe.resolved_config()))


def test_a_vocoder_named_hifigan_universal_is_found_among_the_assets_or_falls_back(model_dir, tmp_path,
                                                                                   monkeypatch, recwarn):
    """The name stays in audio.yaml (the release is 55 MB); without the assets, Griffin-Lim with a warning."""
    named = tmp_path / "model"
    shutil.copytree(model_dir, named)
    audio = yaml.safe_load((named / "audio.yaml").read_text())
    (named / "audio.yaml").write_text(yaml.safe_dump({**audio, "vocoder": HIFIGAN_UNIVERSAL_NAME}))
    monkeypatch.setenv("MMLDM_ASSETS", str(tmp_path / "no-assets"))
    pipe = SoundingVideoPipeline.from_pretrained(named)
    assert isinstance(pipe.vocoder, GriffinLim) and pipe.vocoder_spec == "griffin-lim"
    assert any("make assets" in str(w.message) for w in recwarn)
    hifigan = tmp_path / "assets" / "hifigan"
    hifigan.mkdir(parents=True)
    torch_release = pytest.importorskip("torch")
    from mmldm.data.vocoders import HiFiGANConfig, save_hifigan

    config = HiFiGANConfig(resblock="2", upsample_rates=(16, 16), upsample_kernel_sizes=(32, 32),
                           upsample_initial_channel=8, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
                           num_mels=80, sampling_rate=16000, hop_size=256, n_fft=1024, win_size=1024,
                           fmin=0.0, fmax=8000.0)
    torch_release.manual_seed(0)
    saved = save_hifigan(HiFiGAN(config).eval(), hifigan / "g_release")
    saved.rename(hifigan / "generator_universal.pth.tar")
    monkeypatch.setenv("MMLDM_ASSETS", str(tmp_path / "assets"))
    pipe = SoundingVideoPipeline.from_pretrained(named)
    assert isinstance(pipe.vocoder, HiFiGAN) and pipe.vocoder_spec == HIFIGAN_UNIVERSAL_NAME
    pipe.save_pretrained(tmp_path / "resaved")  # the name is kept, the release is not copied
    assert yaml.safe_load((tmp_path / "resaved" / "audio.yaml").read_text())["vocoder"] == HIFIGAN_UNIVERSAL_NAME
    assert not (tmp_path / "resaved" / "vocoder").exists()


def test_the_shipped_big_buck_bunny_model_generates_every_task(tmp_path):
    """``--model bbb``: the model of the film (docs/bbb-model.md), with its attribution, out of the box
    (HiFi-GAN universal V1 from the assets, or Griffin-Lim without them)."""
    folder = model_folder("bbb")
    assert "CC-BY 3.0" in (folder / "ATTRIBUTION.md").read_text()
    pipe = SoundingVideoPipeline.from_pretrained("bbb")
    assert (pipe.fps, pipe.num_frames, pipe.frame_size, pipe.audio_cfg.sample_rate) == (10.0, 16, 64, 22050)
    kw = {"n": 1, "seed": 0, "steps": 2, "decoder_steps": 2, "candidates": 1, "progress": False}
    svg = pipe(task="svg", **kw)
    assert svg.frames.shape == (1, 16, 3, 64, 64) and svg.waveforms.shape == (1, pipe.clip_samples)
    assert svg.frames.std() > 0.05 and svg.waveforms.abs().max() > 0  # not a blank clip
    import numpy as np

    from mmldm.data.media_io import write_av, write_wav

    rate, t = pipe.audio_cfg.sample_rate, np.arange(2 * pipe.audio_cfg.sample_rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * t / rate)).astype(np.float32)
    frames = np.random.default_rng(0).integers(0, 255, (20, 64, 64, 3), dtype=np.uint8)
    a2v = pipe(task="a2v", audio=write_wav(tmp_path / "tone.wav", tone, rate), **kw)
    assert a2v.frames.shape[1] == 20 and np.abs(a2v.waveforms[0].numpy() - tone).max() <= 1 / 32767  # 16-bit wav
    v2a = pipe(task="v2a", video=write_av(tmp_path / "clip.mp4", frames, tone, pipe.fps, rate), **kw)
    assert v2a.waveforms.shape[1] == 2 * rate
    long = pipe(task="long", seconds=3.2, **kw)
    assert long.frames.shape[1] == 32
