"""scripts/gpu_check.py (``make gpu-check``): its quick CPU mode end to end and the record it writes,
a failing GPU test failing its part, and the one-line refusal without CUDA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
PARTS = ["environment", "attention", "tests", "cost", "training", "sampling"]


def load_gpu_check():
    name = "mmldm_scripts_gpu_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_quick_cpu_run_writes_one_record(tmp_path):
    out = tmp_path / "check.json"
    # the GPU-marked tests of one file: collected, skipped without CUDA
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--threads", "1",
                           "--tests", "tests/benchmarks/test_paper_cost.py", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "gpu_check" and result["status"] == "ok" and result["failed_parts"] == []
    assert [p["name"] for p in result["parts"]] == PARTS
    assert all(p["status"] == "ok" and p["wall_s"] >= 0 for p in result["parts"])
    assert result["total_wall_s"] > 0 and result["within_budget"] is True
    settings = result["settings"]
    assert settings["quick"] and settings["scale"] == "tiny" and settings["device"] == "cpu"
    assert settings["environment"]["precision"] in ("bf16", "fp32") and result["machine"]["torch_threads"] == 1
    tables = result["tables"]
    attention = {row["component"]: row["flash_only"] for row in tables["attention"]}
    assert attention["light-frame-decoder"] == "runs" and attention["avdit"] in ("runs", "refused")
    tests = {row["test"].rsplit("::", 1)[1]: row["outcome"] for row in tables["tests"]}
    assert tests == {"test_paper_networks_run_in_bf16_with_flash_attention_on_cuda": "skipped",
                     "test_paper_scale_calls_are_timed_at_full_batch_on_cuda": "skipped"}
    timed = [row for row in tables["cost"] if row.get("built") and "gflop" in row]
    assert timed and all(row["timed_batch"] == row["batch"] and row["tflops_fp32"] > 0 for row in timed)
    assert {row["settings"] for row in tables["cost_summary"]} == {"paper", "fast"}
    training = {row["stage"]: row for row in tables["training"]}
    assert list(training) == ["vae", "autoencoder", "generator"]
    for row in training.values():
        assert row["median_s"] > 0 and row["weights_finite"] and row["params_trainable_m"] > 0
    sampling = {row["settings"]: row for row in tables["sampling"]}
    assert sampling["paper"]["decoder_guidance"] == 2.5 and sampling["fast"]["decoder_guidance"] == 1.0
    for row in sampling.values():
        assert row["finite"] and row["wall_s"] > 0 and row["tflop"] > 0 and row["frames"] == [1, 16, 3, 64, 64]
    # the pipeline has no light frame decoder: the fast sample decodes its frames with the full KL-VAE
    assert any("not the fast settings' decoder-unet / light-frame-decoder" in text for text in result["notes"])
    gflop = {(row.get("component"), row.get("batch")): row["gflop"] for row in tables["cost"] if row.get("built")
             and "gflop" in row}
    generator_steps, decoder_steps = sampling["fast"]["generator_steps"], sampling["fast"]["decoder_steps"]
    expected = (generator_steps * gflop[("avdit", 1)] + decoder_steps * (gflop[("decoder-unet", 16)]
                + gflop[("decoder-unet", 1)]) + gflop[("decoder-conditions", 17)] + gflop[("kl-vae-decoder", 17)])
    assert sampling["fast"]["tflop"] == pytest.approx(expected / 1e3, rel=1e-6)
    assert "| sampling | ok |" in proc.stdout and f"wrote {out}" in proc.stdout


def test_a_failing_gpu_test_fails_the_tests_part(tmp_path):
    gpu_check = load_gpu_check()
    test_file = tmp_path / "test_failing.py"
    test_file.write_text("import pytest\n\n\n@pytest.mark.gpu\ndef test_fails():\n    assert 1 == 2\n\n\n"
                         "@pytest.mark.gpu\ndef test_passes():\n    pass\n\n\ndef test_not_gpu():\n    pass\n")
    with pytest.raises(RuntimeError, match="GPU tests failed: .*1 failed"):
        gpu_check.run_tests([str(test_file)], timeout=120)
    test_file.write_text("import pytest\n\n\n@pytest.mark.gpu\ndef test_passes():\n    pass\n\n\n"
                         "def test_not_gpu():\n    pass\n")
    rows, counts, summary = gpu_check.run_tests([str(test_file)], timeout=120)
    assert [row["test"].rsplit("::", 1)[1] for row in rows] == ["test_passes"]  # only the GPU-marked one
    assert counts == {"passed": 1, "failed": 0, "error": 0, "skipped": 0} and "1 passed" in summary


def test_a_failing_part_is_recorded_and_the_others_still_run():
    gpu_check = load_gpu_check()
    parts = []
    with gpu_check.part(parts, "broken"):
        raise ValueError("no such\nthing")
    with gpu_check.part(parts, "fine"):
        pass
    assert [(p.name, p.status) for p in parts] == [("broken", "failed"), ("fine", "ok")]
    assert parts[0].error == "ValueError: no such thing" and "raise ValueError" in parts[0].traceback


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_path_without_a_device_is_one_line(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=ROOT, check=False)
    assert proc.returncode == 2 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]
