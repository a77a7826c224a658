"""The released HiFi-GAN universal V1 generator on real speech and music (assets from `make assets`).

One 1.6 s clip per file (35,280 samples at 22,050 Hz), vocoded once per module: about 6 s of
HiFi-GAN on one CPU thread. ``benchmarks/vocoders.py`` measures more clips and the audio image.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mmldm.data.audio_image import AudioConfig, log_mel
from mmldm.data.media_io import read_wav
from mmldm.data.vocoders import (
    GriffinLim,
    HiFiGAN,
    HiFiGANConfig,
    build_vocoder,
    load_hifigan,
    log_mel_distance,
    multi_resolution_stft_distance,
)
from mmldm.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CHECKPOINT = ASSETS / "hifigan" / "generator_universal.pth.tar"
CFG22 = AudioConfig.preset("hifigan-22k")
FULL_BAND = dataclasses.replace(CFG22, fmax=CFG22.sample_rate / 2)

# file under assets/audio: (kind, clip start in seconds: where the file has sound)
CLIPS = {"speech": ("speech", 8.0), "sax": ("music", 0.8), "cantina": ("music", 0.0)}


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ASSETS.parent)} is missing: run `make assets`")


@pytest.fixture(scope="module")
def released() -> HiFiGAN:
    _need(CHECKPOINT)
    _need(CHECKPOINT.parent / "config.json")
    return build_vocoder(CHECKPOINT, CFG22)


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    waves = {}
    for name, (_, start) in CLIPS.items():
        path = ASSETS / "audio" / f"{name}.wav"
        _need(path)
        audio, _ = read_wav(path, CFG22.sample_rate)
        first = int(start * CFG22.sample_rate)
        waves[name] = torch.from_numpy(audio[first : first + CFG22.clip_samples])
        assert waves[name].shape == (CFG22.clip_samples,)
    return waves


@pytest.fixture(scope="module")
def vocoded(released, clips) -> dict[str, dict[str, torch.Tensor]]:
    """{vocoder: {file: wave [137 * 256]}} from each clip's hifigan-22k log-mel."""
    batch = torch.stack(list(clips.values()))
    mel = log_mel(batch, CFG22)  # [3, 80, 137]
    with torch.no_grad():
        outputs = {"hifigan": released(mel), "griffin-lim": GriffinLim(CFG22)(mel)}
    return {kind: dict(zip(clips, wave)) for kind, wave in outputs.items()}


def test_release_config_is_the_hifigan_22k_preset_and_loads(released):
    config = HiFiGANConfig.from_json(CHECKPOINT.parent / "config.json")
    raw = json.loads((CHECKPOINT.parent / "config.json").read_text())
    assert (raw["sampling_rate"], raw["n_fft"], raw["hop_size"], raw["win_size"], raw["num_mels"]) == (
        CFG22.sample_rate, CFG22.n_fft, CFG22.hop, CFG22.win, CFG22.n_mels)
    assert (float(raw["fmin"]), float(raw["fmax"])) == (CFG22.fmin, CFG22.fmax)
    assert config.resblock == "1" and config.upsample_rates == (8, 8, 2, 2)
    # Kong et al. 2020, Table 1: V1 has 13.92M generator parameters
    assert sum(p.numel() for p in released.parameters()) == 13_926_017
    assert not released.has_weight_norm and not released.training
    assert (released.sample_rate, released.hop) == (22050, 256)
    # the folder of the release works as well as the file
    mel = torch.randn(1, 80, 6, generator=torch.Generator().manual_seed(0)) - 5
    with torch.no_grad():
        torch.testing.assert_close(load_hifigan(CHECKPOINT.parent)(mel), released(mel), atol=0, rtol=0)


def test_release_refuses_other_audio_settings_naming_the_file_and_the_preset():
    _need(CHECKPOINT)
    with pytest.raises(ConfigError, match=r"generator_universal\.pth\.tar.*sampling_rate=22050.*'hifigan-22k'") as info:
        build_vocoder(CHECKPOINT, AudioConfig.preset("16k"))
    assert "\n" not in str(info.value)


def test_release_vocodes_real_speech_and_music_from_the_preset_mels(released, clips, vocoded):
    # The universal generator reproduces each clip's log-mel to about 0.3 natural-log units (2.8 dB);
    # its own validation mel error on LJSpeech ends near 0.21 (jik876/hifi-gan, validation_loss.png).
    for name, wave in clips.items():
        distance = log_mel_distance(wave, vocoded["hifigan"][name], CFG22).item()
        assert distance < 0.45, f"{name}: log-mel L1 {distance:.3f}"
    # The same network given another analysis of the same audio (full-band mels) is far off:
    # the preset is what the checkpoint expects.
    batch = torch.stack(list(clips.values()))
    with torch.no_grad():
        mismatched = released(log_mel(batch, FULL_BAND))
    right = log_mel_distance(batch, torch.stack(list(vocoded["hifigan"].values())), CFG22)
    wrong = log_mel_distance(batch, mismatched, CFG22)
    assert (wrong > 1.8 * right).all(), (right, wrong)


def test_release_is_closer_than_griffin_lim_on_real_music(clips, vocoded):
    # Music with sound above the 8 kHz mel band: HiFi-GAN synthesises that band, Griffin-Lim
    # (non-negative least squares from an 8 kHz filterbank) leaves it empty. Whole-band
    # log-mel L1 and the multi-resolution STFT distance (spectral convergence + log
    # magnitude, (512, 128), (1024, 256), (2048, 512)) both prefer HiFi-GAN.
    for name, (kind, _) in CLIPS.items():
        if kind != "music":
            continue
        original, hifigan, griffin_lim = clips[name], vocoded["hifigan"][name], vocoded["griffin-lim"][name]
        mel_h = log_mel_distance(original, hifigan, FULL_BAND).item()
        mel_g = log_mel_distance(original, griffin_lim, FULL_BAND).item()
        stft_h = multi_resolution_stft_distance(original, hifigan).total.item()
        stft_g = multi_resolution_stft_distance(original, griffin_lim).total.item()
        assert mel_h < 0.9 * mel_g, f"{name}: whole-band log-mel L1 HiFi-GAN {mel_h:.3f}, Griffin-Lim {mel_g:.3f}"
        assert stft_h < 0.9 * stft_g, f"{name}: MR-STFT HiFi-GAN {stft_h:.3f}, Griffin-Lim {stft_g:.3f}"
