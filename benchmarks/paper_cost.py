"""Cost of one 256x256 sounding-video sample at the paper's scale, per network, beside MM-Diffusion.

The paper's Landscape models are built with random weights from ``configs/paper/landscape/*.yaml``
(AVDiT-XL; the autoencoder whose signal decoder is the Stable Diffusion v1 UNet; the SD v1
KL-VAE) and every network call one sample needs is listed with:

* **GFLOP per call**: ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs) on
  a forward at the call's batch, on the meta device (no memory, no time; attention runs as
  PyTorch's math path there, so its matmuls are counted; the CPU's fused attention kernel has
  no FLOP formula in torch and would be missed on a real CPU tensor).
* **calls per sample** and **TFLOP per sample**.
* **time per call** in fp32 and bf16 autocast (bf16 only where the device multiplies it
  natively: :func:`mmldm.training.precision.cpu_has_native_bf16` on a CPU): a no-grad forward of
  the real network. On a CPU a full call is slow to time (a guided 16-frame SD-UNet call is
  5.8 TFLOP), so by default a call of at most ``--time-batch 8`` items is timed and scaled
  linearly to the call's batch (the record says which batch was timed); ``--time-batch full``
  times the real batch. 8 items run about as efficiently as 32 (measured on a 2-core Xeon, one
  thread, bf16: the SD UNet at 0.45 TFLOP/s with 8 items and 0.46 with 32), a single item
  does not (0.10 TFLOP/s): scaling a batch-1 time overstates a full call about 4.5 times.

Two sampling settings are costed, each a :class:`CostSettings` (the parameter table):

* ``paper``: AVDiT-XL 50 DDIM steps (batch 1: svg without a class), signal decoder 50 DDIM
  steps with guidance 2.5 (a conditional and a null-context half in one call: batch 32 for the
  16 frames, 2 for the audio image), KL-VAE decoder for the 16 frames and the audio image.
* ``fast``: the signal decoder in 4 steps without a guidance batch (batch 16 / 1) and a light
  frame decoder for the 16 frames (the audio image keeps the full KL-VAE decoder: the vocoder
  reads it). ``--fast FIELD=VALUE`` changes a field (e.g. ``generator_steps=10``).

Every network is a :class:`Component` in :data:`COMPONENTS`; a setting names components, so a
distilled signal decoder or a light frame decoder plugs in by :func:`register`-ing a component
of that name (its GFLOP per call is then counted like the others). A component whose ``build``
is None is planned but not built: its rows say "not built" and carry no number.

MM-Diffusion's figures (issue 22: base 64x64 multimodal UNet with DPM-Solver, 20 calls of
1,329 GFLOP; super-resolution to 256x256 with DDIM 25 steps, 20,213 GFLOP per 16-frame call:
532 TFLOP per sample) are printed beside them as the issue states them, not counted here.

    python benchmarks/paper_cost.py --no-time                          # counts only (seconds)
    python benchmarks/paper_cost.py --out benchmarks/results/DATE-paper-cost.json
    python benchmarks/paper_cost.py --time-components avdit decoder-unet --repeats 2
    python benchmarks/paper_cost.py --device cuda --time-batch full
    python benchmarks/paper_cost.py --scale tiny --no-time             # the CPU-sized models
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    add_device_argument,
    autocast,
    finish,
    markdown_table,
    note,
    record,
    resolve_device,
    run_script,
    time_call,
    torch_threads,
)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmldm.config import load_config
from mmldm.errors import ConfigError
from mmldm.devices import cpu_has_native_bf16

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: the issue's target: a 256x256 sample at the fast settings costs at most this many TFLOP
TARGET_TFLOP = 17.0

# ----------------------------------------------------------------------------- model configs


@dataclass(frozen=True)
class ModelConfigs:
    """The stage configs the components are built from (``scale`` names them)."""

    scale: str
    vae: Any
    autoencoder: Any
    generator: Any

    @property
    def num_frames(self) -> int:
        return self.autoencoder.model.num_frames


#: scale -> (vae, autoencoder, generator) YAML files and the overrides that drop weight paths
#: (random weights: counting and timing need no trained network)
SCALES: dict[str, dict[str, tuple[str, list[str]]]] = {
    "paper": {
        "vae": ("paper/landscape/vae.yaml", ["model.pretrained=null", "loss.lpips_weight=0"]),
        "autoencoder": ("paper/landscape/autoencoder.yaml", ["model.decoder.pretrained_unet=null", "vae.path=null"]),
        "generator": ("paper/landscape/generator.yaml", ["preview.vae=null", "preview.autoencoder=null"]),
    },
    "tiny": {
        "vae": ("vae/tiny.yaml", []),
        "autoencoder": ("autoencoder/tiny.yaml", ["vae.path=null"]),
        "generator": ("generator/tiny.yaml", []),
    },
}


def model_configs(scale: str) -> ModelConfigs:
    """The stage configs of ``scale`` ("paper": Landscape; "tiny": the CPU-sized presets)."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale '{scale}' (choose from {', '.join(SCALES)})")
    from mmldm.autoencoder.stage import AutoencoderStageConfig
    from mmldm.generator.stage import GeneratorStageConfig
    from mmldm.vae.stage import VAEStageConfig

    classes = {"vae": VAEStageConfig, "autoencoder": AutoencoderStageConfig, "generator": GeneratorStageConfig}
    loaded = {stage: load_config(classes[stage], CONFIGS / path, overrides)
              for stage, (path, overrides) in SCALES[scale].items()}
    return ModelConfigs(scale=scale, **loaded)


