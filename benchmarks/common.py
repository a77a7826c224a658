"""Shared helpers of the benchmark scripts: device, timing, peak memory, machine info, tables, JSON.

Every benchmark module exposes ``run(...) -> record`` and ``markdown(record) -> str``
and a ``main()`` for the command line. A record is a JSON-ready dict::

    {"benchmark": "sampling", "date": "2026-11-26T09:00:00+00:00",
     "machine": machine_info(device), "settings": {...}, "tables": {name: [row dicts]},
     "notes": ["what was skipped and why", ...]}

``benchmarks/run_all.py`` gathers the records of all scripts into one JSON file
and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmldm.config import atomic_write_text
from mmldm.errors import ConfigError, MMLDMError
from mmldm.devices import cpu_has_native_bf16

#: one column of a markdown table: (header, row key, format spec such as ".2f" or "")
Column = tuple[str, str, str]

PRECISIONS = ("fp32", "bf16")

# ----------------------------------------------------------------------------- device


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` (default cpu)."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the networks run (default: cpu)")


def resolve_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda"`` as a device, checked as the CLI checks ``--device``
    (:func:`mmldm.devices.check_device`: a clear error when CUDA is asked for but absent)."""
    from mmldm.devices import check_device

    if name not in ("cpu", "cuda"):
        raise ConfigError(f"benchmark device must be cpu or cuda, got '{name}'")
    return check_device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA) so a wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"`` (what the engine's ``mixed_precision: bf16``
    does), a no-op for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ----------------------------------------------------------------------------- timing


@dataclass
class TimingStats:
    """Wall-clock seconds of the timed repeats (warm-up calls excluded)."""

    times: list[float]
    warmup: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def min_s(self) -> float:
        return min(self.times)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": self.min_s, "mean_s": self.mean_s,
                "repeats": len(self.times), "warmup": self.warmup}


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 3) -> TimingStats:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (CUDA synchronised)."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"benchmark repeats must be >= 1 and warm-up >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return TimingStats(times=times, warmup=warmup)


def engine_training_step(losses: Callable[[int], dict[str, torch.Tensor]],
                         groups: dict[str, list[torch.nn.Parameter]], device: torch.device, precision: str,
                         lr: float = 1e-4, grad_clip: float = 1.0) -> Callable[[], None]:
    """One optimiser step as :class:`mmldm.training.engine.Trainer` takes it (no accumulation, no EMA).

    ``losses(step)`` returns ``"loss/<group>"`` for every group of ``groups`` (its call runs under
    ``precision``'s autocast); each group gets its own AdamW (the engine's defaults: betas 0.9/0.999,
    no weight decay), a backward pass restricted to its parameters when there are several groups,
    gradient clipping at ``grad_clip`` and a step. Returns the step as a no-argument callable.
    """
    optimizers = {name: torch.optim.AdamW(params, lr=lr) for name, params in groups.items()}
    counter = iter(range(2**62))

    def step() -> None:
        with autocast(device, precision):
            terms = losses(next(counter))
        for i, (name, params) in enumerate(groups.items()):
            terms[f"loss/{name}"].backward(inputs=params if len(groups) > 1 else None,
                                           retain_graph=i < len(groups) - 1)
        for name, params in groups.items():
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)

    return step


