"""Benchmarks: ``run_all.py --quick`` end to end, and the shared helpers of benchmarks/common.py.

These check that the scripts run and record what they claim (keys, positive numbers,
consistent counts); they never check speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmldm.errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ALL = ("generator_presets", "train_step", "autoencoder", "sampling", "mfu", "dataloader", "latent_cache")


def load_common():
    """benchmarks/common.py as a module (the benchmarks folder is not a package)."""
    name = "mmldm_benchmarks_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_all_quick(out: Path, device: str = "cpu") -> tuple[dict, str]:
    """``run_all.py --quick`` (one torch thread) into ``out``: (JSON record, RESULTS.md text)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--threads", "1",
                           "--device", device, "--out", str(out / "run.json"), "--results", str(out / "RESULTS.md")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "run.json").read_text()), (out / "RESULTS.md").read_text()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return run_all_quick(tmp_path_factory.mktemp("bench"))


def rows(run: dict, benchmark: str, table: str) -> list[dict]:
    return run["benchmarks"][benchmark]["tables"][table]


def test_quick_run_records_machine_date_settings(quick_run):
    run, _ = quick_run
    assert run["quick"] is True and run["device"] == "cpu"
    machine = run["machine"]
    for key in ("cpu_model", "cpu_cores", "torch", "device_name", "torch_threads"):
        assert machine[key], key
    assert machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    from mmldm.devices import cpu_has_native_bf16

    assert machine["cpu_native_bf16"] is cpu_has_native_bf16()  # bf16 timings mean little without it
    assert sorted(run["benchmarks"]) == sorted(ALL)
    for name, result in run["benchmarks"].items():
        assert result["benchmark"] == name
        assert result["date"].startswith(run["date"][:10])
        assert result["settings"] and result["seconds"] > 0


def test_quick_run_numbers(quick_run):
    run, _ = quick_run
    complexity = {r["name"]: r for r in rows(run, "generator_presets", "complexity")}
    assert complexity["S"]["params"] == pytest.approx(131e6, rel=0.01)  # the paper's Table 4
    for r in rows(run, "generator_presets", "forward"):
        assert 0 < r["min_s"] <= r["median_s"]

    steps = rows(run, "train_step", "steps")
    assert {(r["stage"], r["precision"]) for r in steps} == {
        (stage, p) for stage in ("vae", "autoencoder", "generator") for p in ("fp32", "bf16")}
    for r in steps:
        assert r["samples_per_s"] == pytest.approx(r["batch"] / r["median_s"])
        assert r["params_trainable_m"] > 0 and r["peak_mib"] > 0

    assert {r["adversarial"] for r in rows(run, "autoencoder", "training")} == {"no", "yes"}
    assert rows(run, "autoencoder", "reconstruction")[0]["seconds_per_clip"] > 0

    sampled = rows(run, "sampling", "generator")
    assert {r["sampler"] for r in sampled} == {"ddim", "dpmpp", "euler", "heun"}
    for r in sampled:
        assert r["network_calls"] == (2 * r["steps"] - 1 if r["sampler"] == "heun" else r["steps"])
        assert r["seconds_per_video"] > 0 and r["peak_mib"] > 0
    (pipe,) = rows(run, "sampling", "pipeline")
    assert pipe["generate_s_per_video"] > 0 and pipe["save_s_per_video"] > 0 and pipe["frame_size"] == 64

    peaks = {r["dtype"]: r for r in rows(run, "mfu", "matmul_peak")}
    assert set(peaks) == {"fp32", "bf16"} and all(r["tflops"] > 0 for r in peaks.values())
    mfu = rows(run, "mfu", "mfu")
    forward = {r["dtype"]: r for r in rows(run, "generator_presets", "forward")}
    train = {r["precision"]: r for r in steps if r["stage"] == "generator"}
    for r in mfu:
        assert r["mfu_bf16"] == pytest.approx(r["tflops"] * 1e12 / (peaks["bf16"]["tflops"] * 1e12))
        assert r["mfu_fp32"] > 0
        # the timings measured earlier in the run are reused, not measured again
        timed = forward[r["precision"]] if r["work"] == "forward" else train[r["precision"]]
        assert r["median_s"] == timed["median_s"]
    by_work = {r["work"]: r for r in mfu if r["precision"] == "fp32"}
    per_item_forward = by_work["forward"]["gflop"] / by_work["forward"]["batch"]
    per_item_train = by_work["training step"]["gflop"] / by_work["training step"]["batch"]
    assert 2.5 * per_item_forward < per_item_train < 3.5 * per_item_forward  # backward ~ 2x forward

    assert rows(run, "dataloader", "loader")[0]["clips_per_s"] > 0
    assert all(r["clips_per_s"] > 0 for r in rows(run, "latent_cache", "cache"))


