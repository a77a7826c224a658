"""Samplers: integrate any denoiser callable from noise to a clean latent.

``sample(denoise, noise, objective, sampler=..., steps=...)`` calls
``denoise(x_t, t_model) -> model_output`` where ``x_t`` has the structure of
``noise`` (a tensor ``[B, ...]`` or a dict of them), ``t_model`` is the ``[B]``
float timestep the network receives (``objective.model_timestep``) and the
output is what the objective's network predicts (epsilon or velocity), with the
structure of ``x_t``. The denoiser can be a network with its conditions bound
(``lambda x, t: net(x, t, **cond)``) or a guidance wrapper
(:mod:`mmldm.diffusion.guidance`); nothing here knows the network.

The update rules are diffusers' schedulers (one algorithm per scheduler, tested
upstream), configured from the objective so its schedule is the single source:

* ``"ddim"`` (epsilon objective; paper default: 50 steps, eta 0): DDIM,
  Song et al. 2021 Eq. (12). Timesteps are LDM's "uniform" DDIM grid
  (981, 961, ..., 1 for 50 steps: ``steps_offset=1``). The last step goes to the
  clean sample (``set_alpha_to_one=True``); LDM's own sampler stops at
  ``abar_0`` instead, leaving ``sqrt(beta_0) ~ 0.03`` of noise in the output.
* ``"dpmpp"`` (epsilon objective): DPM-Solver++(2M), Lu et al. 2022, ending at sigma 0.
* ``"euler"`` / ``"heun"`` (flow objective): Euler and Heun ODE steps from
  t = 1 to t = 0 on diffusers' flow-matching grid (timesteps = ``sigma * 1000``,
  which is exactly ``RectifiedFlowObjective.model_timestep``).

diffusers' schedulers step one tensor; their updates are element-wise in the
sample, so a dict latent is packed into ``[B, N]`` for the step and unpacked for
the denoiser (:class:`~mmldm.diffusion.tree.Packer`).

Known entries (conditional generation, paper Sec. 3.3): ``known={"audio": a}``
keeps the audio entry on its forward process, ``x_t["audio"] = a_t a + s_t n``
with the entry's own starting noise ``n``, before every denoiser call, and
returns ``a`` itself; only the other entries are integrated. That is the
paper's ``p(v | a)``: "a_t can be obtained directly given a and t (Eq. 6)", and
it is what the network saw in training for an item given its clean audio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from .registry import SAMPLERS
from .tree import Latents, Packer, batch_size, tree_map

if TYPE_CHECKING:
    from .objectives import Objective

#: ``denoise(x_t, t_model) -> model output`` (same structure as x_t)
Denoiser = Callable[[Latents, torch.Tensor], Latents]


def make_scheduler(objective: Objective, sampler: str, shift: float = 1.0):
    """The diffusers scheduler implementing ``sampler`` for ``objective`` (fresh state).

    ``shift`` (flow samplers only) warps the time grid towards the noise end,
    ``t -> shift * t / (1 + (shift - 1) * t)`` (the resolution-dependent shift of
    SD3, Esser et al. 2024); 1 keeps the uniform grid.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{sampler}' (samplers: {', '.join(SAMPLERS)})")
    if sampler not in objective.samplers:
        raise ConfigError(f"sampler '{sampler}' does not fit the '{objective.name}' objective "
                          f"(use {' or '.join(objective.samplers)})")
    if shift <= 0 or (shift != 1.0 and objective.prediction != "velocity"):
        raise ConfigError(f"time shift {shift} needs a flow sampler and must be > 0")
    return SAMPLERS[sampler].scheduler(objective, shift)


@torch.no_grad()
def sample(denoise: Denoiser, noise: Latents, objective: Objective, sampler: str = "ddim",
           steps: int = 50, eta: float = 0.0, shift: float = 1.0, generator: torch.Generator | None = None,
           callback: Callable[[dict[str, Any]], None] | None = None, progress: bool = False,
           known: dict[str, torch.Tensor] | None = None) -> Latents:
    """Integrate ``denoise`` from ``noise`` (t = T or 1) to a clean latent.

    :param denoise: ``denoise(x_t, t_model) -> epsilon or velocity`` (see module docstring).
    :param noise: the starting Gaussian noise, ``[B, ...]`` or ``{key: [B, ...]}``.
    :param objective: the objective the denoiser was trained with.
    :param sampler: "ddim" or "dpmpp" (epsilon), "euler" or "heun" (flow).
    :param steps: number of sampler steps (Heun evaluates the denoiser ``2 * steps - 1`` times).
    :param eta: DDIM stochasticity (0 = deterministic DDIM; only for "ddim").
    :param shift: time-grid shift of the flow samplers (1 = uniform; see :func:`make_scheduler`).
    :param generator: random source for eta > 0.
    :param callback: called after each denoiser evaluation with ``{"i", "t", "x", "denoised"}``
        (``t`` the objective's ``[B]`` time, ``denoised`` the x0 estimate).
    :param known: clean latents of some entries of a dict ``noise`` (same shapes): those
        entries follow the forward process of their known value (see the module docstring).
    :return: the clean latent, same structure, shapes and dtype as ``noise``.
    """
    # the caller validated its settings: these catch programming errors, not user input
    if steps < 1 or eta < 0.0 or (eta != 0.0 and sampler != "ddim"):
        raise ValueError(f"sample(): {steps=} must be >= 1 and {eta=} >= 0 (only for ddim, {sampler=})")
    known = dict(known or {})
    if known:
        if not isinstance(noise, dict) or not set(known) <= set(noise):
            raise ValueError(f"known entries {sorted(known)} must be entries of the dict latent being sampled")
        for key, value in known.items():
            if value.shape != noise[key].shape:
                raise ValueError(f"known {key!r}: {value.shape=} != {noise[key].shape=}")
    scheduler = make_scheduler(objective, sampler, shift)
    batch = batch_size(noise)
    packer = Packer(noise)
    flat = packer.pack(noise)
    dtype, device = flat.dtype, flat.device
    scheduler.set_timesteps(steps, device=device)
    step_kwargs: dict[str, Any] = {"eta": eta} if sampler == "ddim" else {}
    for i, timestep in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc=f"{sampler}")):
        # the scheduler counts time as the network's timestep input (flow: sigma * 1000)
        t = objective.time_of_model_timestep(torch.full((batch,), float(timestep), device=device))  # [B]
        x_t = packer.unpack(flat)
        if known:  # [B, ...] each: the known entries at time t of their forward process
            x_t = {**x_t, **objective.add_noise(known, {k: noise[k] for k in known}, t)}
        out = denoise(x_t, objective.model_timestep(t))
        out = tree_map(lambda o, x: _check_output(o, x).to(dtype), out, x_t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x_t, "denoised": objective.predict_x0(out, x_t, t)})
        flat = scheduler.step(packer.pack(out), timestep, flat, generator=generator, **step_kwargs).prev_sample
    result = packer.unpack(flat.to(dtype))
    return {**result, **{k: v.to(dtype) for k, v in known.items()}} if known else result


def _check_output(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if out.shape != x.shape:
        raise ValueError(f"denoiser output {out.shape=} != input {x.shape=}")
    return out
