"""Generation's ``--device auto`` and ``--precision auto``: CUDA when present, bf16 where native."""

from __future__ import annotations

import json

import pytest
import torch

from mmldm import devices
from mmldm.errors import ConfigError


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cpu_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.resolve_precision("auto", "cpu") is expected
    assert devices.resolve_precision("fp32", "cpu") is None
    assert devices.resolve_precision("bf16", "cpu") is torch.bfloat16  # asked for: even where emulated


def test_auto_precision_on_cuda_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.resolve_precision("auto", "cuda") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.resolve_precision("auto", "cuda:1") is torch.bfloat16


def test_auto_device_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        devices.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.resolve_device("auto") == "cuda" and devices.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        devices.resolve_device("cuda:1")
    assert devices.resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "gpu", ""])
def test_bad_device_or_precision_is_a_one_line_error(bad):
    with pytest.raises(ConfigError, match=f"--device {bad}: not a torch device name"):
        devices.resolve_device(bad)
    with pytest.raises(ConfigError, match="--precision must be"):
        devices.resolve_precision(bad or "half", "cpu")


def test_generate_records_the_precision_auto_chose(tmp_path, monkeypatch):
    from mmldm.cli.main import main

    for native, want in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda native=native: native)
        out = tmp_path / want
        assert main(["generate", "--n", "1", "--steps", "1", "--candidates", "1", "--out", str(out), "--quiet",
                     "--no-preview"]) == 0
        settings = json.loads((out / "settings.json").read_text())
        assert settings["dtype"] == want and settings["device"] == "cpu"


def test_from_pretrained_takes_auto_precision(monkeypatch):
    from mmldm.pipeline import SoundingVideoPipeline

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert SoundingVideoPipeline.from_pretrained(dtype="auto").dtype is torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert SoundingVideoPipeline.from_pretrained(dtype="auto").dtype is None
    with pytest.raises(ConfigError, match="--precision must be"):
        SoundingVideoPipeline.from_pretrained(dtype="half")
