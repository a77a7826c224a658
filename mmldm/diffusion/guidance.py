"""Classifier-free guidance as wrappers over a conditional model callable.

MM-LDM's cross-modal guidance (paper Eq. 9) extrapolates each modality's
prediction away from its unconditional one with its own scale::

    out_m = out_m(x_t | uncond) + s_m * (out_m(x_t | cond) - out_m(x_t | uncond))

With one scale for every entry this is joint classifier-free guidance (Ho &
Salimans 2022); with ``{"audio": s_a, "video": s_v}`` it is per-modality
("modality CFG"). It applies to epsilon and velocity outputs alike.

The wrapper knows only a callable ``model(x_t, t_model, **conditions)`` and two
keyword dicts. The conditional and unconditional evaluations run in ONE call:
``x_t``, ``t`` and every condition tensor are concatenated along the batch
(``[cond; uncond]``, ``2B``) and the output is split in halves.

    denoise = guided_denoiser(net, cond={"audio_cond": a, "class_labels": y},
                              uncond={"audio_cond": torch.zeros_like(a), "class_labels": null},
                              scale={"audio": 1.0, "video": 9.0})
    x0 = sample(denoise, noise, objective)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .objectives import Objective
from .tree import Latents, broadcast_to, tree_map

#: one scale for every entry (joint CFG) or one per entry (cross-modal CFG)
GuidanceScale = float | Mapping[str, float]


def apply_guidance(cond_out: Latents, uncond_out: Latents, scale: GuidanceScale) -> Latents:
    """``uncond + s * (cond - uncond)`` per entry (Eq. 9); ``s`` per entry if ``scale`` is a dict.

    A dict ``scale`` must name every entry of a dict output; a plain tensor output needs a number.
    """
    if isinstance(cond_out, torch.Tensor):
        if isinstance(scale, Mapping):
            raise ValueError("per-modality guidance scales need a dict latent; got a single tensor")
        return uncond_out + float(scale) * (cond_out - uncond_out)
    scales = _scales_per_entry(scale, cond_out.keys())
    return {k: uncond_out[k] + scales[k] * (cond_out[k] - uncond_out[k]) for k in cond_out}


def _scales_per_entry(scale: GuidanceScale, keys) -> dict[str, float]:
    keys = list(keys)
    if not isinstance(scale, Mapping):
        return {k: float(scale) for k in keys}
    missing, unknown = set(keys) - set(scale), set(scale) - set(keys)
    if missing or unknown:
        raise ValueError(f"guidance scales must name exactly the entries {sorted(keys)}, "
                          f"got {sorted(scale)}")
    return {k: float(scale[k]) for k in keys}


def _concat_batch(cond: Any, uncond: Any, name: str) -> Any:
    """Concatenate one condition value along the batch: tensors, dicts of tensors, or equal constants."""
    if isinstance(cond, torch.Tensor) and isinstance(uncond, torch.Tensor):
        if cond.shape[1:] != uncond.shape[1:] or cond.shape[0] != uncond.shape[0]:
            raise ValueError(f"condition '{name}': conditional shape {tuple(cond.shape)} != "
                              f"unconditional shape {tuple(uncond.shape)}")
        return torch.cat([cond, uncond], dim=0)
    if isinstance(cond, dict) and isinstance(uncond, dict):
        if set(cond) != set(uncond):
            raise ValueError(f"condition '{name}': keys differ between cond {sorted(cond)} "
                              f"and uncond {sorted(uncond)}")
        return {k: _concat_batch(cond[k], uncond[k], f"{name}.{k}") for k in cond}
    if cond is None and uncond is None:
        return None
    if isinstance(cond, torch.Tensor) or isinstance(uncond, torch.Tensor):
        raise ValueError(f"condition '{name}' is a tensor on one side only (give both, or neither)")
    if cond != uncond:
        raise ValueError(f"condition '{name}': non-tensor values must agree, got {cond!r} and {uncond!r}")
    return cond


def _tiled(value: Any, rows: int | None) -> Any:
    """A ``[B, ...]`` condition repeated to ``rows`` rows when ``rows`` is a multiple ``k * B`` (k > 1)."""
    if not isinstance(value, torch.Tensor) or rows is None or value.ndim == 0 or value.shape[0] in (0, rows):
        return value
    if rows % value.shape[0]:
        return value  # a mismatch the model reports with the shapes
    return value.repeat(rows // value.shape[0], *([1] * (value.ndim - 1)))


def guided_denoiser(model: Callable[..., Latents], cond: Mapping[str, Any],
                    uncond: Mapping[str, Any], scale: GuidanceScale) -> Callable[..., Latents]:
    """A denoiser ``(x_t, t_model, **shared) -> guided output`` for :func:`mmldm.diffusion.samplers.sample`.

    ``shared``: conditions given to both branches alike (none of ``cond``'s keys), so guided
    denoisers nest: an outer one's two branches call an inner one (e.g. text guidance inside the
    cross-modal guidance), each with its own conditions. Called with ``k * B`` rows of ``x_t`` (the
    outer ``[cond; uncond]`` batch), the ``B``-row tensors of ``cond`` and ``uncond`` are tiled ``k``
    times to fit.

    :param model: ``model(x_t, t_model, **conditions)``; ``x_t`` ``[B, ...]`` or a dict of them.
    :param cond: keyword conditions of the conditional branch (tensors with batch ``B``).
    :param uncond: keyword conditions of the unconditional branch; keys it does not name
        are shared with ``cond`` (e.g. only ``{"class_labels": null_labels}``).
    :param scale: a number (joint CFG) or ``{entry: scale}`` (cross-modal CFG, Eq. 9).
        All scales 1 skip the unconditional half (plain conditional model); all
        scales 0 skip the conditional half.
    """
    unknown = set(uncond) - set(cond)
    if unknown:
        raise ValueError(f"unconditional conditions {sorted(unknown)} have no conditional counterpart")
    uncond_full = {**cond, **uncond}
    scale_values = list(scale.values()) if isinstance(scale, Mapping) else [scale]

    def denoise(x_t: Latents, t_model: torch.Tensor, **shared: Any) -> Latents:
        both_sides = set(shared) & set(cond)
        if both_sides:
            raise ValueError(f"conditions {sorted(both_sides)} are both guided and shared")
        rows = t_model.shape[0] if t_model.ndim else None
        cond_now = {k: _tiled(v, rows) for k, v in cond.items()}
        uncond_now = {k: _tiled(v, rows) for k, v in uncond_full.items()}
        if all(float(s) == 1.0 for s in scale_values):
            return model(x_t, t_model, **shared, **cond_now)
        if all(float(s) == 0.0 for s in scale_values):
            return model(x_t, t_model, **shared, **uncond_now)
        x_both = tree_map(lambda x: torch.cat([x, x], dim=0), x_t)  # [2B, ...]
        t_both = torch.cat([t_model, t_model], dim=0)  # [2B]
        cond_both = {k: _concat_batch(cond_now[k], uncond_now[k], k) for k in cond}
        shared_both = {k: _concat_batch(v, v, k) for k, v in shared.items()}
        out = model(x_both, t_both, **shared_both, **cond_both)  # [2B, ...]
        cond_out = tree_map(lambda o: o[: o.shape[0] // 2], out)  # [B, ...]
        uncond_out = tree_map(lambda o: o[o.shape[0] // 2:], out)  # [B, ...]
        return apply_guidance(cond_out, uncond_out, scale)

    return denoise


#: a differentiable critic of one entry's clean estimate: ``critic(x0 [B, ...]) -> loss [B]``
Critic = Callable[[torch.Tensor], torch.Tensor]


def critic_guided_denoiser(denoise: Callable[[Latents, torch.Tensor], Latents], objective: Objective, entry: str,
                           critic: Critic, step: float, iterations: int = 1
                           ) -> Callable[[Latents, torch.Tensor], Latents]:
    """Steer one entry of a dict latent down a differentiable critic, in x0 space.

    At every sampler step: ``x0 = predict_x0(denoise(x_t, t))[entry]``, then ``iterations``
    times ``x0 <- x0 - step * g / rms(g)`` with ``g = d critic(x0) / d x0`` per sample
    (the RMS over the sample's own elements, so ``step`` is a distance in units of the
    latent's RMS, whatever the critic's scale); the returned output is the one that implies
    the moved ``x0`` at ``(x_t, t)`` (:meth:`Objective.output_from_x0`). Other entries are
    untouched. This is gradient guidance with the clean estimate as the variable
    (universal / reconstruction guidance); the pipeline's critic is the generator's own
    cross-modal prediction (see ``SoundingVideoPipeline``).

    :param denoise: ``(x_t, t_model) -> output`` on dict latents, e.g. :func:`guided_denoiser`.
    :param objective: the objective the denoiser was trained with.
    :param critic: ``x0 [B, ...] -> [B]`` losses; it is called with gradients enabled.
    :param step: distance per sampler step (0 returns ``denoise`` itself).
    :param iterations: critic steps per sampler step.
    """
    if not math.isfinite(step) or step < 0:
        raise ValueError(f"critic guidance step must be a finite number >= 0, got {step}")
    if iterations < 1:
        raise ValueError(f"critic guidance needs {iterations=} >= 1")
    if step == 0:
        return denoise

    def guided(x_t: Latents, t_model: torch.Tensor) -> Latents:
        out = denoise(x_t, t_model)
        if not isinstance(out, Mapping) or entry not in out:
            raise ValueError(f"critic guidance steers entry '{entry}' of a dict latent; the denoiser "
                              f"returned {sorted(out) if isinstance(out, Mapping) else type(out).__name__}")
        t = objective.time_of_model_timestep(t_model)
        x0 = objective.predict_x0(out[entry], x_t[entry], t).detach()  # [B, ...]
        for _ in range(iterations):
            with torch.enable_grad():
                variable = x0.float().requires_grad_()
                losses = critic(variable)
                if losses.shape != (x0.shape[0],):
                    raise ValueError(f"critic returned shape {tuple(losses.shape)}, expected one loss per "
                                      f"sample [{x0.shape[0]}]")
                (grad,) = torch.autograd.grad(losses.sum(), variable)
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)  # [B]
            x0 = (x0 - step * grad / broadcast_to(rms, grad)).to(x0.dtype)
        return {**out, entry: objective.output_from_x0(x0, x_t[entry], t)}

    return guided
