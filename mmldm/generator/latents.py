"""Perceptual latents for the generator: the cache encoder and the training dataset.

The DiT trains on the autoencoder's perceptual latents (audio ``[Ca, ha, wa]``,
video ``[Cv, hv, wv]``; paper: 16x8x8 and 16x16x16), computed ONCE by the
frozen KL-VAE and the frozen autoencoder (posterior mode, as downstream code
upstream) and stored in a latent cache (:mod:`mmldm.data.latent_cache`)::

    dataset items --KL-VAE--> frame / audio-image latents --autoencoder--> {"audio", "video"}

:class:`PerceptualEncoder` is the encoder callable of
:func:`~mmldm.data.latent_cache.write_latent_cache`. It takes dataset batches
(``frames``, ``audio_image``) or, to skip the KL-VAE, batches of a KL-VAE latent
cache (``video_latent``, ``audio_latent``: what ``mmldm cache`` writes without
``--autoencoder``).

**Pairing consecutive clips.** The cache stores no second copy of the previous
window. Every cached item keeps its ``source`` file and ``start_time``
(the cache's per-item metadata), and :class:`GeneratorLatentDataset` pairs item
``i`` with the item of the same source starting exactly one clip earlier
(``start_time - clip_seconds``, to the millisecond). That window exists when the
window stride divides the clip length: the dataset's default stride (one clip,
no overlap) pairs every window but the first of each file. Files are split train/val as a whole, so pairs never cross splits. The
clip length comes from ``clip_seconds`` (argument), else the cache config's
``clip_seconds`` (written by :meth:`PerceptualEncoder.cache_config`), else its
``data.num_frames / data.fps``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.latent_cache import LatentCacheDataset
from ..errors import DataError

#: cache keys of the perceptual latents
LATENT_KEYS = ("audio", "video")


def weights_digest(module: nn.Module) -> str:
    """sha256 (hex, 16 chars) of a module's state dict (names, dtypes, shapes, values), 0-dim tensors included.

    (``latent_cache.module_digest`` cannot view a 0-dim tensor, such as the autoencoder's
    contrastive logit scale, as bytes; this flattens every tensor first.)
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:16]


