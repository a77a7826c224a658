"""Diffusion objectives, schedules, samplers and guidance, independent of any network.

Everything here works on a latent that is one tensor ``[B, ...]`` or a dict of
tensors (``{"audio": ..., "video": ...}``) with one timestep per sample, and on
any ``denoise(x_t, t_model)`` callable. The names below are imported on first use,
so the light modules (:mod:`~mmldm.diffusion.config`, :mod:`~mmldm.diffusion.registry`)
load without torch.
"""

from ..lazy import lazy_exports

__all__ = ["SAMPLERS", "DiffusionConfig", "EpsilonObjective", "Latents", "Objective", "RectifiedFlowObjective",
           "Sampler", "apply_guidance", "critic_guided_denoiser", "default_sampler", "guided_denoiser",
           "make_objective", "make_scheduler", "noise_like", "sample", "samplers_for", "tree_map"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "DiffusionConfig": ".config",
    "SAMPLERS": ".registry", "Sampler": ".registry", "samplers_for": ".registry",
    "EpsilonObjective": ".objectives", "Objective": ".objectives", "RectifiedFlowObjective": ".objectives",
    "default_sampler": ".objectives", "make_objective": ".objectives",
    "make_scheduler": ".samplers", "sample": ".samplers",
    "apply_guidance": ".guidance", "critic_guided_denoiser": ".guidance", "guided_denoiser": ".guidance",
    "Latents": ".tree", "noise_like": ".tree", "tree_map": ".tree",
})
