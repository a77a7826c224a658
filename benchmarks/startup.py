"""Start-up time of the ``mmldm`` command: wall time of fresh processes, and what they import.

    python benchmarks/startup.py                        # every `mmldm [COMMAND] --help`, 5 runs each
    python benchmarks/startup.py --repeats 10 --out benchmarks/results/startup.json

Each row is a new Python process (``python -m mmldm ...``), timed from launch to exit, the
median of ``--repeats`` runs after one warm-up (the page cache warm, as a user's second
call). Targets (issue: architecture): ``mmldm --help`` and every ``mmldm COMMAND --help``
under 0.5 s on a 2-core CPU. Beside the time, each row names the heavy libraries the
process imported (none for a help text) and how many ``mmldm`` modules. A last row times
importing :mod:`mmldm.pipeline` (what ``mmldm generate`` loads before any work) and names
what it pulls in: never ``mmldm.training`` or ``mmldm.evaluation``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, record, render, run_script

from mmldm.cli.commands import COMMANDS
from mmldm.errors import check_positive_int

HEAVY = ("torch", "diffusers", "accelerate", "numpy", "scipy", "av", "tensorboard", "torchmetrics")
COLUMNS: list[Column] = [
    ("command", "command", ""), ("median wall s", "median_s", ".3f"), ("min s", "min_s", ".3f"),
    ("max s", "max_s", ".3f"), ("under 0.5 s", "under_target", ""), ("mmldm modules", "mmldm_modules", ""),
    ("heavy libraries imported", "heavy", ""),
]
TARGET_S = 0.5

#: python code run in the probe process: the command, then the modules it loaded (on stderr)
_PROBE = """
import contextlib, io, json, sys
argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()):
    if argv == ["import mmldm.pipeline"]:
        import mmldm.pipeline
    else:
        from mmldm.cli.main import main
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _time_process(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmldm", *argv], capture_output=True, check=False)
    return time.perf_counter() - start


def _modules(argv: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True)
    return json.loads(result.stderr.strip().splitlines()[-1])


def measure(argv: list[str], repeats: int, timed: bool = True) -> dict[str, Any]:
    modules = _modules(argv)
    heavy = [lib for lib in HEAVY if lib in modules]
    row = {"command": " ".join(["mmldm", *argv]) if timed else argv[0], "heavy": heavy or ["none"],
           "mmldm_modules": sum(m.startswith("mmldm") for m in modules),
           "imports_training": any(m.startswith("mmldm.training") for m in modules),
           "imports_evaluation": any(m.startswith("mmldm.evaluation") for m in modules)}
    if timed:
        _time_process(argv)  # warm-up
        times = [_time_process(argv) for _ in range(repeats)]
    else:  # an import, not a command: time the probe itself
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            _modules(argv)
            times.append(time.perf_counter() - start)
        times = times[1:]
    row.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times))
    row["under_target"] = "yes" if row["median_s"] < TARGET_S else "no"
    return row


def run(repeats: int = 5) -> dict[str, Any]:
    check_positive_int(repeats, "--repeats")
    rows = [measure(["--help"], repeats)] + [measure([name, "--help"], repeats) for name in COMMANDS]
    pipeline = measure(["import mmldm.pipeline"], repeats, timed=False)
    pipeline["under_target"] = "-"
    settings = {"repeats": repeats, "python": sys.version.split()[0], "target_s": TARGET_S}
    return record("startup", torch.device("cpu"), settings, {"help": rows, "pipeline": [pipeline]})


def markdown(result: dict[str, Any]) -> str:
    reps = result["settings"]["repeats"]
    pipeline = result["tables"]["pipeline"][0]
    text = render(result, [(f"Fresh `mmldm` processes, median of {reps} runs after a warm-up", "help", COLUMNS),
                           ("What `mmldm generate` imports before any work (`import mmldm.pipeline`)", "pipeline",
                            COLUMNS)])
    return text + (f"\n\nimport mmldm.pipeline loads mmldm.training: {pipeline['imports_training']}, "
                   f"mmldm.evaluation: {pipeline['imports_evaluation']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(args.repeats)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
