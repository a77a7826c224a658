"""Training objectives: how a clean latent is noised and what the network predicts.

An :class:`Objective` never sees a network. It works on a latent that is one
tensor ``[B, ...]`` or a dict of tensors (``{"audio": [B,16,8,8], "video":
[B,16,16,16]}``); a timestep ``t`` of shape ``[B]`` is shared by every entry.

Two objectives, chosen by one option (``make_objective("epsilon" | "flow")``):

* :class:`EpsilonObjective` -- the paper's DDPM (Sec. 3.2): 1000 steps,
  scaled-linear betas 0.00085..0.012, integer ``t`` uniform on {0..999},
  ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Eq. 6), target ``eps``
  (Eq. 8). The network receives ``t`` itself (as a float).
* :class:`RectifiedFlowObjective` -- rectified flow / flow matching:
  continuous ``t`` in (0, 1), logit-normal (mean 0, std 1),
  ``x_t = (1 - t) x0 + t eps``, velocity target ``eps - x0``. The network
  receives ``t * num_train_timesteps`` so both objectives feed the same
  timestep-embedding range [0, 1000) to the network (and so diffusers'
  flow-matching schedulers, whose timesteps are ``sigma * 1000``, agree).

``loss`` returns one value per sample ``[B]``: the MSE of each entry (mean over
its non-batch dims) summed over entries, ``L = MSE_a + MSE_v`` (Eq. 8).

Usage::

    objective = make_objective("epsilon")
    t = objective.sample_timesteps(B, generator, device)
    noise = noise_like(x0, generator)
    out = model(objective.add_noise(x0, noise, t), objective.model_timestep(t), **cond)
    loss = objective.loss(out, x0, noise, t).mean()
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..errors import ConfigError
from .config import DiffusionConfig, ObjectiveName
from .schedules import alphas_cumprod, logit_normal_timesteps, scaled_linear_betas, uniform_timesteps
from .tree import Latents, batch_size, broadcast_to, tree_map

#: per-sample loss weights: one [B] tensor for all entries, or per entry (float or [B])
LossWeights = torch.Tensor | dict[str, float | torch.Tensor] | None


class Objective(ABC):
    """A forward process plus its regression target (see the module docstring)."""

    #: name used in configs
    name: ClassVar[str]
    #: what the network predicts: "epsilon" or "velocity"
    prediction: ClassVar[str]
    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers that integrate this objective's model output (default first), from the registry
        :data:`mmldm.diffusion.samplers.SAMPLERS`."""
        from .registry import samplers_for

        return samplers_for(self.prediction)

    @abstractmethod
    def config(self) -> DiffusionConfig:
        """The :class:`DiffusionConfig` that rebuilds this objective (:func:`make_objective`)."""

    @abstractmethod
    def time_at(self, fraction: float, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The objective's time ``t`` ``[B]`` a ``fraction`` in [0, 1] of the way along the forward
        process (1: its last step, pure noise for flow; epsilon keeps ``sqrt(abar_T)`` of the signal)."""

    def __init__(self, num_train_timesteps: int = 1000):
        if num_train_timesteps < 1:
            raise ConfigError(f"diffusion num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps

    @abstractmethod
    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        """Training timesteps ``[B]`` (int64 for epsilon, float32 in (0, 1) for flow)."""

    @abstractmethod
    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, s_t)`` of shape ``[B]`` with ``x_t = a_t x0 + s_t eps``, float32."""

    @abstractmethod
    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the network receives: ``[B]`` float32 in [0, num_train_timesteps]."""

    @abstractmethod
    def target(self, x0: Latents, noise: Latents, t: torch.Tensor) -> Latents:
        """The regression target for the network output, same structure as ``x0``."""

    @abstractmethod
    def predict_x0(self, model_output: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        """The clean latent implied by a model output at ``(x_t, t)``."""

    @abstractmethod
    def output_from_x0(self, x0: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        """The model output that implies the clean latent ``x0`` at ``(x_t, t)`` (inverse of
        :meth:`predict_x0`); ``t`` must not be 0 for flow (the output is undefined there)."""

    @abstractmethod
    def time_of_model_timestep(self, t_model: torch.Tensor) -> torch.Tensor:
        """``t`` from the network's timestep input (inverse of :meth:`model_timestep`)."""

    def add_noise(self, x0: Latents, noise: Latents, t: torch.Tensor) -> Latents:
        """``x_t = a_t x0 + s_t noise`` per sample; ``t`` is ``[B]``, shared by all entries."""
        self._check_t(t, batch_size(x0))
        a, s = self.coefficients(t)
        return tree_map(lambda x, n: broadcast_to(a, x) * x + broadcast_to(s, x) * n, x0, noise)

    def loss_terms(self, model_output: Latents, x0: Latents, noise: Latents,
                   t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-entry, per-sample MSE ``{key: [B]}`` (key "x" for a plain tensor), in float32."""
        target = self.target(x0, noise, t)

        def mse(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            if out.shape != tgt.shape:
                raise ValueError(f"model output {out.shape=} != target {tgt.shape=}")
            return (out.float() - tgt.float()).pow(2).flatten(1).mean(dim=1)

        terms = tree_map(mse, model_output, target)
        return {"x": terms} if isinstance(terms, torch.Tensor) else terms

    def loss(self, model_output: Latents, x0: Latents, noise: Latents, t: torch.Tensor,
             weights: LossWeights = None) -> torch.Tensor:
        """Per-sample loss ``[B]``: sum over entries of the (weighted) MSE, Eq. (8).

        ``weights`` is a ``[B]`` tensor applied to every entry, or a dict
        ``{entry: float | [B]}`` (entries not named keep weight 1; a plain
        tensor latent's single entry is called "x").
        """
        terms = self.loss_terms(model_output, x0, noise, t)
        if weights is None:
            return torch.stack(list(terms.values())).sum(dim=0)
        if isinstance(weights, torch.Tensor):
            return torch.stack(list(terms.values())).sum(dim=0) * weights.float()
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(f"loss weights name unknown entries {sorted(unknown)} (entries: {sorted(terms)})")
        return torch.stack([terms[k] * weights.get(k, 1.0) for k in terms]).sum(dim=0)

    def _check_t(self, t: torch.Tensor, batch: int) -> None:
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"timesteps must have shape [B]=[{batch}], got {t.shape=}")


class EpsilonObjective(Objective):
    """DDPM with epsilon prediction (paper Eqs. 4-8), scaled-linear betas."""

    name = "epsilon"
    prediction = "epsilon"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012):
        super().__init__(num_train_timesteps)
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.betas = scaled_linear_betas(num_train_timesteps, beta_start, beta_end)  # [T] float64
        self.alphas_cumprod = alphas_cumprod(self.betas)  # [T] float64, abar_t of Eq. (6)
        self._sqrt_abar = self.alphas_cumprod.sqrt().float()  # [T]
        self._sqrt_one_minus_abar = (1.0 - self.alphas_cumprod).sqrt().float()  # [T]

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        return uniform_timesteps(batch, self.num_train_timesteps, generator, device)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if t.dtype.is_floating_point:
            raise ValueError(f"the epsilon objective takes integer timesteps, got {t.dtype=}")
        index = t.long()
        return self._sqrt_abar.to(t.device)[index], self._sqrt_one_minus_abar.to(t.device)[index]

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def target(self, x0: Latents, noise: Latents, t: torch.Tensor) -> Latents:
        return noise

    def predict_x0(self, model_output: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        a, s = self.coefficients(t)
        return tree_map(lambda eps, x: (x - broadcast_to(s, x) * eps) / broadcast_to(a, x), model_output, x_t)

    def output_from_x0(self, x0: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        a, s = self.coefficients(t)
        return tree_map(lambda z, x: (x - broadcast_to(a, x) * z) / broadcast_to(s, x), x0, x_t)

    def time_of_model_timestep(self, t_model: torch.Tensor) -> torch.Tensor:
        return t_model.round().long()

    def config(self) -> DiffusionConfig:
        return DiffusionConfig(objective="epsilon", num_train_timesteps=self.num_train_timesteps,
                               beta_start=self.beta_start, beta_end=self.beta_end)

    def time_at(self, fraction: float, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch,), round(fraction * (self.num_train_timesteps - 1)), dtype=torch.long, device=device)


class RectifiedFlowObjective(Objective):
    """Rectified flow: straight path from data (t=0) to noise (t=1), velocity target."""

    name = "flow"
    prediction = "velocity"

    def __init__(self, num_train_timesteps: int = 1000, logit_mean: float = 0.0, logit_std: float = 1.0):
        super().__init__(num_train_timesteps)
        if logit_std <= 0:
            raise ConfigError(f"diffusion logit_std must be > 0, got {logit_std}")
        self.logit_mean = logit_mean
        self.logit_std = logit_std

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        return logit_normal_timesteps(batch, self.logit_mean, self.logit_std, generator, device)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not t.dtype.is_floating_point:
            raise ValueError(f"the flow objective takes float timesteps in [0, 1], got {t.dtype=}")
        t = t.float()
        return 1.0 - t, t

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() * self.num_train_timesteps

    def target(self, x0: Latents, noise: Latents, t: torch.Tensor) -> Latents:
        return tree_map(lambda x, n: n - x, x0, noise)

    def predict_x0(self, model_output: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        return tree_map(lambda v, x: x - broadcast_to(t.float(), x) * v, model_output, x_t)

    def output_from_x0(self, x0: Latents, x_t: Latents, t: torch.Tensor) -> Latents:
        if bool((t <= 0).any()):
            raise ValueError("the flow objective's velocity is undefined at t = 0")
        return tree_map(lambda z, x: (x - z) / broadcast_to(t.float(), x), x0, x_t)

    def time_of_model_timestep(self, t_model: torch.Tensor) -> torch.Tensor:
        return t_model.float() / self.num_train_timesteps

    def config(self) -> DiffusionConfig:
        return DiffusionConfig(objective="flow", num_train_timesteps=self.num_train_timesteps,
                               logit_mean=self.logit_mean, logit_std=self.logit_std)

    def time_at(self, fraction: float, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch,), float(fraction), device=device)


def make_objective(spec: ObjectiveName | DiffusionConfig = "epsilon", **overrides) -> Objective:
    """An :class:`Objective` from a name or a :class:`DiffusionConfig` (plus field overrides)."""
    cfg = DiffusionConfig(objective=spec) if isinstance(spec, str) else spec
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(DiffusionConfig)}
        if unknown:
            raise ConfigError(f"unknown diffusion option(s) {sorted(unknown)}")
        cfg = dataclasses.replace(cfg, **overrides)
    if cfg.objective == "epsilon":
        return EpsilonObjective(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.objective == "flow":
        return RectifiedFlowObjective(cfg.num_train_timesteps, cfg.logit_mean, cfg.logit_std)
    raise ConfigError(f"unknown diffusion objective '{cfg.objective}' (choose epsilon or flow)")


def default_sampler(objective: Objective) -> str:
    """The sampler used when none is named: the paper's DDIM for epsilon, Euler for flow."""
    return objective.samplers[0]


__all__ = ["DiffusionConfig", "EpsilonObjective", "LossWeights", "Objective", "RectifiedFlowObjective",
           "default_sampler", "make_objective"]
