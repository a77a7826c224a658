"""Noise schedules and timestep distributions (pure functions, no network).

* :func:`scaled_linear_betas`: the Stable Diffusion / LDM "scaled linear" DDPM
  schedule MM-LDM uses (1000 steps, beta 0.00085..0.012), i.e. the betas of
  Eqs. (4)-(5) of the paper, with ``alphas_cumprod`` = bar-alpha of Eq. (6).
* :func:`uniform_timesteps`: integer DDPM timesteps, uniform on [0, T).
* :func:`logit_normal_timesteps`: continuous times in (0, 1) for rectified flow,
  ``t = sigmoid(mean + std * n)``, n ~ N(0, 1) (Esser et al. 2024, SD3, Sec. 3.1).
"""

from __future__ import annotations

import torch

from .. import rng
from ..errors import ConfigError


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> torch.Tensor:
    """``beta_t = (linspace(sqrt(beta_start), sqrt(beta_end), T)[t])^2``, float64 ``[T]``."""
    if num_steps < 1:
        raise ConfigError(f"diffusion num_train_timesteps must be >= 1, got {num_steps}")
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ConfigError(f"diffusion betas must satisfy 0 < beta_start < beta_end < 1, "
                          f"got {beta_start}..{beta_end}")
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """bar-alpha_t = prod_{s<=t} (1 - beta_s) (paper Eq. 6), same dtype and shape as ``betas``."""
    return torch.cumprod(1.0 - betas, dim=0)


def uniform_timesteps(batch: int, num_steps: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``[B]`` int64 timesteps on ``device``, uniform on ``{0, ..., num_steps - 1}``."""
    return rng.randint(num_steps, (batch,), generator, device)


def logit_normal_timesteps(batch: int, mean: float = 0.0, std: float = 1.0,
                           generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """``[B]`` float32 times in (0, 1) on ``device``: ``sigmoid(mean + std * N(0, 1))``."""
    if std <= 0:
        raise ConfigError(f"logit-normal std must be > 0, got {std}")
    normal = rng.randn((batch,), generator, device)
    return torch.sigmoid(mean + std * normal)
