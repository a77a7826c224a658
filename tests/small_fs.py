"""Small file systems for tests of full disks and read-only folders: a tmpfs mounted for one test.

Mounting needs root (CI runners usually are not): without it the test that asks is skipped,
and the tests that simulate the failed write by patching still run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """``folder`` (created) with a fresh tmpfs of ``size`` mounted on it, unmounted afterwards;
    skips the test when it cannot be mounted."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the patched-write tests cover this case too")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
