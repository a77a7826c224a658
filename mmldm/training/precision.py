"""Which mixed precision a run uses when its config says ``auto``.

bf16 autocast only pays where the hardware multiplies bf16 natively: on a CPU
without bf16 matrix instructions (x86 with AVX2 only, AVX-512 without its BF16
extension) PyTorch emulates bf16 matrix products, and a training step becomes
many times slower than in fp32 (measured on a 2-core AVX2 machine: a 1024 x 1024
matrix product 42 ms in fp32, 3.9 s in bf16; the recipe's generator 4.0 steps/s
in fp32, 0.31 in bf16). So ``auto`` means:

* CUDA: ``bf16`` where the GPU supports it, else ``fp16`` (with loss scaling);
* CPU: ``bf16`` where the CPU reports bf16 matrix instructions (x86 ``avx512_bf16``
  or ``amx_bf16``, Arm ``bf16``), else ``no`` (fp32).

The CPU test reads the flags the operating system reports (``/proc/cpuinfo`` on
Linux, ``sysctl`` on macOS), so the choice is the same on every run on one
machine; the resolved value is what the run records.
"""

from __future__ import annotations

import torch

from ..devices import cpu_flags_support_bf16, cpu_has_native_bf16  # noqa: F401 - read where precision is decided


def resolve_mixed_precision(setting: str, use_cpu: bool) -> str:
    """The precision a run uses: ``setting`` itself, or for ``"auto"`` the choice described above."""
    if setting != "auto":
        return setting
    if not use_cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def precision_name(setting: str) -> str:
    """How a resolved setting reads in a log line: ``no`` is fp32."""
    return "fp32" if setting == "no" else setting
