"""benchmarks/light_frame_decoder.py: its tables on the built-in model (which ships a light frame decoder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = str(BENCHMARKS / "light_frame_decoder.py")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    from mmldm.data.sounding_shapes import write_dataset

    folder = tmp_path_factory.mktemp("heldout") / "shapes"
    write_dataset(folder, n=1, seed=7)
    return folder


def test_a_model_without_a_light_decoder_is_one_line(heldout, model_without_light_decoder):
    plain = model_without_light_decoder
    bad = subprocess.run([sys.executable, SCRIPT, "--model", str(plain), "--heldout", str(heldout), "--threads", "1"],
                         capture_output=True, text=True, timeout=120, env=ENV, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "frame_decoder" in bad.stderr


@pytest.mark.slow
def test_the_benchmark_compares_the_decoders(heldout, tmp_path):
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--model", str(BUILTIN_MODEL), "--heldout", str(heldout),
                           "--clips", "1", "--samples", "1", "--batch", "1", "--repeats", "1", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=ENV, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tables = json.loads(out.read_text())["tables"]
    (held,) = tables["heldout"]
    assert held["clips"] == 1 and held["psnr_light_vs_full"] > 30
    full, light = tables["generated"]
    assert (full["frame_decoder"], light["frame_decoder"]) == ("full", "light") and light["same_audio"]
    assert tables["speed"][1]["flop_ratio"] < 1
    summary = {row["settings"]: row["target"] for row in tables["cost_summary"]}
    assert summary == {"paper": "missed", "fast": "missed", "fast-8-steps": "met"}
