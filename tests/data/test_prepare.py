"""``mmldm data prepare``: long videos of any kind -> in-sync mp4 clips and manifests that the
datasets read; streamed reading in bounded memory; time and source splits without overlap; the
result does not depend on the worker count and survives ``kill -9``; bad input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mmldm.cli.main import main
from mmldm.data.media_io import iter_windows, probe, read_av
from mmldm.data.prepare import (
    MANIFEST_NAME,
    SETTINGS_NAME,
    SKIPPED_NAME,
    STATE_FOLDER,
    TEST_MANIFEST_NAME,
    PrepareConfig,
    prepare,
    read_journal,
)
from mmldm.errors import ConfigError, MMLDMWarning

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent)]
from small_fs import mounted_tmpfs

BBB = REPO / "assets" / "bbb" / "bbb.mp4"

# --------------------------------------------------------------------------- synthetic sources
# Source frame k shows k in two flat halves (left: k // 16, right: k % 16, 15 grey levels a
# digit), so a prepared frame tells which source frame it came from; the audio has a click at
# every CLICK_TIMES second, so a prepared clip tells where its audio came from.

SRC_H, SRC_W = 48, 64  # 4:3, letterboxed to 32 x 24 inside a 32 x 32 clip
LEVEL_STEP = 15
CLICK = 0.9


def click_times(seconds: float) -> list[float]:
    """Clicks 0.8 s apart, 0.05 s away from every multiple of 0.1 s (clip boundaries)."""
    return [0.35 + 0.8 * i for i in range(int((seconds - 0.35) / 0.8) + 1) if 0.35 + 0.8 * i < seconds]


def numbered_frame(k: int) -> np.ndarray:
    frame = np.empty((SRC_H, SRC_W, 3), np.uint8)
    frame[:, : SRC_W // 2] = 8 + LEVEL_STEP * ((k // 16) % 16)
    frame[:, SRC_W // 2:] = 8 + LEVEL_STEP * (k % 16)
    return frame


def frame_number(frame: np.ndarray) -> int:
    """The k of a 32 x 32 letterboxed numbered frame (rows 4..27 hold the picture)."""
    left, right = frame[8:24, 3:13].mean(), frame[8:24, 19:29].mean()
    return 16 * int(round((left - 8) / LEVEL_STEP)) + int(round((right - 8) / LEVEL_STEP))


def make_source(path: Path, seconds: float = 4.0, fps: Fraction = Fraction(24), acodec: str | None = "aac",
                rate: int = 44100, layout: str = "stereo", audio: str = "clicks", audio_seconds: float | None = None,
                times_ms: list[int] | None = None, noise: bool = False) -> Path:
    """A video of numbered frames at ``fps`` (or shown from ``times_ms``: variable frame rate) with
    ``audio_seconds`` (default: as long as the video) of clicks or zeros, or no audio track.
    ``noise``: random frames instead (clips that do not compress)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = len(times_ms) if times_ms is not None else int(round(seconds * fps))
    audio_seconds = seconds if audio_seconds is None else audio_seconds
    wave = np.zeros(int(round(audio_seconds * rate)), np.float32)
    if audio == "clicks":
        for t in click_times(audio_seconds):
            wave[int(round(t * rate))] = CLICK
    with av.open(str(path), "w") as container:
        vrate = Fraction(1000) if times_ms is not None else fps
        vstream = container.add_stream("libx264", rate=vrate)
        vstream.width, vstream.height, vstream.pix_fmt = SRC_W, SRC_H, "yuv420p"
        vstream.options = {"g": "12"}  # key frames every 12 frames: seeks land near where asked
        if times_ms is not None:
            vstream.codec_context.time_base = Fraction(1, 1000)
        astream = None
        if acodec is not None:
            astream = container.add_stream(acodec, rate=rate)
            astream.layout = layout
        for k in range(count):
            picture = rng.integers(0, 256, (SRC_H, SRC_W, 3), dtype=np.uint8) if noise else numbered_frame(k)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = (times_ms[k], Fraction(1, 1000)) if times_ms is not None else (k, 1 / vrate)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            channels = len(astream.layout.channels)
            step = astream.codec_context.frame_size or 1024
            for first in range(0, len(wave), step):
                chunk = np.ascontiguousarray(np.repeat(wave[None, first:first + step], channels, axis=0))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = rate, first, Fraction(1, rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def cfr(fps: Fraction):
    """Source frame on screen at ``t`` seconds of a constant-rate source."""
    return lambda t: int(Fraction(t).limit_denominator(10**6) * fps + Fraction(1, 10**6))


def vfr(times_ms: list[int]):
    return lambda t: max(k for k, ms in enumerate(times_ms) if ms <= t * 1000 + 1e-6)


def assert_clip_is_the_source(clip: Path, start: float, frame_at, sample_rate: int, clicks: list[float],
                              tolerance: int = 2) -> None:
    """Every frame of ``clip`` is the source frame on screen at its time and every click of the
    source inside the clip sits at its sample (``tolerance`` samples)."""
    decoded = read_av(clip, fps=10.0, sample_rate=sample_rate)
    got = [frame_number(frame) for frame in decoded.frames]
    assert got == [frame_at(start + i / 10) for i in range(decoded.num_frames)], clip
    level = np.abs(decoded.audio)
    inside = [t for t in clicks if start <= t < start + decoded.duration]
    for t in inside:
        expected = int(round((t - start) * sample_rate))
        lo = max(0, expected - 50)
        assert abs(lo + int(np.argmax(level[lo:expected + 50])) - expected) <= tolerance, (clip, t)
    if inside:  # nothing else as loud as a click
        peaks = np.flatnonzero(level > 0.5 * level.max())
        assert all(min(abs(p - (t - start) * sample_rate) for t in inside) <= 50 for p in peaks), clip
    else:
        assert level.max() < 0.05, clip


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def result_files(out: Path) -> dict[str, bytes]:
    """The clips and manifests of a prepared folder (what a reader uses), by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (SETTINGS_NAME, "lock")}


def partial_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and ".partial" in p.name]


SMALL = {"fps": 10.0, "num_frames": 8, "size": 32, "sample_rate": 16000}


# --------------------------------------------------------------------------- streaming reads


@pytest.mark.parametrize("rate", [44100, 11025])  # resampler context of 20 ms and of 40 ms (ratio 640/441)
def test_streamed_windows_equal_read_av(tmp_path, rate):
    src = make_source(tmp_path / "ntsc.mp4", seconds=5.0, fps=Fraction(30000, 1001), rate=rate)
    starts = [0, 8, 16, 31]  # overlapping, and one past the 1 s after which read_av seeks
    windows = list(iter_windows(src, starts, 16, fps=10.0, sample_rate=16000, size=32))
    assert [w.start_frame for w in windows] == starts
    for window in windows:
        clip = read_av(src, fps=10.0, sample_rate=16000, size=32, start=window.start_frame / 10, duration=1.6)
        np.testing.assert_array_equal(window.frames, clip.frames)
        # read_av seeks for the last one, the stream decodes through: AAC output differs by float rounding
        np.testing.assert_allclose(window.audio, clip.audio, atol=1e-5)
        assert window.audio_coverage == 1.0 and window.start_time == pytest.approx(window.start_frame / 10)


def test_streaming_memory_does_not_grow_with_the_source(tmp_path):
    def peak(seconds: float) -> int:
        src = make_source(tmp_path / f"{seconds:g}.mp4", seconds=seconds)
        tracemalloc.start()
        count = sum(1 for _ in iter_windows(src, range(0, int(seconds * 10) - 15, 16), 16, size=32))
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == int(seconds * 10) // 16
        return peak_bytes

    short, long = peak(8.0), peak(40.0)
    # read_av of the 40 s traces 23 MB (frames, 16 kHz audio and the 44.1 kHz track); the stream holds a
    # clip, a second of audio and what the resampler and PyAV's frame conversion allocate (1.5 MB here)
    assert long < 3e6 and long < 1.2 * short + 100e3, (short, long)


# --------------------------------------------------------------------------- the dataset


def test_prepare_writes_in_sync_clips_and_manifests_the_datasets_read(tmp_path):
    from mmldm.data.datasets import VideoFolderDataset
    from mmldm.timing import AVTiming

    src = tmp_path / "src"
    make_source(src / "dogs" / "a.mp4", seconds=6.0)
    make_source(src / "cats" / "b.mp4", seconds=6.0, fps=Fraction(25), rate=48000, layout="mono")
    out = tmp_path / "out"
    summary = prepare([src], out, PrepareConfig(**SMALL, test_fraction=0.25), class_from_folder=True)

    train, test = manifest(out / MANIFEST_NAME), manifest(out / TEST_MANIFEST_NAME)
    # 60 frames per source: train clips end by frame 45 (0, 8, .., 32), test clips start there (45)
    assert [(r["path"], r["start_frame"]) for r in train] == \
        [(f"train/{key}/{s:07d}.mp4", s) for key in ("cats/b", "dogs/a") for s in (0, 8, 16, 24, 32)]
    assert [r["path"] for r in test] == ["test/cats/b/0000045.mp4", "test/dogs/a/0000045.mp4"]
    assert summary.clips == {"train": 10, "test": 2} and summary.sources_used == 2 and summary.written == 12
    for record in train + test:
        assert record["class_id"] == (0 if "cats" in record["path"] else 1)
        assert record["class_name"] == ("cats" if "cats" in record["path"] else "dogs")
        assert record["source"] == str((src / record["path"].split("/")[1] / (record["path"].split("/")[2] + ".mp4"))
                                       .resolve())
        assert record["start"] == pytest.approx(record["start_frame"] / 10)
        assert record["audio_complete"] is True and record["silent"] is False and record["audio_rms"] > 1e-3
        info = probe(out / record["path"])
        assert (info.width, info.height, info.num_frames, info.fps) == (32, 32, 8, 10.0)
        assert (info.video_codec, info.audio_codec, info.sample_rate, info.channels) == ("h264", "aac", 16000, 1)
        fps = Fraction(25) if "cats" in record["path"] else Fraction(24)
        assert_clip_is_the_source(out / record["path"], record["start"], cfr(fps), 16000, click_times(6.0))
    for key in ("cats/b", "dogs/a"):  # no test clip overlaps a training clip
        assert max(r["start_frame"] + 8 for r in train if key in r["path"]) <= \
            min(r["start_frame"] for r in test if key in r["path"])
    assert not (out / SKIPPED_NAME).exists() and not partial_files(out)
    assert json.loads((out / SETTINGS_NAME).read_text())["complete"] is True
    assert not (out / "test" / MANIFEST_NAME).exists()  # DIR/test reads as a plain folder of videos

    timing = AVTiming(fps=10.0, num_frames=8, sample_rate=16000)
    data = VideoFolderDataset(out, timing, size=32, split="all")  # DIR/manifest.jsonl: the training clips
    assert len(data) == 10 and {f.class_id for f in data.files} == {0, 1}
    assert {f.key.split("/")[0] for f in data.files} == {"train"}
    item = data[3]
    assert tuple(item["frames"].shape) == (8, 3, 32, 32) and tuple(item["waveform"].shape) == (12800,)
    held_out = VideoFolderDataset(out, timing, size=32, split="all", manifest=TEST_MANIFEST_NAME)
    assert len(held_out) == 2 and sorted(f.class_id for f in held_out.files) == [0, 1]


def test_longer_clips_hold_whole_windows_and_hop_overlaps_them(tmp_path):
    from mmldm.data.datasets import VideoFolderDataset
    from mmldm.timing import AVTiming

    src = make_source(tmp_path / "film.mp4", seconds=6.0)
    out = tmp_path / "out"
    prepare([src], out, PrepareConfig(**SMALL, clip_seconds=1.6, hop_seconds=0.8))
    records = manifest(out / MANIFEST_NAME)
    assert [r["start_frame"] for r in records] == [0, 8, 16, 24, 32, 40] and {r["num_frames"] for r in records} == {16}
    for record in records:
        assert_clip_is_the_source(out / record["path"], record["start"], cfr(Fraction(24)), 16000, click_times(6.0))
    data = VideoFolderDataset(out, AVTiming(fps=10.0, num_frames=8, sample_rate=16000), size=32, split="all")
    assert len(data) == 12  # two windows per clip: the second one has a previous clip (continuation)
    assert not (out / TEST_MANIFEST_NAME).exists()


def test_classes_from_a_class_map(tmp_path):
    src = tmp_path / "src"
    for name in ("x1", "x2", "y1"):
        make_source(src / "clips" / f"{name}.mp4", seconds=0.8)
    class_map = tmp_path / "classes.json"
    class_map.write_text(json.dumps({"clips/x1": "rain", "x2.mp4": "rain", "y1": "birds"}))  # key, name, stem
    prepare([src], tmp_path / "out", PrepareConfig(**SMALL), class_map=class_map)
    records = manifest(tmp_path / "out" / MANIFEST_NAME)
    assert [(r["path"], r["class_id"], r["class_name"]) for r in records] == [
        ("train/clips/x1/0000000.mp4", 1, "rain"), ("train/clips/x2/0000000.mp4", 1, "rain"),
        ("train/clips/y1/0000000.mp4", 0, "birds")]
    assert json.loads((tmp_path / "out" / SETTINGS_NAME).read_text())["classes"] == ["birds", "rain"]

    class_map.write_text(json.dumps({"x1": "rain", "x2": 3, "y1": "birds"}))
    with pytest.raises(ConfigError, match="class labels mix integer ids and names"):
        prepare([src], tmp_path / "mixed", PrepareConfig(**SMALL), class_map=class_map)
    class_map.write_text(json.dumps({"x1": "rain"}))
    with pytest.raises(ConfigError, match=r"classes.json: no class for source .*x2.mp4"):
        prepare([src], tmp_path / "missing", PrepareConfig(**SMALL), class_map=class_map)
    with pytest.raises(ConfigError, match="--class-from-folder needs every source inside a class folder"):
        prepare([src / "clips" / "x1.mp4"], tmp_path / "loose", PrepareConfig(**SMALL), class_from_folder=True)
    assert not any((tmp_path / name).exists() for name in ("mixed", "missing", "loose"))


def test_split_by_source_holds_out_whole_files(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        make_source(src / f"{name}.mp4", seconds=2.0)
    cfg = PrepareConfig(**SMALL, test_fraction=0.34, split="source")
    prepare([src], tmp_path / "one", cfg)
    train, test = manifest(tmp_path / "one" / MANIFEST_NAME), manifest(tmp_path / "one" / TEST_MANIFEST_NAME)
    test_sources = {r["source"] for r in test}
    assert len(test_sources) == 1 and not test_sources & {r["source"] for r in train}
    assert len(test) == 2 and len(train) == 4
    # the same choice whatever order the files are given in
    prepare([src / "c.mp4", src / "b.mp4", src / "a.mp4"], tmp_path / "two", cfg)
    assert {r["source"] for r in manifest(tmp_path / "two" / TEST_MANIFEST_NAME)} == test_sources


# --------------------------------------------------------------------------- inputs of any kind

KINDS = {
    "ntsc-aac-48k-mono.mp4": {"fps": Fraction(30000, 1001), "rate": 48000, "layout": "mono"},
    "film-mp3-44k.mp4": {"fps": Fraction(24000, 1001), "acodec": "libmp3lame"},
    "sixty-opus-48k.mkv": {"fps": Fraction(60), "acodec": "libopus", "rate": 48000},
    "surround-aac-48k-5.1.mp4": {"fps": Fraction(25), "rate": 48000, "layout": "5.1"},
    "low-rate-aac-8k.mp4": {"rate": 8000, "layout": "mono"},
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_any_frame_rate_channel_count_rate_and_codec(tmp_path, name):
    kind = KINDS[name]
    src = make_source(tmp_path / name, seconds=3.2, **kind)
    out = tmp_path / "out"
    prepare([src], out, PrepareConfig(**SMALL))
    records = manifest(out / MANIFEST_NAME)
    assert [r["start_frame"] for r in records] == [0, 8, 16, 24]
    for record in records:
        assert record["audio_complete"] is True
        assert_clip_is_the_source(out / record["path"], record["start"], cfr(kind["fps"] if "fps" in kind else
                                  Fraction(24)), 16000, click_times(3.2), tolerance=3)


def test_variable_frame_rate_source(tmp_path):
    times = [0, 30, 90, 100, 180, 250, 400, 410, 420, 600, 700, 900, 1000, 1250, 1300, 1400, 1650, 1700]
    times += [1750 + 40 * i for i in range(40)]  # then 25 fps to 3.31 s
    src = make_source(tmp_path / "vfr.mp4", times_ms=times, seconds=3.35, rate=22050, layout="mono")
    out = tmp_path / "out"
    prepare([src], out, PrepareConfig(**SMALL))
    records = manifest(out / MANIFEST_NAME)
    assert [r["start_frame"] for r in records] == [0, 8, 16, 24]
    for record in records:
        assert_clip_is_the_source(out / record["path"], record["start"], vfr(times), 16000, click_times(3.35))


def test_silent_track_is_flagged_and_min_audio_rms_leaves_it_out(tmp_path):
    src = tmp_path / "src"
    make_source(src / "silent.mp4", seconds=1.6, audio="zeros")
    make_source(src / "loud.mp4", seconds=1.6)
    prepare([src], tmp_path / "all", PrepareConfig(**SMALL))
    records = manifest(tmp_path / "all" / MANIFEST_NAME)
    assert [(r["path"].split("/")[1], r["silent"]) for r in records] == [("loud", False)] * 2 + [("silent", True)] * 2
    assert all(r["audio_rms"] == 0.0 for r in records if r["silent"])

    summary = prepare([src], tmp_path / "loud", PrepareConfig(**SMALL, min_audio_rms=1e-3))
    assert [r["path"].split("/")[1] for r in manifest(tmp_path / "loud" / MANIFEST_NAME)] == ["loud", "loud"]
    assert summary.skipped_quiet == 2
    assert not (tmp_path / "loud" / "train" / "silent").exists()


def test_the_summary_line_says_what_was_left_out_and_why(tmp_path, capsys):
    short = make_source(tmp_path / "short" / "short-audio.mp4", seconds=4.0, audio_seconds=2.0)
    silent = make_source(tmp_path / "silent" / "silent.mp4", seconds=1.6, audio="zeros")
    small = ["--num-frames", "8", "--size", "32", "--no-progress"]
    assert main(["data", "prepare", str(short), "--out", str(tmp_path / "a"), *small]) == 0
    line = capsys.readouterr().out.strip()  # 3 of its 5 windows reach past its 2 s of audio
    assert "\n" not in line and line.endswith(
        "; left out 3 reaching past the end of their source's audio (--incomplete-audio flag keeps them)")
    assert main(["data", "prepare", str(short), str(silent), "--out", str(tmp_path / "b"), "--min-audio-rms",
                 "0.001", *small]) == 0
    # the two windows wholly past the end of the audio are silent: the loudness check, which comes first,
    # takes them with the silent source's two; the one with 0.4 s of sound reaches past the audio's end
    assert capsys.readouterr().out.strip().endswith(
        "; left out 1 reaching past the end of their source's audio (--incomplete-audio flag keeps them) "
        "and 4 quieter than --min-audio-rms 0.001")
    assert main(["data", "prepare", str(silent), "--out", str(tmp_path / "c"), *small]) == 0
    assert "left out" not in capsys.readouterr().out  # silent clips are kept (flagged) by default


@pytest.mark.parametrize("policy", ["skip", "flag"])
def test_audio_shorter_than_the_video(tmp_path, policy):
    src = make_source(tmp_path / "short-audio.mp4", seconds=4.0, audio_seconds=2.0)
    out = tmp_path / "out"
    summary = prepare([src], out, PrepareConfig(**SMALL, incomplete_audio=policy))
    records = manifest(out / MANIFEST_NAME)
    # clips of [0, 0.8), [0.8, 1.6) have all their audio, [1.6, 2.4) lacks 0.4 s, later ones all of it
    complete = [r["start_frame"] for r in records if r["audio_complete"]]
    assert complete == [0, 8]
    if policy == "skip":
        assert [r["start_frame"] for r in records] == [0, 8] and summary.skipped_audio == 3
    else:
        assert [r["start_frame"] for r in records] == [0, 8, 16, 24, 32] and summary.flagged == 3
        late = read_av(out / records[-1]["path"], sample_rate=16000)
        assert not late.audio.any()  # silence where the source has no audio


def test_audio_longer_than_the_video(tmp_path):
    src = make_source(tmp_path / "long-audio.mp4", seconds=2.4, audio_seconds=4.0)
    out = tmp_path / "out"
    prepare([src], out, PrepareConfig(**SMALL))
    records = manifest(out / MANIFEST_NAME)
    assert [r["start_frame"] for r in records] == [0, 8, 16] and all(r["audio_complete"] for r in records)
    for record in records:
        assert_clip_is_the_source(out / record["path"], record["start"], cfr(Fraction(24)), 16000, click_times(4.0))


def test_a_source_without_audio_is_skipped_and_listed(tmp_path, capsys):
    src = tmp_path / "src"
    make_source(src / "good.mp4", seconds=1.6)
    mute = make_source(src / "mute.mp4", seconds=1.6, acodec=None)
    out = tmp_path / "out"
    with pytest.warns(MMLDMWarning) as warned:
        assert main(["data", "prepare", str(src), "--out", str(out), "--num-frames", "8", "--size", "32",
                     "--no-progress"]) == 0
    assert len(warned) == 1
    line = str(warned[0].message)
    assert line.startswith("skipped 1 source(s)") and "\n" not in line
    assert f"{mute} (no audio track)" in line and str(out / SKIPPED_NAME) in line
    assert capsys.readouterr().out.startswith(f"prepared 2 clips from 1 source(s): train 2 ({out / MANIFEST_NAME}); "
                                              "wrote 2 in ")
    assert manifest(out / SKIPPED_NAME) == [{"source": str(mute), "reason": "no audio track"}]
    assert [r["path"] for r in manifest(out / MANIFEST_NAME)] == ["train/good/0000000.mp4", "train/good/0000008.mp4"]


# --------------------------------------------------------------------------- workers, resume


def test_the_result_does_not_depend_on_the_worker_count(tmp_path):
    src = tmp_path / "src"
    make_source(src / "a.mp4", seconds=4.0)
    make_source(src / "b.mp4", seconds=4.0, fps=Fraction(30000, 1001), rate=48000)
    cfg = PrepareConfig(**SMALL, test_fraction=0.2, chunk_seconds=0.8)  # a piece of work per clip
    prepare([src], tmp_path / "one", cfg, workers=1)
    prepare([src], tmp_path / "two", cfg, workers=2)
    one, two = result_files(tmp_path / "one"), result_files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len([n for n in one if n.endswith(".mp4")]) == 10
    assert [n for n in one if one[n] != two[n]] == []


def _journal_lines(out: Path) -> int:
    folder = out / STATE_FOLDER / "journal"
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def _assert_only_complete_clips_listed(out: Path, reference: dict[str, bytes]) -> None:
    for name in (MANIFEST_NAME, TEST_MANIFEST_NAME):
        if (out / name).exists():
            for record in manifest(out / name):
                assert (out / record["path"]).read_bytes() == reference[record["path"]]
    for clip in out.rglob("*.mp4"):  # a clip under its own name is always complete
        if ".partial" not in clip.name:
            assert clip.read_bytes() == reference[clip.relative_to(out).as_posix()]


def test_kill_9_at_any_moment_then_resume_equals_a_straight_run(tmp_path):
    from prepare_kill_worker import CONFIG

    src = make_source(tmp_path / "film.mp4", seconds=8.0)
    prepare([src], tmp_path / "straight", CONFIG)
    reference = result_files(tmp_path / "straight")
    assert len([n for n in reference if n.endswith(".mp4")]) == 20

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{REPO}"}
    kept: dict[Path, tuple[int, int]] = {}
    for kill_after, extra in ((3, 0.0), (9, 0.07), (14, 0.13)):  # journal lines before the kill, then a bit more
        run = subprocess.Popen([sys.executable, str(HERE / "prepare_kill_worker.py"), str(src), str(out), "0.2"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _journal_lines(out) < kill_after:
            assert run.poll() is None, run.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the worker never got that far"
            time.sleep(0.01)
        time.sleep(extra)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert run.returncode == -signal.SIGKILL
        _assert_only_complete_clips_listed(out, reference)
        for clip, (inode, mtime) in kept.items():  # what was finished stays as it was
            assert (clip.stat().st_ino, clip.stat().st_mtime_ns) == (inode, mtime)
        kept.update({clip: (clip.stat().st_ino, clip.stat().st_mtime_ns) for clip in out.rglob("*.mp4")
                     if ".partial" not in clip.name})

    summary = prepare([src], out, CONFIG)
    assert result_files(out) == reference and not partial_files(out)
    assert summary.written == 20 - len(kept)
    for clip, (inode, mtime) in kept.items():
        assert (clip.stat().st_ino, clip.stat().st_mtime_ns) == (inode, mtime)


def test_resume_repairs_a_torn_journal_line_and_keeps_an_unlisted_finished_clip(tmp_path):
    src = make_source(tmp_path / "film.mp4", seconds=3.2)
    out = tmp_path / "out"
    cfg = PrepareConfig(**SMALL, chunk_seconds=1.6)
    prepare([src], out, cfg)
    reference = result_files(out)
    journal = max((out / STATE_FOLDER / "journal").glob("*.jsonl"))  # the second piece: clips 16 and 24
    lines = journal.read_bytes().splitlines(keepends=True)
    # a kill between a clip's rename and its journal line, then one in the middle of writing a line
    journal.write_bytes(b"".join(lines[:-2]) + lines[-2][:17])
    (out / MANIFEST_NAME).unlink()
    unlisted = out / "train" / "film" / "0000024.mp4"
    before = (unlisted.stat().st_ino, unlisted.stat().st_mtime_ns)
    summary = prepare([src], out, cfg)
    assert result_files(out) == reference and summary.written == 0
    assert (unlisted.stat().st_ino, unlisted.stat().st_mtime_ns) == before
    assert read_journal(journal)[-1] == {"done": True, "missing": 0, "error": None}


def test_resume_refuses_other_settings_and_foreign_folders(tmp_path):
    src = make_source(tmp_path / "film.mp4", seconds=1.6)
    out = tmp_path / "out"
    prepare([src], out, PrepareConfig(**SMALL))
    with pytest.raises(ConfigError, match=r"prepared with other settings \(--size 32 there, 64 now\)"):
        prepare([src], out, PrepareConfig(**{**SMALL, "size": 64}))
    other = make_source(tmp_path / "other.mp4", seconds=1.6)
    with pytest.raises(ConfigError, match="prepared from other sources"):
        prepare([src, other], out, PrepareConfig(**SMALL))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match="not empty and holds no prepare.json"):
        prepare([src], foreign, PrepareConfig(**SMALL))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- bad input


def _one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_folder_without_videos(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert _one_error(capsys) == f"mmldm: error: {tmp_path / 'empty'}: no video files in this folder " \
        "(looked for .mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .flv .wmv)"
    assert not (tmp_path / "out").exists()


def test_no_usable_source_corrupt_or_too_short(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert main(["data", "prepare", str(src / "corrupt.mp4"), "--out", str(tmp_path / "out")]) == 2
    line = _one_error(capsys)
    assert line.startswith(f"mmldm: error: {src / 'corrupt.mp4'}: no usable source video (1 found, 1 unusable: "
                           f"{src / 'corrupt.mp4'} (not a readable media file")
    short = make_source(src / "short.mp4", seconds=1.0)
    assert main(["data", "prepare", str(short), "--out", str(tmp_path / "out")]) == 2
    assert "(shorter than one clip (10 frames at 10 fps < 16))" in _one_error(capsys)
    assert not (tmp_path / "out").exists()
    # with a usable one beside them, both are skipped and listed
    make_source(src / "good.mp4", seconds=1.6)
    with pytest.warns(MMLDMWarning, match="skipped 2 source"):
        summary = prepare([src], tmp_path / "out", PrepareConfig())
    assert summary.clips["train"] == 1 and [s["source"] for s in summary.skipped] == \
        [str(src / "corrupt.mp4"), str(short)]


def test_a_file_damaged_in_the_middle_keeps_its_good_clips(tmp_path):
    data = bytearray(make_source(tmp_path / "film.mp4", seconds=8.0).read_bytes())
    start = len(data) // 2  # inside the video data, before the index (written at the end)
    data[start:start + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        summary = prepare([damaged], out, PrepareConfig(**SMALL, chunk_seconds=1.6))
    listed = manifest(out / MANIFEST_NAME)
    assert listed and summary.clips["train"] == len(listed) <= 10
    for record in listed:  # whatever is listed decodes whole
        clip = read_av(out / record["path"], sample_rate=16000)
        assert clip.num_frames == 8 and clip.audio.shape == (12800,)
    # FFmpeg either conceals the damage (every clip listed) or refuses a packet: then the rest of
    # that piece is left out, named in one warning and in skipped.jsonl
    if len(listed) < 10:
        reasons = [item["reason"] for item in manifest(out / SKIPPED_NAME)]
        assert reasons and all("cannot decode the video near" in reason for reason in reasons)
        assert len(warned) == 1 and str(damaged) in str(warned[0].message)


def test_a_file_in_place_of_the_output_folder(tmp_path, capsys):
    src = make_source(tmp_path / "film.mp4", seconds=1.6)
    (tmp_path / "out").write_text("not a folder\n")
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "out")]) == 2
    assert _one_error(capsys) == f"mmldm: error: {tmp_path / 'out'}: is a file, not a folder"


def test_bad_settings_are_one_line(tmp_path, capsys):
    src = make_source(tmp_path / "film.mp4", seconds=1.6)
    for args, expected in [
        (["--clip-seconds", "2.0"], "--clip-seconds 2 is 20 frames at 10 fps, not a whole number of 16-frame windows"),
        (["--hop-seconds", "0.25"], "--hop-seconds 0.25 is 2.5 frames at 10 fps"),
        (["--size", "63"], "--size must be an even number of pixels"),
        (["--test-fraction", "1"], "--test-fraction must be in [0, 1)"),
        (["--workers", "0"], "--workers must be a positive integer"),
        (["--split", "source", "--test-fraction", "0.2"],
         "--split source holds out whole files, but there is only one usable source"),
    ]:
        assert main(["data", "prepare", str(src), "--out", str(tmp_path / "out"), *args]) == 2
        line = _one_error(capsys)
        assert line.startswith("mmldm: error: ") and expected in line, line
    assert not (tmp_path / "out").exists()


def test_read_only_output_folder(tmp_path, capsys):
    src = make_source(tmp_path / "film.mp4", seconds=1.6)
    with mounted_tmpfs(tmp_path / "ro", read_only=True) as folder:
        assert main(["data", "prepare", str(src), "--out", str(folder / "data")]) == 2
        assert _one_error(capsys).startswith(f"mmldm: error: {folder / 'data'}: cannot write there: Read-only")


def test_full_output_folder(tmp_path, capsys):
    src = make_source(tmp_path / "film.mp4", seconds=8.0, noise=True)
    with mounted_tmpfs(tmp_path / "fs", size="1m") as folder:
        out = folder / "data"
        assert main(["data", "prepare", str(src), "--out", str(out), "--size", "128", "--crf", "0",
                     "--no-progress"]) == 2
        line = _one_error(capsys)
        assert line.startswith(f"mmldm: error: no space left on device: {out}/"), line
        assert not partial_files(out)
        listed = manifest(out / MANIFEST_NAME) if (out / MANIFEST_NAME).exists() else []
        for record in listed:  # whatever is listed is a whole clip
            assert read_av(out / record["path"]).num_frames == 16


# --------------------------------------------------------------------------- benchmark, real film


def test_benchmark_measures_a_real_run(tmp_path):
    import importlib.util

    bench_dir = REPO / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("prepare_benchmark", bench_dir / "prepare.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(bench_dir))
    src = make_source(tmp_path / "film.mp4", seconds=4.0)
    result = bench.run(src, workers=(1,), size=32, num_frames=8, sample_rate=16000, test_fraction=0.25)
    (row,) = result["tables"]["prepare"]
    assert (row["clips"], row["train"], row["test"]) == (4, 3, 1) and row["same_result"] is True
    assert 30 < row["peak_rss_mib"] < 1024 and row["peak_rss_tree_mib"] > 0 and row["realtime"] > 0
    assert 0 < row["cpu_s"] < 60
    assert "| 1 | 4 | 3 | 1 |" in bench.markdown(result)



@pytest.mark.skipif(not BBB.is_file(), reason="needs assets/bbb/bbb.mp4: run `make assets`")
def test_big_buck_bunny_first_seconds(tmp_path):
    out = tmp_path / "bbb"
    cfg = PrepareConfig(fps=10.0, num_frames=16, size=64, sample_rate=22050, test_fraction=0.2, max_seconds=16.0)
    summary = prepare([BBB], out, cfg)
    train, test = manifest(out / MANIFEST_NAME), manifest(out / TEST_MANIFEST_NAME)
    # 160 frames: train clips before frame 128, test clips from it
    assert [r["start_frame"] for r in train] == list(range(0, 113, 16)) and [r["start_frame"] for r in test] == [128, 144]
    assert summary.source_seconds == 16.0
    for record in train + test:
        clip = read_av(out / record["path"], fps=10.0, sample_rate=22050)
        assert clip.frames.shape == (16, 64, 64, 3) and clip.audio.shape == (35280,)
        assert clip.frames[:, 14:50].std() > 0 or record["start_frame"] == 0  # 1280x720 letterboxed: rows 14..49
        assert clip.frames[:, :8].max() <= 8  # the letterbox bar (H.264 rings a little near the picture)
        assert record["audio_rms"] == pytest.approx(np.sqrt(np.mean(clip.audio.astype(np.float64) ** 2)), rel=0.1,
                                                    abs=1e-4)
