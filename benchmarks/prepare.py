"""``mmldm data prepare`` speed and memory on a long real film: clips/s, real-time factor, peak RSS.

    python benchmarks/prepare.py                                 # Big Buck Bunny (make assets), 1 and 2 workers
    python benchmarks/prepare.py --workers 1 --max-seconds 60    # a quicker look at the first minute
    python benchmarks/prepare.py film.mp4 --size 128 --sample-rate 16000 --out record.json

Each worker count runs the real command (``python -m mmldm data prepare SRC --out TMP ...``) in
a fresh folder, so the times include start-up and every write (clips, journal fsyncs, manifests).
Peak RSS is measured two ways: the largest single process (the command or one of its workers:
``ru_maxrss``, exact) and all its processes together (their RSS summed, sampled every 0.1 s). The real-time factor is seconds of film per second of wall time. The runs are
checked as they are timed: clip counts, no test clip overlapping a training clip, and the same
clips and manifests (bytes) for every worker count. Writes
``benchmarks/results/<date>-prepare.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import Column, finish, note, record, render, resolve_device, run_script

from mmldm.data.prepare import MANIFEST_NAME, SETTINGS_NAME, TEST_MANIFEST_NAME
from mmldm.errors import DataError

REPO = Path(__file__).resolve().parents[1]
BBB = REPO / "assets" / "bbb" / "bbb.mp4"

COLUMNS: list[Column] = [
    ("workers", "workers", ""), ("clips", "clips", ""), ("train", "train", ""), ("test", "test", ""),
    ("wall s", "wall_s", ".1f"), ("CPU s", "cpu_s", ".1f"), ("clips/s", "clips_per_s", ".2f"), ("real-time x", "realtime", ".1f"),
    ("peak RSS MiB (largest process)", "peak_rss_mib", ".0f"),
    ("peak RSS MiB (all processes)", "peak_rss_tree_mib", ".0f"), ("same result", "same_result", ""),
    ("load avg", "load", ""),
]


#: runs the command and writes the largest ``ru_maxrss`` of its process tree (KiB) and the CPU seconds
#: of the tree to argv[1] (JSON). A small
#: process of its own: Linux counts a child's memory at fork into its ``ru_maxrss``, so the command,
#: forked from this benchmark (torch loaded), would report at least this process's RSS.
LAUNCHER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as fh:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, fh)
sys.exit(code)
"""