# ----------------------------------------------------------------------------- components


#: (configs, device) -> the network with random weights on ``device`` (meta: shapes only)
Builder = Callable[[ModelConfigs, torch.device], nn.Module]
#: (network, configs, batch, device) -> a no-argument callable making ONE call at ``batch``
#: (its inputs are made once, before; the call runs under the caller's no_grad / autocast)
Preparer = Callable[[nn.Module, ModelConfigs, int, torch.device], Callable[[], Any]]


@dataclass(frozen=True)
class Component:
    """A network call of the sampling path, registered by name in :data:`COMPONENTS`.

    ``build`` None: planned, not built yet (its rows say "not built", with no numbers).
    Components with the same ``build`` share one built network (e.g. the signal decoder's
    UNet and its condition branches)."""

    name: str
    description: str
    build: Builder | None = None
    prepare: Preparer | None = None

    @property
    def built(self) -> bool:
        return self.build is not None and self.prepare is not None


COMPONENTS: dict[str, Component] = {}


def register(component: Component, replace: bool = False) -> Component:
    """Add ``component`` to :data:`COMPONENTS` (``replace``: over one of the same name, e.g. a
    planned component once it is built)."""
    if component.name in COMPONENTS and not replace:
        raise ValueError(f"component '{component.name}' is already registered")
    COMPONENTS[component.name] = component
    return component


def get_component(name: str) -> Component:
    if name not in COMPONENTS:
        raise ConfigError(f"unknown component '{name}' (components: {', '.join(COMPONENTS)})")
    return COMPONENTS[name]


def _randn(shape: Sequence[int], device: torch.device, seed: int = 0) -> torch.Tensor:
    """Standard normal noise on ``device`` (empty on the meta device)."""
    if device.type == "meta":
        return torch.empty(tuple(shape), device=device)
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).to(device)


def _build_generator(configs: ModelConfigs, device: torch.device) -> nn.Module:
    from mmldm.generator.dit import AVDiT

    with torch.device(device):
        model = AVDiT(configs.generator.model.dit_config())
    return model.to(device)  # position embeddings are made on the CPU


def _prepare_generator(model: nn.Module, configs: ModelConfigs, batch: int,
                       device: torch.device) -> Callable[[], Any]:
    """One denoising call as svg without a class makes it: noisy latents and timesteps only."""
    cfg = model.cfg
    x = {"audio": _randn((batch, cfg.audio_channels, *cfg.audio_size), device, 1),
         "video": _randn((batch, cfg.video_channels, *cfg.video_size), device, 2)}
    t = torch.full((batch,), 500.0, device=device)
    return lambda: model(x, t)