def measure_stage(stage: Any, cfg: Any, batch: dict[str, torch.Tensor], precision: str, steps: int, warmup: int,
                  device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Time optimiser steps of a training ``stage`` (the engine's Stage protocol) on one fixed ``batch``.

    ``stage.build(cfg)`` makes the modules; those named in ``stage.optimizer_groups(cfg)`` train, the
    others are frozen, as in the engine. Returns the timing, trainable parameters and peak memory.
    """
    torch.manual_seed(seed)
    modules = {key: module.to(device) for key, module in stage.build(cfg).items()}
    group_keys = stage.optimizer_groups(cfg)
    trainable = {key for keys in group_keys.values() for key in keys}
    for key, module in modules.items():
        if key in trainable:
            module.train()
        else:
            module.eval().requires_grad_(False)
    groups = {name: [p for key in keys for p in modules[key].parameters() if p.requires_grad]
              for name, keys in group_keys.items()}
    gen = torch.Generator(device).manual_seed(seed)
    batch = {key: value.to(device) for key, value in batch.items()}
    step = engine_training_step(lambda i: stage.losses(modules, batch, i, gen), groups, device, precision)
    with PeakMemory(device) as peak:
        timing = time_call(step, device, warmup=warmup, repeats=steps)
    return {"precision": precision, **timing.as_dict(),
            "params_trainable_m": sum(p.numel() for params in groups.values() for p in params) / 1e6,
            "peak_mib": peak.peak_bytes / 2**20, "peak_memory": peak.method}


# ----------------------------------------------------------------------------- memory


def _rss_high_water() -> int:
    """The process's resident-set high-water mark in bytes (Linux VmHWM, else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_rss_high_water() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of the code run inside ``with PeakMemory(device) as peak:``.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only), reset on entry.
    CPU: the process's resident-set high-water mark (tensors, allocator caches and
    everything else), reset on entry where Linux allows it; otherwise it is the
    high-water mark since the process started, which ``method`` then says.
    ``peak_bytes`` holds the result after the block.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda max_memory_allocated"
        else:
            reset = _reset_rss_high_water()
            self.method = "process RSS high-water" + ("" if reset else " since process start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = _rss_high_water()


# ----------------------------------------------------------------------------- machine, date


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, threads, torch, device name."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        # whether bf16 matrix work is native here (else emulated: many times slower than fp32)
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": _cpu_model(),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, cuda=torch.version.cuda,
                    device_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def record(benchmark: str, device: torch.device, settings: dict[str, Any], tables: dict[str, list[dict]],
           notes: Sequence[str] = ()) -> dict[str, Any]:
    """A benchmark result as JSON-ready dict (see the module docstring)."""
    return {"benchmark": benchmark, "date": now_iso(), "machine": machine_info(device), "settings": settings,
            "tables": tables, "notes": list(notes)}


def note(notes: list[str], text: str) -> None:
    """Print ``text`` now (a skipped part must never be silent) and keep it for the record."""
    print(f"note: {text}", flush=True)
    notes.append(text)


# ----------------------------------------------------------------------------- output


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as a markdown table; a missing or None value prints as ``-``."""
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), spec) for _, key, spec in columns) + " |")
    return "\n".join(lines)


def render(result: dict[str, Any], sections: Sequence[tuple[str, str, Sequence[Column]]]) -> str:
    """Markdown of a record: for each ``(title, table key, columns)`` with rows, the title and its table,
    then the record's notes."""
    parts = []
    for title, key, columns in sections:
        rows = result["tables"].get(key) or []
        if rows:
            parts.append(f"{title}\n\n{markdown_table(rows, columns)}")
    if result.get("notes"):
        parts.append("\n".join(f"- note: {text}" for text in result["notes"]))
    return "\n\n".join(parts)


def machine_line(machine: dict[str, Any]) -> str:
    """One line naming the machine of a record."""
    device = "CPU" if machine["device"] == "cpu" else f"{machine['device_name']} ({machine['device']}) with CPU"
    bf16 = {True: ", native bf16", False: ", no native bf16"}.get(machine.get("cpu_native_bf16"), "")
    line = (f"{device} {machine['cpu_model']}, {machine['cpu_cores']} cores{bf16}, {machine['torch_threads']} torch "
            f"threads, torch {machine['torch']}")
    return line + (f", commit {machine['git_commit']}" if machine.get("git_commit") else "")


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (atomically; parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def finish(result: dict[str, Any], text: str, out: str | Path | None) -> None:
    """Print a script's markdown and write its record to ``out`` (if given)."""
    print(f"\n{machine_line(result['machine'])}, {result['date']}\n")
    print(text)
    if out is not None:
        print(f"\nwrote {write_json(out, result)}")


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark script's ``main``; our errors (bad settings, no CUDA, unreadable files) end it
    with one line and exit status 2 instead of a traceback."""
    try:
        main()
    except MMLDMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------- reconstruction FVD of real clips

def add_reconstruction_arguments(parser: argparse.ArgumentParser, component: str, work: str) -> None:
    """The options of a script that reconstructs real held-out clips through a model folder's
    ``component`` and scores them with FVD: --model, --clips, --training, --i3d, --work, --n,
    --threads, --out."""
    parser.add_argument("--model", type=Path, required=True, help=f"a model folder with {component}/")
    parser.add_argument("--clips", type=Path, required=True, help="a folder of real held-out clips (mp4)")
    parser.add_argument("--training", type=Path, required=True, help="the training clips (FVD reference)")
    parser.add_argument("--i3d", type=Path, required=True, help="I3D weights (mmldm convert i3d)")
    parser.add_argument("--work", type=Path, default=Path(work), help="where the clips go")
    parser.add_argument("--n", type=int, default=64, help="clips (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")


def held_out_clips(folder: Path, n: int) -> list[Path]:
    """The first ``n`` mp4 files under ``folder`` (sorted); none is a ConfigError."""
    files = sorted(Path(folder).rglob("*.mp4"))[:n]
    if not files:
        raise ConfigError(f"{folder}: no mp4 clips")
    return files


def score_reconstructions(folder: Path, training: Path, i3d: Path, n: int) -> dict[str, Any]:
    """FVD / KVD of the clips in ``folder`` against ``training`` windows as ``mmldm evaluate``
    scores them (protocol ``standard`` at N = ``n``, the given I3D weights, seed 0):
    ``{"clips", "fvd", "kvd"}``."""
    from mmldm.evaluation import evaluate
    from mmldm.evaluation.protocol import get_protocol

    protocol = get_protocol("standard").with_overrides(num_samples=n)
    scored = evaluate.evaluate_folders(folder, training, protocol, metrics=("fvd", "kvd"), i3d_path=i3d, seed=0)
    metrics = scored["metrics"]
    return {"clips": scored["generated"]["clips_scored"], "fvd": metrics["fvd"]["value"],
            "kvd": metrics["kvd"]["value"]}
