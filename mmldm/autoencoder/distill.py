"""A few-step signal decoder: the autoencoder's guided decoder distilled into a student (not in the paper).

    mmldm train decoder-distill --config configs/recipe/decoder_distill.yaml \\
        --set teacher=mmldm/models/shapes/autoencoder data.latent_cache=runs/recipe/vae-latents
    mmldm export decoder-student runs/decoder-distill/checkpoints/step_002000 --model DIR [--default]

At the paper's 256x256 settings the signal decoder is 86 % of a sample's cost: 50 DDIM steps
with a guidance batch for every frame (docs/speed.md). The student is a copy of the teacher's
:class:`~mmldm.autoencoder.signal_decoder.SignalDecoder` trained to land, in ONE sampler step
of a ``steps``-step grid (at most 4), where ``teacher_steps_per_step`` guided teacher steps
land: guidance is folded into it (no guidance batch) and each image costs ``steps`` UNet
calls instead of ``2 x 50``.

Why this method: **progressive distillation** (Salimans & Ho 2022), collapsed into one round
from the teacher's fine grid to the student's, with the guided teacher as target (Meng et
al. 2023, "On distillation of guided diffusion models"). It needs nothing but the teacher and
its training latents, is deterministic (no discriminator to balance, unlike adversarial
distillation) and matches the project's samplers exactly: the student is used by the same
DDIM / Euler sampler, only with fewer steps. Consistency distillation would allow one step,
but needs many more training steps to get there, which a CPU budget does not have.

The target (one student step from ``x_t`` at grid point ``i`` to grid point ``i + 1``):
the teacher's guided x0 estimates, ``M`` deterministic sub-steps
``x_q = a_q x0_hat + s_q (x_p - a_p x0_hat) / s_p`` (DDIM for the epsilon objective, Euler for
flow: the same map in the objective's coefficients ``x_t = a_t x0 + s_t eps``), give
``x_next``; the clean estimate the student must predict is the ``x0*`` with which that same
map lands one step on ``x_next``, and its regression target is the objective's output for
``x0*`` (:meth:`~mmldm.diffusion.Objective.output_from_x0`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import Dataset

from .. import rng
from ..diffusion import Objective, default_sampler, make_scheduler
from ..errors import ConfigError, DataError, check_positive_int
from ..training.config import TrainConfig
from .model import HierarchicalAVAutoencoder
from .signal_decoder import DecoderCondition, SignalDecoder
from .stage import AutoencoderDataConfig

@dataclass
class StudentConfig:
    #: sampler steps of the student (UNet calls per image, no guidance batch)
    steps: int = 4
    #: guided teacher sampler steps per student step
    teacher_steps_per_step: int = 3

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "student.steps")
        check_positive_int(self.teacher_steps_per_step, "student.teacher_steps_per_step")
        if self.steps > 4:
            raise ValueError(f"student.steps must be at most 4 (a few-step decoder), got {self.steps}")


@dataclass
class DecoderDistillConfig:
    #: the teacher: an exported autoencoder folder (a model folder's autoencoder/) or a training checkpoint
    teacher: str = "parts/autoencoder"
    student: StudentConfig = field(default_factory=StudentConfig)
    #: the teacher's training data: a KL-VAE latent cache (``data.latent_cache``) or clips with the VAE
    data: AutoencoderDataConfig = field(default_factory=AutoencoderDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.latent_cache is None:
            raise ValueError("data.latent_cache must name the KL-VAE latent cache of the training clips "
                             "(`mmldm cache`): the student learns from the teacher on those latents")


def student_grid(objective: Objective, steps: int) -> list[torch.Tensor | None]:
    """The objective times ``t`` at which a ``steps``-step sampler evaluates the network (its default
    sampler, the one :meth:`HierarchicalAVAutoencoder.decode` runs), then None for the clean end."""
    scheduler = make_scheduler(objective, default_sampler(objective))
    scheduler.set_timesteps(steps)
    times = [objective.time_of_model_timestep(torch.tensor([float(ts)])) for ts in scheduler.timesteps]
    return [*times, None]


def _coefficients(objective: Objective, t: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(a, s)`` of ``x_t = a x0 + s eps``, shaped to broadcast over ``like``; (1, 0) at the clean end."""
    if t is None:
        return torch.ones((), device=like.device), torch.zeros((), device=like.device)
    a, s = objective.coefficients(t.to(like.device))
    shape = (-1, *([1] * (like.ndim - 1)))
    return a.view(shape).to(like.dtype), s.view(shape).to(like.dtype)


