"""The GPU check (``make gpu-check``): everything that needs a GPU, in one command and one JSON record.

On one CUDA device, in bf16 autocast with PyTorch's SDPA (flash attention where the kernel
takes the shapes), it runs in order:

1. **attention**: each paper-scale network once in bf16 with SDPA restricted to the flash
   kernel: which networks flash attention takes whole (the KL-VAE's single 512-wide attention
   head is beyond flash's head-size limit, so SDPA picks another kernel there).
2. **tests**: the GPU-marked tests (``pytest -m gpu``), outcomes read from a JUnit XML report.
3. **cost**: ``benchmarks/paper_cost.py`` at the paper's scale with every call timed at its
   full batch, fp32 and bf16 (GFLOP per call, TFLOP per sample, seconds, achieved TFLOP/s).
4. **training**: one optimiser step (as the engine takes it: losses, backward, clipping,
   AdamW; 1 warm-up + 2 timed) of each stage built from ``configs/paper/landscape/*.yaml``
   with random weights: the KL-VAE (LPIPS off: its weights are not on a bare machine), the
   autoencoder (adversarial term on; batch 4: the term decodes every clip's x0 through the
   VAE with gradients, and by our estimate the config's per-GPU 20 would not fit one GPU) and the
   AVDiT-XL generator (the config's batch 28).
5. **sampling**: one svg sample of the assembled paper-scale pipeline (random weights,
   Griffin-Lim) at the paper settings (AVDiT 50 DDIM steps; signal decoder 50 steps, guidance
   2.5) and at the fast settings (signal decoder 4 steps, no guidance batch; the light frame
   decoder is not built yet, so the frames go through the full KL-VAE decoder), with its wall
   time and achieved TFLOP/s.

A part that fails is recorded (status, one-line error, traceback tail) and the others still
run; the exit status is 1 when any part failed. ``--device cpu --quick`` runs the same code
at the tiny (CPU) sizes in seconds, to test it without a GPU.

    python scripts/gpu_check.py                          # = make gpu-check (CUDA, paper scale)
    python scripts/gpu_check.py --device cpu --quick --tests tests/benchmarks/test_paper_cost.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch
from common import (
    Column,
    PeakMemory,
    autocast,
    engine_training_step,
    machine_line,
    markdown_table,
    note,
    record,
    resolve_device,
    run_script,
    synchronize,
    time_call,
    write_json,
)

from mmldm.errors import ConfigError

#: the check's wall-clock budget on one H100/H200 (seconds)
BUDGET_S = 480.0


@dataclasses.dataclass(frozen=True)
class CheckSizes:
    """What the check runs: the paper's scale on a GPU, or tiny sizes (``--quick``)."""

    scale: str
    #: training batch of each stage trained (in this order) and the optimiser steps
    train_batch: dict[str, int]
    train_warmup: int
    train_steps: int
    #: paper_cost timing: warm-up calls and timed calls per component, batch and precision, and
    #: the batch of a timed call ("full": each row's own)
    cost_warmup: int
    cost_repeats: int
    #: sampler steps of the samples: (generator, signal decoder) at the paper and fast settings
    paper_steps: tuple[int, int]
    fast_steps: tuple[int, int]
    cost_time_batch: str | int = "full"
    #: one untimed sample first (kernel selection, allocator, caches)
    sample_warmup: bool = True


PAPER_SIZES = CheckSizes(scale="paper", train_batch={"vae": 4, "autoencoder": 4, "generator": 28},
                         train_warmup=1, train_steps=2, cost_warmup=1, cost_repeats=3,
                         paper_steps=(50, 50), fast_steps=(50, 4))
QUICK_SIZES = CheckSizes(scale="tiny", train_batch={"vae": 2, "autoencoder": 1, "generator": 4},
                         train_warmup=0, train_steps=1, cost_warmup=0, cost_repeats=1,
                         paper_steps=(2, 2), fast_steps=(2, 1))

#: stage -> training overrides on top of paper_cost's (random weights, no weight files)
TRAIN_OVERRIDES = {
    "paper": {"vae": ["loss.disc_start=0"], "autoencoder": ["model.loss.adversarial_start_step=0"],
              "generator": []},
    "tiny": {"vae": [], "autoencoder": ["model.loss.adversarial_start_step=0"], "generator": []},
}


# ----------------------------------------------------------------------------- parts


@dataclasses.dataclass
class Part:
    """One step of the check and what became of it."""

    name: str
    #: running, ok, skipped or failed
    status: str = "running"
    wall_s: float = 0.0
    error: str | None = None
    traceback: str | None = None


