"""benchmarks/vocoders.py end to end on a tiny release-format HiFi-GAN and a synthetic wave (no assets)."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mmldm.data.media_io import write_wav
from mmldm.data.vocoders import HiFiGAN, HiFiGANConfig, save_hifigan
from mmldm.errors import DataError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY_22K = dict(
    resblock="1", upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=16,
    resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], num_mels=80, n_fft=1024, hop_size=256,
    win_size=1024, sampling_rate=22050, fmin=0, fmax=8000,
)


@pytest.fixture(scope="module")
def vocoders_benchmark():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import their helpers as `common`
    return importlib.import_module("vocoders")


def test_benchmark_records_both_vocoders_for_every_input(tmp_path, vocoders_benchmark):
    checkpoint = save_hifigan(HiFiGAN(HiFiGANConfig.from_mapping(TINY_22K)).eval(), tmp_path / "h" / "g_00000001")
    t = torch.arange(2 * 35280 + 5000) / 22050
    write_wav(tmp_path / "tone.wav", 0.5 * torch.sin(2 * math.pi * 440 * t).numpy(), 22050)
    result = vocoders_benchmark.run(checkpoint, ((tmp_path / "tone.wav", "tone", 0.1, 2),), sizes=(32,), threads=1)
    json.dumps(result)  # JSON-ready
    conditions = {row["condition"] for row in result["tables"]["audio_image"]}
    assert conditions == {"mel", "image 80x137", "image 80x137, [-100, +20] dB", "image 32x32"}
    assert len(result["tables"]["audio_image"]) == 2 * len(conditions)
    assert {row["vocoder"] for row in result["tables"]["vocoders"]} == {"HiFi-GAN", "Griffin-Lim"}
    for row in result["tables"]["audio_image"]:
        assert row["clips"] == 2 and all(row[key] >= 0 for key in ("log_mel_l1", "spectral_convergence", "mr_stft"))
        assert row["mr_stft"] == pytest.approx(row["spectral_convergence"] + row["log_magnitude"])
        if row["condition"] in ("mel", "image 80x137, [-100, +20] dB"):
            assert row["input_l1"] < 1e-4  # an image spanning HiFi-GAN's -100 dB floor changes nothing
    by_condition = {(r["condition"], r["vocoder"]): r for r in result["tables"]["audio_image"]}
    coarse, native = by_condition[("image 32x32", "Griffin-Lim")], by_condition[("image 80x137", "Griffin-Lim")]
    assert coarse["input_l1"] > native["input_l1"]
    assert "HiFi-GAN vs Griffin-Lim" in vocoders_benchmark.markdown(result)


def test_benchmark_names_missing_audio_and_too_short_files(tmp_path, vocoders_benchmark):
    checkpoint = save_hifigan(HiFiGAN(HiFiGANConfig.from_mapping(TINY_22K)).eval(), tmp_path / "h" / "g_00000001")
    with pytest.raises(DataError, match="nothing.wav: not found"):
        vocoders_benchmark.run(checkpoint, ((tmp_path / "nothing.wav", "x", 0.0, 1),))
    write_wav(tmp_path / "short.wav", torch.zeros(30000).numpy(), 22050)
    with pytest.raises(DataError, match=r"short.wav: 1 clip\(s\) of 1.6 s from 0 s need 1.60 s"):
        vocoders_benchmark.run(checkpoint, ((tmp_path / "short.wav", "x", 0.0, 1),))