def _sub_times(objective: Objective, start: torch.Tensor, end: torch.Tensor | None,
               pieces: int) -> list[torch.Tensor | None]:
    """``pieces`` teacher steps from ``start`` to ``end`` ([N] times; None: the clean end): evenly
    spaced in the objective's time (whole timesteps for the epsilon objective), ending at ``end``."""
    last = torch.zeros_like(start, dtype=torch.float32) if end is None else end.float()
    points: list[torch.Tensor | None] = []
    for j in range(pieces):
        t = start.float() + (last - start.float()) * (j / pieces)
        points.append(t.round().long() if not start.dtype.is_floating_point else t)
    return [*points, end]


@torch.no_grad()
def teacher_target(teacher_out: Any, objective: Objective, x_t: torch.Tensor, start: torch.Tensor,
                   end: torch.Tensor | None, pieces: int) -> torch.Tensor:
    """The student's regression target for one step ``start -> end`` from ``x_t`` ([N, C, H, W]):
    ``pieces`` deterministic teacher steps give ``x_end``; returned is the objective's output that
    makes one step from ``x_t`` land on it (see the module docstring).

    ``teacher_out(x, t) -> model output`` is the guided teacher at objective times ``t`` [N].
    """
    times = _sub_times(objective, start, end, pieces)
    x = x_t
    for p, q in zip(times[:-1], times[1:]):
        x0_hat = objective.predict_x0(teacher_out(x, p), x, p)
        a_p, s_p = _coefficients(objective, p, x)
        a_q, s_q = _coefficients(objective, q, x)
        x = a_q * x0_hat + s_q * (x - a_p * x0_hat) / s_p
    a_t, s_t = _coefficients(objective, start, x_t)
    a_n, s_n = _coefficients(objective, end, x_t)
    x0_star = (x - (s_n / s_t) * x_t) / (a_n - s_n * a_t / s_t)
    return objective.output_from_x0(x0_star, x_t, start)