@contextlib.contextmanager
def part(parts: list[Part], name: str) -> Iterator[Part]:
    """Run a part, timing it; an exception fails the part (recorded), not the check."""
    current = Part(name)
    parts.append(current)
    start = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        yield current
        if current.status == "running":
            current.status = "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and the other parts still run
        current.status = "failed"
        current.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        current.traceback = "".join(traceback.format_exc().splitlines(keepends=True)[-25:])
        print(f"   failed: {current.error}", flush=True)
    finally:
        current.wall_s = time.perf_counter() - start
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def build_on(device: torch.device, build: Callable[[], Any]) -> Any:
    """``build()`` with ``device`` as the default device (random initialisation of a paper-scale
    network on the GPU takes a fraction of the CPU's time), then moved there (buffers made from
    CPU data)."""
    with torch.device(device):
        built = build()
    if isinstance(built, dict):
        return {key: module.to(device) for key, module in built.items()}
    return built.to(device)


def precision_for(device: torch.device) -> str:
    """bf16 where the device multiplies it natively, else fp32."""
    from mmldm.devices import cpu_has_native_bf16

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def environment(device: torch.device) -> dict[str, Any]:
    """The torch, CUDA and SDPA settings the numbers were taken under."""
    from torch.backends import cuda as cuda_backends

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "precision": precision_for(device),
                            "sdpa_flash_enabled": cuda_backends.flash_sdp_enabled(),
                            "sdpa_mem_efficient_enabled": cuda_backends.mem_efficient_sdp_enabled(),
                            "sdpa_math_enabled": cuda_backends.math_sdp_enabled(),
                            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), flash_attention_available=
                    bool(getattr(cuda_backends, "is_flash_attention_available", lambda: None)()))
    return info


def attention_rows(paper_cost: Any, configs: Any, device: torch.device, precision: str) -> list[dict[str, Any]]:
    """Each built component once at batch 2 with SDPA limited to the flash kernel: "runs", or "refused"
    with the reason (some attention of it is beyond the kernel's limits), or "not built"."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    networks = paper_cost.Networks(configs, device)
    for name, component in paper_cost.COMPONENTS.items():
        if not component.built:
            rows.append({"component": name, "flash_only": "not built"})
            continue
        call = component.prepare(networks.get(component), configs, 2, device)
        try:
            with torch.no_grad(), autocast(device, precision), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                call()
            synchronize(device)
            rows.append({"component": name, "flash_only": "runs"})
        except RuntimeError as exc:  # "No available kernel": some attention of it is beyond flash's limits
            rows.append({"component": name, "flash_only": "refused",
                         "reason": " ".join(str(exc).split())[:300]})
    networks.release()
    return rows


def run_tests(paths: list[str], timeout: int) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """``pytest -m gpu PATHS``: (one row per test, outcome counts, the summary line)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", f"--junitxml={report}",
                               "-o", "junit_family=xunit2", *paths], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if not report.is_file():
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        rows = []
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome, message = "passed", None
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    message = " ".join((child.get("message") or "").split())[:300]
            rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                         "time_s": float(case.get("time") or 0.0), "message": message})
    counts = {key: sum(row["outcome"] == key for row in rows) for key in ("passed", "failed", "error", "skipped")}
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else ""
    # 5: nothing selected (no GPU-marked test under PATHS); anything else but 0 is a failure
    if proc.returncode not in (0, 5) or counts["failed"] or counts["error"]:
        raise RuntimeError(f"GPU tests failed: {summary}")
    return rows, counts, summary


