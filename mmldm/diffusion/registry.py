"""The sampler registry, importable without torch: every sampler's name, the model output it
integrates and the diffusers scheduler that implements it (:mod:`mmldm.diffusion.samplers` runs
them). Objectives, configs and the CLI derive their sampler lists from :data:`SAMPLERS`; a new
sampler is one entry here (and, if diffusers has no scheduler for it, its scheduler class)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objectives import Objective


@dataclass(frozen=True)
class Sampler:
    """One sampler: the model output it integrates and the diffusers scheduler that implements it."""

    #: "epsilon" or "velocity": the objectives whose networks it integrates
    prediction: str
    #: ``(objective, shift) -> a fresh diffusers scheduler``
    scheduler: Callable[[Objective, float], Any]
    help: str


def _ddim(objective: Objective, shift: float):
    from diffusers import DDIMScheduler  # diffusers takes seconds to import: only sampling pays for it

    return DDIMScheduler(num_train_timesteps=objective.num_train_timesteps, trained_betas=objective.betas.numpy(),
                         clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading",
                         prediction_type="epsilon")


def _dpmpp(objective: Objective, shift: float):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(num_train_timesteps=objective.num_train_timesteps,
                                       trained_betas=objective.betas.numpy(), algorithm_type="dpmsolver++",
                                       solver_order=2, prediction_type="epsilon", final_sigmas_type="zero",
                                       lower_order_final=True)


def _euler(objective: Objective, shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=objective.num_train_timesteps, shift=shift)


def _heun(objective: Objective, shift: float):
    from diffusers import FlowMatchHeunDiscreteScheduler

    return FlowMatchHeunDiscreteScheduler(num_train_timesteps=objective.num_train_timesteps, shift=shift)


#: every sampler, by name: the one registry that objectives, configs and the CLI derive their lists from.
#: For an objective, the first of its samplers here is its default.
SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler("epsilon", _ddim, "DDIM (the paper's), epsilon objective"),
    "dpmpp": Sampler("epsilon", _dpmpp, "DPM-Solver++(2M), epsilon objective"),
    "euler": Sampler("velocity", _euler, "Euler ODE steps, flow objective"),
    "heun": Sampler("velocity", _heun, "Heun ODE steps, flow objective"),
}


def samplers_for(prediction: str) -> tuple[str, ...]:
    """The names of the samplers that integrate a network predicting ``prediction``, default first."""
    return tuple(name for name, spec in SAMPLERS.items() if spec.prediction == prediction)
