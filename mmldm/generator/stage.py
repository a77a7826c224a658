"""Stage 2 for the training engine: the multi-modal DiT on cached perceptual latents.

    mmldm cache --config configs/vae/tiny.yaml --vae runs/vae-tiny/checkpoints/step_003000 \\
                --autoencoder runs/autoencoder-tiny/checkpoints/step_004000 --out data/shapes-latents
    mmldm train generator --config configs/generator/tiny.yaml

Each step (paper Sec. 3.2-3.3, Eq. 8): draw the items' conditions
(:func:`~mmldm.generator.conditioning.mix_conditions`: context dropout, clean
audio or video given, previous clip), one timestep per item shared by both
modalities, noise both latents independently, and regress the objective's
target: ``loss = MSE_a + MSE_v``, averaged over the batch. The objective is the
paper's DDPM epsilon prediction (``diffusion.objective: epsilon``) or rectified
flow (``flow``).

Data: :class:`~mmldm.generator.latents.GeneratorLatentDataset` over a latent
cache of perceptual latents; nothing is decoded during training.

Text conditioning (the paper's open-domain variant): with ``model.text_encoder``
(a local CLIP text model folder, :mod:`mmldm.generator.text_encoder`) the
items' captions (the ``text`` column of the dataset manifest, carried by the
latent cache) become the DiT's context tokens ``[B, n_ctx, context_dim]``; the
frozen encoder runs once per distinct caption (memoised), never per step, and
``conditioning.text_dropout`` replaces captions by the null text.

Previews: a few latents sampled from the (EMA) model with the preview items'
classes. With ``preview.vae`` and ``preview.autoencoder`` set, they are decoded
to frames and audio images (the autoencoder's DDIM decoder: slow at paper size);
otherwise the preview shows the latents themselves (first three channels,
normalised per item), which is enough to watch structure appear.

The trained generator is read back with :func:`load_generator` (from a training
checkpoint or an exported folder); :mod:`mmldm.export` writes it into a model folder.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..config import load_config, to_dict
from ..diffusion import SAMPLERS, DiffusionConfig, Objective, default_sampler, make_objective, noise_like, sample
from ..errors import ConfigError, DataError, WeightsError
from ..training.checkpoint import is_training_checkpoint, load_trained_weights
from ..training.config import TrainConfig
from .conditioning import ConditioningConfig, mix_conditions
from .dit import AVDiT, DiTConfig, deepened
from .generation import GENERATION_NAME, read_generation_config
from .latents import GeneratorLatentDataset



@dataclass
class GeneratorModelConfig:
    """The AVDiT: a size preset plus field overrides."""

    #: DiT size: tiny, S, B, L or XL (see :data:`mmldm.generator.dit.DIT_PRESETS`)
    preset: str = "tiny"
    #: :class:`~mmldm.generator.dit.DiTConfig` fields replacing the preset's (num_classes, latent sizes...)
    dit: dict[str, Any] = field(default_factory=dict)
    #: start from these weights: an exported AVDiT folder or a ``mmldm train generator`` checkpoint
    pretrained: str | None = None
    #: with ``pretrained`` of fewer blocks (a divisor of ``depth``, every other DiT field the same):
    #: start from it deepened (:func:`~mmldm.generator.dit.deepened`: its blocks spread out, the new
    #: ones the identity), so the deeper generator starts as the trained one (not in the paper)
    deepen_pretrained: bool = False
    #: frozen text encoder of a text-conditioned generator: a local CLIP text model folder (with its
    #: tokenizer; :mod:`mmldm.generator.text_encoder`); needs ``dit.context_dim`` = its width and
    #: ``dit.n_ctx`` tokens per caption
    text_encoder: str | None = None

    def __post_init__(self) -> None:
        dit = self.dit_config()  # unknown presets or fields fail at load time
        if bool(self.text_encoder) != bool(dit.context_dim):
            raise ConfigError("model.text_encoder and model.dit.context_dim go together: a text-conditioned "
                              "generator needs both (context_dim = the text encoder's width), others neither")

    def dit_config(self) -> DiTConfig:
        return DiTConfig.preset(self.preset, **self.dit)


@dataclass
class GeneratorDataConfig:
    #: latent cache of perceptual latents (``mmldm cache --autoencoder``)
    cache: str = "data/shapes-latents"
    #: optional cache of the validation split
    val_cache: str | None = None
    #: clip length (s) for pairing consecutive windows; null: from the cache's config
    clip_seconds: float | None = None
    #: the DiT sees ``latent * scale`` (paper: 1, "no rescaling"); ``estimate_latent_scales`` gives
    #: unit-variance factors. Exported with the model, so generation undoes them.
    audio_latent_scale: float = 1.0
    video_latent_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.audio_latent_scale <= 0 or self.video_latent_scale <= 0:
            raise ValueError("data.audio_latent_scale and data.video_latent_scale must be > 0")

    @property
    def scales(self) -> dict[str, float]:
        return {"audio": self.audio_latent_scale, "video": self.video_latent_scale}


@dataclass
class GeneratorPreviewConfig:
    #: KL-VAE to decode previews to pixels: diffusers folder, `mmldm train vae` checkpoint or single file
    vae: str | None = None
    #: layout of a single-file ``vae``
    vae_preset: Literal["sd-v1", "tiny"] = "sd-v1"
    #: autoencoder: ``mmldm train autoencoder`` checkpoint or ``save_pretrained`` folder; with ``vae``,
    #: previews are decoded to frames and audio images
    autoencoder: str | None = None
    #: sampler (null: ddim for epsilon, euler for flow) and its steps
    sampler: str | None = None
    steps: int = 25
    #: frames decoded per preview clip (the autoencoder decodes each frame by DDIM)
    frames: list[int] = field(default_factory=lambda: [0, 5, 10, 15])
    #: DDIM steps of the autoencoder's decoder in previews (null: its own default)
    decode_steps: int | None = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"preview.steps must be >= 1, got {self.steps}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"preview.sampler {self.sampler!r} is not a sampler ({', '.join(SAMPLERS)})")
        if (self.vae is None) != (self.autoencoder is None):
            raise ValueError("preview.vae and preview.autoencoder go together (set both, or neither)")


@dataclass
class GeneratorStageConfig:
    model: GeneratorModelConfig = field(default_factory=GeneratorModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    preview: GeneratorPreviewConfig = field(default_factory=GeneratorPreviewConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        make_objective(self.diffusion)  # an unknown objective fails at load time


class GeneratorStage:
    """AVDiT training on cached perceptual latents (see the module docstring)."""

    name = "generator"
    config_cls = GeneratorStageConfig

    def __init__(self) -> None:
        self.cfg: GeneratorStageConfig | None = None
        self.dit_cfg: DiTConfig | None = None
        self.objective: Objective | None = None
        #: the frozen text encoder (``model.text_encoder``); not a trained module, so not in ``modules``
        self.text_encoder = None

    # ------------------------------------------------------------------ build

    def build(self, cfg: GeneratorStageConfig) -> dict[str, nn.Module]:
        self.cfg = cfg
        self.dit_cfg = cfg.model.dit_config()
        self.objective = make_objective(cfg.diffusion)
        if cfg.model.pretrained is not None:
            model, _, trained = load_generator_with_scales(cfg.model.pretrained)
            if cfg.model.deepen_pretrained and model.cfg.depth != self.dit_cfg.depth:
                model = deepened(model, self.dit_cfg.depth)  # other fields must still match (below)
            if to_dict(model.cfg) != to_dict(self.dit_cfg):
                raise ConfigError(f"model.pretrained {cfg.model.pretrained}: its DiT config differs from "
                                  f"model.preset/model.dit ({_config_difference(model.cfg, self.dit_cfg)})")
            if trained and any(not math.isclose(trained[m], cfg.data.scales[m], rel_tol=1e-4) for m in trained):
                # a new dataset may need its own unit-variance scales; continuing the same data does not
                warnings.warn(f"model.pretrained {cfg.model.pretrained} was trained on latents scaled audio "
                              f"{trained['audio']:.6g} / video {trained['video']:.6g}, this run scales them "
                              f"{cfg.data.audio_latent_scale:.6g} / {cfg.data.video_latent_scale:.6g} "
                              f"(data.audio_latent_scale / data.video_latent_scale)", stacklevel=2)
        else:
            model = AVDiT(self.dit_cfg)
        if cfg.model.text_encoder:
            from .text_encoder import TextEncoder

            self.text_encoder = TextEncoder.from_folder(cfg.model.text_encoder, length=self.dit_cfg.n_ctx)
            if self.text_encoder.hidden_size != self.dit_cfg.context_dim:
                raise ConfigError(f"model.text_encoder {cfg.model.text_encoder} gives tokens of width "
                                  f"{self.text_encoder.hidden_size}; set model.dit.context_dim to it "
                                  f"(now {self.dit_cfg.context_dim})")
        modules: dict[str, nn.Module] = {"model": model}
        if cfg.preview.vae is not None and cfg.preview.autoencoder is not None:
            from ..autoencoder.stage import load_autoencoder
            from ..vae.stage import load_vae

            modules["vae"] = load_vae(cfg.preview.vae, preset=cfg.preview.vae_preset)
            modules["autoencoder"] = load_autoencoder(cfg.preview.autoencoder)[0]
        return modules

    def optimizer_groups(self, cfg: GeneratorStageConfig) -> dict[str, list[str]]:
        return {"model": ["model"]}

    # ------------------------------------------------------------------ data

    def dataset(self, cfg: GeneratorStageConfig, split: str) -> Dataset:
        dit = cfg.model.dit_config()
        if split == "train":
            directory = cfg.data.cache
        elif cfg.data.val_cache is not None:
            directory = cfg.data.val_cache
        else:
            raise ConfigError(f"generator: no data for split '{split}' (set data.val_cache)")
        pair = dit.previous_clip and cfg.conditioning.uses_previous
        data = GeneratorLatentDataset(directory, cfg.data.clip_seconds, pair_previous=pair, scales=cfg.data.scales)
        expected = {"audio": (dit.audio_channels, *dit.audio_size), "video": (dit.video_channels, *dit.video_size)}
        for key, shape in expected.items():
            if data.shapes[key] != shape:
                raise DataError(f"latent cache {directory}: {key} latents are {list(data.shapes[key])} but the DiT "
                                f"expects {list(shape)} (set model.dit.{key}_channels / {key}_size, or use the "
                                "cache of the matching autoencoder)")
        if cfg.model.text_encoder and not any(item.get("text") for item in data.cache.index["items"]):
            raise DataError(f"latent cache {directory} holds no captions, and model.text_encoder asks for text "
                            "conditioning: cache a dataset whose manifest has a 'text' column")
        if dit.num_classes:
            ids = [int(item.get("class_id", -1)) for item in data.cache.index["items"]]
            if max(ids, default=-1) >= dit.num_classes:
                raise DataError(f"latent cache {directory}: class id {max(ids)} does not fit "
                                f"model.dit.num_classes={dit.num_classes}")
        return data

    # ------------------------------------------------------------------ loss

    def losses(self, modules: dict[str, nn.Module], batch: dict[str, Any], step: int,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss/model`` = mean over items of ``w_a MSE_a + w_v MSE_v`` (Eq. 8; w = 1 unless
        ``conditioning.loss_on_given`` is false), plus per-modality MSEs and condition rates."""
        assert self.cfg is not None and self.dit_cfg is not None and self.objective is not None, "build() first"
        cfg, dit, objective = self.cfg, self.dit_cfg, self.objective
        audio, video = batch["audio"], batch["video"]  # [B, Ca, Ha, Wa], [B, Cv, Hv, Wv]
        b, device = audio.shape[0], audio.device
        use_previous = dit.previous_clip and cfg.conditioning.uses_previous
        mixed = mix_conditions(
            audio, video, cfg.conditioning, generator,
            class_labels=batch["class_id"] if dit.num_classes else None,
            null_class=dit.num_classes if dit.num_classes else None,
            prev_audio=batch.get("prev_audio") if use_previous else None,
            prev_video=batch.get("prev_video") if use_previous else None,
            has_previous=batch.get("has_previous") if use_previous else None,
            texts=batch["text"] if self.text_encoder is not None else None,
        )
        x0 = {"audio": audio, "video": video}
        t = objective.sample_timesteps(b, generator, device)  # [B], one t for both modalities
        noise = noise_like(x0, generator)
        x_t = objective.add_noise(x0, noise, t)  # Eq. (6) for epsilon, linear path for flow
        kwargs = mixed.model_kwargs()
        if not dit.previous_clip:
            del kwargs["prev_audio"], kwargs["prev_video"]
        if self.text_encoder is not None:  # each distinct caption through the frozen encoder once
            kwargs["context"] = self.text_encoder.encode_cached(mixed.texts, device)  # [B, n_ctx, context_dim]
        out = modules["model"](x_t, objective.model_timestep(t), **kwargs)
        mse = objective.loss_terms(out, x0, noise, t)  # {"audio": [B], "video": [B]} float32
        per_item = mse["audio"] * mixed.loss_weights["audio"] + mse["video"] * mixed.loss_weights["video"]
        return {
            "loss/model": per_item.mean(),
            "mse/audio": mse["audio"].mean().detach(),
            "mse/video": mse["video"].mean().detach(),
            "cond/audio_given": mixed.audio_given.float().mean(),
            "cond/video_given": mixed.video_given.float().mean(),
            "cond/prev_audio": mixed.prev_audio_given.float().mean(),
            "cond/prev_video": mixed.prev_video_given.float().mean(),
            **({"cond/text_dropped": mixed.text_dropped.float().mean()} if mixed.text_dropped is not None else {}),
        }

    # ------------------------------------------------------------------ preview

    @torch.no_grad()
    def sample_latents(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Latents sampled for the items of ``batch`` (their classes and captions; no other condition), seeded.

        Shapes: ``{"audio": [B, Ca, Ha, Wa], "video": [B, Cv, Hv, Wv]}``.
        """
        assert self.cfg is not None and self.dit_cfg is not None and self.objective is not None, "build() first"
        cfg, dit, objective = self.cfg, self.dit_cfg, self.objective
        audio = batch["audio"]
        device = audio.device
        generator = torch.Generator(device=device).manual_seed(cfg.preview.seed)
        noise = {"audio": torch.randn(audio.shape, generator=generator, device=device),
                 "video": torch.randn(batch["video"].shape, generator=generator, device=device)}
        labels = None
        if dit.num_classes:
            labels = batch["class_id"].to(device=device, dtype=torch.long)
            labels = torch.where(labels < 0, torch.full_like(labels, dit.num_classes), labels)

        context = (None if self.text_encoder is None
                   else self.text_encoder.encode_cached(list(batch["text"]), device))  # [B, n_ctx, context_dim]

        def denoise(x: dict[str, torch.Tensor], t: torch.Tensor) -> dict[str, torch.Tensor]:
            return model(x, t, class_labels=labels, context=context)

        sampler = cfg.preview.sampler or default_sampler(objective)
        return sample(denoise, noise, objective, sampler=sampler, steps=cfg.preview.steps)

    @torch.no_grad()
    def preview(self, modules: dict[str, nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
        """Decoded samples ("video" [B, F, 3, H, W], "image" = audio images [B, 3, H, W]) with a VAE and
        autoencoder; else "image" [2B, 3, Hv, Wv]: each item's video latent, then its audio latent
        (first 3 channels, min-max normalised per item, audio resized to the video grid)."""
        assert self.cfg is not None, "build() first"
        latents = self.sample_latents(modules["model"], batch)
        scales = self.cfg.data.scales
        video_z, audio_z = latents["video"].float() / scales["video"], latents["audio"].float() / scales["audio"]
        if "vae" in modules and "autoencoder" in modules:
            frames, audio_image = modules["autoencoder"].reconstruct(
                modules["vae"], video_z, audio_z, frames=self.cfg.preview.frames,
                steps=self.cfg.preview.decode_steps,
                generator=torch.Generator(device=video_z.device).manual_seed(self.cfg.preview.seed))
            return {"video": frames, "image": audio_image}
        return {"image": torch.cat([_latent_picture(video_z, video_z.shape[-2:]),
                                    _latent_picture(audio_z, video_z.shape[-2:])])}


def _latent_picture(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A latent ``[B, C, h, w]`` as a picture ``[B, 3, H, W]`` in [-1, 1] (first 3 channels)."""
    pic = z[:, :3]
    if pic.shape[1] < 3:
        pic = pic.repeat(1, 3, 1, 1)[:, :3]
    low = pic.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = pic.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    pic = (pic - low) / (high - low).clamp_min(1e-6) * 2 - 1
    return F.interpolate(pic, size=tuple(size), mode="nearest")


def _config_difference(a: DiTConfig, b: DiTConfig) -> str:
    da, db = to_dict(a), to_dict(b)
    return ", ".join(f"{k}: {da[k]} vs {db[k]}" for k in da if da[k] != db[k])


# --------------------------------------------------------------------------- load

def load_generator(path: str | Path, use_ema: bool = True,
                   device: torch.device | str = "cpu") -> tuple[AVDiT, DiffusionConfig]:
    """The AVDiT and its objective's config, from a training checkpoint or an exported folder
    (:func:`load_generator_with_scales`, which says which paths it takes)."""
    model, diffusion, _ = load_generator_with_scales(path, use_ema, device)
    return model, diffusion


def load_generator_with_scales(path: str | Path, use_ema: bool = True, device: torch.device | str = "cpu"
                               ) -> tuple[AVDiT, DiffusionConfig, dict[str, float] | None]:
    """The AVDiT, its objective's config and the latent scales it was trained with
    (``{"audio": ..., "video": ...}``, ``data.*_latent_scale``; None where not recorded), from a
    training checkpoint or an exported folder.

    * A ``mmldm train generator`` checkpoint folder (weights and ``config.yaml``): rebuilt from its
      config, EMA weights when present and ``use_ema``.
    * A generator folder (``AVDiT.save_pretrained`` and ``generation.json``, as ``mmldm export``
      writes it under ``generator/`` in a model folder); without ``generation.json`` the paper's
      epsilon objective is assumed.
    * A whole model folder (it holds ``model_index.json``): its ``generator/``.
    """
    path = Path(path)
    if (path / "model_index.json").is_file():
        path = path / "generator"
    if is_training_checkpoint(path):
        config_path = path / "config.yaml"
        if not config_path.is_file():
            raise WeightsError(config_path, "generator training checkpoint", "config.yaml is missing")
        cfg = load_config(GeneratorStageConfig, config_path)
        model = AVDiT(cfg.model.dit_config())
        load_trained_weights(model, path, "generator training checkpoint", use_ema=use_ema, device=device)
        return model.to(device), cfg.diffusion, cfg.data.scales
    if not path.is_dir():
        raise WeightsError(path, "generator", "not found: give an exported generator folder or a "
                           "`mmldm train generator` checkpoint folder")
    model = AVDiT.from_pretrained(path, device=device)
    if not (path / GENERATION_NAME).is_file():
        return model, DiffusionConfig(), None
    generation = read_generation_config(path / GENERATION_NAME)
    return model, generation.diffusion, generation.scales