def with_throughput(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cost rows with achieved TFLOP/s per precision (GFLOP per call / seconds per call)."""
    out = []
    for row in rows:
        row = dict(row)
        for precision in ("fp32", "bf16"):
            seconds = row.get(f"s_per_call_{precision}")
            if seconds and isinstance(row.get("gflop"), float):
                row[f"tflops_{precision}"] = row["gflop"] / 1e3 / seconds
        out.append(row)
    return out


def training_row(stage_name: str, cfg: Any, batch_size: int, sizes: CheckSizes, device: torch.device,
                 precision: str) -> dict[str, Any]:
    """One stage's optimiser step as benchmarks/train_step.py times it, the networks built on ``device``."""
    from train_step import synthetic_batch

    from mmldm.training.registry import get_stage

    stage = get_stage(stage_name)()
    torch.manual_seed(0)
    modules = build_on(device, lambda: stage.build(cfg))
    group_keys = stage.optimizer_groups(cfg)
    trainable = {key for keys in group_keys.values() for key in keys}
    for key, module in modules.items():
        if key in trainable:
            module.train()
        else:
            module.eval().requires_grad_(False)
    groups = {name: [p for key in keys for p in modules[key].parameters() if p.requires_grad]
              for name, keys in group_keys.items()}
    gen = torch.Generator(device).manual_seed(0)
    batch = {key: value.to(device) for key, value in synthetic_batch(stage_name, cfg, batch_size).items()}
    step = engine_training_step(lambda i: stage.losses(modules, batch, 10**6 + i, gen), groups, device, precision)
    with PeakMemory(device) as peak:
        timing = time_call(step, device, warmup=sizes.train_warmup, repeats=sizes.train_steps)
    finite = all(torch.isfinite(p).all() for params in groups.values() for p in params)
    return {"stage": stage_name, "precision": precision, "batch": batch_size, **timing.as_dict(),
            "samples_per_s": batch_size / timing.median_s,
            "params_trainable_m": sum(p.numel() for params in groups.values() for p in params) / 1e6,
            "peak_gib": peak.peak_bytes / 2**30, "peak_memory": peak.method, "weights_finite": bool(finite)}


def paper_pipeline(configs: Any, device: torch.device, precision: str) -> Any:
    """The pipeline of ``configs``' networks with random weights (Griffin-Lim vocoder)."""
    from mmldm.autoencoder.model import HierarchicalAVAutoencoder
    from mmldm.data.audio_image import AudioConfig
    from mmldm.generator.dit import AVDiT
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.vae.kl_vae import KLVAE

    torch.manual_seed(0)
    ae, data = configs.autoencoder.model, configs.autoencoder.data
    vae = build_on(device, lambda: KLVAE.from_preset(configs.vae.model.preset, chunk_size=configs.vae.model.chunk_size))
    autoencoder = build_on(device, lambda: HierarchicalAVAutoencoder(ae))
    generator = build_on(device, lambda: AVDiT(configs.generator.model.dit_config()))
    audio_cfg = dataclasses.replace(AudioConfig.for_sample_rate(data.sample_rate),
                                    clip_seconds=ae.num_frames / data.fps)
    return SoundingVideoPipeline.assemble(vae=vae, autoencoder=autoencoder, generator=generator, objective="epsilon",
                                          audio_cfg=audio_cfg, device=device,
                                          dtype=torch.bfloat16 if precision == "bf16" else None)


def sample_once(pipe: Any, steps: int, decoder_steps: int, guidance: bool, device: torch.device) -> dict[str, Any]:
    """Wall seconds of one svg sample (the signal decoder's guidance on or off)."""
    ae_cfg = pipe.autoencoder.cfg
    scales = {"video_guidance": ae_cfg.sampling.video_guidance if guidance else 1.0,
              "audio_guidance": ae_cfg.sampling.audio_guidance if guidance else 1.0}
    pipe.autoencoder.cfg = dataclasses.replace(ae_cfg, sampling=dataclasses.replace(ae_cfg.sampling, **scales))
    try:
        synchronize(device)
        start = time.perf_counter()
        out = pipe.generate("svg", n=1, seed=0, steps=steps, decoder_steps=decoder_steps, progress=False)
        synchronize(device)
        wall = time.perf_counter() - start
    finally:
        pipe.autoencoder.cfg = ae_cfg
    finite = bool(torch.isfinite(out.frames).all() and torch.isfinite(out.waveforms).all())
    return {"wall_s": wall, "frames": list(out.frames.shape), "finite": finite,
            "decoder_guidance": scales["video_guidance"]}


# ----------------------------------------------------------------------------- the check


def check(device_name: str = "cuda", quick: bool = False, tests: list[str] | None = None, out: Path | None = None,
          tests_timeout: int = 300, threads: int | None = None,
          sizes: CheckSizes | None = None) -> tuple[dict[str, Any], Path | None]:
    """Run every part; returns (the record, where it was written). ``threads``: torch intra-op threads
    of this process (None: torch's); ``sizes``: what to run (default: by ``quick``)."""
    dev = resolve_device(device_name)  # no CUDA: one line, before any work
    import paper_cost

    if threads is not None:
        torch.set_num_threads(threads)
    sizes = sizes or (QUICK_SIZES if quick else PAPER_SIZES)
    precision = precision_for(dev)
    tests = ["tests"] if tests is None else tests
    started = time.perf_counter()
    parts: list[Part] = []
    notes: list[str] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    env: dict[str, Any] = {}
    configs = paper_cost.model_configs(sizes.scale)

    with part(parts, "environment"):
        env = environment(dev)
        if precision != "bf16":
            note(notes, f"bf16 is not native on this {dev.type}: the check runs in fp32")

    with part(parts, "attention"):
        tables["attention"] = attention_rows(paper_cost, configs, dev, precision)

    with part(parts, "tests") as current:
        if not tests:
            current.status = "skipped"
            note(notes, "GPU-marked tests not run (--tests given no path)")
        else:
            rows, counts, summary = run_tests(tests, tests_timeout)
            tables["tests"] = rows
            env["tests_summary"] = summary
            env["tests_counts"] = counts

    with part(parts, "cost"):
        cost = paper_cost.run(sizes.scale, time_components=None, time_batch=sizes.cost_time_batch,
                              warmup=sizes.cost_warmup,
                              repeats=sizes.cost_repeats, device=device_name)
        tables["cost"] = with_throughput(cost["tables"]["cost"])
        tables["cost_summary"] = cost["tables"]["summary"]
        tables["mm_diffusion"] = cost["tables"]["mm_diffusion"]
        notes += cost["notes"]

    with part(parts, "training"):
        from mmldm.config import replace

        rows = []
        failures = []
        for stage_name in sizes.train_batch:
            cfg = replace(getattr(configs, stage_name), TRAIN_OVERRIDES[sizes.scale][stage_name])
            print(f"   {stage_name} ...", flush=True)
            try:
                rows.append(training_row(stage_name, cfg, sizes.train_batch[stage_name], sizes, dev, precision))
            except Exception as exc:  # noqa: BLE001 - the next stage still runs; the part fails below
                failures.append(f"{stage_name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                rows.append({"stage": stage_name, "error": failures[-1]})
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        tables["training"] = rows
        if sizes.scale == "paper" and "vae" in sizes.train_batch:
            note(notes, "training: the VAE step has no LPIPS term (its weights are not on a bare machine)")
        if sizes.scale == "paper" and "autoencoder" in sizes.train_batch:
            note(notes, f"training: autoencoder at batch {sizes.train_batch['autoencoder']} (the config's "
                        f"{configs.autoencoder.train.batch_size} per GPU, with the adversarial term decoding every "
                        "clip through the VAE with gradients, would not fit one GPU by our estimate)")
        if failures:
            raise RuntimeError("; ".join(failures))

    with part(parts, "sampling"):
        pipe = paper_pipeline(configs, dev, precision)
        # what the pipeline runs (and so what is counted): its signal decoder's UNet and the full KL-VAE decoder
        runs = {
            "paper": paper_cost.CostSettings("paper", generator_steps=sizes.paper_steps[0],
                                             decoder_steps=sizes.paper_steps[1]),
            "fast": paper_cost.CostSettings("fast", generator_steps=sizes.fast_steps[0],
                                            decoder_steps=sizes.fast_steps[1], decoder_guidance=False),
        }
        planned = paper_cost.FAST_SETTINGS
        if (planned.decoder, planned.frame_decoder) != (runs["fast"].decoder, runs["fast"].frame_decoder):
            note(notes, f"sampling: the pipeline decodes with the signal decoder's UNet and the full KL-VAE decoder, "
                        f"not the fast settings' {planned.decoder} / {planned.frame_decoder}: the fast sample runs "
                        f"their {sizes.fast_steps[1]} decoder steps without a guidance batch only")
        if sizes.sample_warmup:
            sample_once(pipe, 1, 1, False, dev)
        counted = paper_cost.run(sizes.scale, settings=tuple(runs.values()), time_components=[], device=device_name)
        tflop = {row["settings"]: row["tflop"] for row in counted["tables"]["summary"]}
        rows = []
        for name, settings in runs.items():
            print(f"   {name} sample ...", flush=True)
            result = sample_once(pipe, settings.generator_steps, settings.decoder_steps, settings.decoder_guidance,
                                 dev)
            rows.append({"settings": name, "generator_steps": settings.generator_steps,
                         "decoder_steps": settings.decoder_steps, **result, "tflop": tflop[name],
                         "achieved_tflops": tflop[name] / result["wall_s"], "precision": precision})
        tables["sampling"] = rows
        del pipe

    total = time.perf_counter() - started
    failed = [p.name for p in parts if p.status == "failed"]
    settings = {"device": device_name, "quick": quick, "scale": sizes.scale, "precision": precision,
                "threads": threads, "tests": tests, "budget_s": BUDGET_S, "sizes": dataclasses.asdict(sizes),
                "environment": env}
    result = record("gpu_check", dev, settings, tables, notes)
    result.update(status="failed" if failed else "ok", failed_parts=failed, total_wall_s=total,
                  within_budget=total <= BUDGET_S, parts=[dataclasses.asdict(p) for p in parts])
    if out is None and not quick:
        out = ROOT / "benchmarks" / "results" / f"{datetime.date.today().isoformat()}-gpu-check.json"
    written = write_json(out, result) if out is not None else None
    return result, written


PART_COLUMNS: list[Column] = [("part", "name", ""), ("status", "status", ""), ("wall (s)", "wall_s", ".1f"),
                              ("error", "error", "")]
TRAIN_COLUMNS: list[Column] = [
    ("stage", "stage", ""), ("precision", "precision", ""), ("batch", "batch", ""),
    ("step median (s)", "median_s", ".3f"),
    ("samples/s", "samples_per_s", ".2f"), ("trainable params (M)", "params_trainable_m", ".1f"),
    ("peak memory (GiB)", "peak_gib", ".2f"), ("error", "error", ""),
]
SAMPLE_COLUMNS: list[Column] = [
    ("settings", "settings", ""), ("generator steps", "generator_steps", ""), ("decoder steps", "decoder_steps", ""),
    ("decoder guidance", "decoder_guidance", ""), ("TFLOP", "tflop", ",.1f"), ("wall (s)", "wall_s", ".2f"),
    ("achieved TFLOP/s", "achieved_tflops", ".1f"), ("finite", "finite", ""),
]
THROUGHPUT_COLUMNS: list[Column] = [
    ("settings", "settings", ""), ("component", "label", ""), ("batch", "batch", ""),
    ("GFLOP per call", "gflop", ",.1f"),
    ("s per call fp32", "s_per_call_fp32", ".4f"), ("s per call bf16", "s_per_call_bf16", ".4f"),
    ("TFLOP/s fp32", "tflops_fp32", ".1f"), ("TFLOP/s bf16", "tflops_bf16", ".1f"),
    ("s per sample bf16", "s_per_sample_bf16", ".2f"),
]


def markdown(result: dict[str, Any]) -> str:
    tables = result["tables"]
    timed = result["settings"]["sizes"]["cost_time_batch"]
    sections = [("Parts", result["parts"], PART_COLUMNS),
                ("SDPA limited to flash attention, bf16", tables.get("attention"),
                 [("component", "component", ""), ("flash only", "flash_only", ""), ("reason", "reason", "")]),
                ("GPU-marked tests", tables.get("tests"),
                 [("test", "test", ""), ("outcome", "outcome", ""), ("s", "time_s", ".1f")]),
                (f"Cost per call (timed with {timed} items at most; 'full': each call's batch)", tables.get("cost"),
                 THROUGHPUT_COLUMNS),
                ("Per sample", tables.get("cost_summary"),
                 [("settings", "settings", ""), ("TFLOP per sample", "tflop", ",.1f"),
                  ("x MM-Diffusion", "vs_mm_diffusion", ".3f"), ("target", "target", "")]),
                ("Training step of each stage", tables.get("training"), TRAIN_COLUMNS),
                ("One sample", tables.get("sampling"), SAMPLE_COLUMNS)]
    parts = [f"{title}\n\n{markdown_table(rows, columns)}" for title, rows, columns in sections if rows]
    parts += [f"- note: {text}" for text in result["notes"]]
    parts.append(f"status {result['status']}, {result['total_wall_s']:.0f} s "
                 f"({'within' if result['within_budget'] else 'OVER'} the {BUDGET_S:.0f} s budget)")
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="default: cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): the code path, not the numbers")
    parser.add_argument("--tests", nargs="*", default=None, metavar="PATH",
                        help="where the GPU-marked tests are collected (default: tests; none: skip them)")
    parser.add_argument("--tests-timeout", type=int, default=300, help="seconds for the GPU-marked tests")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON record (default: benchmarks/results/DATE-gpu-check.json; --quick: none)")
    args = parser.parse_args()
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.quick and args.device == "cuda":
        print("note: --quick on CUDA checks the code path at tiny sizes; the record is not the GPU check", flush=True)
    result, written = check(args.device, args.quick, args.tests, args.out, args.tests_timeout, args.threads)
    print(f"\n{machine_line(result['machine'])}, {result['date']}\n")
    print(markdown(result))
    if written is not None:
        print(f"\nwrote {written}")
    if result["status"] != "ok":
        sys.exit(1)


if __name__ == "__main__":
    run_script(main)
