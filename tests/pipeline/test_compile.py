"""torch.compile of a loaded pipeline: the same samples up to rounding, and clear refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from mmldm.errors import ConfigError
from mmldm.pipeline import SoundingVideoPipeline

KW = {"n": 2, "steps": 2, "decoder_steps": 2, "candidates": 1, "guidance": 2.0, "class_label": 1, "seed": 3,
      "progress": False}


@pytest.mark.slow  # TorchInductor compiles each network and batch shape: about two minutes on 2 cores
def test_compiled_pipeline_samples_what_the_eager_one_does(model_dir):
    eager = SoundingVideoPipeline.from_pretrained(model_dir)
    compiled = SoundingVideoPipeline.from_pretrained(model_dir).compile()
    want, got = eager(task="svg", **KW), compiled(task="svg", **KW)
    assert got.settings["compiled"] is True and want.settings["compiled"] is False
    torch.testing.assert_close(got.frames, want.frames, atol=2e-3, rtol=0)
    torch.testing.assert_close(got.waveforms, want.waveforms, atol=2e-3, rtol=0)


def test_compile_refuses_a_cpu_without_a_cpp_compiler_and_a_low_memory_pipeline(model_dir, monkeypatch):
    low = SoundingVideoPipeline.from_pretrained(model_dir, low_memory=True)
    with pytest.raises(ConfigError, match="low_memory"):
        low.compile()
    pipe = SoundingVideoPipeline.from_pretrained(model_dir)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        pipe.compile()
    assert not pipe.compiled
