"""Long sounding videos (clip after clip): sync at every clip position and clicks at the seams.

A long video is made of consecutive clips; it stays in sync when every clip-length
window does (not just the whole), and it has no audible seam when the wave steps no
more at a clip boundary than anywhere else (:func:`seam_jumps`). Used by the recipe's
evaluation, the sync benchmarks and the seam tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError


def seam_jumps(wave: Any, seams: Sequence[int], radius: int = 0) -> tuple[float, float]:
    """``(largest step |w[i] - w[i-1]| at a seam, largest step elsewhere)`` of a wave ``[N]``.

    A seam at sample ``s`` is the step from ``s - 1`` to ``s``; ``radius`` > 0 counts the steps
    up to ``radius`` samples either side as the seam's too. Seams at or beyond the end are left
    out; with none, the first value is 0. A seam heard as a click is a step far above the
    signal's own, so the first value must not exceed the second.
    """
    jumps = np.abs(np.diff(np.asarray(wave, dtype=np.float64).reshape(-1)))  # jumps[i - 1] = |w[i] - w[i - 1]|
    near = np.zeros(len(jumps), dtype=bool)
    for seam in seams:
        if 1 <= seam <= len(jumps):
            near[max(0, seam - 1 - radius): seam + radius] = True
    return (float(jumps[near].max()) if near.any() else 0.0), float(jumps[~near].max())


def long_measures(files: list[Path], fps: float, sample_rate: int, clip_frames: int) -> dict[str, Any]:
    """:func:`long_clip_measures` of each long video file, summed up by :func:`long_summary`."""
    from ..data.media_io import read_av

    per_file = []
    for path in files:
        clip = read_av(path, fps=fps, sample_rate=sample_rate)
        per_file.append({"file": path.name, **long_clip_measures(clip.frames, clip.audio, fps, sample_rate,
                                                                 clip_frames)})
    return long_summary(per_file)


def long_summary(per_file: list[dict[str, Any]]) -> dict[str, Any]:
    """The long videos' numbers: the worst whole video, every clip-length window (median, worst,
    share within 1 semitone), the median over the videos of their k-th window (does sync hold
    as a video goes on?), and the seam test; ``per_file`` items as :func:`long_clip_measures`."""
    if not per_file:
        raise ConfigError("long videos: none to measure")
    all_errors = np.asarray([e for item in per_file for e in item["sync_error_per_window"]])
    positions = min(len(item["sync_error_per_window"]) for item in per_file)
    return {"clips": len(per_file), "per_clip": per_file,
            "sync_error_max_clip": max(item["sync_error"] for item in per_file),
            "sync_error_max_window": float(all_errors.max()), "sync_error_median": float(np.median(all_errors)),
            "windows_within_1_semitone_pct": 100.0 * float(np.mean(all_errors <= 1.0)),
            "sync_error_median_per_position": [
                float(np.median([item["sync_error_per_window"][k] for item in per_file])) for k in range(positions)],
            "seam_jump_max": max(item["max_seam_jump"] for item in per_file),
            "inside_jump_max": max(item["max_inside_jump"] for item in per_file)}


def long_clip_measures(frames: Any, audio: Any, fps: float, sample_rate: int, clip_frames: int) -> dict[str, Any]:
    """Sync error of the whole long video (median over all its frames, as for one clip) and of
    every clip-length window, and its audio seam test.

    Shapes: ``frames`` uint8 [T, H, W, 3] or float [T, 3, H, W] in [-1, 1]; ``audio`` [N].
    Seams: the largest sample-to-sample jump |w[s] - w[s-1]| at the clip boundaries
    (s = k * samples per clip, k >= 1) against the largest jump anywhere else; a seam
    heard as a click is a jump far above the signal's own.
    """
    from .shapes_measures import sync_error

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    samples_per_clip = round(clip_frames * sample_rate / fps)
    windows = len(frames) // clip_frames
    if windows < 1:
        raise ConfigError(f"long clip: {len(frames)} frames hold no whole {clip_frames}-frame window")
    errors = [sync_error(frames[k * clip_frames:(k + 1) * clip_frames],
                         audio[k * samples_per_clip:(k + 1) * samples_per_clip], sample_rate, fps)
              for k in range(windows)]
    at_seams, inside = seam_jumps(audio, [k * samples_per_clip for k in range(1, windows)])
    return {"windows": windows, "sync_error": sync_error(frames, audio, sample_rate, fps),
            "sync_error_per_window": [float(e) for e in errors],
            "max_seam_jump": at_seams, "max_inside_jump": inside}


__all__ = ["long_clip_measures", "long_measures", "long_summary", "seam_jumps"]
