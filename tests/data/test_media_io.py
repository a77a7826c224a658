"""Media I/O: sample-exact A/V sync through an MP4 round trip, resampling by time, bad input."""

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmldm.data import media_io
from mmldm.data.media_io import (
    MediaError,
    cut_windows,
    probe,
    read_av,
    read_wav,
    write_av,
    write_wav,
)

LEVEL_STEP = 5  # grey level per source frame index, so a decoded frame tells which one it was


def coded_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """uint8 [T, H, W, 3]: frame k is flat grey at level 10 + LEVEL_STEP * k."""
    levels = 10 + LEVEL_STEP * np.arange(num_frames)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).astype(np.uint8)


def frame_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 10) / LEVEL_STEP))


def click(num_samples: int, at: int) -> np.ndarray:
    audio = np.zeros(num_samples, np.float32)
    audio[at] = 0.9
    return audio


def write_with_timestamps(path: Path, times_ms: list[int], size: tuple[int, int] = (32, 32),
                          pix_fmt: str = "yuv420p") -> Path:
    """Video-only H.264 file with frame k shown from times_ms[k] (variable frame rate when uneven)."""
    height, width = size
    frames = coded_frames(len(times_ms), height, width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, 1000)
        for rgb, ms in zip(frames, times_ms):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# --- sync ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_click_written_at_sample_k_reads_back_at_k(tmp_path, sample_rate):
    fps, num_frames = 10.0, 16
    num_samples = num_frames * sample_rate // 10
    k = 5003  # not a multiple of the 1024-sample AAC frame
    path = write_av(tmp_path / "click.mp4", coded_frames(num_frames), click(num_samples, k), fps, sample_rate)

    clip = read_av(path, fps=fps, sample_rate=sample_rate)

    assert abs(int(np.argmax(np.abs(clip.audio))) - k) <= 1
    assert clip.audio.shape == (num_samples,)  # audio lasts exactly as long as the video
    assert clip.num_frames == num_frames and clip.fps == fps
    assert [frame_index(f) for f in clip.frames] == list(range(num_frames))
    info = probe(path)
    assert info.duration == pytest.approx(1.6, abs=1e-6)
    assert info.audio_duration == pytest.approx(info.duration, abs=1 / sample_rate)
    assert info.fps == pytest.approx(fps) and info.num_frames == num_frames
    assert info.sample_rate == sample_rate and info.channels == 1