class DecoderDistillStage:
    """The few-step signal decoder (see the module docstring)."""

    name = "decoder-distill"
    config_cls = DecoderDistillConfig

    def __init__(self) -> None:
        self.cfg: DecoderDistillConfig | None = None
        self.grid: list[torch.Tensor | None] = []

    def build(self, cfg: DecoderDistillConfig) -> dict[str, nn.Module]:
        from .stage import load_autoencoder

        self.cfg = cfg
        teacher, _ = load_autoencoder(cfg.teacher)
        if teacher.objective.prediction == "epsilon" and default_sampler(teacher.objective) != "ddim":
            raise ConfigError("decoder distillation follows the DDIM sampler for an epsilon decoder")
        self.grid = student_grid(teacher.objective, cfg.student.steps)
        student = copy.deepcopy(teacher.decoder).train().requires_grad_(True)
        return {"model": student, "teacher": teacher.eval().requires_grad_(False)}

    def optimizer_groups(self, cfg: DecoderDistillConfig) -> dict[str, list[str]]:
        return {"model": ["model"]}

    def dataset(self, cfg: DecoderDistillConfig, split: str) -> Dataset:
        from ..data.latent_cache import LatentCacheDataset

        return LatentCacheDataset(cfg.data.latent_cache)

    def _inputs(self, teacher: HierarchicalAVAutoencoder, batch: dict[str, Any], generator: torch.Generator | None
                ) -> tuple[torch.Tensor, dict[str, dict[str, Any]], dict[str, torch.Tensor], int]:
        """``(x0 [N, C, s, s], decoder items per modality, null contexts per modality, video items)``:
        ``target_frames`` random frames of each clip and its audio image, conditioned as decoding
        conditions them (posterior modes; the class token decoding would give)."""
        video_latents, audio_latent = batch["video_latent"].float(), batch["audio_latent"].float()
        b, device = video_latents.shape[0], video_latents.device
        video_post, audio_post = teacher.encode(video_latents, audio_latent)
        video_z, audio_z = video_post.mode(), audio_post.mode()
        semantic = teacher.semantic(video_z, audio_z)
        labels = batch.get("class_id") if teacher.classifier is not None else None
        class_ids = teacher._class_ids(semantic, None if labels is None else torch.as_tensor(labels).long())
        k = teacher.cfg.decoder.target_frames
        frame_index = rng.rand((b, teacher.cfg.num_frames), generator, device).argsort(dim=1)[:, :k]
        frame_index = frame_index.sort(dim=1).values  # [B, K]
        keep = torch.zeros(b, dtype=torch.bool, device=device)
        items = teacher._decoder_items(video_z, audio_z, semantic, class_ids, frame_index, keep, keep)
        drop = torch.ones(1, dtype=torch.bool, device=device)
        null = {"video": teacher.decoder.context("video", semantic.audio[:1], class_ids[:1], drop),
                "audio": teacher.decoder.context("audio", semantic.video[:1], class_ids[:1], drop)}
        targets = video_latents[torch.arange(b, device=device)[:, None], frame_index]  # [B, K, C, s, s]
        x0 = torch.cat([rearrange(targets, "b k c h w -> (b k) c h w"), audio_latent])  # [B*K + B, C, s, s]
        return x0, items, null, b * k

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss/model``: the mean squared error of the student's output against :func:`teacher_target`
        at a random point of its grid per item, frames and audio images alike."""
        assert self.cfg is not None, "build() first"
        teacher: HierarchicalAVAutoencoder = modules["teacher"]
        student: SignalDecoder = modules["model"]
        if "video_latent" not in batch:
            raise DataError("decoder distillation reads a KL-VAE latent cache (data.latent_cache)")
        objective, pieces, sampling = teacher.objective, self.cfg.student.teacher_steps_per_step, teacher.cfg.sampling
        with torch.no_grad():
            x0, items, null, n_video = self._inputs(teacher, batch, generator)
            condition = DecoderCondition.cat([teacher.decoder.condition(m, **items[m]) for m in ("video", "audio")])
        n, device = x0.shape[0], x0.device
        scale = torch.cat([torch.full((n_video,), sampling.video_guidance),
                           torch.full((n - n_video,), sampling.audio_guidance)]).to(device)  # [N]
        guided = bool((scale != 1.0).any())
        if guided:  # the guidance branch: each item's modality's null context
            contexts = torch.cat([null["video"].expand(n_video, -1, -1), null["audio"].expand(n - n_video, -1, -1)])
            null_condition = condition.with_context(contexts)
        # one student grid point per item, and its noisy latent on the forward process there
        index = rng.randint(len(self.grid) - 1, (n,), generator, device)  # [N]
        start = torch.cat([self.grid[i] for i in index.tolist()]).to(device)  # [N]
        noise = rng.randn(tuple(x0.shape), generator, device).to(x0.dtype)
        x_t = objective.add_noise(x0, noise, start)
        target = torch.empty_like(x0)
        for i, end in enumerate(self.grid[1:]):  # the items of one grid point share their sub-steps
            rows = (index == i).nonzero().flatten()
            if not len(rows):
                continue

            def teacher_out(x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor = rows) -> torch.Tensor:
                t_model = objective.model_timestep(t)
                out = teacher.decoder(x, t_model, condition.index(rows))
                if not guided:
                    return out
                out_null = teacher.decoder(x, t_model, null_condition.index(rows))
                return out_null + scale[rows].view(-1, 1, 1, 1) * (out - out_null)

            rows_end = None if end is None else end.to(device).expand(len(rows))
            target[rows] = teacher_target(teacher_out, objective, x_t[rows], start[rows], rows_end, pieces)
        student_condition = DecoderCondition.cat([student.condition(m, **items[m]) for m in ("video", "audio")])
        prediction = student(x_t, objective.model_timestep(start), student_condition)
        mse = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)  # [N]
        return {"loss/model": mse.mean(), "distill/mse_video": mse[:n_video].mean().detach(),
                "distill/mse_audio": mse[n_video:].mean().detach()}

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """Nothing to show beyond the losses: the student is judged by decoding (export, then the
        model's evaluation)."""
        return {}