def _tree_rss(root: int) -> int:
    """Bytes of resident memory of every process below ``root``, now (Linux /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    total, stack = 0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def measure(command: list[str]) -> dict[str, Any]:
    """Run ``command``; its exit code, wall time, CPU time, output and peak RSS (the largest of its processes,
    from ``ru_maxrss``: the command or one of its workers; all its processes together, sampled)."""
    with tempfile.TemporaryDirectory() as tmp:
        maxrss = Path(tmp) / "maxrss"
        with open(Path(tmp) / "out", "w+") as out, open(Path(tmp) / "err", "w+") as err:
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(maxrss), *command], stdout=out, stderr=err,
                                    text=True)
            peak_tree = 0
            done = threading.Event()

            def sample() -> None:
                nonlocal peak_tree
                while not done.is_set():
                    peak_tree = max(peak_tree, _tree_rss(proc.pid))
                    done.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            code = proc.wait()
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
            out.seek(0)
            err.seek(0)
            usage = json.loads(maxrss.read_text())
            return {"returncode": code, "wall_s": wall, "stdout": out.read(), "stderr": err.read(),
                    "peak_rss_bytes": usage["maxrss_kib"] * 1024, "cpu_s": usage["cpu_s"],
                    "peak_rss_tree_bytes": peak_tree}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _fingerprint(out: Path) -> str:
    """One hash of every clip and manifest of a prepared folder (what a reader sees)."""
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in (SETTINGS_NAME, "lock"):
            digest.update(path.relative_to(out).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _check(out: Path, clip_frames: int) -> tuple[int, int]:
    """Train and test clip counts of a prepared folder; DataError when a test clip overlaps a training
    clip of the same source or a listed clip is missing."""
    train, test = _records(out / MANIFEST_NAME), _records(out / TEST_MANIFEST_NAME)
    for item in train + test:
        if not (out / item["path"]).is_file():
            raise DataError(f"{out / item['path']}: listed but missing")
    for source in {item["source"] for item in test}:
        last_train_end = max((i["start_frame"] + clip_frames for i in train if i["source"] == source), default=0)
        first_test = min(i["start_frame"] for i in test if i["source"] == source)
        if last_train_end > first_test:
            raise DataError(f"{source}: a test clip (frame {first_test}) overlaps a training clip (to {last_train_end})")
    return len(train), len(test)


def run(source: Path = BBB, workers: tuple[int, ...] = (1, 2), fps: float = 10.0, size: int = 64,
        num_frames: int = 16, sample_rate: int = 22050, test_fraction: float = 0.2, split: str = "time",
        max_seconds: float | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Prepare ``source`` once per worker count; rows of clips/s, real-time factor and peak RSS."""
    if not source.is_file():
        hint = " (run `make assets`)" if source == BBB else ""
        raise DataError(f"{source}: benchmark source not found{hint}")
    from mmldm.data.media_io import probe

    info = probe(source)
    film_s = min(info.duration, max_seconds or info.duration)
    settings = {"source": str(source), "source_info": f"{info.duration:.1f} s, {info.width}x{info.height} "
                f"{info.fps:g} fps, {info.audio_codec} {info.channels} ch {info.sample_rate} Hz",
                "workers": list(workers), "fps": fps, "size": size, "num_frames": num_frames,
                "sample_rate": sample_rate, "test_fraction": test_fraction, "split": split,
                "max_seconds": max_seconds, "film_seconds": film_s}
    notes: list[str] = []
    rows = []
    fingerprints = {}
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        for count in workers:
            out = Path(tmp) / f"workers-{count}"
            command = [sys.executable, "-m", "mmldm", "data", "prepare", str(source), "--out", str(out),
                       "--fps", f"{fps:g}", "--size", str(size), "--num-frames", str(num_frames),
                       "--sample-rate", str(sample_rate), "--test-fraction", f"{test_fraction:g}", "--split", split,
                       "--workers", str(count), "--no-progress"]
            if max_seconds is not None:
                command += ["--max-seconds", f"{max_seconds:g}"]
            print(f"$ {shlex.join(command[1:]).replace(str(out), 'OUT')}", flush=True)
            load_before = os.getloadavg()[0]
            result = measure(command)
            if result["returncode"] != 0:
                raise DataError(f"prepare with {count} worker(s) failed: {result['stderr'].strip()[-500:]}")
            train, test = _check(out, num_frames)
            summary = json.loads((out / SETTINGS_NAME).read_text())["summary"]
            fingerprints[count] = _fingerprint(out)
            clips = train + test
            rows.append({"workers": count, "clips": clips, "train": train, "test": test,
                         "wall_s": result["wall_s"], "cpu_s": result["cpu_s"], "clips_per_s": clips / result["wall_s"],
                         "realtime": film_s / result["wall_s"], "prepare_s": summary["seconds"],
                         "peak_rss_mib": result["peak_rss_bytes"] / 2**20,
                         "peak_rss_tree_mib": result["peak_rss_tree_bytes"] / 2**20,
                         "same_result": fingerprints[count] == fingerprints[workers[0]],
                         # other work on the machine: the 1-minute load average before and after the run
                         "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"})
            print(f"  {clips} clips in {result['wall_s']:.1f} s", flush=True)
            if keep is not None and count == workers[-1]:
                import shutil

                if keep.exists():
                    note(notes, f"--keep {keep} exists: the prepared folder was not copied there")
                else:
                    shutil.copytree(out, keep)
                    note(notes, f"the prepared dataset of the {count}-worker run was kept in {keep}")
    if not all(row["same_result"] for row in rows):
        note(notes, "the worker counts gave different clips or manifests (they must not)")
    return record("prepare", resolve_device("cpu"), settings, {"prepare": rows}, notes)


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    title = (f"`mmldm data prepare` on {Path(s['source']).name} ({s['source_info']}; {s['film_seconds']:.0f} s used) "
             f"-> {s['num_frames']}-frame clips at {s['fps']:g} fps, {s['size']}x{s['size']}, {s['sample_rate']} Hz, "
             f"--test-fraction {s['test_fraction']:g} --split {s['split']}")
    return render(result, [(title, "prepare", COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", default=BBB, help="video file (default: Big Buck Bunny)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--split", choices=["time", "source"], default="time")
    parser.add_argument("--max-seconds", type=float, default=None, help="use only the first seconds of the film")
    parser.add_argument("--keep", type=Path, default=None, help="copy the last run's prepared folder here")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON record (default: benchmarks/results/DATE-prepare.json)")
    args = parser.parse_args()
    result = run(args.source, tuple(args.workers), args.fps, args.size, args.num_frames, args.sample_rate,
                 args.test_fraction, args.split, args.max_seconds, args.keep)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    finish(result, markdown(result), args.out or REPO / "benchmarks" / "results" / f"{today}-prepare.json")


if __name__ == "__main__":
    run_script(main)
