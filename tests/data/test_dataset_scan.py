"""The dataset scan on folders as real runs leave them: unfinished files, a file for a folder,
audio shorter than its video, warnings a user reads."""

from __future__ import annotations

import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mmldm.data.config import ClipDataConfig
from mmldm.data.datasets import VideoFolderDataset
from mmldm.data.media_io import write_av
from mmldm.errors import DataError
from mmldm.timing import AVTiming

TIMING = AVTiming(fps=10.0, num_frames=8, sample_rate=16000)


def _clip(path: Path, frames: int = 16) -> Path:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    return write_av(path, video, np.zeros(frames * 1600, np.float32), 10.0, 16000)


def _short_audio_clip(path: Path, frames: int = 32, audio_seconds: float = 1.0) -> Path:
    """An mp4 whose audio track stops after ``audio_seconds`` while its video goes on (an MP3 dub, a cut recording)."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=10)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 7 % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        wave = (0.3 * np.sin(np.arange(int(audio_seconds * 16000)) * 0.1)).astype(np.float32)
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def test_scan_skips_unfinished_and_hidden_files(tmp_path):
    _clip(tmp_path / "a" / "clip.mp4")
    # what a killed `mmldm data synth` / `generate` leaves: hidden temporary files beside the finished ones
    shutil.copy(tmp_path / "a" / "clip.mp4", tmp_path / "a" / ".clip2.x1y2z3.partial.mp4")
    (tmp_path / ".trash").mkdir()
    shutil.copy(tmp_path / "a" / "clip.mp4", tmp_path / ".trash" / "old.mp4")
    dataset = VideoFolderDataset(tmp_path, TIMING, size=32, split="all")
    assert [f.key for f in dataset.files] == ["a/clip.mp4"]


def test_root_that_is_a_file_says_so(tmp_path):
    clip = _clip(tmp_path / "clip.mp4")
    with pytest.raises(DataError, match="is a file, not a dataset folder"):
        VideoFolderDataset(clip, TIMING, size=32, split="all")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"path": "clip.mp4"}\n')
    with pytest.raises(DataError, match="data.manifest"):
        VideoFolderDataset(manifest, TIMING, size=32, split="all")
    with pytest.raises(DataError, match="dataset folder does not exist"):
        VideoFolderDataset(tmp_path / "none", TIMING, size=32, split="all")


def test_audio_shorter_than_video_is_named_and_can_be_skipped(tmp_path):
    _clip(tmp_path / "full.mp4", frames=16)  # 2 windows, audio to the end
    _short_audio_clip(tmp_path / "dubbed.mp4", frames=32, audio_seconds=1.0)  # 4 windows, audio for 1.25 of them
    with pytest.warns(UserWarning, match=r"dubbed\.mp4 \(audio 1\.00 s, video 3\.20 s: 3 of 4 window") as record:
        padded = VideoFolderDataset(tmp_path, TIMING, size=32, split="all")
    assert "skip_short_audio" in str(record[0].message) and "full.mp4" not in str(record[0].message)
    assert len(padded) == 6
    cfg = ClipDataConfig(root=str(tmp_path), fps=10.0, num_frames=8, size=32, skip_short_audio=True)
    with pytest.warns(UserWarning, match="left out 3 window"):
        skipped = cfg.dataset("all")
    assert [(skipped.files[n].key, first) for n, first in skipped.windows] == [
        ("dubbed.mp4", 0), ("full.mp4", 0), ("full.mp4", 8)]
    assert np.abs(skipped[0]["waveform"].numpy()).max() > 0.1  # the dubbed file's window with its audio


def test_dataset_warning_is_one_line_without_source(tmp_path):
    _clip(tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_text("not a video\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VideoFolderDataset(tmp_path, TIMING, size=32, split="all")
    assert len(caught) == 1
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert shown.startswith("mmldm: warning: ") and "bad.mp4" in shown
    assert shown.count("\n") == 1 and ".py" not in shown