def _build_signal_decoder(configs: ModelConfigs, device: torch.device) -> nn.Module:
    from mmldm.autoencoder.signal_decoder import SignalDecoder

    with torch.device(device):
        return SignalDecoder(configs.autoencoder.model)


def _decoder_inputs(decoder: nn.Module, configs: ModelConfigs, modality: str, items: int,
                    device: torch.device) -> dict[str, Any]:
    """Arguments of :meth:`SignalDecoder.condition` for ``items`` items of ``modality``."""
    cfg = configs.autoencoder.model
    shape = cfg.video_latent_shape if modality == "video" else cfg.audio_latent_shape
    tokens = cfg.semantic.token_grid ** 2
    return {"latent": _randn((items, *shape), device, 3),
            "other_tokens": _randn((items, tokens, cfg.semantic.dim), device, 4),
            "class_ids": torch.zeros(items, dtype=torch.long, device=device),
            "drop": torch.zeros(items, dtype=torch.bool, device=device),
            "frame_pos": (None if modality == "audio" else
                          torch.arange(items, device=device).float().remainder(cfg.num_frames) / cfg.num_frames)}


def _prepare_unet(decoder: nn.Module, configs: ModelConfigs, batch: int, device: torch.device) -> Callable[[], Any]:
    """One denoising call of the signal decoder's UNet on ``batch`` items (the condition branches
    run once per chunk, before the steps: component ``decoder-conditions``). The UNet's
    work does not depend on the modality (only the branch feeding it does), so video items stand
    for both."""
    cfg = configs.autoencoder.model
    with torch.no_grad():
        cond = decoder.condition("video", **_decoder_inputs(decoder, configs, "video", batch, device))
    noisy = _randn((batch, cfg.vae_latent_channels, cfg.vae_latent_size, cfg.vae_latent_size), device, 5)
    t = torch.full((batch,), 500, device=device)
    return lambda: decoder(noisy, t, cond)


def _prepare_conditions(decoder: nn.Module, configs: ModelConfigs, batch: int,
                        device: torch.device) -> Callable[[], Any]:
    """The condition branches of one clip: ``batch - 1`` video frames and one audio image
    (feature branch, content MLP, cross-attention context), once per sample."""
    video = _decoder_inputs(decoder, configs, "video", batch - 1, device)
    audio = _decoder_inputs(decoder, configs, "audio", 1, device)
    return lambda: (decoder.condition("video", **video), decoder.condition("audio", **audio))


def _build_kl_vae(configs: ModelConfigs, device: torch.device) -> nn.Module:
    from mmldm.vae.kl_vae import KLVAE

    with torch.device(device):
        return KLVAE.from_preset(configs.vae.model.preset, chunk_size=configs.vae.model.chunk_size)


def _prepare_kl_vae_decoder(vae: nn.Module, configs: ModelConfigs, batch: int,
                            device: torch.device) -> Callable[[], Any]:
    """KL-VAE latents of ``batch`` images -> pixels (in the VAE's own chunks, as the pipeline decodes)."""
    cfg = configs.autoencoder.model
    latents = _randn((batch, cfg.vae_latent_channels, cfg.vae_latent_size, cfg.vae_latent_size), device, 6)
    return lambda: vae.decode_images(latents)


register(Component("avdit", "the multi-modal DiT of stage 2 (AVDiT-XL at paper scale), one denoising call",
                   _build_generator, _prepare_generator))
register(Component("decoder-unet",
                   "the signal decoder's UNet (Stable Diffusion v1 at paper scale), one denoising call",
                   _build_signal_decoder, _prepare_unet))
register(Component("decoder-conditions", "the signal decoder's condition branches (feature branch, content MLP, "
                   "context) of one clip's frames and audio image",
                   _build_signal_decoder, _prepare_conditions))
