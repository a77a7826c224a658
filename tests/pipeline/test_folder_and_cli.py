"""The model folder (save/load, atomic, one-line errors) and ``mmldm generate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mmldm.pipeline.pipeline as pipeline_module
from mmldm.cli.main import main
from mmldm.data.media_io import read_av, read_wav
from mmldm.errors import ConfigError, WeightsError
from mmldm.pipeline import SoundingVideoPipeline


def test_round_trip_gives_the_same_samples(pipe, kit, tmp_path):
    original = kit.tiny_pipeline()
    original.save_pretrained(tmp_path / "model")
    loaded = SoundingVideoPipeline.from_pretrained(tmp_path / "model")
    a = original(task="svg", class_label=1, guidance=(2.0, 3.0), steps=2, progress=False)
    b = loaded(task="svg", class_label=1, guidance=(2.0, 3.0), steps=2, progress=False)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveforms, b.waveforms)
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["components"] == {"vae": "vae", "autoencoder": "autoencoder", "generator": "generator"}
    assert (tmp_path / "model" / "config.yaml").is_file() and (tmp_path / "model" / "audio.yaml").is_file()


def test_save_over_an_existing_folder_leaves_no_temporary_folders(pipe, tmp_path):
    target = tmp_path / "model"
    pipe.save_pretrained(target)
    (target / "stale.txt").write_text("from the old model")
    pipe.save_pretrained(target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    SoundingVideoPipeline.from_pretrained(target)


def _one_line(exc: Exception) -> str:
    message = str(exc)
    assert "\n" not in message
    return message


def test_missing_or_broken_folders_are_one_line_errors(model_dir, tmp_path):
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(tmp_path / "nowhere")
    assert "model folder" in _one_line(info.value) and "nowhere" in str(info.value)

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(broken)
    assert "model_index.json" in _one_line(info.value)

    shutil.copy(model_dir / "model_index.json", broken / "model_index.json")
    (broken / "generator" / "model.safetensors").unlink()
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(broken)
    assert "model.safetensors" in _one_line(info.value)

    shutil.rmtree(broken / "autoencoder")
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(broken)
    assert "autoencoder" in _one_line(info.value)


@pytest.mark.parametrize("key, value, words", [
    ("candidates", 0, "candidates must be a positive integer"),
    ("critic_times", [0.5, 0], "critic_times must be one or more fractions"),
    ("critic_times", [], "critic_times must be one or more fractions"),
    ("critics", ["generator", "clip"], "critics must be one or more distinct names"),
    ("critics", [], "critics must be one or more distinct names"),
    ("class_prior", [1, -1, 1], "class_prior must be weights >= 0"),
    ("class_prior", [0, 0, 0], "class_prior must be weights >= 0"),
    ("sync_guidance", -1, "sync_guidance must be a finite number"),
])
def test_bad_generation_settings_name_the_file(model_dir, tmp_path, key, value, words):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    path = broken / "generator" / "generation.json"
    generation = json.loads(path.read_text())
    if key in generation["sampling"]:  # the sampling defaults sit under "sampling"
        generation["sampling"][key] = value
    else:
        generation[key] = value
    path.write_text(json.dumps(generation))
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(broken)
    assert "generation.json" in _one_line(info.value) and words in str(info.value)


def test_components_that_do_not_fit_are_refused(pipe, kit):
    from mmldm.generator.dit import AVDiT, DiTConfig

    wrong = AVDiT(DiTConfig.preset("tiny", depth=1, width=32, num_heads=2, n_ctx=2))  # 8x8 video latent
    with pytest.raises(ConfigError) as info:
        SoundingVideoPipeline.assemble(vae=pipe.vae, autoencoder=pipe.autoencoder, generator=wrong,
                                       audio_cfg=pipe.audio_cfg)
    assert "video latent" in _one_line(info.value)


def test_continuation_needs_a_previous_clip_generator(kit):
    pipe = kit.tiny_pipeline(previous_clip=False)
    with pytest.raises(ConfigError) as info:
        pipe(task="long", seconds=1.6, steps=1, progress=False)
    assert "previous-clip" in _one_line(info.value)


def test_cli_generate_svg_writes_the_files_and_prints_them(model_dir, kit, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--model", str(model_dir), "--task", "svg", "--n", "1", "--steps", "2",
                 "--guidance", "2", "3", "--class", "1", "--seed", "4", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "sample-000.mp4") in printed
    clip = read_av(out / "sample-000.mp4", fps=kit.fps, sample_rate=kit.rate)
    assert clip.num_frames == kit.frames and clip.audio.shape == (kit.clip_samples,)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["guidance"] == {"audio": 2.0, "video": 3.0} and settings["seed"] == 4
    assert settings["class_label"] == 1 and settings["model_dir"] == str(model_dir)


def test_cli_a2v_sync_guidance_is_passed_and_recorded(model_dir, media, tmp_path):
    out = tmp_path / "a2v"
    assert main(["generate", "--model", str(model_dir), "--task", "a2v", "--audio", str(media["wav"]),
                 "--sync-guidance", "0.4", "--steps", "2", "--out", str(out), "--quiet", "--no-preview"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sync_guidance"] == 0.4 and settings["task"] == "a2v"


def test_cli_long_generation(model_dir, kit, tmp_path):
    out = tmp_path / "long"
    assert main(["generate", "--model", str(model_dir), "--task", "long", "--seconds", "1.6", "--steps", "1",
                 "--out", str(out), "--quiet", "--no-preview"]) == 0
    clip = read_av(out / "sample-000.mp4", fps=kit.fps, sample_rate=kit.rate)
    assert clip.num_frames == 16 and clip.audio.shape == (2 * kit.clip_samples,)


@pytest.mark.parametrize("args, words", [
    (["--task", "a2v", "--audio", "{tmp}/missing.wav"], "not found"),
    (["--task", "v2a", "--video", "{wav}"], "no video stream"),
    (["--task", "a2v", "--audio", "{silent_video}"], "no audio stream"),
    (["--task", "a2v", "--audio", "{short_wav}"], "shorter than one clip"),
    (["--task", "v2a", "--video", "{short_video}"], "shorter than one clip"),
    (["--task", "long", "--seconds", "-2"], "positive"),
    (["--task", "paint"], "unknown task"),
    (["--task", "svg", "--audio", "{wav}"], "takes no input"),
    (["--task", "svg", "--guidance", "1", "2", "3"], "one scale or two"),
    (["--task", "svg", "--device", "tpu"], "--device"),
    (["--task", "svg", "--sync-guidance", "0.3"], "a2v only"),
    (["--task", "svg", "--batch-size", "0"], "--batch-size"),
    (["--task", "svg", "--candidates", "0"], "--candidates"),
    (["--task", "svg", "--critics", "clap"], "--critics"),
    (["--task", "a2v", "--audio", "{wav}", "--sync-guidance", "-1"], "finite number >= 0"),
])
def test_cli_bad_inputs_are_one_line_errors(model_dir, media, tmp_path, capsys, args, words):
    names = {key: str(path) for key, path in media.items()}
    args = [a.format(tmp=tmp_path, **names) for a in args]
    code = main(["generate", "--model", str(model_dir), "--steps", "1", "--out", str(tmp_path / "o"), "--quiet",
                 *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("mmldm: error:") and "Traceback" not in err
    assert words in err
    assert not (tmp_path / "o").exists()


def test_cli_missing_model_folder_and_no_builtin_model(tmp_path, capsys, monkeypatch):
    assert main(["generate", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model folder" in err
    monkeypatch.setattr(pipeline_module, "BUILTIN_MODEL", tmp_path / "default_model")
    assert main(["generate", "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "built-in model is missing" in err and "model folder" in err


def test_hifigan_vocoder_is_saved_in_the_public_format_and_reloaded(pipe, tmp_path):
    from mmldm.data.vocoders import HiFiGAN, HiFiGANConfig

    config = HiFiGANConfig(resblock="2", upsample_rates=(16, 16), upsample_kernel_sizes=(32, 32),
                           upsample_initial_channel=8, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
                           num_mels=80, sampling_rate=16000, hop_size=256, n_fft=1024, win_size=1024,
                           fmin=0.0, fmax=8000.0)
    torch.manual_seed(0)
    vocoder = HiFiGAN(config).eval()
    with_hifigan = SoundingVideoPipeline.assemble(vae=pipe.vae, autoencoder=pipe.autoencoder,
                                                  generator=pipe.generator, audio_cfg=pipe.audio_cfg,
                                                  vocoder=vocoder)
    with_hifigan.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "vocoder" / "g_00000000").is_file()
    assert (tmp_path / "model" / "vocoder" / "config.json").is_file()
    loaded = SoundingVideoPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(loaded.vocoder, HiFiGAN) and loaded.vocoder_spec == "vocoder/g_00000000"
    a = with_hifigan(task="svg", steps=1, progress=False)
    b = loaded(task="svg", steps=1, progress=False)
    assert torch.allclose(a.waveforms, b.waveforms, atol=1e-5) and a.waveforms.abs().max() > 0


def test_a_failed_save_leaves_the_existing_folder_untouched(pipe, tmp_path, monkeypatch):
    target = tmp_path / "model"
    pipe.save_pretrained(target)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def broken(directory):
        raise OSError("disk full")

    monkeypatch.setattr(pipe.generator, "save_pretrained", broken)
    with pytest.raises(OSError):
        pipe.save_pretrained(target)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    SoundingVideoPipeline.from_pretrained(target)


def test_cli_batches_give_the_same_files_and_one_settings_file(model_dir, tmp_path):
    whole, batched = tmp_path / "whole", tmp_path / "batched"
    common = ["generate", "--model", str(model_dir), "--task", "svg", "--n", "3", "--steps", "1", "--seed", "4",
              "--candidates", "3", "--quiet", "--no-preview"]
    assert main([*common, "--out", str(whole)]) == 0
    assert main([*common, "--batch-size", "2", "--out", str(batched)]) == 0
    names = sorted(p.name for p in whole.glob("sample-*"))
    assert names == sorted(p.name for p in batched.glob("sample-*")) and len(names) == 6  # mp4 + wav each
    for name in names:  # the same samples, up to float rounding of a different batch size
        if name.endswith(".wav"):
            a, _ = read_wav(whole / name, sample_rate=16000)
            b, _ = read_wav(batched / name, sample_rate=16000)
            assert a.shape == b.shape and abs(a - b).max() < 1e-3
    settings = json.loads((batched / "settings.json").read_text())
    assert settings["n"] == 3 and settings["seed"] == 4 and settings["sample_seeds"] == [4, 5, 6]
    assert settings["files"] == ["sample-000.mp4", "sample-001.mp4", "sample-002.mp4"]
    assert settings["batch_size"] == 2
    # per-sample settings are joined over the batches
    whole_settings = json.loads((whole / "settings.json").read_text())
    assert settings["candidates"] == 3 and len(settings["chosen_candidates"]) == 3
    assert settings["chosen_candidates"] == whole_settings["chosen_candidates"]
    assert len(settings["sample_classes"]) == 3 and settings["sample_classes"] == whole_settings["sample_classes"]


def test_a_failing_batch_removes_what_the_run_wrote(pipe, tmp_path):
    from mmldm.pipeline.output import save_in_batches

    calls = []

    def make_batch(count, first_seed):
        calls.append((count, first_seed))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return pipe.generate(task="svg", n=count, seed=first_seed, steps=1, progress=False)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        save_in_batches(make_batch, n=3, seed=7, batch_size=2, out_dir=out, preview=False)
    assert calls == [(2, 7), (1, 9)]
    assert not out.exists()  # the first batch's files are gone, and the folder this call made
    with pytest.raises(ConfigError, match="batch size must be a positive integer"):
        save_in_batches(make_batch, n=3, seed=0, batch_size=0, out_dir=out)


def test_cli_critics_choose_the_ranking_and_are_recorded(model_dir, tmp_path):
    out = tmp_path / "o"
    assert main(["generate", "--model", str(model_dir), "--n", "2", "--steps", "1", "--seed", "2", "--candidates", "3",
                 "--critics", "contrastive", "--quiet", "--no-preview", "--out", str(out)]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["critics"] == ["contrastive"] and settings["critic_times"] == []


def test_a_version_1_folder_still_loads(pipe, model_dir, tmp_path):
    """Format 1: sampling defaults at the top level of generation.json, the decoder's objective
    fields at the top level of the autoencoder config."""
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    index = json.loads((old / "model_index.json").read_text())
    (old / "model_index.json").write_text(json.dumps({**index, "format_version": 1}))
    generation = json.loads((old / "generator" / "generation.json").read_text())
    sampling = generation.pop("sampling")
    sampling.pop("decoder_steps")
    sampling.pop("text_guidance")  # newer than format 1
    sampling.pop("frame_decoder")  # newer than format 1
    (old / "generator" / "generation.json").write_text(json.dumps({**generation, **sampling, "steps": 7}))
    config = json.loads((old / "autoencoder" / "config.json").read_text())
    del config["diffusion"]
    config.update(objective="flow", num_train_timesteps=500)
    (old / "autoencoder" / "config.json").write_text(json.dumps(config))
    loaded = SoundingVideoPipeline.from_pretrained(old)
    assert loaded.generation.sampling.steps == 7
    assert loaded.generation.sampling.critics == pipe.generation.sampling.critics
    assert loaded.autoencoder.cfg.diffusion.objective == "flow"
    assert loaded.autoencoder.cfg.diffusion.num_train_timesteps == 500
    newer = tmp_path / "newer"
    shutil.copytree(model_dir, newer)
    (newer / "model_index.json").write_text(json.dumps({**index, "format_version": 3}))
    with pytest.raises(WeightsError, match="newer than this mmldm reads"):
        SoundingVideoPipeline.from_pretrained(newer)


def test_cli_generate_refuses_another_runs_folder_unless_overwrite(model_dir, tmp_path, capsys):
    from mmldm.cli.main import main

    out = tmp_path / "out"
    common = ["generate", "--model", str(model_dir), "--steps", "1", "--decoder-steps", "1", "--quiet",
              "--no-preview", "--out", str(out)]
    assert main([*common, "--n", "3"]) == 0
    capsys.readouterr()
    assert main([*common, "--n", "1", "--task", "svg"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "another run" in err and "--overwrite" in err
    assert main([*common, "--n", "1", "--overwrite"]) == 0
    assert json.loads((out / "settings.json").read_text())["files"] == ["sample-000.mp4"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["sample-000.mp4"]


def test_generate_with_another_vocoder(pipe, model_dir, tmp_path, capsys):
    """``--vocoder PATH`` / ``from_pretrained(vocoder=)``: a HiFi-GAN checkpoint that fits the model's
    audio replaces the folder's vocoder and is recorded; one that does not is a one-line error."""
    from mmldm.cli.main import main
    from mmldm.data.vocoders import HiFiGAN, HiFiGANConfig, save_hifigan

    def hifigan(rate: int) -> Path:
        config = HiFiGANConfig(resblock="2", upsample_rates=(16, 16), upsample_kernel_sizes=(32, 32),
                               upsample_initial_channel=8, resblock_kernel_sizes=(3,),
                               resblock_dilation_sizes=((1, 3),), num_mels=80, sampling_rate=rate, hop_size=256,
                               n_fft=1024, win_size=1024, fmin=0.0, fmax=8000.0)
        torch.manual_seed(0)
        return save_hifigan(HiFiGAN(config).eval(), tmp_path / f"hifigan{rate}" / "g_00000000")

    fitting = hifigan(16000)
    loaded = SoundingVideoPipeline.from_pretrained(model_dir, vocoder=fitting)
    assert isinstance(loaded.vocoder, HiFiGAN) and loaded.vocoder_spec == str(fitting)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(model_dir), "--steps", "1", "--decoder-steps", "1", "--quiet",
                 "--no-preview", "--vocoder", str(fitting), "--out", str(out)]) == 0
    assert json.loads((out / "settings.json").read_text())["vocoder"] == str(fitting)
    capsys.readouterr()
    code = main(["generate", "--model", str(model_dir), "--steps", "1", "--quiet", "--vocoder",
                 str(hifigan(22050)), "--out", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "22050" in err
    assert not (tmp_path / "other").exists()
