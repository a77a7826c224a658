"""Low-memory sampling (``low_memory=True`` / ``mmldm generate --low-memory``): the stages take the
device one at a time, each read from the model folder when it runs, with bf16 weights where the CPU
multiplies bf16 natively; the samples stay those of the normal pipeline up to bf16 rounding."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from mmldm import devices
from mmldm.cli.main import main
from mmldm.errors import ConfigError, MMLDMWarning, WeightsError
from mmldm.pipeline import SoundingVideoPipeline

NATIVE_BF16 = devices.cpu_has_native_bf16()
KW = {"n": 2, "steps": 3, "decoder_steps": 2, "candidates": 2, "critics": ["generator", "contrastive"], "progress": False}


@pytest.fixture(scope="module")
def low(model_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(model_dir, low_memory=True)


def stage_modules(pipe: SoundingVideoPipeline) -> dict[str, nn.Module]:
    return {"generator": pipe.generator, "autoencoder": pipe.autoencoder, "vae": pipe.vae}


def holds_weights(module: nn.Module) -> bool:
    """Whether a network's parameters have storage on the CPU (a waiting stage's are shapes only)."""
    devices = {p.device.type for p in module.parameters()}
    assert len(devices) == 1, devices  # never half loaded
    return devices == {"cpu"}


def mel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of log magnitude spectrograms: waves from slightly different audio
    images go through Griffin-Lim's iterations, which may shift phases but keep the spectrum."""
    spec = [torch.stft(w, 512, window=torch.hann_window(512), return_complex=True).abs().add(1e-4).log()
            for w in (a, b)]
    return float((spec[0] - spec[1]).abs().mean())


@pytest.mark.parametrize("task", ["svg", "a2v"])
def test_low_memory_samples_match_the_normal_pipeline_within_bf16_rounding(pipe, low, model_dir, media, task):
    extra = {"audio": media["sounding"]} if task == "a2v" else {}
    out = low(task=task, seed=4, **KW, **extra)
    normal = pipe(task=task, seed=4, **KW, **extra)
    assert out.frames.shape == normal.frames.shape and out.waveforms.shape == normal.waveforms.shape
    if NATIVE_BF16:
        # bf16 weights compute what bf16 autocast computes with float32 weights (it rounds them the same way)
        autocast = SoundingVideoPipeline.from_pretrained(model_dir, dtype=torch.bfloat16)(task=task, seed=4, **KW,
                                                                                          **extra)
        assert torch.allclose(out.frames, autocast.frames, atol=1e-2)
        assert mel_distance(out.waveforms, autocast.waveforms) < 0.05
    # and float32 within bf16 rounding (frames in [-1, 1]); a2v's second clip is conditioned on the
    # first, so a few pixels move further than one clip's rounding: bound all but the top 0.1 %
    difference = (out.frames - normal.frames).abs().flatten()
    assert torch.quantile(difference, 0.999) < 0.15 and difference.max() < 0.3
    assert difference.mean() < 0.02
    if task == "svg":
        assert mel_distance(out.waveforms, normal.waveforms) < 0.3
    else:  # a2v keeps the given audio
        assert torch.equal(out.waveforms, normal.waveforms)
    settings = out.settings
    assert settings["low_memory"] is True and normal.settings["low_memory"] is False
    assert settings["low_memory_weights"].startswith("bfloat16" if NATIVE_BF16 else "float32")
    assert settings["dtype"] == ("bfloat16" if NATIVE_BF16 else "float32")


