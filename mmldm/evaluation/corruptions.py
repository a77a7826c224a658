"""Damaged copies of real clips: the baselines that show what an FVD / KVD number means.

Corruptions act on decoded uint8 frames [T, H, W, 3] at the clip's own resolution, before an
evaluation protocol resizes them (as a generator's output would be), with strengths set at the
I3D input's scale (its 224-px short side), so a strength means the same damage at any size:

- ``blur``: Gaussian (Pillow's ``GaussianBlur``, whose radius is the standard deviation) of
  ``strength`` px of the 224-px short side, i.e. ``strength * short side / 224`` px here;
- ``noise``: additive Gaussian of std ``strength`` grey levels (of 255), per pixel and
  frame, rounded and clipped;
- ``shuffle``: the frames in a random order (never the identity);
- ``freeze``: the first frame repeated.

Used by ``benchmarks/fvd_sanity.py`` (the FVD sanity table of docs/evaluation.md) and the
Big Buck Bunny recipe's evaluation baselines.
"""

from __future__ import annotations

import numpy as np

I3D_SHORT_SIDE = 224

#: (name, kind, strength): blur sigma in px of the 224-px short side, noise std in grey levels
CORRUPTIONS: tuple[tuple[str, str, float], ...] = (
    ("blur sigma 1", "blur", 1.0),
    ("blur sigma 4", "blur", 4.0),
    ("noise std 8", "noise", 8.0),
    ("noise std 32", "noise", 32.0),
    ("shuffled frames", "shuffle", 0.0),
    ("frozen (first frame)", "freeze", 0.0),
)


def corrupt(frames: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A corrupted copy of a clip (module docstring). Shapes: uint8 [T, H, W, 3] -> same."""
    if kind == "blur":
        from PIL import Image, ImageFilter

        sigma = strength * min(frames.shape[1:3]) / I3D_SHORT_SIDE
        return np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(sigma))) for f in frames])
    if kind == "noise":
        noisy = frames.astype(np.float32) + rng.normal(0.0, strength, frames.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "shuffle":
        order = rng.permutation(len(frames))
        while len(frames) > 1 and np.array_equal(order, np.arange(len(frames))):
            order = rng.permutation(len(frames))
        return frames[order]
    if kind == "freeze":
        return np.repeat(frames[:1], len(frames), axis=0)
    raise ValueError(f"unknown corruption {kind!r}")


__all__ = ["CORRUPTIONS", "I3D_SHORT_SIDE", "corrupt"]