class PerceptualEncoder:
    """Dataset batch -> perceptual latents ``{"audio": [B, Ca, ha, wa], "video": [B, Cv, hv, wv]}``.

    Args:
        autoencoder: the frozen :class:`~mmldm.autoencoder.HierarchicalAVAutoencoder`.
        vae: the frozen :class:`~mmldm.vae.kl_vae.KLVAE` (needed for pixel batches; not for
            batches of a KL-VAE latent cache).
    """

    def __init__(self, autoencoder: nn.Module, vae: nn.Module | None = None):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.vae = None if vae is None else vae.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shapes: ``frames`` [B, T, 3, H, W] and ``audio_image`` [B, 3, H, W] in [-1, 1], or
        ``video_latent`` [B, T, C, h, w] and ``audio_latent`` [B, C, h, w] (scaled KL-VAE latents)."""
        device = self.device
        if "video_latent" in batch and "audio_latent" in batch:
            video_latents = batch["video_latent"].to(device=device, dtype=torch.float32)
            audio_latent = batch["audio_latent"].to(device=device, dtype=torch.float32)
        elif "frames" in batch and "audio_image" in batch:
            if self.vae is None:
                raise DataError("perceptual encoder: the batch holds pixels (frames, audio_image) but no KL-VAE "
                                "was given; pass one, or encode a KL-VAE latent cache instead")
            latents = self.vae.encode_clips(batch)
            video_latents, audio_latent = latents["video_latent"], latents["audio_latent"]
        else:
            raise DataError(f"perceptual encoder: batch keys {sorted(batch)} hold neither pixels "
                            "(frames, audio_image) nor KL-VAE latents (video_latent, audio_latent)")
        video = self.autoencoder.encode_video(video_latents).mode()  # [B, Cv, hv, wv]
        audio = self.autoencoder.encode_audio(audio_latent).mode()  # [B, Ca, ha, wa]
        return {"audio": audio.float(), "video": video.float()}

    def cache_config(self, data: Mapping[str, Any], split: str, clip_seconds: float) -> dict[str, Any]:
        """The cache config (hashed into every shard) describing this encoder and the data."""
        from ..config import to_dict

        config: dict[str, Any] = {
            "encoder": "perceptual",
            "autoencoder_config": to_dict(self.autoencoder.cfg),
            "autoencoder_weights": weights_digest(self.autoencoder),
            "latent": "autoencoder posterior mode",
            "data": dict(data),
            "split": split,
            "clip_seconds": float(clip_seconds),
        }
        if self.vae is not None:
            config["vae_config"] = dict(self.vae.autoencoder.config)
            config["vae_weights"] = weights_digest(self.vae)
        return config


def perceptual_encoder(autoencoder: str | Path, vae: nn.Module | None = None,
                       device: torch.device | str = "cpu") -> PerceptualEncoder:
    """A :class:`PerceptualEncoder` for a trained autoencoder: a ``mmldm train autoencoder``
    checkpoint or a ``save_pretrained`` folder (what ``mmldm cache --autoencoder`` takes)."""
    from ..autoencoder.stage import load_autoencoder

    model, _ = load_autoencoder(autoencoder, device=device)
    return PerceptualEncoder(model.to(device), vae)


def _clip_seconds_of(config: Mapping[str, Any]) -> float | None:
    if config.get("clip_seconds"):
        return float(config["clip_seconds"])
    data = config.get("data")
    if isinstance(data, Mapping) and data.get("num_frames") and data.get("fps"):
        return float(data["num_frames"]) / float(data["fps"])
    return None


def pair_consecutive(items: list[Mapping[str, Any]], clip_seconds: float) -> list[int]:
    """For each item, the index of the item of the same ``source`` starting ``clip_seconds`` earlier, or -1.

    ``items`` are the cache's per-item metadata (``source``, ``start_time``); times match to 1 ms.
    """
    starts: dict[str, dict[int, int]] = defaultdict(dict)
    for i, item in enumerate(items):
        if "source" in item and "start_time" in item:
            starts[item["source"]][round(float(item["start_time"]) * 1000)] = i
    previous = []
    for item in items:
        if "source" not in item or "start_time" not in item:
            previous.append(-1)
            continue
        key = round((float(item["start_time"]) - clip_seconds) * 1000)
        previous.append(starts[item["source"]].get(key, -1))
    return previous


class GeneratorLatentDataset(Dataset):
    """Perceptual-latent items with their previous clip, for generator training.

    Items: ``audio`` [Ca, ha, wa], ``video`` [Cv, hv, wv] (float32), ``prev_audio`` /
    ``prev_video`` (the previous window's latents, zeros if none), ``has_previous``
    (bool), ``class_id`` (int64, -1 unlabelled), ``index`` (int64), ``text`` (str: the clip's caption
    from the dataset manifest, "" without one).

    Args:
        directory: a finished latent cache with keys ``audio`` and ``video``.
        clip_seconds: clip length for pairing (see the module docstring); None: from the cache.
        pair_previous: look up previous clips at all (False: ``has_previous`` is always false).
        scales: ``{"audio": s_a, "video": s_v}``: items are ``latent * scale`` (default 1: the paper
            uses no rescaling; :func:`estimate_latent_scales` gives unit-variance factors).
    """

    def __init__(self, directory: str | Path, clip_seconds: float | None = None, pair_previous: bool = True,
                 scales: Mapping[str, float] | None = None):
        self.cache = LatentCacheDataset(directory)
        self.scales = {key: float((scales or {}).get(key, 1.0)) for key in LATENT_KEYS}
        missing = [key for key in LATENT_KEYS if key not in self.cache.keys]
        if missing:
            raise DataError(f"latent cache {directory} holds {sorted(self.cache.keys)}, not the perceptual "
                            f"latents {list(LATENT_KEYS)}; make it with `mmldm cache --autoencoder DIR`")
        self.shapes = {key: tuple(self.cache.keys[key]["shape"]) for key in LATENT_KEYS}
        items = self.cache.index["items"]
        self.clip_seconds = clip_seconds if clip_seconds is not None else _clip_seconds_of(self.cache.config)
        if pair_previous and self.clip_seconds is None:
            raise DataError(f"latent cache {directory}: its config gives no clip length to pair consecutive "
                            "clips; set data.clip_seconds (or turn previous-clip conditioning off)")
        self.previous = pair_consecutive(items, self.clip_seconds) if pair_previous else [-1] * len(items)

    @property
    def num_with_previous(self) -> int:
        return sum(p >= 0 for p in self.previous)

    def __len__(self) -> int:
        return len(self.cache)

    def _latents(self, item: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {key: item[key].float() * self.scales[key] for key in LATENT_KEYS}

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.cache[i]
        out: dict[str, Any] = self._latents(item)
        j = self.previous[i % len(self)]
        if j >= 0:
            prev = self._latents(self.cache[j])
            out["prev_audio"], out["prev_video"] = prev["audio"], prev["video"]
        else:
            out["prev_audio"], out["prev_video"] = torch.zeros_like(out["audio"]), torch.zeros_like(out["video"])
        out["has_previous"] = torch.tensor(j >= 0)
        out["class_id"] = torch.tensor(int(item.get("class_id", -1)), dtype=torch.long)
        out["index"] = torch.tensor(i % len(self), dtype=torch.long)
        out["text"] = str(item.get("text") or "")
        return out


def class_frequencies(directory: str | Path, num_classes: int) -> tuple[float, ...]:
    """How often each class ``0 .. num_classes - 1`` occurs among the cache's labelled items, as
    fractions summing to 1 (``GenerationConfig.class_prior``); ``()`` when no item has a class
    in that range."""
    counts = [0] * num_classes
    for item in LatentCacheDataset(directory).index["items"]:
        class_id = int(item.get("class_id", -1))
        if 0 <= class_id < num_classes:
            counts[class_id] += 1
    total = sum(counts)
    return tuple(count / total for count in counts) if total else ()


def estimate_latent_scales(directory: str | Path, max_items: int = 1024) -> dict[str, float]:
    """``{"audio": 1 / std, "video": 1 / std}`` of the cached latents (all elements of up to
    ``max_items`` evenly spaced items): factors giving unit-variance latents, as Stable
    Diffusion's 0.18215 does for its VAE. The paper trains on unscaled latents (factor 1).
    """
    cache = LatentCacheDataset(directory)
    missing = [key for key in LATENT_KEYS if key not in cache.keys]
    if missing:
        raise DataError(f"latent cache {directory} holds no perceptual latents {missing}")
    count = min(len(cache), max_items)
    picks = torch.linspace(0, len(cache) - 1, count).round().long().unique().tolist()
    scales = {}
    for key in LATENT_KEYS:
        values = torch.stack([cache[i][key].float() for i in picks])
        std = float(values.std())
        if not std > 0:
            raise DataError(f"latent cache {directory}: the {key} latents are constant (std {std})")
        scales[key] = 1.0 / std
    return scales