register(Component("kl-vae-decoder", "the KL-VAE decoder (SD v1 KL-f8 at paper scale)",
                   _build_kl_vae, _prepare_kl_vae_decoder))
def _build_light_frame_decoder(configs: ModelConfigs, device: torch.device) -> nn.Module:
    """The light frame decoder preset of the scale's KL-VAE (``sd-v1``: TAESD's decoder layout)."""
    from mmldm.vae.light_decoder import LightFrameDecoder, preset

    with torch.device(device):
        return LightFrameDecoder(preset(configs.vae.model.preset))


def _prepare_light_frame_decoder(decoder: nn.Module, configs: ModelConfigs, batch: int,
                                 device: torch.device) -> Callable[[], Any]:
    """KL-VAE latents of ``batch`` frames -> pixels, in the chunks the pipeline uses (the VAE's)."""
    cfg = configs.autoencoder.model
    latents = _randn((batch, cfg.vae_latent_channels, cfg.vae_latent_size, cfg.vae_latent_size), device, 7)
    return lambda: decoder.decode_images(latents, configs.vae.model.chunk_size)


register(Component("light-frame-decoder", "a small decoder distilled from the KL-VAE decoder (TAESD-style; "
                   "mmldm.vae.light_decoder, the KL-VAE's preset)", _build_light_frame_decoder,
                   _prepare_light_frame_decoder))

# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CostSettings:
    """What one sample runs: the parameter table of a sampling setting."""

    name: str
    #: the generator and its sampler steps (batch: 1 for svg without a class; 2 with a guidance batch)
    generator: str = "avdit"
    generator_steps: int = 50
    generator_batch: int = 1
    #: the signal decoder's network, its steps, and whether each call carries a guidance batch
    #: (a conditional and a null-context half: twice the items)
    decoder: str = "decoder-unet"
    decoder_steps: int = 50
    decoder_guidance: bool = True
    decoder_conditions: str = "decoder-conditions"
    #: the pixel decoders of the frames and of the audio image (the same component: one call on all)
    frame_decoder: str = "kl-vae-decoder"
    audio_image_decoder: str = "kl-vae-decoder"

    def __post_init__(self) -> None:
        for name in ("generator_steps", "generator_batch", "decoder_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"cost settings {self.name}: {name} must be an integer >= 1, got {value!r}")

    def with_overrides(self, overrides: Sequence[str]) -> CostSettings:
        """These settings with ``FIELD=VALUE`` overrides (ints, true/false, component names)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep or key not in fields or key == "name":
                raise ConfigError(f"cost settings override '{text}': expected FIELD=VALUE with FIELD one of "
                                  f"{', '.join(k for k in fields if k != 'name')}")
            current = getattr(self, key)
            if isinstance(current, bool):
                if value.lower() not in ("true", "false"):
                    raise ConfigError(f"cost settings override '{text}': {key} is true or false")
                changes[key] = value.lower() == "true"
            elif isinstance(current, int):
                if not value.isdigit():
                    raise ConfigError(f"cost settings override '{text}': {key} is a whole number")
                changes[key] = int(value)
            else:
                get_component(value)
                changes[key] = value
        return dataclasses.replace(self, **changes)


PAPER_SETTINGS = CostSettings("paper")
FAST_SETTINGS = CostSettings("fast", decoder_steps=4, decoder_guidance=False, frame_decoder="light-frame-decoder")
#: the fast settings with a few-step generator: the flow objective's Euler sampler in 8 steps (the
#: built-in model samples with 12 Euler steps by default)
FAST_FEW_STEPS_SETTINGS = dataclasses.replace(FAST_SETTINGS, name="fast-8-steps", generator_steps=8)


@dataclass(frozen=True)
class Use:
    """One row: ``calls`` calls of ``component`` at ``batch`` per sample."""

    label: str
    component: str
    batch: int
    calls: int
    #: part of the generator (for "generator steps within the target")
    generator: bool = False


def sample_uses(settings: CostSettings, frames: int, generator_name: str = "generator") -> list[Use]:
    """The network calls of one sample of ``frames`` frames at ``settings``."""
    guidance = 2 if settings.decoder_guidance else 1
    how = " x guidance" if settings.decoder_guidance else ""
    uses = [
        Use(f"{generator_name}, batch {settings.generator_batch}", settings.generator, settings.generator_batch,
            settings.generator_steps, generator=True),
        Use(f"signal decoder, {frames} frames{how}", settings.decoder, frames * guidance, settings.decoder_steps),
        Use(f"signal decoder, audio image{how}", settings.decoder, guidance, settings.decoder_steps),
        Use("signal decoder conditions (once per clip)", settings.decoder_conditions, frames + 1, 1),
    ]
    if settings.frame_decoder == settings.audio_image_decoder:
        uses.append(Use(f"pixel decoder, {frames + 1} images", settings.frame_decoder, frames + 1, 1))
    else:
        uses += [Use(f"frame decoder, {frames} frames", settings.frame_decoder, frames, 1),
                 Use("audio-image decoder, 1 image", settings.audio_image_decoder, 1, 1)]
    return uses


#: issue 22's counts (GFLOP per call) at the paper's Landscape scale, to check ours against
ISSUE_GFLOP: dict[tuple[str, int], float] = {
    ("avdit", 1): 378.0, ("decoder-unet", 32): 5771.0, ("decoder-unet", 2): 361.0, ("kl-vae-decoder", 17): 10577.0,
}

#: MM-Diffusion's sampling as issue 22 gives it (its published settings; not counted here)
MM_DIFFUSION: list[dict[str, Any]] = [
    {"stage": "base 64x64 multimodal UNet, DPM-Solver", "gflop": 1329.0, "calls": 20},
    {"stage": "super-resolution to 256x256, DDIM 25 steps (16-frame call)", "gflop": 20213.0, "calls": 25},
]


def mm_diffusion_rows() -> list[dict[str, Any]]:
    rows = [{**row, "tflop": row["gflop"] * row["calls"] / 1e3, "source": "issue 22"} for row in MM_DIFFUSION]
    rows.append({"stage": "total", "tflop": sum(row["tflop"] for row in rows), "source": "issue 22"})
    return rows


# ----------------------------------------------------------------------------- networks


class Networks:
    """Built networks, one at a time: asking for another builder frees the one held (a paper-scale
    UNet and DiT together would need twice the memory)."""

    def __init__(self, configs: ModelConfigs, device: torch.device):
        self.configs, self.device = configs, device
        self._key: Builder | None = None
        self._network: nn.Module | None = None

    def get(self, component: Component) -> nn.Module:
        assert component.build is not None
        if self._key is not component.build:
            self.release()
            torch.manual_seed(0)
            self._network = component.build(self.configs, self.device).eval().requires_grad_(False)
            self._key = component.build
        assert self._network is not None
        return self._network

    def release(self) -> None:
        self._network, self._key = None, None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def count_flops(component: Component, configs: ModelConfigs, batch: int,
                networks: Networks | None = None) -> float:
    """FLOPs (multiply-add = 2) of one call of ``component`` at ``batch``, on the meta device."""
    networks = networks or Networks(configs, torch.device("meta"))
    call = component.prepare(networks.get(component), configs, batch, torch.device("meta"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call()
    return float(counter.get_total_flops())


def available_precisions(device: torch.device, asked: Sequence[str]) -> tuple[list[str], list[str]]:
    """(precisions to time, notes on those skipped): bf16 only where the device multiplies it natively."""
    keep, skipped = [], []
    for precision in asked:
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            skipped.append("bf16 not timed: this CPU has no native bf16 matrix instructions (emulated bf16 "
                           "is many times slower than fp32 and says nothing about the model)")
        elif precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            skipped.append("bf16 not timed: this GPU does not support bf16")
        else:
            keep.append(precision)
    return keep, skipped


def time_component(component: Component, networks: Networks, batch: int, precision: str, warmup: int,
                   repeats: int) -> dict[str, Any]:
    """Seconds of one no-grad call of ``component`` at ``batch`` under ``precision``'s autocast."""
    network = networks.get(component)
    call = component.prepare(network, networks.configs, batch, networks.device)
    with torch.no_grad(), autocast(networks.device, precision):
        timing = time_call(call, networks.device, warmup=warmup, repeats=repeats)
    return timing.as_dict()


# ----------------------------------------------------------------------------- run


def _time_batch(setting: str | int, batch: int) -> int:
    return batch if setting == "full" else min(int(setting), batch)


def cost_tables(configs: ModelConfigs, settings: Sequence[CostSettings], device: torch.device,
                precisions: Sequence[str], time_components: Sequence[str] | None, time_batch: str | int,
                warmup: int, repeats: int, notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(cost rows, summary rows) of ``settings``; ``time_components`` None or empty: counts only."""
    frames = configs.num_frames
    preset = configs.generator.model.preset
    layouts = {s.name: sample_uses(s, frames, f"AVDiT-{preset}") for s in settings}
    for uses in layouts.values():
        for use in uses:
            get_component(use.component)
    # counts, each (component, batch) once, one meta network at a time
    flops: dict[tuple[str, int], float] = {}
    meta = Networks(configs, torch.device("meta"))
    for name, component in COMPONENTS.items():
        for uses in layouts.values():
            for use in uses:
                if use.component == name and component.built and (name, use.batch) not in flops:
                    flops[(name, use.batch)] = count_flops(component, configs, use.batch, meta)
    meta.release()
    # times, each (component, timed batch, precision) once, one real network at a time
    timed: dict[tuple[str, int, str], dict[str, Any]] = {}
    to_time = set(time_components or ())
    if to_time:
        networks = Networks(configs, device)
        for name, component in COMPONENTS.items():
            if name not in to_time:
                continue
            if not component.built:
                note(notes, f"{name} not timed: not built")
                continue
            batches = sorted({_time_batch(time_batch, use.batch) for uses in layouts.values() for use in uses
                              if use.component == name})
            for batch in batches:
                for precision in precisions:
                    print(f"timing {name} at batch {batch} ({precision}) ...", flush=True)
                    timed[(name, batch, precision)] = time_component(component, networks, batch, precision,
                                                                     warmup, repeats)
        networks.release()
    rows, summary = [], []
    for s in settings:
        uses = layouts[s.name]
        setting_rows = []
        for use in uses:
            component = COMPONENTS[use.component]
            row: dict[str, Any] = {"settings": s.name, "label": use.label, "component": use.component,
                                   "batch": use.batch, "calls": use.calls, "built": component.built,
                                   "generator": use.generator}
            if not component.built:
                row.update(gflop="not built", tflop="not built")
            else:
                gflop = flops[(use.component, use.batch)] / 1e9
                row.update(gflop=gflop, tflop=gflop * use.calls / 1e3)
                if configs.scale == "paper" and (use.component, use.batch) in ISSUE_GFLOP:
                    row["issue_gflop"] = ISSUE_GFLOP[(use.component, use.batch)]
                tb = _time_batch(time_batch, use.batch)
                for precision in PRECISIONS:
                    t = timed.get((use.component, tb, precision))
                    if t is not None:
                        per_call = t["median_s"] * use.batch / tb  # linear in the batch
                        row["timed_batch"] = tb
                        row[f"timed_s_{precision}"] = t["median_s"]
                        row[f"s_per_call_{precision}"] = per_call
                        row[f"s_per_sample_{precision}"] = per_call * use.calls
            setting_rows.append(row)
        known = sum(r["tflop"] for r in setting_rows if r["built"])
        for r in setting_rows:
            if r["built"]:
                r["share"] = r["tflop"] / known
        unbuilt = sorted({r["component"] for r in setting_rows if not r["built"]})
        total: dict[str, Any] = {"settings": s.name, "label": "total" + (" of the built components" if unbuilt else ""),
                                 "tflop": known, "built": True}
        for precision in PRECISIONS:
            key = f"s_per_sample_{precision}"
            if all(key in r for r in setting_rows if r["built"]):
                total[key] = sum(r[key] for r in setting_rows if r["built"])
        rows += setting_rows + [total]
        summary.append(summary_row(s, setting_rows, known, unbuilt, configs.scale == "paper"))
    return rows, summary


def summary_row(s: CostSettings, rows: list[dict[str, Any]], known: float, unbuilt: list[str],
                paper_scale: bool = True) -> dict[str, Any]:
    """TFLOP per sample against MM-Diffusion and the target; how many generator steps the target leaves.
    Both comparisons are for the paper's 256x256: other scales get the total only."""
    summary: dict[str, Any] = {"settings": s.name, "tflop": known, "not_built": ", ".join(unbuilt) or None,
                               "settings_table": dataclasses.asdict(s)}
    if not paper_scale:
        return {**summary, "target": "n/a (not the paper's scale)"}
    mm = mm_diffusion_rows()[-1]["tflop"]
    generator = [r for r in rows if r["generator"] and r["built"]]
    others = known - sum(r["tflop"] for r in generator)
    if known > TARGET_TFLOP:
        verdict = "missed"
    elif unbuilt:
        verdict = f"unknown ({', '.join(unbuilt)} not built)"
    else:
        verdict = "met"
    row = {**summary, "vs_mm_diffusion": known / mm, "target": verdict}
    if generator:
        per_step = sum(r["gflop"] * r["calls"] for r in generator) / s.generator_steps / 1e3  # TFLOP per step
        left = TARGET_TFLOP - others
        row.update(tflop_left_for_generator=left,
                   generator_steps_within_target=max(0, math.floor(left / per_step + 1e-9)))
    return row


def run(scale: str = "paper", settings: Sequence[CostSettings] = (PAPER_SETTINGS, FAST_SETTINGS),
        time_components: Sequence[str] | None = None, time_batch: str | int = 8,
        precisions: Sequence[str] = PRECISIONS, warmup: int = 1, repeats: int = 1, device: str = "cpu",
        threads: int | None = None) -> dict[str, Any]:
    """The cost record of ``settings`` at ``scale`` (see the module docstring).

    ``time_components``: the components to time (None: all built ones; empty: none).
    ``time_batch``: items per timed call (scaled linearly to each row's batch) or "full".
    """
    if not (time_batch == "full" or (isinstance(time_batch, int) and time_batch >= 1)):
        raise ConfigError(f"time batch must be 'full' or an integer >= 1, got {time_batch!r}")
    for name in time_components or ():
        get_component(name)
    dev = resolve_device(device)
    notes: list[str] = []
    configs = model_configs(scale)
    if time_components is None:
        time_components = [name for name, c in COMPONENTS.items() if c.built]
    keep, skipped = available_precisions(dev, precisions)
    for text in skipped:
        note(notes, text)
    if time_components and time_batch != "full":
        note(notes, f"times per call are one call of at most {time_batch} items scaled linearly to the row's "
                    "batch (timed_batch, timed_s_* hold what was measured)")
    if scale != "paper":
        note(notes, f"scale {scale}: not the paper's networks; the MM-Diffusion figures and the target are "
                    "for the paper's 256x256")
    run_settings = {"scale": scale, "settings": [dataclasses.asdict(s) for s in settings],
                    "time_components": list(time_components), "time_batch": time_batch, "precisions": keep,
                    "warmup": warmup, "repeats": repeats, "device": device, "threads": threads,
                    "target_tflop": TARGET_TFLOP,
                    "components": {name: {"description": c.description, "built": c.built}
                                   for name, c in COMPONENTS.items()}}
    with torch_threads(threads):
        rows, summary = cost_tables(configs, settings, dev, keep, time_components, time_batch, warmup, repeats,
                                    notes)
        for s in summary:
            if s["not_built"]:
                note(notes, f"{s['settings']}: {s['not_built']} not built in mmldm yet: its rows carry no number "
                            "and the total counts the built components only")
        return record("paper_cost", dev, run_settings,
                      {"cost": rows, "summary": summary, "mm_diffusion": mm_diffusion_rows()}, notes)


# ----------------------------------------------------------------------------- output

COST_COLUMNS: list[Column] = [
    ("settings", "settings", ""), ("component", "label", ""), ("network", "component", ""), ("batch", "batch", ""),
    ("GFLOP per call", "gflop", ",.1f"), ("issue 22 (GFLOP)", "issue_gflop", ",.0f"),
    ("calls per sample", "calls", ""), ("TFLOP per sample", "tflop", ",.2f"), ("share", "share", ".1%"),
    ("s per call fp32", "s_per_call_fp32", ".3g"), ("s per call bf16", "s_per_call_bf16", ".3g"),
    ("s per sample fp32", "s_per_sample_fp32", ",.1f"), ("s per sample bf16", "s_per_sample_bf16", ",.1f"),
]
SUMMARY_COLUMNS: list[Column] = [
    ("settings", "settings", ""), ("TFLOP per sample", "tflop", ",.1f"),
    ("x MM-Diffusion", "vs_mm_diffusion", ".3f"), (f"target <= {TARGET_TFLOP:g} TFLOP", "target", ""),
    ("TFLOP the target leaves the generator", "tflop_left_for_generator", ",.1f"),
    ("generator steps within the target", "generator_steps_within_target", ""),
]
MM_COLUMNS: list[Column] = [
    ("MM-Diffusion stage", "stage", ""), ("GFLOP per call", "gflop", ",.0f"), ("calls per sample", "calls", ""),
    ("TFLOP per sample", "tflop", ",.1f"), ("source", "source", ""),
]


def markdown(result: dict[str, Any]) -> str:
    scale = result["settings"]["scale"]
    title = (f"Cost of one sample at the {scale} scale (FLOPs: FlopCounterMode on the meta device, multiply-add = 2; "
             "times: no-grad forward, random weights)")
    parts = [title, markdown_table(result["tables"]["cost"], COST_COLUMNS),
             "Per sample, against MM-Diffusion (532 TFLOP) and the target",
             markdown_table(result["tables"]["summary"], SUMMARY_COLUMNS),
             "MM-Diffusion's sampling (the issue's figures)",
             markdown_table(result["tables"]["mm_diffusion"], MM_COLUMNS)]
    if result.get("notes"):
        parts.append("\n".join(f"- note: {text}" for text in result["notes"]))
    return "\n\n".join(parts)


def _time_batch_arg(text: str) -> str | int:
    if text == "full":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'full' or an integer >= 1, got '{text}'")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="paper", choices=list(SCALES))
    parser.add_argument("--time-components", nargs="+", default=None, metavar="COMPONENT",
                        help=f"components to time (default: all built ones; components: {', '.join(COMPONENTS)})")
    parser.add_argument("--no-time", action="store_true", help="count FLOPs only")
    parser.add_argument("--time-batch", type=_time_batch_arg, default=8,
                        help="items per timed call at most, scaled linearly to each row's batch, or 'full' "
                             "(default 8)")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per component, batch and precision")
    parser.add_argument("--paper", nargs="*", default=[], metavar="FIELD=VALUE", help="change the paper settings")
    parser.add_argument("--fast", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="change the fast settings (e.g. generator_steps=10)")
    parser.add_argument("--fast-few-steps", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="change the fast settings with a few-step generator (default generator_steps=8)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    if args.no_time and args.time_components:
        raise ConfigError("--no-time and --time-components exclude each other")
    settings = (PAPER_SETTINGS.with_overrides(args.paper), FAST_SETTINGS.with_overrides(args.fast),
                FAST_FEW_STEPS_SETTINGS.with_overrides(args.fast_few_steps))
    result = run(args.scale, settings, [] if args.no_time else args.time_components, args.time_batch,
                 tuple(args.precision), args.warmup, args.repeats, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
