"""Random draws that do not depend on the device they are used on.

Every draw in mmldm takes an explicit ``torch.Generator``. The numbers are drawn where
the generator lives and then moved to ``device``: a seeded CPU generator gives the same
noise whether the tensor is used on a CPU or a GPU (a CUDA generator would draw other
numbers). Without a generator, torch's default generator of ``device`` draws.
"""

from __future__ import annotations

import torch


def _where(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal ``shape`` on ``device``, drawn from ``generator``."""
    return torch.randn(shape, generator=generator, device=_where(generator, device), dtype=dtype).to(device)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
         device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform [0, 1) ``shape`` on ``device``, drawn from ``generator``."""
    return torch.rand(shape, generator=generator, device=_where(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Integers uniform on ``{0, ..., high - 1}``, ``shape`` on ``device``, drawn from ``generator``."""
    return torch.randint(0, high, shape, generator=generator, device=_where(generator, device)).to(device)
