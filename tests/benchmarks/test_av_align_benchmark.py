"""benchmarks/av_align_baselines.py end to end on a synthetic sounding video with clicks at its motion (no assets)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mmldm.data.media_io import write_av
from mmldm.errors import DataError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def av_benchmark():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import their helpers as `common`
    return importlib.import_module("av_align_baselines")


def events_video(path: Path, seconds: float = 16.0, fps: float = 10.0, sample_rate: int = 16000) -> Path:
    """A square jumping at random frames, each jump with a click: real sync for the benchmark to find."""
    rng = np.random.default_rng(0)
    count = int(seconds * fps)
    jumps = np.flatnonzero(rng.random(count) < 0.2)
    frames = np.full((count, 64, 64, 3), 90, np.uint8)
    audio = np.zeros(int(seconds * sample_rate), np.float32)
    x = 8
    for t in range(count):
        if t in jumps:
            x = 40 if x == 8 else 8
            first = int(t * sample_rate / fps)
            audio[first:first + 400] = 0.5 * rng.standard_normal(400) * np.exp(-np.arange(400) / 80)
        frames[t, 24:40, x:x + 16] = 230
    return write_av(path, frames, audio, fps=fps, sample_rate=sample_rate)


def test_benchmark_finds_the_sync_and_follows_the_shifts(tmp_path, av_benchmark):
    video = events_video(tmp_path / "events.mp4")
    result = av_benchmark.run(video, windows=4, fps=10.0, frames=24, max_side=256, seed=0)
    json.dumps(result)  # JSON-ready
    rows = {row["condition"]: row for row in result["tables"]["baselines"]}
    assert list(rows)[:2] == ["real", "shuffled"] and len(rows) == 2 + len(av_benchmark.SHIFTS)
    assert result["settings"]["windows"] == 4 and result["settings"]["peak_rss_mib"] > 0
    real = rows["real"]
    # Real pairs: every onset near its jump (H.264 specks add a few spurious motion peaks).
    assert real["pooled_offset"] == 0 and real["av_align"] > 0.8 and rows["shuffled"]["av_align"] < 0.4
    late, early = rows["audio late by 2 frames"], rows["audio early by 4 frames"]
    assert late["pooled_offset"] == 2 and early["pooled_offset"] == -4 and late["follows_pct"] == 100.0
    assert late["av_align"] < 0.4 and early["av_align"] < 0.4
    assert "| real |" in av_benchmark.markdown(result)


def test_too_short_a_video_is_a_data_error(tmp_path, av_benchmark):
    video = events_video(tmp_path / "short.mp4", seconds=3.0)
    with pytest.raises(DataError, match="at least 2 are needed"):
        av_benchmark.run(video, windows=4, fps=10.0, frames=24, max_side=256, seed=0)