def test_each_stage_holds_its_weights_only_while_it_runs(low, media):
    """Every network call finds its own stage's weights on the device and no other stage's; after
    the generation no stage holds any."""
    stages = stage_modules(low)
    seen: list[tuple[str, dict[str, bool]]] = []

    def spy(stage: str):
        def hook(module, args):
            seen.append((stage, {name: holds_weights(m) for name, m in stages.items()}))
        return hook

    networks = {"generator": low.generator, "autoencoder": low.autoencoder.decoder,
                "autoencoder-encoder": low.autoencoder.audio_encoder, "vae": low.vae.autoencoder.decoder,
                "vae-encoder": low.vae.autoencoder.encoder}
    handles = [network.register_forward_pre_hook(spy(name.split("-")[0])) for name, network in networks.items()]
    vocoded: list[dict[str, bool]] = []
    handles.append(low.vocoder.register_forward_pre_hook(
        lambda module, args: vocoded.append({name: holds_weights(m) for name, m in stages.items()})))
    events = []
    try:
        assert not any(holds_weights(m) for m in stages.values())  # nothing read before it runs
        low(task="a2v", audio=media["sounding"], seed=1, callback=lambda e: events.append(
            (e["stage"], {name: holds_weights(m) for name, m in stages.items()})), **KW)
        a2v_calls = len(seen)
        low(task="svg", seed=1, **KW)
    finally:
        for handle in handles:
            handle.remove()
    assert {stage for stage, _ in seen} == {"generator", "autoencoder", "vae"}
    for stage, holding in seen:
        assert holding == {name: name == stage for name in stages}, (stage, holding)
    # one vocoding: svg's 2 samples in one batch (a2v keeps the given audio)
    assert len(vocoded) == 1 and all(not any(holding.values()) for holding in vocoded)
    # the generator's steps run with the generator alone
    assert all(holding == {"generator": True, "autoencoder": False, "vae": False}
               for stage, holding in events if stage == "step")
    assert not any(holds_weights(m) for m in stages.values())  # all gone after the generation
    # svg of 2 samples: each stage takes the device once (both samples' signal decoding before any pixels)
    svg = [stage for stage, _ in seen[a2v_calls:]]
    assert [stage for i, stage in enumerate(svg) if i == 0 or svg[i - 1] != stage] == ["generator", "autoencoder",
                                                                                         "vae"]


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16: low-memory weights stay float32")
def test_linear_and_conv_weights_are_bf16_and_norms_float32_while_a_stage_runs(low):
    low._use("autoencoder")
    try:
        dtypes = {type(m).__name__: {p.dtype for p in m.parameters(recurse=False)}
                  for m in low.autoencoder.modules() if any(True for _ in m.parameters(recurse=False))}
        assert dtypes["Conv2d"] == {torch.bfloat16} and dtypes["Linear"] == {torch.bfloat16}
        assert dtypes["GroupNorm"] == {torch.float32}
    finally:
        low._placement.park_all()


def test_without_native_bf16_the_stages_still_alternate_in_float32(model_dir, pipe, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(MMLDMWarning, match="weights stay float32") as warned:
        low = SoundingVideoPipeline.from_pretrained(model_dir, low_memory=True)
    assert len(warned) == 1 and "\n" not in str(warned[0].message)
    out = low(task="svg", seed=2, **KW)
    normal = pipe(task="svg", seed=2, **KW)
    assert out.settings["low_memory"] is True and out.settings["dtype"] == "float32"
    assert out.settings["low_memory_weights"].startswith("float32 (this CPU has no native bfloat16")
    assert torch.allclose(out.frames, normal.frames, atol=1e-4)
    assert {p.dtype for p in low.generator.parameters()} == {torch.float32}
    assert not holds_weights(low.generator) and not holds_weights(low.autoencoder)


def test_an_assembled_pipeline_keeps_its_modules_in_memory(kit):
    """Without a model folder to read them from, the stages stay resident on a CPU (bf16 linear weights)."""
    source = kit.tiny_pipeline()
    low = SoundingVideoPipeline(source.vae, source.autoencoder, source.generator, source.generation,
                                source.audio_cfg, source.vocoder, low_memory=True)
    out = low(task="svg", seed=0, n=1, steps=2, decoder_steps=2, progress=False)
    assert out.settings["low_memory"] is True and torch.isfinite(out.frames).all()
    assert all(holds_weights(m) for m in stage_modules(low).values())
    linear = {m.weight.dtype for m in low.generator.modules() if isinstance(m, nn.Linear)}
    assert linear == {torch.bfloat16 if NATIVE_BF16 else torch.float32}


@pytest.mark.parametrize("native", [True, False])
def test_cli_low_memory_is_recorded(model_dir, tmp_path, monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    args = ["generate", "--model", str(model_dir), "--n", "1", "--steps", "1", "--decoder-steps", "1",
            "--low-memory", "--out", str(tmp_path / "o"), "--quiet", "--no-preview"]
    if native:
        assert main(args) == 0
    else:  # one warning line, then the same run in float32
        with pytest.warns(MMLDMWarning, match="weights stay float32"):
            assert main(args) == 0
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert settings["low_memory"] is True
    assert settings["low_memory_weights"].startswith("bfloat16" if native else "float32")
    assert settings["dtype"] == ("bfloat16" if native else "float32")


def test_low_memory_folder_problems_are_one_line_errors(low, model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "autoencoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(WeightsError) as info:
        SoundingVideoPipeline.from_pretrained(broken, low_memory=True)
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)

    from safetensors.torch import load_file, save_file

    generator = broken / "generator" / "model.safetensors"
    state = load_file(generator)
    state.pop(min(state))
    save_file(state, generator)
    shutil.copy(model_dir / "autoencoder" / "model.safetensors", weights)
    with pytest.raises(WeightsError, match="1 missing"):
        SoundingVideoPipeline.from_pretrained(broken, low_memory=True)

    with pytest.raises(ConfigError, match="low_memory"):
        low.save_pretrained(tmp_path / "copy")
