"""Turning clips into feature vectors: the protocol's video resizing and batched feature nets.

Video path (MM-Diffusion's released evaluator, which MM-LDM follows):

1. ``downsample_to`` (64 in the paper-era protocol, None in "standard"):
   letterbox each frame into a ``downsample_to`` square keeping the aspect:
   scale = min(S / H, S / W), new size (int(H * scale), int(W * scale)),
   bicubic (antialiased only if the protocol says so: torchvision's tensor
   Resize did not antialias before 0.17, the 2023 versions), rounded to
   uint8, zero (black) padding split top/left = pad // 2. This is what the evaluator's dataset transform does
   (torchvision ``Resize(BICUBIC)`` + ``Pad``) before scoring, also for 256 px
   outputs.
2. Bilinear resize (align_corners=False, no antialias) so the short side is
   224 (long side ceil(L * 224 / S)), centre crop 224 x 224
   (offset (size - 224) // 2), then x / 255 * 2 - 1 in [-1, 1]
   (VideoGPT's ``preprocess`` times 2, as the evaluator does).
3. I3D logits averaged over time (400-d).

Every step is on float32 torch tensors, frames kept exactly as decoded
(uint8) until step 1 (the released evaluator round-trips through float and
truncates back to uint8; we do not).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import DataError
from .i3d import InceptionI3d

I3D_RESOLUTION = 224
#: frames converted to float at a time in :func:`preprocess_video`
PREPROCESS_FRAMES = 4


def letterbox(frames: torch.Tensor, size: int, antialias: bool = False) -> torch.Tensor:
    """Aspect-preserving bicubic resize into a black ``size`` square (antialiased if asked).

    Shapes: frames uint8 [T, 3, H, W] -> uint8 [T, 3, size, size].
    """
    height, width = frames.shape[-2:]
    scale = min(size / height, size / width)
    new_h, new_w = int(height * scale), int(width * scale)
    resized = frames
    if (new_h, new_w) != (height, width):
        resized = F.interpolate(
            frames.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=antialias
        ).round_().clamp_(0, 255).to(torch.uint8)
    pad_h, pad_w = size - new_h, size - new_w
    return F.pad(resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def resize_short_side_and_crop(frames: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """Bilinear resize so the short side is ``resolution``, then centre crop.

    Shapes: frames float [T, 3, H, W] -> [T, 3, resolution, resolution].
    """
    height, width = frames.shape[-2:]
    scale = resolution / min(height, width)
    target = (resolution, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), resolution)
    frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False)
    top, left = (target[0] - resolution) // 2, (target[1] - resolution) // 2
    return frames[:, :, top:top + resolution, left:left + resolution]


def preprocess_video(frames: np.ndarray, downsample_to: int | None, resolution: int = I3D_RESOLUTION,
                     antialias: bool = False) -> torch.Tensor:
    """One clip, protocol steps 1-2.

    Shapes: frames uint8 [T, H, W, 3] -> float32 [3, T, resolution, resolution] in [-1, 1].
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"video features: expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    # Both steps work frame by frame, so a few frames at a time give the same numbers while only
    # those few are ever held as floats at the source resolution (177 MB for 16 frames of 720p).
    pieces = []
    for first in range(0, len(frames), PREPROCESS_FRAMES):
        video = rearrange(torch.from_numpy(np.ascontiguousarray(frames[first:first + PREPROCESS_FRAMES])),
                          "t h w c -> t c h w")
        if downsample_to is not None:
            video = letterbox(video, downsample_to, antialias)
        pieces.append(resize_short_side_and_crop(video.float() / 255.0, resolution))
    return rearrange(torch.cat(pieces) * 2.0 - 1.0, "t c h w -> c t h w")


@torch.inference_mode()
def i3d_features(
    model: InceptionI3d,
    clips: Iterable[np.ndarray],
    downsample_to: int | None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    antialias: bool = False,
) -> np.ndarray:
    """I3D features of clips, in order.

    Shapes: each clip uint8 [T, H, W, 3] (same T for all) -> float64 [N, 400].
    """
    out = [
        i3d_batch_features(model, batch, device)
        for batch in _batches((preprocess_video(c, downsample_to, antialias=antialias) for c in clips), batch_size)
    ]
    if not out:
        raise DataError("video features: no clips")
    return np.concatenate(out)


@torch.inference_mode()
def i3d_batch_features(model: InceptionI3d, videos: torch.Tensor, device: torch.device | str = "cpu") -> np.ndarray:
    """I3D features of clips already through :func:`preprocess_video`.

    Shapes: videos float32 [B, 3, T, 224, 224] in [-1, 1] -> float64 [B, 400].
    """
    model = model.to(device).eval()
    return model(videos.to(device)).double().cpu().numpy()


def _batches(items: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
