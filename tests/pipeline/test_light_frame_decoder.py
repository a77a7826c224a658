"""A model folder's light frame decoder (``frame_decoder/``): saved and loaded with the folder,
selected per call (``frame_decoder="light"``, ``--frame-decoder``) and by the folder's default, used
for the video frames only (the audio image keeps the full KL-VAE decoder), in low-memory mode
too; ``mmldm export frame-decoder`` checks it was distilled from the folder's KL-VAE."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from mmldm import devices
from mmldm.cli.main import main
from mmldm.config import dump_yaml, to_dict
from mmldm.errors import ConfigError, WeightsError
from mmldm.generator.generation import GENERATION_NAME
from mmldm.pipeline import SoundingVideoPipeline
from mmldm.vae.light_decoder import (
    FRAME_DECODER_NAME,
    FrameDecoderInfo,
    LightDecoderConfig,
    LightFrameDecoder,
)
from mmldm.vae.light_decoder_distill import FrameDecoderDistillConfig

KW = {"n": 1, "seed": 3, "steps": 2, "progress": False}


def light_for(pipe: SoundingVideoPipeline, seed: int = 0) -> tuple[LightFrameDecoder, FrameDecoderInfo]:
    torch.manual_seed(seed)
    decoder = LightFrameDecoder(LightDecoderConfig(channels=(8, 8), blocks=(1, 1)))
    vae = pipe.vae
    return decoder, FrameDecoderInfo(decoder=decoder.cfg, vae_scaling_factor=vae.scaling_factor,
                                     vae_latent_channels=vae.latent_channels,
                                     vae_downsample_factor=vae.downsample_factor)


def with_light(pipe: SoundingVideoPipeline, **kw) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.assemble(vae=pipe.vae, autoencoder=pipe.autoencoder, generator=pipe.generator,
                                          objective=pipe.objective, audio_cfg=pipe.audio_cfg,
                                          generation=pipe.generation, **kw)


@pytest.fixture(scope="module")
def light_dir(pipe, tmp_path_factory):
    return with_light(pipe, frame_decoder=light_for(pipe)).save_pretrained(tmp_path_factory.mktemp("light") / "model")


@pytest.fixture(scope="module")
def lit(light_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(light_dir)


def test_the_folder_keeps_its_light_decoder(light_dir, lit, pipe):
    index = json.loads((light_dir / "model_index.json").read_text())
    assert index["components"][FRAME_DECODER_NAME] == FRAME_DECODER_NAME
    original = light_for(pipe)[0].state_dict()
    assert all(torch.equal(v, original[k]) for k, v in lit.frame_decoder[0].state_dict().items())
    assert lit.resolved_config()["frame_decoder"]["vae_downsample_factor"] == pipe.vae.downsample_factor


def test_light_decodes_the_frames_and_the_audio_keeps_the_full_decoder(lit, pipe):
    full = lit(task="svg", **KW)
    light = lit(task="svg", frame_decoder="light", **KW)
    assert full.settings["frame_decoder"] == "full" and light.settings["frame_decoder"] == "light"
    # without the option the folder samples exactly as one without a light decoder
    plain = pipe(task="svg", **KW)
    assert torch.equal(full.frames, plain.frames) and torch.equal(full.waveforms, plain.waveforms)
    assert not torch.equal(light.frames, full.frames)
    assert torch.equal(light.waveforms, full.waveforms)  # the audio image went through the full KL-VAE decoder
    # the light frames are the light decoder's on the signal decoder's latents
    latents = lit.latent_noise([torch.Generator().manual_seed(0)])
    frames, image = lit.decode(latents, generator=torch.Generator().manual_seed(1), frame_decoder="light")
    video_latents, audio_latent = lit._signal_decode(latents, generator=torch.Generator().manual_seed(1))
    expected = lit.frame_decoder[0](video_latents.flatten(0, 1)).clamp(-1, 1).unflatten(0, video_latents.shape[:2])
    assert torch.equal(frames, expected)
    assert torch.equal(image, lit.vae.decode_images(audio_latent).clamp(-1, 1))


def test_the_folder_default_selects_it(pipe, tmp_path):
    generation = dataclasses.replace(pipe.generation, sampling=pipe.generation.sampling.replace(frame_decoder="light"))
    directory = with_light(pipe, frame_decoder=light_for(pipe)).save_pretrained(tmp_path / "model")
    path = directory / "generator" / GENERATION_NAME
    path.write_text(json.dumps(to_dict(generation)))
    default_light = SoundingVideoPipeline.from_pretrained(directory)
    assert default_light(task="svg", **KW).settings["frame_decoder"] == "light"
    assert default_light(task="svg", frame_decoder="full", **KW).settings["frame_decoder"] == "full"
    # a default of light without a light decoder is refused when the model loads
    shutil.rmtree(directory / FRAME_DECODER_NAME)
    index = json.loads((directory / "model_index.json").read_text())
    del index["components"][FRAME_DECODER_NAME]
    (directory / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="no light frame decoder"):
        SoundingVideoPipeline.from_pretrained(directory)


def test_asking_for_light_without_one_is_a_one_line_error(pipe):
    with pytest.raises(ConfigError, match="no light frame decoder"):
        pipe(task="svg", frame_decoder="light", **KW)
    with pytest.raises(ConfigError, match="frame decoder must be one of full, light"):
        pipe(task="svg", frame_decoder="tiny", **KW)


def test_a_light_decoder_of_another_latent_space_is_refused(pipe):
    decoder, info = light_for(pipe)
    with pytest.raises(ConfigError, match="light frame decoder was distilled for latents scaled by"):
        with_light(pipe, frame_decoder=(decoder, dataclasses.replace(info, vae_scaling_factor=0.18215)))


def test_low_memory_runs_the_light_decoder_from_the_folder(light_dir, lit):
    low = SoundingVideoPipeline.from_pretrained(light_dir, low_memory=True)
    out = low(task="svg", frame_decoder="light", **KW)
    assert out.settings["frame_decoder"] == "light"
    assert {p.device.type for p in low.frame_decoder[0].parameters()} == {"meta"}  # read for its stage, dropped
    dtype = torch.bfloat16 if devices.cpu_has_native_bf16() else None
    reference = SoundingVideoPipeline.from_pretrained(light_dir, dtype=dtype)(task="svg", frame_decoder="light", **KW)
    assert (out.frames - reference.frames).abs().max() < 2e-2


def test_cli_frame_decoder_flag(light_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "--model", str(light_dir), "--n", "1", "--steps", "2", "--frame-decoder", "light",
                 "--out", str(out), "--quiet"]) == 0
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert any(r.get("frame_decoder") == "light" for r in records), records


def test_a_broken_light_decoder_is_a_one_line_error(light_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(light_dir, broken)
    (broken / FRAME_DECODER_NAME / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="light frame decoder"):
        SoundingVideoPipeline.from_pretrained(broken)
    with pytest.raises(WeightsError, match="light frame decoder"):
        SoundingVideoPipeline.from_pretrained(broken, low_memory=True)
    shutil.rmtree(broken / FRAME_DECODER_NAME)
    with pytest.raises(WeightsError, match=FRAME_DECODER_NAME):
        SoundingVideoPipeline.from_pretrained(broken)


def _checkpoint(tmp_path, teacher: str, decoder: LightFrameDecoder):
    """A `mmldm train frame-decoder-distill` checkpoint folder: its config and the model's weights."""
    from safetensors.torch import save_file

    from mmldm.training.checkpoint import module_weights_name

    checkpoint = tmp_path / "run" / "checkpoints" / "step_000010"
    checkpoint.mkdir(parents=True)
    cfg = FrameDecoderDistillConfig(vae=teacher, channels=decoder.cfg.channels, blocks=decoder.cfg.blocks)
    (checkpoint / "config.yaml").write_text(dump_yaml(to_dict(cfg)))
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()},
              str(checkpoint / module_weights_name("model")))
    return checkpoint


