"""Fixtures of the benchmark tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def model_without_light_decoder(tmp_path) -> Path:
    """A copy of the built-in model without its light frame decoder (and with the full decoder as
    its default, so that it loads)."""
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    plain = tmp_path / "plain"
    shutil.copytree(BUILTIN_MODEL, plain)
    shutil.rmtree(plain / "frame_decoder")
    index = json.loads((plain / "model_index.json").read_text())
    del index["components"]["frame_decoder"]
    (plain / "model_index.json").write_text(json.dumps(index))
    generation_path = plain / "generator" / "generation.json"
    generation = json.loads(generation_path.read_text())
    generation["sampling"]["frame_decoder"] = "full"
    generation_path.write_text(json.dumps(generation))
    return plain
