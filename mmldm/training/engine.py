"""The one training engine of MM-LDM: ``Trainer(stage, cfg).fit()``.

All three stages (KL-VAE, multi-modal autoencoder, DiT generator) run through
this loop; a stage (see :mod:`mmldm.training.stage`) supplies only its modules,
its losses on a batch and its previews. The engine does the rest on Hugging Face
Accelerate:

* devices and processes: one process or many (``accelerate launch`` /
  ``torchrun``; DDP, or FSDP through Accelerate's FSDP plugin), CUDA or CPU (gloo);
* mixed precision (``auto`` / ``no`` / ``bf16`` / ``fp16`` with loss scaling), gradient
  accumulation (no gradient all-reduce on the inner micro-batches), gradient
  clipping per optimiser group, AdamW + warm-up/cosine schedule per group;
* EMA of the trainable weights (starts as a copy);
* crash-safe checkpoints with exact resume (weights, optimisers, schedulers,
  RNG states, data position), see :mod:`mmldm.training.checkpoint`;
* TensorBoard scalars (global means over processes) and media previews, a
  progress bar, and a stop with a one-line error on a non-finite loss.

One optimiser step = ``grad_accum`` micro-batches of ``batch_size`` items per
process. ``step`` counts optimiser steps; checkpoints are taken between steps.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, send_to_device
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from ..config import dump_yaml, make_folder, save_config
from ..errors import ConfigError, DataError, TrainingError, iterate_loader
from . import checkpoint as ckpt
from .config import ScheduleConfig, TrainConfig, train_config_of
from .data import ShardedEpochSampler, batches_per_epoch, mixed_seed
from .ema import EMA
from .precision import precision_name, resolve_mixed_precision
from .stage import Stage


def lr_factor(step: int, schedule: ScheduleConfig, max_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps``, then 1 (constant) or a cosine
    from 1 down to ``min_lr_ratio`` at ``max_steps`` (Loshchilov & Hutter 2017, SGDR eq. 5).
    """
    if step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    if schedule.kind == "constant":
        return 1.0
    progress = min(1.0, (step - schedule.warmup_steps) / max(1, max_steps - schedule.warmup_steps))
    return schedule.min_lr_ratio + (1.0 - schedule.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did."""

    steps: int
    seconds: float
    #: global means of the loss terms over the last logging window
    losses: dict[str, float]
    #: newest checkpoint folder (None if none was written)
    checkpoint: Path | None
    out_dir: Path
    #: (step, {term: global mean}) at every logging step
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)


@dataclass
class _Group:
    name: str
    keys: list[str]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    grad_clip: float


class Trainer:
    """Trains ``stage`` with ``cfg`` (a ``stage.config_cls`` instance holding ``train``).

    ``resume``: None (fresh run; refuses an ``out_dir`` that already has
    checkpoints), ``"auto"`` (newest complete checkpoint in ``out_dir``, or a
    fresh start) or a checkpoint folder.
    """

    def __init__(self, stage: Stage, cfg: Any, resume: str | Path | None = None):
        self.stage = stage
        self.cfg = cfg
        self.train_cfg: TrainConfig = train_config_of(cfg)
        self.resume = resume
        tc = self.train_cfg
        self.out_dir = Path(tc.out_dir)
        self.checkpoint_root = self.out_dir / "checkpoints"

        # Accelerate keeps precision and accumulation in process-wide singletons;
        # a Trainer owns these settings, so several Trainers can run one after
        # another in one process (stages in sequence, tests). The distributed
        # process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        use_cpu = tc.device == "cpu" or not torch.cuda.is_available()
        # "auto" becomes what this machine runs fast; the run's saved configs record the choice
        tc.mixed_precision = resolve_mixed_precision(tc.mixed_precision, use_cpu)
        try:
            self.accelerator = Accelerator(
                mixed_precision=tc.mixed_precision, cpu=use_cpu,
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=tc.find_unused_parameters)],
            )
        except ValueError as exc:  # e.g. fp16 on a CPU
            raise ConfigError(f"train.mixed_precision={tc.mixed_precision}: {exc}") from None
        acc = self.accelerator
        if tc.mixed_precision == "fp16" and acc.device.type == "cpu":  # Accelerate would silently run fp32
            raise ConfigError("train.mixed_precision=fp16 needs a GPU; use auto, bf16 or no on CPU")
        self.rank = acc.process_index
        self.num_processes = acc.num_processes
        self.is_fsdp = acc.distributed_type == DistributedType.FSDP
        if self.is_fsdp and tc.ema.enabled:
            raise ConfigError("train.ema.enabled: EMA is not supported with FSDP yet; set it to false")
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)

        self.order_log: Any = None  # data-order record file while fit() runs
        self.resume_from = self._resume_folder()
        self.resume_state: dict[str, Any] = {}
        if self.resume_from is not None:
            self.resume_state = ckpt.load_json(self.resume_from / "state.json")

        # Same initial weights on every process, then per-process RNG streams.
        torch.manual_seed(tc.seed)
        modules = stage.build(cfg)
        groups = stage.optimizer_groups(cfg)
        self._check_groups(modules, groups)
        self.trainable_keys = [key for keys in groups.values() for key in keys]
        self.frozen = {k: m.to(acc.device).eval().requires_grad_(False)
                       for k, m in modules.items() if k not in self.trainable_keys}
        self._seed_process_rngs(mixed_seed(tc.seed, self.rank, 1))
        self.generator = torch.Generator(device=acc.device).manual_seed(mixed_seed(tc.seed, self.rank, 2))

        self.ema: dict[str, EMA] = {}
        #: per loss term: (first step it was non-finite, its value), device tensors (-1: never)
        self._nonfinite: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key in self.trainable_keys:
            module = modules[key].to(acc.device)
            self._load_from_checkpoint(ckpt.module_weights_name(key), module.load_state_dict)
            if tc.ema.enabled:
                self.ema[key] = EMA(module, tc.ema.decay, tc.ema.warmup_steps)
                self._load_from_checkpoint(ckpt.module_weights_name(key, ema=True), lambda state, ema=self.ema[key]: (
                    ema.load_state_dict(state, self.resume_state.get("ema_updates", 0))))

        self.wrapped: dict[str, nn.Module] = {}
        self.groups = [self._make_group(name, [modules[k] for k in keys], keys) for name, keys in groups.items()]
        if self.resume_from is not None:
            self._load_optimizer_states(self.resume_from)

    # ------------------------------------------------------------- set-up helpers

    def _check_groups(self, modules: dict[str, nn.Module], groups: dict[str, list[str]]) -> None:
        name = type(self.stage).__name__
        if not groups:
            raise ConfigError(f"stage {name}: optimizer_groups is empty")
        if self.is_fsdp and any(len(keys) != 1 for keys in groups.values()):
            raise ConfigError(f"stage {name}: with FSDP each optimiser group must hold exactly one module")
        seen: set[str] = set()
        for group, keys in groups.items():
            for key in keys:
                if key not in modules:
                    raise ConfigError(f"stage {name}: optimiser group '{group}' names unknown module '{key}'")
                if key in seen:
                    raise ConfigError(f"stage {name}: module '{key}' is in more than one optimiser group")
                seen.add(key)
        unknown = set(self.train_cfg.groups) - set(groups)
        if unknown:
            raise ConfigError(f"train.groups names unknown optimiser group(s) {sorted(unknown)} "
                              f"(this stage has {sorted(groups)})")

    def _seed_process_rngs(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _resume_folder(self) -> Path | None:
        if self.resume is None:
            if ckpt.complete_checkpoints(self.checkpoint_root):
                raise TrainingError(f"{self.out_dir} already holds checkpoints; resume with --resume auto "
                                    "or train into another --out folder")
            return None
        return ckpt.resolve_resume(self.out_dir, self.resume)

    def _load_from_checkpoint(self, name: str, load: Any) -> None:
        """Load tensors file ``name`` of the resume checkpoint with ``load(state)``.

        A file the checkpoint lacks (a module or EMA that was not part of that run,
        e.g. a discriminator switched on for fine-tuning) starts fresh, with a note.
        """
        if self.resume_from is None:
            return
        path = self.resume_from / name
        if not path.is_file():
            self.accelerator.print(f"note: {self.resume_from} has no {name}; it starts fresh")
            return
        try:
            load(ckpt.load_tensors(path))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise TrainingError(f"{path}: weights do not fit the module ({first})") from None

    def _make_group(self, name: str, modules: list[nn.Module], keys: list[str]) -> _Group:
        """AdamW + schedule over ``modules``, which are wrapped for DDP/FSDP together with it."""
        tc = self.train_cfg
        optim_cfg, clip = tc.group_optim(name)
        params = [p for module in modules for p in module.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"optimiser group '{name}' has no trainable parameters")
        # Weight decay only on matrices/kernels, not on biases and norm scales (as nanoGPT).
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.ndim >= 2], "weight_decay": optim_cfg.weight_decay},
             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
            lr=optim_cfg.lr, betas=optim_cfg.betas, eps=optim_cfg.eps,
        )
        # Modules and their optimiser go through prepare together (FSDP swaps the parameters).
        *wrapped, prepared = self.accelerator.prepare(*[m.train() for m in modules], optimizer)
        self.wrapped.update(zip(keys, wrapped))
        # From here on the plain optimiser and scheduler, not Accelerate's wrappers: the
        # optimiser wrapper updates the fp16 loss scale after each optimiser (wrong with
        # several groups) and the scheduler wrapper steps once per process (tying the
        # schedule to the number of GPUs).
        optimizer = prepared.optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, tc.schedule, tc.max_steps))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return _Group(name, keys, params, optimizer, scheduler, clip)

    # ------------------------------------------------------------- checkpoints

    def _optimizer_state(self, group: _Group) -> dict[str, Any]:
        if self.is_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.wrapped[group.keys[0]], group.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return group.optimizer.state_dict()

    def _load_optimizer_states(self, folder: Path) -> None:
        for group in self.groups:
            if not (folder / f"optim_{group.name}.pt").is_file():
                self.accelerator.print(f"note: {folder} has no state for optimiser group '{group.name}'; "
                                       "it starts fresh")
                continue
            state = ckpt.load_torch_state(folder / f"optim_{group.name}.pt")
            if self.is_fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(self.wrapped[group.keys[0]], group.optimizer, state,
                                         options=StateDictOptions(full_state_dict=True))
            else:
                try:
                    group.optimizer.load_state_dict(state)
                except (ValueError, KeyError) as exc:
                    raise TrainingError(f"{folder}: optimiser state of group '{group.name}' does not fit "
                                        f"({exc})") from None
            group.scheduler.load_state_dict(ckpt.load_torch_state(folder / f"sched_{group.name}.pt"))
        if self.accelerator.scaler is not None and (folder / "scaler.pt").is_file():
            self.accelerator.scaler.load_state_dict(ckpt.load_torch_state(folder / "scaler.pt"))
        rng_file = folder / f"rng_rank{self.rank}.safetensors"
        if self.resume_state.get("num_processes") == self.num_processes and rng_file.is_file():
            ckpt.restore_rng_state(rng_file, {"losses": self.generator})
        else:
            self.accelerator.print(f"note: {folder} was written by {self.resume_state.get('num_processes')} "
                                   f"process(es), now {self.num_processes}: data order and RNG streams differ "
                                   "from an uninterrupted run")

    def save_checkpoint(self, step: int, epoch: int, batch: int) -> Path | None:
        """Write the checkpoint of ``step`` (all processes take part); its folder on the main process."""
        acc = self.accelerator
        tmp = self.checkpoint_root / f".tmp_{ckpt.step_dir_name(step)}"
        if acc.is_main_process:
            ckpt.begin_checkpoint(self.checkpoint_root, step)
        acc.wait_for_everyone()
        weights = {key: acc.get_state_dict(self.wrapped[key]) for key in self.trainable_keys}
        optim_states = {group.name: self._optimizer_state(group) for group in self.groups}
        if acc.is_main_process:
            for key, state in weights.items():
                ckpt.save_tensors(tmp / ckpt.module_weights_name(key), state)
            for key, ema in self.ema.items():
                ckpt.save_tensors(tmp / ckpt.module_weights_name(key, ema=True), ema.state_dict())
            for group in self.groups:
                ckpt.save_torch_state(tmp / f"optim_{group.name}.pt", optim_states[group.name])
                ckpt.save_torch_state(tmp / f"sched_{group.name}.pt", group.scheduler.state_dict())
            if acc.scaler is not None:
                ckpt.save_torch_state(tmp / "scaler.pt", acc.scaler.state_dict())
            ckpt.save_json(tmp / "state.json", {
                "step": step, "epoch": epoch, "batch": batch, "num_processes": self.num_processes,
                "ema_updates": next(iter(self.ema.values())).updates if self.ema else 0,
                "stage": getattr(self.stage, "name", type(self.stage).__name__),
            })
            ckpt.save_text(tmp / "config.yaml", dump_yaml(self.cfg))
        tensors, metadata = ckpt.rng_state({"losses": self.generator})
        ckpt.save_tensors(tmp / f"rng_rank{self.rank}.safetensors", tensors, metadata)
        acc.wait_for_everyone()
        final = None
        if acc.is_main_process:
            final = ckpt.commit_checkpoint(tmp, step, self.train_cfg.checkpoint.keep_last)
        acc.wait_for_everyone()
        return final

    # ------------------------------------------------------------- data

    def _batches(self, dataset: Dataset, epoch: int, batch: int
                 ) -> Iterator[tuple[int, int, list[int], dict[str, Any]]]:
        """(epoch, batch index, dataset indices, collated batch) from position (epoch, batch) on, forever."""
        tc = self.train_cfg
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sampler = ShardedEpochSampler(len(dataset), tc.batch_size, tc.seed, epoch,
                                          self.rank, self.num_processes, start_batch=batch)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=tc.num_workers,
                                pin_memory=self.accelerator.device.type == "cuda",
                                generator=torch.Generator().manual_seed(mixed_seed(tc.seed, epoch, self.rank, batch)))
            for offset, data in enumerate(iterate_loader(loader)):
                yield epoch, batch + offset, sampler.batch_indices(batch + offset), data
            epoch, batch = epoch + 1, 0

    # ------------------------------------------------------------- one step

    def _watch_terms(self, terms: dict[str, torch.Tensor], step: int) -> None:
        """Note each loss term's first non-finite value and its step, on the device: no host sync
        here; :meth:`_stop_if_not_finite` reads the notes at log and checkpoint steps."""
        for key, value in terms.items():
            if not torch.is_tensor(value) or value.ndim != 0:
                raise TrainingError(f"stage {type(self.stage).__name__}: loss term '{key}' is not a scalar tensor")
            value = value.detach().float()
            first_step, first_value = self._nonfinite.get(key, (None, None))
            if first_step is None:
                first_step = torch.full((), -1, dtype=torch.long, device=value.device)
                first_value = torch.zeros((), device=value.device)
            new = (first_step < 0) & ~torch.isfinite(value)
            self._nonfinite[key] = (torch.where(new, step, first_step), torch.where(new, value, first_value))

    def _stop_if_not_finite(self) -> None:
        """Stop (on every process) if a loss term was ever non-finite: one line with its first step
        and value, naming the last good checkpoint (weights updated since are never saved)."""
        if not self._nonfinite:
            return
        keys = sorted(self._nonfinite)
        steps = self.accelerator.gather(torch.stack([self._nonfinite[k][0] for k in keys])[None])  # [P, K]
        values = self.accelerator.gather(torch.stack([self._nonfinite[k][1] for k in keys])[None])  # [P, K]
        bad = [(int(s), key, float(v)) for row_s, row_v in zip(steps.tolist(), values.tolist())
               for key, s, v in zip(keys, row_s, row_v) if s >= 0]
        if bad:
            step, key, value = min(bad)
            last = ckpt.complete_checkpoints(self.checkpoint_root)
            raise TrainingError(f"step {step}: loss term '{key}' is {value}; training stopped "
                                f"(last good checkpoint: {last[-1] if last else 'none'})")

    def _window_means(self, window: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
        """The logged values: each term's sum over the log window (a device tensor), averaged over
        its steps and over the processes (one host sync per log step)."""
        keys = sorted(window)
        if not keys:
            return {}
        local = torch.stack([window[k].double() for k in keys]) / steps
        return dict(zip(keys, self.accelerator.reduce(local, reduction="mean").tolist()))

    def _train_step(self, step: int, batches: Iterator) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        acc = self.accelerator
        tc = self.train_cfg
        sums: dict[str, torch.Tensor] = {}
        position = (0, 0)
        for micro in range(tc.grad_accum):
            epoch, batch_index, indices, batch = next(batches)
            position = (epoch, batch_index + 1)
            if self.order_log is not None:
                self.order_log.write(f"{step} {epoch} {batch_index} {','.join(map(str, indices))}\n")
                self.order_log.flush()
            batch = send_to_device(batch, acc.device)
            last_micro = micro == tc.grad_accum - 1
            with contextlib.ExitStack() as stack:
                if not last_micro:  # gradients are all-reduced on the last micro-batch only
                    for module in self.wrapped.values():
                        stack.enter_context(acc.no_sync(module))
                with acc.autocast():
                    terms = self.stage.losses(self.modules, batch, step, self.generator)
                for group in self.groups:
                    if f"loss/{group.name}" not in terms:
                        raise TrainingError(f"stage {type(self.stage).__name__}: losses() returned no "
                                            f"'loss/{group.name}' for optimiser group '{group.name}'")
                self._watch_terms(terms, step)
                for i, group in enumerate(self.groups):
                    loss = terms[f"loss/{group.name}"] / tc.grad_accum
                    if not loss.requires_grad:  # an idle group this step (e.g. a GAN critic not started yet)
                        continue
                    acc.backward(loss, inputs=group.params if len(self.groups) > 1 else None,
                                 retain_graph=i < len(self.groups) - 1)
            for key, value in terms.items():  # summed on the device; reduced at log steps
                sums[key] = sums.get(key, 0.0) + value.detach().double() / tc.grad_accum
        scaler = acc.scaler  # fp16 only
        for group in self.groups:
            if any(p.grad is not None for p in group.params):  # else idle this step
                if scaler is not None:
                    scaler.unscale_(group.optimizer)
                if group.grad_clip > 0:
                    sums[f"grad_norm/{group.name}"] = self._clip_gradients(group)
                if scaler is not None:
                    scaler.step(group.optimizer)  # skipped on inf/nan gradients
                else:
                    group.optimizer.step()
            with warnings.catch_warnings():  # the schedule follows the step count, idle or not
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                group.scheduler.step()
            group.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()
        for key, ema in self.ema.items():
            ema.update(acc.unwrap_model(self.wrapped[key]))
        return sums, position

    def _clip_gradients(self, group: _Group) -> torch.Tensor:
        """Clip the group's global gradient norm to ``grad_clip``; returns the norm before clipping
        (a 0-dim device tensor: read at log steps)."""
        module = self.wrapped[group.keys[0]]
        if self.is_fsdp and hasattr(module, "clip_grad_norm_"):  # FSDP1: sharded flat gradients
            return module.clip_grad_norm_(group.grad_clip).detach().double()
        norm = torch.nn.utils.clip_grad_norm_(group.params, group.grad_clip)
        return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).detach().double()  # FSDP2: a DTensor

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Modules as the stage's ``losses`` sees them: wrapped trainable ones and frozen ones."""
        return {**self.wrapped, **self.frozen}

    # ------------------------------------------------------------- logging

    @torch.no_grad()
    def _preview(self, writer: Any, batch: dict[str, Any], step: int) -> None:
        acc = self.accelerator
        modules = {key: self.ema[key].module if key in self.ema else acc.unwrap_model(self.wrapped[key])
                   for key in self.trainable_keys}
        modules.update(self.frozen)
        for key in self.trainable_keys:
            modules[key].eval()
        try:
            with acc.autocast():
                media = self.stage.preview(modules, send_to_device(batch, acc.device))
        finally:
            for key in self.trainable_keys:
                acc.unwrap_model(self.wrapped[key]).train()
        if "video" in media:  # [B,T,3,H,W] -> one image: a row of frames per sample
            video = ((media["video"].float().clamp(-1, 1) + 1) / 2).cpu()
            writer.add_image("preview/video", rearrange(video, "b t c h w -> c (b h) (t w)"), step)
        if "image" in media:  # [B,3,H,W] -> one row
            image = ((media["image"].float().clamp(-1, 1) + 1) / 2).cpu()
            writer.add_image("preview/image", rearrange(image, "b c h w -> c h (b w)"), step)
        for name, value in media.get("scalars", {}).items():  # numbers the stage measures on the batch
            writer.add_scalar(f"preview/{name}", value, step)
        if "audio" in media:  # [B,N]
            rate = int(media.get("audio_sample_rate", 16000))
            for i, wave in enumerate(media["audio"].float().clamp(-1, 1).cpu()):
                writer.add_audio(f"preview/audio_{i}", wave[None], step, sample_rate=rate)

    # ------------------------------------------------------------- the loop

    def fit(self) -> FitResult:
        """Train up to ``train.max_steps`` optimiser steps; returns a :class:`FitResult`."""
        acc = self.accelerator
        tc = self.train_cfg
        start = time.perf_counter()
        dataset = self.stage.dataset(self.cfg, "train")
        if batches_per_epoch(len(dataset), tc.batch_size, self.num_processes) == 0:
            raise DataError(f"training data has {len(dataset)} items, fewer than one global batch "
                            f"({tc.batch_size} x {self.num_processes} processes)")
        # Written once the data is known to be usable: a run that cannot start leaves the run
        # folder (and a resumed run's config.yaml) as it was.
        if acc.is_main_process:
            make_folder(self.out_dir)
            save_config(self.cfg, self.out_dir / "config.yaml")
        step = int(self.resume_state.get("step", 0))
        position = (int(self.resume_state.get("epoch", 0)), int(self.resume_state.get("batch", 0)))
        batches = self._batches(dataset, *position)

        self.order_log = None
        if tc.log.record_data_order:
            (self.out_dir / "data_order").mkdir(parents=True, exist_ok=True)
            self.order_log = open(self.out_dir / "data_order" / f"rank_{self.rank}.txt", "a")
        writer = None
        preview_batch = None
        if acc.is_main_process and tc.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            if tc.log.preview_every and not self.is_fsdp:
                items = min(tc.log.preview_items, len(dataset))
                preview_batch = default_collate([dataset[i] for i in range(items)])
        progress = tqdm(total=tc.max_steps, initial=step, desc=f"train {getattr(self.stage, 'name', '')}",
                        disable=not (acc.is_main_process and tc.log.progress_bar), dynamic_ncols=True)
        history: list[tuple[int, dict[str, float]]] = []
        window: dict[str, torch.Tensor] = {}
        window_steps = 0
        window_start = time.perf_counter()
        last_logged: dict[str, float] = {}
        last_checkpoint = ckpt.complete_checkpoints(self.checkpoint_root)
        newest = last_checkpoint[-1] if last_checkpoint else None
        first_step = step
        try:
            while step < tc.max_steps:
                values, position = self._train_step(step, batches)
                step += 1
                window_steps += 1
                for key, value in values.items():
                    window[key] = window.get(key, 0.0) + value
                progress.update(1)
                checkpoint_now = step % tc.checkpoint.every == 0 or step == tc.max_steps
                if step % tc.log.every == 0 or checkpoint_now:
                    self._stop_if_not_finite()
                if step % tc.log.every == 0 or step == tc.max_steps:
                    last_logged = self._window_means(window, window_steps)
                    for group in self.groups:
                        last_logged[f"lr/{group.name}"] = group.scheduler.get_last_lr()[0]
                    now = time.perf_counter()
                    last_logged["perf/steps_per_second"] = window_steps / max(now - window_start, 1e-9)
                    history.append((step, last_logged))
                    window, window_steps, window_start = {}, 0, now
                    if writer is not None:
                        for key, value in last_logged.items():
                            writer.add_scalar(key, value, step)
                    progress.set_postfix({k.removeprefix("loss/"): f"{v:.4g}"
                                          for k, v in last_logged.items() if k.startswith("loss/")})
                if preview_batch is not None and writer is not None and step % tc.log.preview_every == 0:
                    self._preview(writer, preview_batch, step)
                if checkpoint_now:
                    newest = self.save_checkpoint(step, *self._normalised(position, len(dataset))) or newest
        finally:
            progress.close()
            if writer is not None:
                writer.close()
            if self.order_log is not None:
                self.order_log.close()
        seconds = time.perf_counter() - start
        result = FitResult(step, seconds, {k: v for k, v in last_logged.items() if k.startswith("loss/")},
                           newest, self.out_dir, history)
        losses = ", ".join(f"{k}={v:.4g}" for k, v in result.losses.items()) or "n/a"
        acc.print(f"trained steps {first_step}->{step} in {seconds:.1f}s ({precision_name(tc.mixed_precision)}); "
                  f"final {losses}; "
                  f"checkpoints in {self.checkpoint_root} (latest: {newest.name if newest else 'none'})")
        return result

    def _normalised(self, position: tuple[int, int], num_items: int) -> tuple[int, int]:
        """Data position with a finished epoch rolled over to (epoch + 1, 0)."""
        epoch, batch = position
        if batch >= batches_per_epoch(num_items, self.train_cfg.batch_size, self.num_processes):
            return epoch + 1, 0
        return epoch, batch
