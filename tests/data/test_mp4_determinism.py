"""The same frames and audio give the same mp4 bytes: in one process with other work between, and
in another process that may use fewer CPUs.

x264 with its default thread count (from the CPUs the process may run on) encodes differently
for another count, and that count can change within a process (work that pins threads changes
the CPU affinity) or from machine to machine; write_av pins the encoder to one thread.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmldm.data.media_io import write_av

REPO = Path(__file__).resolve().parents[2]

#: the clip: moving texture (so that x264 has motion to search, over 128 px: enough rows for several
#: encoder threads) and a tone; the same code in this process and in the other one
CLIP = """
import numpy as np
rng = np.random.default_rng(0)
frames = np.clip(np.cumsum(rng.integers(-3, 4, (16, 128, 128, 3)), axis=0) + 128, 0, 255).astype(np.uint8)
audio = (0.3 * np.sin(np.arange(25600) * 0.05)).astype(np.float32)
"""
ENCODE = CLIP + """
import hashlib, sys
from mmldm.data.media_io import write_av
write_av(sys.argv[1], frames, audio, 10.0, 16000)
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
"""


def _clip() -> tuple[np.ndarray, np.ndarray]:
    made: dict = {}
    exec(CLIP, made)
    return made["frames"], made["audio"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def one_cpu():
    """Run the body on one CPU of those this process may use (as thread-pinning work does), then restore."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU only: the encoder's default thread count cannot change here")

    def pin():
        os.sched_setaffinity(0, {min(cpus)})

    yield pin
    os.sched_setaffinity(0, cpus)


def test_same_frames_same_bytes_in_one_process(tmp_path, one_cpu):
    frames, audio = _clip()
    first = _digest(write_av(tmp_path / "first.mp4", frames, audio, 10.0, 16000))
    x = torch.randn(256, 256)
    (x @ x).sum().item()  # other work between
    one_cpu()
    second = _digest(write_av(tmp_path / "second.mp4", frames, audio, 10.0, 16000))
    assert first == second


def test_same_frames_same_bytes_in_another_process(tmp_path):
    frames, audio = _clip()
    here = _digest(write_av(tmp_path / "here.mp4", frames, audio, 10.0, 16000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    prefix = [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpus[0]}}}); exec({ENCODE!r})"] \
        if len(cpus) > 1 else [sys.executable, "-c", ENCODE]
    done = subprocess.run(prefix + [str(tmp_path / "there.mp4")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == here
