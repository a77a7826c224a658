"""AV-Align and the A/V offset estimate on real footage: real pairs against the baselines.

    python benchmarks/av_align_baselines.py                          # Big Buck Bunny, 64 windows, 16 frames at 10 fps
    python benchmarks/av_align_baselines.py --fps 24 --frames 38     # the film's own rate, 1.6 s windows
    python benchmarks/av_align_baselines.py --frames 64 --out bbb-av-align-64.json

From a real sounding video (default ``assets/bbb/bbb.mp4``, ``make assets``) it reads
``--windows`` seeded random, non-overlapping windows of ``--frames`` frames at ``--fps``
(``mmldm.data.media_io.read_av``, source resolution, audio at 22.05 kHz), each with 8 frames
of context on both sides, and scores (``mmldm.evaluation.av_align``):

- real pairs: each window's own sound;
- shuffled pairs: the sound of another window (one random cycle through the windows);
- audio late by k frames: the sound the film plays k frames earlier (k = 1, 2, 4, 8, and
  -4: early), cut from the context, so every shifted clip is still real, full sound.

For each: mean AV-Align (one-to-one matching, and the released script's count), the
per-clip offset estimates' median and the pooled offset (argmax of the mean correlation
curve over the windows). A shift should lower AV-Align and move the offset by k.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, PeakMemory, finish, record, render, run_script

from mmldm.errors import ConfigError, DataError, check_positive_int

DEFAULT_VIDEO = Path(__file__).resolve().parents[1] / "assets" / "bbb" / "bbb.mp4"
MARGIN = 8  # frames of context each side: the largest shift
SHIFTS = (1, 2, 4, 8, -4)
COLUMNS: list[Column] = [
    ("pairs", "condition", ""), ("expected offset", "expected", ""), ("clips (with events)", "clips", ""),
    ("AV-Align", "av_align", ".3f"), ("AV-Align, released count", "av_align_released", ".3f"),
    ("offset median (per clip)", "offset_median", "+.1f"), ("per-clip offset = pooled real + k %", "follows_pct", ".0f"),
    ("pooled offset", "pooled_offset", ""), ("pooled correlation", "pooled_correlation", ".3f"),
]


def _windows(duration: float, fps: float, frames: int, count: int, seed: int) -> list[int]:
    """Start frames of ``count`` seeded random windows, each with MARGIN frames free on both sides."""
    slot = frames + 2 * MARGIN
    slots = int(duration * fps) // slot
    if slots < 2:
        raise DataError(f"the video holds {slots} window(s) of {slot} frames at {fps:g} fps; at least 2 are needed")
    chosen = np.sort(np.random.default_rng(seed).choice(slots, min(count, slots), replace=False))
    return [int(k) * slot + MARGIN for k in chosen]


def run(video: Path, windows: int, fps: float, frames: int, max_side: int, seed: int) -> dict[str, Any]:
    from mmldm.data.media_io import probe, read_av
    from mmldm.evaluation import av_align as avs
    from mmldm.evaluation.shapes_measures import shuffled_pairs

    check_positive_int(windows, "--windows")
    if frames < 9:
        raise ConfigError(f"--frames {frames}: at least 9 frames are needed")
    info = probe(video)
    starts = _windows(info.duration, fps, frames, windows, seed)
    rate = avs.ONSET_SAMPLE_RATE
    per_frame = rate / fps
    samples = int(round(frames * per_frame))
    videos, sounds = [], []
    began = time.perf_counter()
    with PeakMemory(torch.device("cpu")) as peak:
        for start in starts:
            clip = read_av(video, fps=fps, sample_rate=rate, start=(start - MARGIN) / fps,
                           duration=(frames + 2 * MARGIN) / fps)
            videos.append(avs.video_events(clip.frames[MARGIN:MARGIN + frames], fps, max_side))
            sounds.append(clip.audio)
            del clip

        def sound(i: int, late: int) -> Any:
            first = int(round((MARGIN - late) * per_frame))  # the film's sound `late` frames earlier
            return avs.audio_events(sounds[i][first:first + samples], rate, fps, frames)

        def row(condition: str, expected: str, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
            measures = [avs.combine(v, a) for v, a in pairs]
            released = [avs.iou_score(a.onsets, v.peaks, fps, "released") for v, a in pairs]
            folder = avs.aggregate(measures)
            return {"condition": condition, "expected": expected,
                    "clips": f"{folder['clips']} ({folder['clips_with_events']})",
                    "av_align": folder["av_align_mean"], "av_align_released": float(np.nanmean(released)),
                    "offset_median": folder["offset_frames_median"], "pooled_offset": folder["pooled_offset_frames"],
                    "pooled_correlation": folder["pooled_offset_correlation"],
                    "offsets": [m["offset_frames"] for m in measures],
                    "mean_correlation_by_lag": folder["mean_correlation_by_lag"]}

        own = [sound(i, 0) for i in range(len(starts))]
        rows = [row("real", "base", list(zip(videos, own)))]
        rows.append(row("shuffled", "none", shuffled_pairs(list(zip(videos, own)))))
        for late in SHIFTS:
            label = f"audio {'late' if late > 0 else 'early'} by {abs(late)} frame{'s' if abs(late) > 1 else ''}"
            rows.append(row(label, f"base {late:+d}", [(v, sound(i, late)) for i, v in enumerate(videos)]))
    base = rows[0]["pooled_offset"]
    for r in rows:
        k = 0 if r["expected"] == "base" else (int(r["expected"].split()[1]) if r["expected"] != "none" else None)
        r["follows_pct"] = None if k is None else 100.0 * float(np.mean(np.asarray(r["offsets"]) == base + k))
    settings = {"video": str(video), "windows": len(starts), "fps": fps, "frames": frames,
                "seconds_per_window": frames / fps, "max_side": max_side, "seed": seed, "margin_frames": MARGIN,
                "source": f"{info.width}x{info.height} {info.fps:g} fps, {info.sample_rate} Hz",
                "onset_sample_rate": rate, "starts_s": [s / fps for s in starts],
                "wall_s": round(time.perf_counter() - began, 1), "peak_rss_mib": round(peak.peak_bytes / 2**20)}
    return record("av_align_baselines", torch.device("cpu"), settings, {"baselines": rows})


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (f"AV-Align baselines on {Path(s['video']).name} ({s['source']}): {s['windows']} windows of "
            f"{s['frames']} frames at {s['fps']:g} fps ({s['seconds_per_window']:.1f} s), flow at <= {s['max_side']} px; "
            f"offsets in frames, + = audio late; {s['wall_s']} s, peak RSS {s['peak_rss_mib']} MiB")
    return head + "\n\n" + render(result, [("", "baselines", COLUMNS)]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="a real sounding video (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=64, help="windows scored (default 64)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate the windows are read at (default 10)")
    parser.add_argument("--frames", type=int, default=16, help="frames per window (default 16, the protocol's clip)")
    parser.add_argument("--max-side", type=int, default=256, help="optical flow on frames at most this large")
    parser.add_argument("--seed", type=int, default=0, help="seed of the window choice and the shuffle")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    if not args.video.is_file():
        raise DataError(f"{args.video}: not found (Big Buck Bunny comes with `make assets`)")
    result = run(args.video, args.windows, args.fps, args.frames, args.max_side, args.seed)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