def test_results_markdown(quick_run):
    run, text = quick_run
    assert run["machine"]["cpu_model"] in text and run["date"] in text
    for name in ALL:
        assert f"## {name}" in text
    assert "| preset | objective | sampler | steps |" in text and "MFU vs bf16 peak" in text


def test_markdown_table_formats_and_marks_missing_values():
    common = load_common()
    table = common.markdown_table([{"a": "x", "b": 1.23456}, {"a": "y"}], [("A", "a", ""), ("B", "b", ".2f")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| x | 1.23 |", "| y | - |"]


def test_time_call_runs_warmup_then_repeats():
    common = load_common()
    calls = []
    stats = common.time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=3)
    assert len(calls) == 5 and len(stats.times) == 3 and stats.warmup == 2
    with pytest.raises(ConfigError):
        common.time_call(lambda: None, torch.device("cpu"), repeats=0)


PEAK_MEMORY_PROBE = """
import importlib.util, json, sys
from pathlib import Path
import torch
spec = importlib.util.spec_from_file_location("common", sys.argv[1])
common = importlib.util.module_from_spec(spec)
sys.modules["common"] = common
spec.loader.exec_module(common)
size = 64 * 2**20
rss = lambda: int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
with common.PeakMemory(torch.device("cpu")) as first:
    before = rss()
    block = torch.ones(size // 4)
del block
with common.PeakMemory(torch.device("cpu")) as second:
    pass
print(json.dumps({"before": before, "size": size, "first": first.peak_bytes, "second": second.peak_bytes,
                  "method": first.method}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS high-water reset is Linux-only")
def test_peak_memory_sees_a_large_tensor_and_resets():
    # A fresh process: in a long-lived test worker the allocator may serve the block from
    # memory that is already resident, and the RSS peak then rightly does not move.
    proc = subprocess.run([sys.executable, "-c", PEAK_MEMORY_PROBE, str(BENCHMARKS / "common.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["first"] >= seen["before"] + 0.9 * seen["size"]
    if seen["method"] != "process RSS high-water":
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    assert seen["second"] < seen["first"] - 0.5 * seen["size"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_common().resolve_device("cuda")


@pytest.mark.gpu
def test_quick_run_on_cuda(tmp_path):
    run, text = run_all_quick(tmp_path, device="cuda")
    assert run["machine"]["device"] == "cuda" and run["machine"]["device_name"] in text
    for row in rows(run, "sampling", "generator"):
        assert row["peak_memory"] == "cuda max_memory_allocated" and row["peak_mib"] > 0
    assert all(r["tflops"] > 0 for r in rows(run, "mfu", "matmul_peak"))


def test_vae_train_script(monkeypatch):
    """benchmarks/vae_train.py (not part of run_all) through its run(): one bf16 step at 32x32."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    vae_train = importlib.import_module("vae_train")
    result = vae_train.run(size=32, batch_size=1, precisions=("bf16",), steps=1, warmup=0, threads=1)
    (row,) = result["tables"]["steps"]
    assert row["images_per_step"] == 3 and row["images_per_s"] == pytest.approx(3 / row["mean_s"])
    assert result["machine"]["torch_threads"] == 1 and "| tiny | full | 32 | bf16 | 3 |" in vae_train.markdown(result)


def test_builtin_model_benchmark_times_real_generate_commands(tmp_path):
    """benchmarks/builtin_model.py runs ``mmldm generate`` in fresh processes and records wall times."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "builtin_model.py"), "--tasks", "svg", "--n", "1",
                           "--repeats", "1", "--threads", "1", "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "b.json").read_text())
    (row,) = record["tables"]["generate"]
    assert row["task"] == "svg" and row["n"] == 1 and row["wall_s_min"] > 0
    (loaded,) = record["tables"]["loaded"]  # the same call with the model loaded: no start-up, no files
    assert loaded["task"] == "svg" and 0 < loaded["wall_s_min"] < row["wall_s_min"]
    assert loaded["dtype"] in ("float32", "bfloat16") and loaded["compiled"] == "no"
    assert proc.stdout.count("| svg |") == 2
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "builtin_model.py"), "--n", "0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_critic_ranking_benchmark_measures_every_candidate(tmp_path):
    """benchmarks/critic_ranking.py decodes every candidate and reports each critic's pick against the oracle."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "critic_ranking.py"), "--samples", "2", "--candidates",
                           "3", "--decoder-steps", "1", "--threads", "1", "--out", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "c.json").read_text())
    errors = np.asarray(record["sync_errors"])
    assert errors.shape == (2, 3) and (errors >= 0).all()
    rows = {row["kept_by"]: row for row in record["tables"]["critics"]}
    # the built-in model's critics: its sync critic and the two latent ones
    assert set(rows) == {"sync", "generator", "contrastive", "sync + generator + contrastive (rank sum)",
                         "first candidate (no reranking)", "oracle (the law's best)"}
    for row in rows.values():  # each row's numbers are those of the candidates it kept
        kept = errors[np.arange(2), row["picks"]]
        assert row["median"] == pytest.approx(float(np.median(kept)))
        assert row["worst"] == pytest.approx(float(kept.max()))
        assert row["median"] >= rows["oracle (the law's best)"]["median"] - 1e-9
    assert rows["oracle (the law's best)"]["spearman"] == pytest.approx(1.0)
    assert rows["first candidate (no reranking)"]["picks"] == [0, 0]
    assert "| oracle (the law's best) |" in proc.stdout
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "critic_ranking.py"), "--candidates", "1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_spearman_of_the_critic_ranking_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    critic_ranking = importlib.import_module("critic_ranking")
    error = np.array([0.5, 2.0, float("inf"), 1.0])
    assert critic_ranking.spearman(error * 3, error) == pytest.approx(1.0)
    assert critic_ranking.spearman(-error, error) == pytest.approx(-1.0)
    assert np.isnan(critic_ranking.spearman(error, np.full(4, float("inf"))))  # nothing to rank
    errors, scores = np.array([[1.0, 2.0], [3.0, 3.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])
    row = critic_ranking.kept_row("x", np.array([0, 1]), errors, scores)
    assert row["spearman"] == pytest.approx(1.0)  # the mean over the first sample: the second has no ranking
    assert row["median"] == pytest.approx(2.0)


def test_critic_ranking_of_long_ranks_the_second_clip(monkeypatch):
    """--task long measures the candidates of the second clip: not those of the first, which are svg's."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    critic_ranking = importlib.import_module("critic_ranking")
    common = dict(samples=1, candidates=2, seed=7, decoder_steps=1, threads=1)
    svg = critic_ranking.run(task="svg", **common)
    long = critic_ranking.run(task="long", **common)
    assert long["settings"]["task"] == "long" and np.asarray(long["sync_errors"]).shape == (1, 2)
    assert long["sync_errors"] != svg["sync_errors"]
    assert "second clip" in critic_ranking.markdown(long)
    with pytest.raises(ConfigError, match="--task"):
        critic_ranking.run(task="v2a", **common)


def test_critic_ranking_of_a2v_ranks_every_clip_of_each_input(monkeypatch):
    """--task a2v: one pool per clip of each held-out input, each candidate measured against the given audio."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    critic_ranking = importlib.import_module("critic_ranking")
    result = critic_ranking.run(task="a2v", samples=1, seconds=3.2, candidates=2, seed=0, decoder_steps=1, threads=1)
    errors = np.asarray(result["sync_errors"])
    assert errors.shape == (2, 2) and result["settings"]["pools"] == 2 and (errors >= 0).all()
    rows = {row["kept_by"]: row for row in result["tables"]["critics"]}
    assert rows["oracle (the law's best)"]["picks"] == errors.argmin(1).tolist()
    assert "a2v candidates of every clip" in critic_ranking.markdown(result)


def test_sync_quality_benchmark_measures_each_variant(tmp_path):
    """benchmarks/sync_quality.py: one row per variant, its numbers those of its own clips."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = str(BENCHMARKS / "sync_quality.py")
    fast = "decoder_steps=1,candidates=1"
    proc = subprocess.run([sys.executable, script, "--samples", "3", "--batch", "2", "--threads", "1", "--variants",
                           fast, f"steps=1,{fast}", "--out", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "s.json").read_text())
    rows = record["tables"]["variants"]
    assert [row["variant"] for row in rows] == [fast, f"steps=1,{fast}"]
    for row in rows:
        errors = np.asarray(row["sync_errors"])
        assert row["clips"] == len(errors) == 3
        assert row["median"] == pytest.approx(float(np.median(errors)))
        assert row["within_1"] == f"{int(np.sum(errors <= 1.0))} of 3"
        assert 0 <= row["class_agreement_pct"] <= 100 and 0 <= row["one_object_pct"] <= 100
    assert rows[0]["sync_errors"] != rows[1]["sync_errors"]  # the variants generate differently
    assert f"| steps=1,{fast} |" in proc.stdout

    long = subprocess.run([sys.executable, script, "--task", "long", "--samples", "1", "--seconds", "3.2",
                           "--threads", "1", "--variants", f"steps=2,{fast}", "--out", str(tmp_path / "l.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert long.returncode == 0, long.stdout[-2000:] + long.stderr[-2000:]
    (row,) = json.loads((tmp_path / "l.json").read_text())["tables"]["variants"]
    assert row["clips"] == 2 and len(row["median_per_position"]) == 2  # every 1.6 s clip of the 3.2 s video
    assert row["median_per_position"] == [round(e, 2) for e in row["sync_errors"]]  # one video: its clips

    for variant, words in (("foo=1", "foo=1"), ("guidance=x", "guidance"), ("critics=nope", "nope")):
        bad = subprocess.run([sys.executable, script, "--variants", variant], capture_output=True, text=True,
                             timeout=120, env=env)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and words in bad.stderr


def test_sync_quality_variants_name_critics(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sync_quality = importlib.import_module("sync_quality")
    assert sync_quality.parse_variant("critics=sync+generator,candidates=4") == {
        "critics": ("sync", "generator"), "candidates": 4}


def test_any_length_positions_are_the_frames_each_clip_fills(monkeypatch):
    """benchmarks/any_length.py measures each generated clip on the output frames it fills."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    any_length = importlib.import_module("any_length")
    assert any_length.position_bounds(64, 0, 16, at_end=False) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    # 3.5 clips: the last window overlaps the one before and fills the last half clip
    assert any_length.position_bounds(56, 0, 16, at_end=False) == [(0, 16), (16, 32), (32, 48), (48, 56)]
    # continuation: the second window overlaps the first; then one new clip after the span
    assert any_length.position_bounds(56, 16, 16, at_end=True) == [(0, 16), (16, 24), (24, 40), (40, 56),
                                                                   (56, 72)]
    assert any_length.position_bounds(10, 16, 16, at_end=True) == [(0, 10), (10, 26)]


def test_sync_critic_generalisation_benchmark_reads_fresh_clips_and_a_training_run(tmp_path):
    """benchmarks/sync_critic_generalisation.py: the built-in critic judges Sounding Shapes clips it never
    saw far above chance; a folder and manifest given are read as the critic trained on them."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = str(BENCHMARKS / "sync_critic_generalisation.py")
    proc = subprocess.run([sys.executable, script, "--clips", "32", "--threads", "1", "--out", str(tmp_path / "g.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "g.json").read_text())["tables"]["critic"]
    assert row["clips"] == 32 and row["chance"] == pytest.approx(1 / (32 * 16))
    assert row["frame_retrieval"] > 50 * row["chance"] and row["beats_other"] > 0.8
    assert row["own_cosine"] > row["shifted_cosine"]
    assert "| fresh Sounding Shapes clips" in proc.stdout
    bad = subprocess.run([sys.executable, script, "--clips", "33"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "multiple of 32" in bad.stderr

    from mmldm.cli.main import main
    from mmldm.recipes.base import CONFIGS

    clips, run = tmp_path / "clips", tmp_path / "run"
    assert main(["data", "synth", "--out", str(clips), "--n", "32", "--seed", "5"]) == 0
    assert main(["train", "sync-critic", "--config", str(CONFIGS / "sync-critic.yaml"), "--out", str(run),
                 "--set", f"data.root={clips}", "train.max_steps=2", "train.batch_size=4", "train.log.every=1"]) == 0
    proc = subprocess.run([sys.executable, script, "--critic", str(run), "--data", str(clips), "--manifest",
                           "manifest.jsonl", "--clips", "32", "--threads", "1", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["settings"]["critic"].endswith("step_000002")  # the run's newest checkpoint
    (row,) = result["tables"]["critic"]
    assert row["data"] == f"{clips} (manifest.jsonl)" and row["windows"] == 32
    assert 0.0 <= row["frame_retrieval"] <= 1.0
