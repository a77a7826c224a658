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


#: what ``--precision`` takes: ``auto`` is bf16 where the device multiplies it natively, else fp32
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:N") multiplies bf16 natively."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return device == "cpu" and cpu_has_native_bf16()


def check_device(device: str):
    """``device`` as a torch device; a name torch does not know, or CUDA where there is none, is a
    one-line ConfigError."""
    import torch

    from .errors import ConfigError

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {device}: not a torch device name (e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available (this torch build sees no CUDA device; "
                              f"torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"--device {device}: unsupported device type {parsed.type!r} (use cpu or cuda)")
    return parsed


def resolve_device(name: str) -> str:
    """``auto`` -> "cuda" when a CUDA device is present, else "cpu"; any other name as
    :func:`check_device` admits it."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(check_device(name))


def resolve_precision(precision: str, device: str):
    """The compute dtype of ``--precision`` on ``device``: ``torch.bfloat16`` (the networks run under
    bf16 autocast, weights stay float32) or None (float32). ``auto``: bf16 where the device
    multiplies it natively (:func:`native_bf16`), float32 elsewhere, where emulated bf16 is many
    times slower."""
    from .errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp32" or (precision == "auto" and not native_bf16(device)):
        return None
    import torch

    return torch.bfloat16
