"""What the hardware can do: whether the CPU multiplies bf16 natively.

Read by the training engine (``mixed_precision: auto``), the pipeline (``--low-memory``
keeps bf16 weights only where they are native) and the benchmarks; kept apart from
:mod:`mmldm.training` so that generation does not import training code.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

#: CPU flags (lower case, as /proc/cpuinfo writes them) that mean native bf16 matrix work
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags_support_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a native bf16 flag (x86 ``flags``, Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and BF16_CPU_FLAGS & set(value.lower().split()):
            return True
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU multiplies bf16 natively (False when it cannot tell)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            return cpu_flags_support_bf16(cpuinfo.read_text(errors="replace"))
        except OSError:
            return False
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return False
        return out == "1"
    return False
