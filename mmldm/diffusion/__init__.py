"""Diffusion objectives, schedules, samplers and guidance, independent of any network.

Everything here works on a latent that is one tensor ``[B, ...]`` or a dict of
tensors (``{"audio": ..., "video": ...}``) with one timestep per sample, and on
any ``denoise(x_t, t_model)`` callable.
"""

from .guidance import apply_guidance, critic_guided_denoiser, guided_denoiser
from .objectives import (DiffusionConfig, EpsilonObjective, Objective, RectifiedFlowObjective, default_sampler,
                         make_objective)
from .samplers import SAMPLERS, make_scheduler, sample
from .tree import Latents, noise_like, tree_map

__all__ = ["DiffusionConfig", "EpsilonObjective", "Latents", "Objective", "RectifiedFlowObjective", "SAMPLERS",
           "apply_guidance", "critic_guided_denoiser", "default_sampler", "guided_denoiser", "make_objective", "make_scheduler", "noise_like", "sample",
           "tree_map"]