def write_other_format(path: Path, vcodec: str, acodec: str, sample_rate: int, layout: str, k: int,
                       video_delay_frames: int = 0, num_frames: int = 16,
                       video_options: dict | None = None) -> Path:
    """Coded frames at 10 fps (the first at ``video_delay_frames / 10`` s) and audio from 0 s
    with a click at sample k, in any container PyAV writes."""
    audio = click(num_frames * sample_rate // 10, k)
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(vcodec, rate=10)
        vstream.width = vstream.height = 32
        vstream.pix_fmt = "yuv420p"
        vstream.options = video_options or {}
        astream = container.add_stream(acodec, rate=sample_rate)
        astream.layout = layout
        for index, rgb in enumerate(coded_frames(num_frames)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index + video_delay_frames, Fraction(1, 10)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        step = astream.codec_context.frame_size or 1024
        for first in range(0, len(audio), step):
            chunk = np.ascontiguousarray(np.repeat(audio[None, first:first + step], channels, axis=0))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, first, Fraction(1, sample_rate)
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    return path


@pytest.mark.parametrize("name, vcodec, acodec, rate, layout", [
    ("clip.mkv", "libx264", "aac", 16000, "mono"),  # Matroska: millisecond timestamps
    ("clip.webm", "libvpx", "libopus", 48000, "mono"),  # Opus pre-skip, resampled to 16 kHz
    ("stereo.mp4", "libx264", "aac", 44100, "stereo"),  # mixed down to mono
])
def test_other_containers_keep_sync(tmp_path, name, vcodec, acodec, rate, layout):
    k = 3 * rate // 10 + 17
    path = write_other_format(tmp_path / name, vcodec, acodec, rate, layout, k)
    clip = read_av(path, fps=10.0, sample_rate=16000)
    assert [frame_index(f) for f in clip.frames] == list(range(16))
    assert clip.audio.shape == (25600,)
    assert abs(int(np.argmax(np.abs(clip.audio))) - round(k * 16000 / rate)) <= 1


def test_time_zero_is_the_first_video_frame(tmp_path):
    """Video starting 0.5 s after the audio: audio before the first frame is not part of the clip."""
    path = write_other_format(tmp_path / "late.mp4", "libx264", "aac", 16000, "mono", k=12800,
                              video_delay_frames=5)
    assert probe(path).has_video
    clip = read_av(path)
    assert [frame_index(f) for f in clip.frames] == list(range(16))
    assert abs(int(np.argmax(np.abs(clip.audio))) - (12800 - 8000)) <= 1


def test_naive_aac_writing_would_be_late(tmp_path):
    """The failure the pts handling prevents: without timestamps the click comes 1024 samples late."""
    sample_rate, k = 16000, 3000
    path = tmp_path / "naive.mp4"
    audio = click(25600, k)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=10)
        vstream.width = vstream.height = 32
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        for rgb in coded_frames(16):
            container.mux(vstream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(vstream.encode(None))
        for first in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, first:first + 1024], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    late = int(np.argmax(np.abs(read_av(path, sample_rate=sample_rate).audio)))
    assert abs(late - (k + 1024)) <= 1


def test_resampling_keeps_time(tmp_path):
    k = 7001
    path = write_av(tmp_path / "c.mp4", coded_frames(16), click(16 * 4410, k), 10.0, 44100)
    clip = read_av(path, sample_rate=16000)
    assert clip.audio.shape == (25600,)
    assert abs(int(np.argmax(np.abs(clip.audio))) - round(k * 16000 / 44100)) <= 1


def test_resampled_window_edges_keep_the_signal(tmp_path):
    t = np.arange(16 * 4410) / 44100
    tone = (0.5 * np.cos(2 * np.pi * 440 * t)).astype(np.float32)  # at its peak at the cut (0.5 s)
    path = write_av(tmp_path / "tone.mp4", coded_frames(16), tone, 10.0, 44100)
    clip = read_av(path, sample_rate=16000, start=0.5, duration=0.5)
    expected = 0.5 * np.cos(2 * np.pi * 440 * (0.5 + np.arange(8000) / 16000))
    # without filter context at the cuts the errors are ~0.17 (start) and ~0.04 (end)
    np.testing.assert_allclose(clip.audio[:50], expected[:50], atol=0.06)
    np.testing.assert_allclose(clip.audio[-50:], expected[-50:], atol=0.02)


def test_start_and_duration_select_matching_frames_and_audio(tmp_path):
    path = write_av(tmp_path / "c.mp4", coded_frames(16), click(25600, 9000), 10.0, 16000)
    clip = read_av(path, start=0.3, duration=1.0)
    assert [frame_index(f) for f in clip.frames] == list(range(3, 13))
    assert clip.audio.shape == (16000,)
    assert abs(int(np.argmax(np.abs(clip.audio))) - (9000 - 4800)) <= 1


@pytest.mark.parametrize("span", [{"start": float("nan")}, {"start": float("inf")}, {"start": -1.0},
                                  {"duration": float("nan")}, {"duration": 0.0}, {"duration": float("inf")}])
def test_a_span_that_is_not_a_finite_time_is_a_media_error(tmp_path, span):
    path = write_av(tmp_path / "c.mp4", coded_frames(4), np.zeros(6400, np.float32), 10.0, 16000)
    with pytest.raises(MediaError, match="finite number"):
        read_av(path, **span)


def test_start_past_one_second_seeks_and_stays_in_sync(tmp_path):
    # a key frame every 10 frames and B-frames: the seek lands on a real key frame before start
    path = write_other_format(tmp_path / "long.mp4", "libx264", "aac", 16000, "mono", k=32 * 1600 + 7,
                              num_frames=45, video_options={"g": "10", "bf": "2"})
    for start in (2.5, 2.05):
        clip = read_av(path, start=start, duration=1.6)
        first = int(start * 10 + 1e-9)  # the source frame on screen at `start`
        assert [frame_index(f) for f in clip.frames] == list(range(first, first + 16))
        assert abs(int(np.argmax(np.abs(clip.audio))) - (32 * 1600 + 7 - round(start * 16000))) <= 1


def test_frame_rate_conversion_picks_frame_on_screen(tmp_path):
    path = write_av(tmp_path / "c.mp4", coded_frames(16), click(25600, 0), 10.0, 16000)
    clip = read_av(path, fps=20.0, sample_rate=16000)
    assert [frame_index(f) for f in clip.frames] == [i // 2 for i in range(32)]
    assert clip.audio.shape == (25600,)
    clip = read_av(path, fps=5.0)
    assert [frame_index(f) for f in clip.frames] == [0, 2, 4, 6, 8, 10, 12, 14]


def test_ntsc_29_97_fps_source(tmp_path):
    fps = 30000 / 1001
    path = write_av(tmp_path / "ntsc.mp4", coded_frames(48), np.zeros(25600, np.float32), fps, 16000)
    info = probe(path)
    assert info.fps == pytest.approx(fps)
    clip = read_av(path, fps=10.0)
    # frame i shows source frame k with k * 1001 / 30000 <= i / 10 < (k + 1) * 1001 / 30000
    expected = [i * 3000 // 1001 for i in range(clip.num_frames)]
    assert clip.num_frames == 17  # 48 frames of 1/29.97 s last 1.6016 s: targets 0.0 .. 1.6
    assert [frame_index(f) for f in clip.frames] == expected
    assert expected[-1] == 47
    assert clip.audio.shape == (17 * 1600,)


def test_variable_frame_rate_source(tmp_path):
    times = [0, 40, 140, 150, 300, 420, 430, 600, 700]
    path = write_with_timestamps(tmp_path / "vfr.mp4", times)
    clip = read_av(path, fps=10.0, require_audio=False)
    # last frame lasts until about 0.8 s: targets 0.0 .. 0.7
    got = [frame_index(f) for f in clip.frames]
    expected = [max(k for k, ms in enumerate(times) if ms <= 100 * i) for i in range(len(got))]
    assert 7 <= len(got) <= 8 and got == expected
    assert not clip.audio.any() and clip.audio.shape == (len(got) * 1600,)


def test_odd_size_letterbox_and_crop(tmp_path):
    path = write_with_timestamps(tmp_path / "odd.mp4", [0, 100, 200], size=(47, 63), pix_fmt="yuv444p")
    native = read_av(path, require_audio=False)
    assert native.frames.shape == (3, 47, 63, 3)
    boxed = read_av(path, size=32, geometry="letterbox", require_audio=False).frames
    assert boxed.shape == (3, 32, 32, 3)
    # 63x47 -> 32x24: 4 black rows above and below, picture in between
    assert (boxed[:, :4] == 0).all() and (boxed[:, -4:] == 0).all()
    assert (boxed[:, 4:28] > 5).all()
    cropped = read_av(path, size=32, geometry="crop", require_audio=False).frames
    assert cropped.shape == (3, 32, 32, 3) and (cropped > 5).all()


def write_picture(path: Path, picture: np.ndarray, *, rotation: int = 0,
                  pixel_aspect: Fraction | None = None, num_frames: int = 3) -> Path:
    """Video-only H.264 file (yuv444p: no chroma blur) of ``picture`` uint8 [H, W, 3] as stored,
    with a display rotation (counter-clockwise degrees) and a sample aspect ratio."""
    height, width = picture.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        if rotation:
            stream.set_display_rotation(rotation)
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        for _ in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def marker_picture(height: int = 32, width: int = 64) -> np.ndarray:
    """Dark picture with a white block in its top-left corner and a grey one in its top-right."""
    picture = np.full((height, width, 3), 20, np.uint8)
    picture[:8, :8] = 235
    picture[:8, -8:] = 128
    return picture


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_rotated_recording_reads_upright(tmp_path, rotation):
    """A phone's portrait video is stored on its side with a display matrix: it is read as a
    player shows it (np.rot90 turns counter-clockwise, as the matrix's angle counts)."""
    picture = marker_picture()
    path = write_picture(tmp_path / f"rot{rotation}.mp4", picture, rotation=rotation)
    upright = np.rot90(picture, rotation // 90)
    native = read_av(path, require_audio=False).frames
    assert native.shape == (3, *upright.shape)
    assert np.abs(native.astype(int) - upright).max() <= 6
    # resized and cropped in the upright orientation, by read_av and by the streaming reader alike
    expected = np.rot90(read_av(write_picture(tmp_path / "flat.mp4", picture), size=16, geometry="crop",
                                require_audio=False).frames, rotation // 90, axes=(1, 2))
    for frames in (read_av(path, size=16, geometry="crop", require_audio=False).frames,
                   next(media_io.iter_windows(path, [0], 3, size=16, geometry="crop", require_audio=False)).frames):
        assert frames.shape == (3, 16, 16, 3)
        assert np.abs(frames.astype(int) - expected).max() <= 6


def test_anamorphic_pixels_read_at_their_display_aspect(tmp_path):
    """Stored 32 wide with pixels twice as wide as high (sample aspect ratio 2:1): shown 64 x 64,
    so a stored 8 x 8 block is a 16 wide, 8 high one."""
    path = write_picture(tmp_path / "sar.mp4", marker_picture(64, 32), pixel_aspect=Fraction(2, 1))
    assert probe(path).pixel_aspect == 2
    frames = read_av(path, require_audio=False).frames
    assert frames.shape == (3, 64, 64, 3)
    white = frames[0].mean(axis=2) > 180
    rows, cols = np.nonzero(white)
    assert rows.max() - rows.min() + 1 == 8 and 15 <= cols.max() - cols.min() + 1 <= 17
    # letterboxed to 32: the picture is square as shown, so it fills the frame (no bars)
    boxed = read_av(path, size=32, geometry="letterbox", require_audio=False).frames
    assert boxed.shape == (3, 32, 32, 3) and (boxed[:, :, :, 0] > 5).all()


def test_write_accepts_float_channel_first_tensors(tmp_path):
    frames = torch.linspace(-1, 1, 4).view(4, 1, 1, 1).expand(4, 3, 16, 16)
    path = write_av(tmp_path / "t.mp4", frames, torch.zeros(1, 6400), 10.0, 16000)
    levels = read_av(path).frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [0, 85, 170, 255], atol=3)


@pytest.mark.parametrize("num_samples", [1000, 9000])
def test_write_fits_audio_to_the_video_duration(tmp_path, num_samples):
    audio = np.full(num_samples, 0.5, np.float32)
    path = write_av(tmp_path / "fit.mp4", coded_frames(4), audio, 10.0, 16000, wav=True)
    assert probe(path).audio_duration == pytest.approx(0.4, abs=1 / 16000)
    wave, _ = read_wav(path.with_suffix(".wav"))
    assert wave.shape == (6400,)
    assert np.abs(wave[: min(num_samples, 6400)] - 0.5).max() < 1e-3 and not wave[num_samples:].any()


def test_write_refuses_odd_sizes_and_bad_arrays(tmp_path):
    with pytest.raises(MediaError, match="even"):
        write_av(tmp_path / "odd.mp4", np.zeros((2, 47, 63, 3), np.uint8), None, 10.0, 16000)
    with pytest.raises(MediaError, match="frames must be"):
        write_av(tmp_path / "bad.mp4", np.zeros((2, 16, 16), np.uint8), None, 10.0, 16000)
    with pytest.raises(MediaError, match="NaN"):
        write_av(tmp_path / "nan.mp4", np.full((2, 3, 16, 16), np.nan, np.float32), None, 10.0, 16000)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_av(tmp_path / "a.mp4", coded_frames(4), np.zeros(6400, np.float32), 10.0, 16000)
    before = path.read_bytes()
    calls = []

    def failing_from_ndarray(array, format):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("crash while encoding")
        return original(array, format=format)

    original = av.VideoFrame.from_ndarray
    monkeypatch.setattr(media_io.av.VideoFrame, "from_ndarray", failing_from_ndarray)
    with pytest.raises(RuntimeError):
        write_av(path, coded_frames(8) + 1, np.zeros(12800, np.float32), 10.0, 16000)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no half-written file left


def test_wav_beside_video_and_wav_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.5 * rng.standard_normal(6400)).clip(-1, 1).astype(np.float32)
    path = write_av(tmp_path / "v.mp4", coded_frames(4), audio, 10.0, 16000, wav=True)
    wave, rate = read_wav(path.with_suffix(".wav"))
    assert rate == 16000
    np.testing.assert_allclose(wave, audio, atol=1 / 32767 + 1e-6)
    wave, rate = read_wav(write_wav(tmp_path / "x.wav", audio[:1000], 16000), sample_rate=8000)
    assert rate == 8000 and wave.shape == (500,)


def test_cut_windows_match_audio_exactly():
    frames = coded_frames(40)
    audio = np.arange(40 * 1600, dtype=np.float32)
    clip = media_io.AVClip(frames, audio, 10.0, 16000)
    windows = cut_windows(clip, num_frames=16, stride=8)
    assert [w.start_frame for w in windows] == [0, 8, 16, 24]
    for w in windows:
        assert [frame_index(f) for f in w.frames] == list(range(w.start_frame, w.start_frame + 16))
        np.testing.assert_array_equal(w.audio, np.arange(w.start_frame * 1600, (w.start_frame + 16) * 1600))
        assert w.start_time == pytest.approx(w.start_frame / 10)


# --- bad input -------------------------------------------------------------------------------


def good_file(tmp_path: Path) -> Path:
    return write_av(tmp_path / "good.mp4", coded_frames(16), click(25600, 100), 10.0, 16000)


def assert_media_error(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(MediaError, match=match) as info:
        read_av(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    assert_media_error(path, "not a readable media file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    assert_media_error(path, "empty file")


def test_missing_file(tmp_path):
    assert_media_error(tmp_path / "nope.mp4", "not found")


def test_truncated_file(tmp_path):
    data = good_file(tmp_path).read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert_media_error(path, "not a readable media file")


def test_corrupted_payload_terminates(tmp_path):
    data = bytearray(good_file(tmp_path).read_bytes())
    rng = np.random.default_rng(0)
    data[200:len(data) // 2] = rng.integers(0, 256, len(data) // 2 - 200, dtype=np.uint8).tobytes()
    path = tmp_path / "garbled.mp4"
    path.write_bytes(bytes(data))
    try:  # either it decodes something of the right shape or it refuses; it must not hang
        clip = read_av(path)
        assert clip.audio.shape == (clip.num_frames * 1600,)
    except MediaError as exc:
        assert str(path) in str(exc)


def test_video_without_audio_track(tmp_path):
    path = write_av(tmp_path / "silent.mp4", coded_frames(16), None, 10.0, 16000)
    assert_media_error(path, "no audio track")
    clip = read_av(path, require_audio=False)
    assert clip.num_frames == 16 and clip.audio.shape == (25600,) and not clip.audio.any()


def test_audio_only_file(tmp_path):
    path = write_wav(tmp_path / "tone.wav", np.zeros(16000, np.float32), 16000)
    assert_media_error(path, "no video stream")


def test_a_cover_picture_is_not_a_video(tmp_path):
    """A music file with cover art holds its picture as an attached-picture video stream: the
    file is audio only, and its sound still reads."""
    path = tmp_path / "song.m4a"
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16000, layout="mono")
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        container.mux(cover.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), format="rgb24")))
        container.mux(cover.encode(None))
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert_media_error(path, "no video stream")
    wave, _ = read_wav(path, sample_rate=16000)
    assert wave.shape[0] >= 15000 and np.abs(wave).max() > 0.3


@pytest.mark.parametrize("default_track", [0, 1, None])
def test_of_several_sound_tracks_the_default_one_is_read(tmp_path, default_track):
    """A file with two sound tracks (a silent one and a tone, as languages or commentary come): the
    track marked default is the file's sound, as a player picks it; none marked: the first."""
    path = tmp_path / "tracks.mkv"
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    sounds = {0: np.zeros_like(tone), 1: tone}
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        tracks = [container.add_stream("flac", rate=16000, layout="mono") for _ in sounds]
        for index, track in enumerate(tracks):
            track.disposition = av.stream.Disposition(av.stream.Disposition.default if index == default_track else 0)
        for frame in coded_frames(10):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        for index, track in enumerate(tracks):
            samples = av.AudioFrame.from_ndarray(sounds[index][None], format="flt", layout="mono")
            samples.sample_rate, samples.pts = 16000, 0
            container.mux(track.encode(samples))
            container.mux(track.encode(None))
    expected = tone if default_track == 1 else np.zeros_like(tone)
    wave, _ = read_wav(path, sample_rate=16000)
    clip = read_av(path, fps=10, sample_rate=16000)
    for read in (wave, clip.audio):
        assert np.abs(read[:15000] - expected[:15000]).max() < 0.05, default_track
    info = probe(path)
    assert info.audio_tracks == 2 and info.audio_track == (1 if default_track == 1 else 0)
    from mmldm.data.inspect import inspect_file

    assert f"(track {info.audio_track + 1} of 2, the one read)" in inspect_file(path, sheet=False)


def test_clip_shorter_than_one_window(tmp_path):
    path = write_av(tmp_path / "short.mp4", coded_frames(8), np.zeros(12800, np.float32), 10.0, 16000)
    with pytest.raises(MediaError, match=r"shorter than one window \(8 frames < 16\)") as info:
        cut_windows(read_av(path), num_frames=16)
    assert str(path) in str(info.value)


def test_huge_dimensions_refused_at_probe(tmp_path):
    path = write_with_timestamps(tmp_path / "wide.mp4", [0], size=(16, 8200))
    with pytest.raises(MediaError, match="8200x16 exceed the 8192 px limit") as info:
        probe(path)
    assert str(path) in str(info.value)
    assert_media_error(path, "exceed", require_audio=False)


def test_decoded_size_limit(tmp_path):
    assert_media_error(good_file(tmp_path), "memory limit", max_bytes=10_000)


def test_h264_encoder_fallback_and_missing(monkeypatch):
    assert media_io.h264_encoder() == "libx264"  # PyAV's wheels bundle it
    monkeypatch.setattr(media_io, "_H264_ENCODERS", ("no_such_encoder", "libx264"))
    assert media_io.h264_encoder() == "libx264"
    monkeypatch.setattr(media_io, "_H264_ENCODERS", ("no_such_encoder",))
    with pytest.raises(MediaError, match="no H.264 encoder"):
        media_io.h264_encoder()


def test_decoded_size_limit_holds_when_the_header_understates(tmp_path, monkeypatch):
    path = good_file(tmp_path)
    lying = dataclasses.replace(probe(path), duration=0.0)
    monkeypatch.setattr(media_io, "probe", lambda p: lying)
    assert_media_error(path, "although the header says 0.000 s", size=32, max_bytes=10_000)