def test_export_adds_it_to_a_model_folder_of_its_vae(pipe, model_dir, tmp_path, config_yaml_describes):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    decoder, _ = light_for(pipe, seed=4)
    checkpoint = _checkpoint(tmp_path, str(model_dir / "vae"), decoder)
    assert main(["export", "frame-decoder", str(checkpoint), "--model", str(target), "--default"]) == 0
    index = json.loads((target / "model_index.json").read_text())
    assert index["components"][FRAME_DECODER_NAME] == FRAME_DECODER_NAME
    loaded = SoundingVideoPipeline.from_pretrained(target)
    assert loaded.generation.sampling.frame_decoder == "light"
    assert all(torch.equal(v, decoder.state_dict()[k]) for k, v in loaded.frame_decoder[0].state_dict().items())
    config_yaml_describes(target, loaded, FRAME_DECODER_NAME)
    # distilled from another KL-VAE: refused, and the folder is left as it was
    other = pipe.vae.save_pretrained(tmp_path / "other-vae")
    from mmldm.vae.kl_vae import KLVAE

    changed = KLVAE.from_pretrained(other)
    with torch.no_grad():
        next(changed.autoencoder.decoder.parameters()).add_(0.1)
    changed.save_pretrained(other)
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    wrong = _checkpoint(tmp_path / "wrong", str(other), decoder)
    assert main(["export", "frame-decoder", str(wrong), "--model", str(plain)]) != 0
    assert not (plain / FRAME_DECODER_NAME).exists()
    with pytest.raises(ConfigError, match="not from the KL-VAE of"):
        from mmldm.export import export_frame_decoder

        export_frame_decoder(wrong, plain)


def test_the_built_in_model_ships_a_light_decoder_close_to_its_full_one():
    """The built-in model's frame_decoder/ (distilled for its tiny KL-VAE; its default): on a
    generated sample its frames stay within a few hundredths of the full decoder's on average."""
    import math

    builtin = SoundingVideoPipeline.from_pretrained()
    assert builtin.frame_decoder is not None and builtin.generation.sampling.frame_decoder == "light"
    kw = {"n": 1, "seed": 11, "steps": 4, "candidates": 1, "progress": False}
    full = builtin(task="svg", frame_decoder="full", **kw)
    light = builtin(task="svg", **kw)
    assert light.settings["frame_decoder"] == "light" and full.settings["frame_decoder"] == "full"
    assert torch.equal(full.waveforms, light.waveforms)
    mse = float(((light.frames - full.frames) ** 2).mean())
    assert 10 * math.log10(4.0 / mse) > 35  # dB, pixels in [-1, 1]
