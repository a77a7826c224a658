"""Reading and writing sounding video with sample-exact audio-video sync (PyAV only).

Conventions (the same as :class:`~mmldm.timing.AVTiming`):

* Time 0 of a clip is the first instant of its video stream. Output frame ``i``
  is the source frame on screen at time ``start + i / fps`` (so 29.97 fps and
  variable frame rate sources resample correctly), and audio sample ``k`` is
  the sound at time ``start + k / sample_rate``. Hence the audio of frame ``i``
  starts at sample ``i * sample_rate / fps`` exactly.
* Audio is mono float32 in [-1, 1]; it is padded with zeros or trimmed so that
  it lasts exactly as long as the video.
* Frames are uint8 ``[T, H, W, 3]`` RGB.

AAC priming: an AAC encoder emits 1024 "priming" samples before the first real
one. :func:`write_av` gives every audio frame its presentation time, so the
encoder's first packet gets pts -1024 and the MP4 muxer records that delay in
an edit list. On reading, libavformat turns the edit list into "skip samples"
side data that the decoder applies, and :func:`read_av` places decoded audio by
its timestamps. A click written at sample ``k`` is read back at sample ``k``.
Written naively (frames without pts) the audio would play 64 ms late at 16 kHz.

Long files: :func:`read_av` returns the part of a file it is asked for (``start``,
``duration``) in memory; :func:`iter_windows` reads many windows of a file in one pass and
holds only the window being filled, whatever the file's length.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scipy.signal import resample_poly

from ..config import make_folder
from ..errors import MediaError
from ..files import atomic_target, disk_full_as_error

Geometry = Literal["letterbox", "crop"]

#: Largest accepted frame side in pixels (source or output).
MAX_SIDE = 8192
#: Largest accepted decoded clip in bytes (frames at output size, uint8 RGB).
MAX_DECODED_BYTES = 4 * 1024**3
#: Software H.264 encoders :func:`write_av` tries, best first (PyAV's wheels bundle libx264).
_H264_ENCODERS = ("libx264", "libopenh264")
#: Output container formats of :func:`write_av`, by file suffix.
_WRITE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
#: Audio whose timestamps jump by more than this (seconds) is re-anchored to the timestamp;
#: smaller differences are timestamp rounding and the audio is kept contiguous.
_AUDIO_JITTER_S = 0.01
#: Audio decoded beyond each end of a window when it is resampled (filter context), seconds.
_RESAMPLE_CONTEXT_S = 0.02


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns from a file's headers (nothing is decoded)."""

    path: Path
    duration: float  # seconds of the video stream (of the container if the stream does not say)
    has_video: bool
    has_audio: bool
    fps: float | None  # average frame rate
    width: int | None
    height: int | None
    num_frames: int | None  # header count, or duration * fps when the header has none
    sample_rate: int | None
    channels: int | None
    video_codec: str | None
    audio_codec: str | None
    audio_duration: float | None
    #: the video's sample aspect ratio (1 for square pixels; readers show frames at width x this)
    pixel_aspect: Fraction = Fraction(1)
    #: the sound tracks in the file, and which of them (0-based) is read (:func:`_audio_stream`)
    audio_tracks: int = 0
    audio_track: int | None = None

    @property
    def shown_width(self) -> int | None:
        """The video's width as a player shows it (before any rotation): width x pixel aspect."""
        return None if self.width is None else _shown_width(self.width, self.pixel_aspect)


@dataclass
class AVClip:
    """Decoded frames with the audio that belongs to them.

    Shapes: ``frames`` uint8 [T, H, W, 3]; ``audio`` float32 [N] with
    ``N == round(T * sample_rate / fps)``.
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    path: Path | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


@dataclass
class AVWindow:
    """One fixed-length piece of a clip: frames uint8 [T, H, W, 3], audio float32 [N]."""

    frames: np.ndarray
    audio: np.ndarray
    start_frame: int
    start_time: float


def _seconds(value: int | None, time_base: Fraction | None) -> Fraction | None:
    if value is None or time_base is None:
        return None
    return Fraction(value) * time_base


def _exact(value: float) -> Fraction:
    """A float as the fraction it stands for (29.97002997 -> 30000/1001, 0.1 -> 1/10)."""
    return Fraction(value).limit_denominator(1_000_000)


def _open(path: Path, mode: str = "r", **kwargs: Any) -> Any:
    """``av.open`` with every failure turned into a one-line MediaError."""
    try:
        return av.open(str(path), mode, **kwargs)
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except IsADirectoryError:
        raise MediaError(path, "is a folder, not a media file") from None
    except PermissionError:
        raise MediaError(path, "permission denied") from None
    except av.error.FFmpegError as exc:
        if mode == "r" and exc.errno == errno.ELOOP:
            raise MediaError(path, "is a symbolic link loop (it points back to itself), not a media file") from None
        if mode == "w" or exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a failed write: the caller knows which file it was writing
        raise MediaError(path, f"not a readable media file ({exc.strerror or exc})") from None


def probe(path: str | Path, max_side: int = MAX_SIDE) -> MediaInfo:
    """Read stream information from the headers of ``path`` (cheap: no decoding).

    Raises MediaError for a missing, empty, unreadable or stream-less file and
    for frames larger than ``max_side`` pixels on a side.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    with _open(path) as container:
        video = _video_stream(container)
        audio = _audio_stream(container)
        if video is None and audio is None:
            raise MediaError(path, "no video or audio stream")
        container_duration = (
            Fraction(container.duration, 1_000_000) if container.duration else None
        )
        fps = width = height = num_frames = None
        video_duration = None
        if video is not None:
            width, height = video.codec_context.width, video.codec_context.height
            if not width or not height:
                raise MediaError(path, "video stream has no frame size (corrupt header?)")
            if width > max_side or height > max_side:
                raise MediaError(path, f"frames of {width}x{height} exceed the {max_side} px limit per side")
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
            video_duration = _seconds(video.duration, video.time_base) or container_duration
            num_frames = video.frames or None
            if num_frames is None and fps and video_duration:
                num_frames = int(round(float(video_duration) * fps))
        audio_duration = None
        if audio is not None:
            audio_duration = _seconds(audio.duration, audio.time_base) or container_duration
        duration = video_duration if video is not None else audio_duration
        return MediaInfo(
            path=path,
            duration=float(duration or 0.0),
            has_video=video is not None,
            has_audio=audio is not None,
            fps=fps,
            width=width,
            height=height,
            num_frames=num_frames,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_duration=None if audio_duration is None else float(audio_duration),
            pixel_aspect=_pixel_aspect(video),
            audio_tracks=len(container.streams.audio),
            audio_track=None if audio is None else list(container.streams.audio).index(audio),
        )


def _video_stream(container: Any) -> Any:
    """The file's first moving-picture stream, or None: a cover picture (an attached picture, as
    music files and some downloads carry) is not the video."""
    attached = av.stream.Disposition.attached_pic
    return next((s for s in container.streams.video if not s.disposition & attached), None)


def _audio_stream(container: Any) -> Any:
    """The file's sound track, or None: of several (languages, commentary), the one marked default,
    as players pick it; else the first."""
    streams = list(container.streams.audio)
    default = av.stream.Disposition.default
    return next((s for s in streams if s.disposition & default), streams[0] if streams else None)


def _shown_width(width: int, pixel_aspect: Fraction) -> int:
    """A stored picture's width as shown: ``width`` pixels of aspect ``pixel_aspect``."""
    return max(1, int(round(width * pixel_aspect)))


def _pixel_aspect(video: Any) -> Fraction:
    """The sample aspect ratio of a video stream (container, else codec); 1 when unset or absurd."""
    if video is None:
        return Fraction(1)
    for ratio in (video.sample_aspect_ratio, video.codec_context.sample_aspect_ratio):
        if ratio and Fraction(1, 16) <= ratio <= 16:
            return Fraction(ratio)
    return Fraction(1)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """How a source frame of one orientation maps to the output: scale the decoded picture to
    ``(scaled_w, scaled_h)`` (its stored orientation), turn it ``quarter_turns`` x 90 degrees
    counter-clockwise, then pad or crop to ``(out_w, out_h)``."""

    scaled_w: int
    scaled_h: int
    quarter_turns: int
    out_w: int
    out_h: int


@dataclass(frozen=True)
class _Fit:
    """How source frames map to the output, as a player shows them: upright (the display matrix a
    phone writes for a portrait recording, read per frame) and at their display aspect (the
    stream's sample aspect ratio: anamorphic sources are widened or narrowed), then scaled to
    ``size`` and letterboxed or centre-cropped (``size`` None keeps the display size)."""

    size: int | None
    geometry: Geometry
    width: int  # the stream's stored frame size (its header's): ``size`` None keeps it as shown
    height: int
    pixel_aspect: Fraction = Fraction(1)  # the stream's sample aspect ratio (width of one pixel / its height)

    def __post_init__(self) -> None:
        if self.geometry not in ("letterbox", "crop"):
            raise ValueError(f"geometry must be 'letterbox' or 'crop', got {self.geometry!r}")

    def display_size(self, width: int, height: int, quarter_turns: int = 0) -> tuple[int, int]:
        """``(w, h)`` of a ``width x height`` stored picture as shown (aspect corrected, turned)."""
        shown_w = _shown_width(width, self.pixel_aspect)
        return (height, shown_w) if quarter_turns % 2 else (shown_w, height)

    @functools.lru_cache(maxsize=8)  # noqa: B019 (a handful of frozen fits per read)
    def plan(self, width: int, height: int, quarter_turns: int) -> _Geometry:
        """The geometry of a decoded ``width x height`` picture (a stream may change its size midway:
        every frame still comes out at one size)."""
        if self.size is None:
            out_w, out_h = scaled_w, scaled_h = self.display_size(self.width, self.height, quarter_turns)
        else:
            shown_w, shown_h = self.display_size(width, height, quarter_turns)
            size = out_w = out_h = self.size
            # letterbox: longer side -> size, aspect kept, zero padding; crop: shorter side -> size
            scale = size / (max if self.geometry == "letterbox" else min)(shown_w, shown_h)
            scaled_w = max(1, int(round(shown_w * scale)))
            scaled_h = max(1, int(round(shown_h * scale)))
            bound = min if self.geometry == "letterbox" else max
            scaled_w, scaled_h = bound(scaled_w, size), bound(scaled_h, size)
        if quarter_turns % 2:  # the decoder's picture is stored on its side
            scaled_w, scaled_h = scaled_h, scaled_w
        return _Geometry(scaled_w, scaled_h, quarter_turns, out_w, out_h)

    def apply(self, frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
        """Shapes: returns uint8 [out_h, out_w, 3].

        ``reformatter`` is reused across frames: it keeps its scaler, which
        ``frame.reformat`` would rebuild for every frame (about 25x slower on small frames).
        """
        g = self.plan(frame.width, frame.height, _quarter_turns(frame))
        downscale = g.scaled_w < frame.width or g.scaled_h < frame.height
        rgb = reformatter.reformat(
            frame, width=g.scaled_w, height=g.scaled_h, format="rgb24",
            interpolation="AREA" if downscale else "BICUBIC",
        ).to_ndarray()
        if g.quarter_turns:
            rgb = np.rot90(rgb, g.quarter_turns)  # counter-clockwise, as the display matrix says
        scaled_h, scaled_w = rgb.shape[:2]
        if (scaled_w, scaled_h) == (g.out_w, g.out_h):
            return np.ascontiguousarray(rgb)
        top, left = abs(g.out_h - scaled_h) // 2, abs(g.out_w - scaled_w) // 2
        if scaled_w >= g.out_w and scaled_h >= g.out_h:  # crop
            return np.ascontiguousarray(rgb[top:top + g.out_h, left:left + g.out_w])
        out = np.zeros((g.out_h, g.out_w, 3), np.uint8)  # letterbox
        out[top:top + scaled_h, left:left + scaled_w] = rgb
        return out


def display_turns(path: str | Path) -> int:
    """Counter-clockwise quarter turns (0..3) a player gives the video of ``path`` (its first
    frame's display matrix; decodes that one frame). 0 for a file without video."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            return 0
        try:
            frame = next(iter(container.decode(stream)), None)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"cannot decode ({exc.strerror or exc})") from None
        return 0 if frame is None else _quarter_turns(frame)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show ``frame`` upright (its display matrix; 0 without
    one). A rotation that is not a multiple of 90 degrees (no camera writes one) is left as 0."""
    degrees = frame.rotation
    turns = round(degrees / 90)
    return turns % 4 if abs(degrees - 90 * turns) < 1 else 0


class _AudioTrack:
    """Mono audio placed on the clip's time line by timestamp, at the source rate.

    Timestamps are trusted for the first frame and for real jumps (gaps, cuts);
    below ``_AUDIO_JITTER_S`` the audio stays contiguous, so millisecond-rounded
    timestamps (Matroska, WebM) do not create clicks.
    """

    def __init__(self, origin: Fraction):
        self.origin = origin  # clip time 0, in seconds of the file's time line
        self.rate: int | None = None
        self.pieces: list[tuple[int, np.ndarray]] = []
        self.next_offset: int | None = None
        self.converter: av.AudioResampler | None = None

    def add(self, frame: av.AudioFrame) -> None:
        if self.rate is None:
            self.rate = frame.sample_rate
            # Format conversion only (same rate, same layout): never shifts time.
            self.converter = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=self.rate)
        time = _seconds(frame.pts, frame.time_base)
        for converted in self.converter.resample(frame):
            self._place(converted.to_ndarray().mean(axis=0, dtype=np.float32), time)
            time = None  # later pieces of one input frame follow contiguously

    def _place(self, mono: np.ndarray, time: Fraction | None) -> None:
        offset = self.next_offset
        if time is not None:
            stamped = int(round((time - self.origin) * self.rate))
            if offset is None or abs(stamped - offset) > _AUDIO_JITTER_S * self.rate:
                offset = stamped
        offset = 0 if offset is None else offset
        self.pieces.append((offset, mono))
        self.next_offset = offset + len(mono)

    def end_time(self) -> Fraction | None:
        """Clip time just after the last sample placed so far (None before the first)."""
        return None if self.next_offset is None else Fraction(self.next_offset, self.rate)

    def drop_before(self, time: Fraction) -> None:
        """Forget the pieces that end more than a second (plus the resampling context) before clip
        time ``time``: a stream reader keeps only the audio that the windows still to come can use.
        (:meth:`render` reads at most ``_RESAMPLE_CONTEXT_S`` plus one period of the rate ratio,
        which is at most a second, before a window.)"""
        if self.rate is None:
            return
        keep_from = int(math.floor((time - 1 - 2 * Fraction(_RESAMPLE_CONTEXT_S)) * self.rate))
        self.pieces = [(offset, samples) for offset, samples in self.pieces if offset + len(samples) > keep_from]

    def coverage(self, start: Fraction, end: Fraction) -> float:
        """Share (0..1) of the clip time span ``[start, end)`` that decoded samples cover."""
        if self.rate is None or end <= start:
            return 0.0
        lo_span, hi_span = int(math.floor(start * self.rate)), int(math.ceil(end * self.rate))
        covered = 0
        last = lo_span  # pieces do not overlap in practice; counting from `last` makes sure
        for offset, samples in sorted(self.pieces, key=lambda piece: piece[0]):
            lo, hi = max(offset, last), min(offset + len(samples), hi_span)
            if lo < hi:
                covered += hi - lo
                last = hi
        return covered / (hi_span - lo_span)

    def render(self, start: Fraction, num_samples: int, sample_rate: int) -> np.ndarray:
        """Audio of ``[start, start + num_samples / sample_rate)`` (clip time) at ``sample_rate``.

        Shapes: returns float32 [num_samples].
        """
        out = np.zeros(num_samples, np.float32)
        if self.rate is None or num_samples == 0:
            return out
        ratio = Fraction(sample_rate, self.rate)
        # Context on both sides so the resampling filter sees real audio at the window edges;
        # a whole number of `down` steps, so that output sample 0 stays on `start`.
        steps = math.ceil(_RESAMPLE_CONTEXT_S * self.rate / ratio.denominator) if ratio != 1 else 0
        margin = steps * ratio.denominator
        first = int(math.floor(start * self.rate)) - margin
        count = int(math.ceil(num_samples / ratio)) + 1 + 2 * margin
        native = np.zeros(count, np.float32)
        for offset, samples in self.pieces:
            lo, hi = max(offset, first), min(offset + len(samples), first + count)
            if lo < hi:
                native[lo - first:hi - first] = samples[lo - offset:hi - offset]
        if ratio != 1:
            # scipy's polyphase filter is zero-phase (no delay), unlike a streaming resampler,
            # which keeps sample k at time k / rate exactly.
            native = resample_poly(native, ratio.numerator, ratio.denominator).astype(np.float32)
            native = native[steps * ratio.numerator:]
        length = min(num_samples, len(native))
        out[:length] = native[:length]
        return out


def read_av(
    path: str | Path,
    fps: float = 10.0,
    sample_rate: int = 16000,
    size: int | None = None,
    geometry: Geometry = "letterbox",
    start: float = 0.0,
    duration: float | None = None,
    require_audio: bool = True,
    max_bytes: int = MAX_DECODED_BYTES,
) -> AVClip:
    """Decode ``path`` into frames at ``fps`` and mono audio at ``sample_rate``, in sync.

    Args:
        size: output frames are ``size x size`` (letterboxed or centre-cropped);
            None keeps the source size.
        start, duration: the part of the file to read, in seconds from the first video frame.
        require_audio: a file without an audio stream is an error; when False,
            its audio comes back as silence.
        max_bytes: refuse clips whose decoded frames would exceed this many bytes.

    Shapes: frames uint8 [T, H, W, 3]; audio float32 [round(T * sample_rate / fps)].
    """
    path = Path(path)
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive (got {fps}, {sample_rate})")
    if size is not None and not 0 < size <= MAX_SIDE:
        raise MediaError(path, f"output size {size} is outside 1..{MAX_SIDE} px")
    if not (math.isfinite(start) and start >= 0) or (duration is not None
                                                       and not (math.isfinite(duration) and duration > 0)):
        raise MediaError(path, f"cannot read from {start} s for {duration} s: the start must be a finite number "
                               ">= 0 and the duration a finite number > 0")
    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no video stream (audio-only file)")
    if require_audio and not info.has_audio:
        raise MediaError(path, "no audio track")
    fit = _Fit(size, geometry, info.width, info.height, info.pixel_aspect)
    out_w, out_h = (size, size) if size is not None else fit.display_size(info.width, info.height)
    span = max(info.duration - start, 0.0) if duration is None else duration
    expected_frames = int(math.floor(span * fps)) + 1
    if expected_frames * out_w * out_h * 3 > max_bytes:
        raise MediaError(
            path, f"{expected_frames} frames of {out_w}x{out_h} exceed the memory limit of "
            f"{max_bytes / 1024**3:.1f} GiB; read a shorter part (start, duration) or a smaller size",
        )
    step = 1 / _exact(fps)  # seconds between output frames
    start_s = _exact(start)
    want = None if duration is None else int(math.floor(_exact(duration) / step + Fraction(1, 1000)))
    # The header's duration can lie (or be missing): the limit holds while decoding too.
    max_frames = max(1, max_bytes // (out_w * out_h * 3))
    try:
        frames, track = _decode(path, fit, start_s, step, max_frames + 1 if want is None else want)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot decode ({exc.strerror or exc})") from None
    if not frames:
        raise MediaError(path, "no decodable video frames" + (f" after {start} s" if start else ""))
    if len(frames) > max_frames:
        raise MediaError(path, f"more than {max_frames} frames of {out_w}x{out_h} exceed the memory limit "
                         f"of {max_bytes / 1024**3:.1f} GiB although the header says {info.duration:.3f} s")
    num_samples = int(round(len(frames) * sample_rate / fps))
    audio = track.render(start_s, num_samples, sample_rate)
    return AVClip(np.stack(frames), audio, float(fps), int(sample_rate), path)


def _decode(
    path: Path, fit: _Fit, start: Fraction, step: Fraction, want: int
) -> tuple[list[np.ndarray], _AudioTrack]:
    """Demux and decode once: up to ``want`` output frames at ``origin + start + i * step``
    and the audio track."""
    with _open(path) as container:
        vstream = _video_stream(container)
        vstream.thread_type = "AUTO"
        astream = _audio_stream(container)
        origin = _seconds(vstream.start_time, vstream.time_base)
        if origin is None:
            origin = Fraction(0)
        track = _AudioTrack(origin)
        if start > 1:  # seek a second early: key frames and interleaved audio both precede start
            target = int((origin + start - 1) / vstream.time_base)
            container.seek(target, stream=vstream, backward=True, any_frame=False)
        reformatter = VideoReformatter()
        frames: list[np.ndarray] = []
        shown: av.VideoFrame | None = None  # the source frame on screen at the next target time
        shown_rgb: np.ndarray | None = None
        shown_end: Fraction | None = None
        default_duration = (1 / vstream.average_rate) if vstream.average_rate else step
        eps = Fraction(1, 1_000_000)  # a microsecond: float-to-timestamp rounding, not a real frame offset
        streams = [s for s in (vstream, astream) if s is not None]

        def emit_until(limit: Fraction) -> bool:
            """Output ``shown`` for all targets before ``limit``; True when enough frames."""
            nonlocal shown_rgb
            while len(frames) < want:
                target = origin + start + len(frames) * step
                if target >= limit - eps:
                    return False
                if shown_rgb is None:
                    shown_rgb = fit.apply(shown, reformatter)
                frames.append(shown_rgb)
            return True

        done = False
        for packet in container.demux(streams):
            if packet.stream.type == "audio":
                for frame in packet.decode():
                    track.add(frame)
                if done and track.next_offset is not None and Fraction(track.next_offset, track.rate) > \
                        start + len(frames) * step + 2 * _RESAMPLE_CONTEXT_S:
                    break
                continue
            if done:
                continue
            for frame in packet.decode():
                time = _seconds(frame.pts, frame.time_base)
                if time is None:  # no timestamp: assume constant rate after the last frame
                    time = origin if shown_end is None else shown_end
                if shown is not None and emit_until(time):
                    done = True
                    break
                shown, shown_rgb = frame, None
                frame_duration = _seconds(frame.duration, frame.time_base) or default_duration
                shown_end = time + frame_duration
            if done and astream is None:
                break
        # demux() ends with empty packets that flushed the decoders; the last frame stays
        # on screen until its own end.
        if shown is not None and not done:
            emit_until(shown_end)
        return frames, track


# ---------------------------------------------------------------------------------------------
# Streaming: many windows of a long file in one pass, in bounded memory
# ---------------------------------------------------------------------------------------------


@dataclass
class StreamedWindow(AVWindow):
    """A window read by :func:`iter_windows`; ``audio_coverage`` is the share (0..1) of its time
    span for which the file's audio track has samples (1 inside the track, less where the track
    ends early, starts late or has a gap; 0 for a file without audio)."""

    audio_coverage: float = 1.0


def iter_windows(
    path: str | Path,
    starts: Sequence[int],
    num_frames: int,
    fps: float = 10.0,
    sample_rate: int = 16000,
    size: int | None = None,
    geometry: Geometry = "letterbox",
    decode_from: int | None = None,
    require_audio: bool = True,
) -> Iterator[StreamedWindow]:
    """The windows of ``num_frames`` frames at ``fps`` that start at the output frames ``starts``,
    read in one pass through the file.

    Window ``s`` holds the frames and audio that ``read_av(path, fps, sample_rate, size, geometry,
    start=s / fps, duration=num_frames / fps)`` returns, but the file is decoded once, from
    output frame ``decode_from`` (default: the first start; a seek lands a second before it) to the
    end of the last window, and only the frames of the windows being filled plus about a second
    of audio are held: memory does not grow with the length of the file. Frames are resized as
    they leave the decoder (one swscale call from its YUV to the output size in RGB) and frames
    that no window uses are never converted.

    The file is opened twice, once per stream, so that audio is read at its own pace whatever the
    muxer's interleaving (a file with all its audio after the video reads in bounded memory too).
    A window that the video does not reach to its end is not yielded and iteration stops there.

    Args:
        starts: first output frame of each window (``i`` is the source frame on screen at
            ``i / fps``), sorted, distinct, >= 0; windows may overlap.
        decode_from: output frame to start decoding at (<= the first start): a reader that
            resumes a piece of work decodes from where the piece began, so that its windows are
            decoded exactly as in an uninterrupted pass.
        require_audio: a file without an audio stream is an error; when False its windows get
            silence and ``audio_coverage`` 0.

    Shapes: each window's frames uint8 [num_frames, H, W, 3]; audio float32
    [round(num_frames * sample_rate / fps)].
    """
    path = Path(path)
    starts = [int(s) for s in starts]
    if fps <= 0 or sample_rate <= 0 or num_frames <= 0:
        raise ValueError(f"fps, sample_rate and num_frames must be positive (got {fps}, {sample_rate}, {num_frames})")
    if any(b <= a for a, b in itertools.pairwise(starts)) or (starts and starts[0] < 0):
        raise ValueError("window starts must be sorted, distinct and >= 0")
    if size is not None and not 0 < size <= MAX_SIDE:
        raise MediaError(path, f"output size {size} is outside 1..{MAX_SIDE} px")
    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no video stream (audio-only file)")
    if require_audio and not info.has_audio:
        raise MediaError(path, "no audio track")
    if not starts:
        return
    fit = _Fit(size, geometry, info.width, info.height, info.pixel_aspect)
    step = 1 / _exact(fps)
    first = starts[0] if decode_from is None else min(int(decode_from), starts[0])
    last = starts[-1] + num_frames - 1
    num_samples = int(round(num_frames * sample_rate / fps))  # as read_av counts them

    def wanted(index: int) -> bool:
        """Whether output frame ``index`` lies in a window."""
        window = bisect.bisect_right(starts, index) - 1
        return window >= 0 and index < starts[window] + num_frames

    with contextlib.ExitStack() as stack:
        vcontainer = stack.enter_context(_open(path))
        vstream = _video_stream(vcontainer)
        origin = _seconds(vstream.start_time, vstream.time_base) or Fraction(0)
        audio = None
        if info.has_audio:
            audio = _AudioReader(stack.enter_context(_open(path)), origin, first * step, path)
        frames = _frames_on_grid(vcontainer, fit, origin, step, first, last, wanted, path)
        stack.callback(frames.close)
        held: dict[int, np.ndarray] = {}
        window = 0
        for index, rgb in frames:
            held[index] = rgb
            while window < len(starts) and starts[window] + num_frames - 1 <= index:
                start = starts[window]
                clip_frames = np.stack([held[i] for i in range(start, start + num_frames)])
                begin, end = start * step, (start + num_frames) * step
                if audio is None:
                    wave, coverage = np.zeros(num_samples, np.float32), 0.0
                else:
                    audio.fill(end + 2 * Fraction(_RESAMPLE_CONTEXT_S))
                    wave = audio.track.render(begin, num_samples, sample_rate)
                    coverage = audio.track.coverage(begin, end)
                window += 1
                keep = starts[window] if window < len(starts) else last + 1
                for old in [i for i in held if i < keep]:
                    del held[old]
                if audio is not None:
                    audio.track.drop_before(keep * step)
                yield StreamedWindow(clip_frames, wave, start, float(begin), coverage)
            if window == len(starts):
                return


class _AudioReader:
    """The audio stream of an open file, decoded on demand into an :class:`_AudioTrack`."""

    def __init__(self, container: Any, origin: Fraction, start: Fraction, path: Path):
        stream = _audio_stream(container)
        self.track = _AudioTrack(origin)
        self.path = path
        if start > 1:  # a second early: the decoder settles (AAC overlap, MP3 bit reservoir, Opus pre-roll)
            # a seek the demuxer refuses (a damaged index) leaves it at the start: decode from there
            with contextlib.suppress(av.error.FFmpegError):
                container.seek(int((origin + start - 1) / stream.time_base), stream=stream, backward=True)
        self.frames = container.decode(stream)
        self.ended = False

    def fill(self, until: Fraction) -> None:
        """Decode until the track reaches clip time ``until`` or the stream ends."""
        while not self.ended and (self.track.end_time() is None or self.track.end_time() < until):
            try:
                frame = next(self.frames)
            except StopIteration:
                self.ended = True
            except av.error.FFmpegError as exc:
                raise MediaError(self.path, f"cannot decode the audio near {float(until):.2f} s "
                                            f"({exc.strerror or exc})") from None
            else:
                self.track.add(frame)


def _frames_on_grid(
    container: Any, fit: _Fit, origin: Fraction, step: Fraction, first: int, last: int,
    wanted: Callable[[int], bool], path: Path,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(i, frame)`` for the output frames ``first <= i <= last`` that ``wanted(i)``: the source
    frame on screen at ``origin + i * step``, fitted to the output size (uint8 [H, W, 3])."""
    vstream = _video_stream(container)
    vstream.thread_type = "AUTO"
    if first * step > 1:  # as read_av: key frames and the frames before `first` precede it by a second
        target = int((origin + first * step - 1) / vstream.time_base)
        # a seek the demuxer refuses (a damaged index) leaves it at the start: decode from there,
        # slower but the same frames
        with contextlib.suppress(av.error.FFmpegError):
            container.seek(target, stream=vstream, backward=True, any_frame=False)
    reformatter = VideoReformatter()
    default_duration = (1 / vstream.average_rate) if vstream.average_rate else step
    eps = Fraction(1, 1_000_000)  # float-to-timestamp rounding, not a real frame offset
    index = first
    shown: av.VideoFrame | None = None  # the source frame on screen at the next target time
    shown_rgb: np.ndarray | None = None
    shown_end: Fraction | None = None
    decoded = iter(container.decode(vstream))
    while index <= last:
        try:
            frame = next(decoded, None)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"cannot decode the video near {float(index * step):.2f} s "
                                   f"({exc.strerror or exc})") from None
        # the end of the stream: the last frame stays on screen until its own end
        time = shown_end if frame is None else _seconds(frame.pts, frame.time_base)
        if time is None:  # no timestamp: assume constant rate after the last frame
            time = origin if shown_end is None else shown_end
        if shown is not None:
            while index <= last and origin + index * step < time - eps:
                if wanted(index):
                    if shown_rgb is None:
                        shown_rgb = fit.apply(shown, reformatter)
                    yield index, shown_rgb
                index += 1
        if frame is None:
            return
        shown, shown_rgb = frame, None
        shown_end = time + (_seconds(frame.duration, frame.time_base) or default_duration)


def cut_windows(clip: AVClip, num_frames: int = 16, stride: int | None = None) -> list[AVWindow]:
    """Cut ``clip`` into windows of ``num_frames`` frames, ``stride`` frames apart (default: no overlap).

    Window ``j`` holds frames ``[s, s + num_frames)`` with ``s = j * stride`` and the audio
    samples ``[s * sr / fps, (s + num_frames) * sr / fps)``; a trailing part shorter than a
    window is dropped.

    Shapes: each window has frames uint8 [num_frames, H, W, 3] and audio float32
    [round(num_frames * sample_rate / fps)].
    """
    stride = num_frames if stride is None else stride
    if num_frames <= 0 or stride <= 0:
        raise ValueError(f"num_frames and stride must be positive (got {num_frames}, {stride})")
    total = clip.num_frames
    if total < num_frames:
        raise MediaError(
            clip.path or "clip", f"clip is shorter than one window ({total} frames < {num_frames})"
        )
    per_frame = Fraction(clip.sample_rate) / _exact(clip.fps)
    window_samples = int(round(num_frames * per_frame))
    windows = []
    for first in range(0, total - num_frames + 1, stride):
        a = int(round(first * per_frame))
        audio = clip.audio[a:a + window_samples]
        if len(audio) < window_samples:  # only when the clip's audio was cut short by the caller
            audio = np.pad(audio, (0, window_samples - len(audio)))
        windows.append(AVWindow(clip.frames[first:first + num_frames], audio, first, first / clip.fps))
    return windows


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _frames_to_uint8(frames: Any, path: Path) -> np.ndarray:
    """uint8 [T, H, W, 3] as is; float [T, 3, H, W] in [-1, 1] (numpy or torch) converted."""
    if hasattr(frames, "detach"):  # torch.Tensor, without importing torch here
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise MediaError(path, f"frames must be [T, H, W, 3] uint8 or [T, 3, H, W] float, got shape {frames.shape}")
    if frames.dtype == np.uint8:
        if frames.shape[-1] != 3:
            raise MediaError(path, f"uint8 frames must be [T, H, W, 3], got shape {frames.shape}")
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating) or frames.shape[1] != 3:
        raise MediaError(path, f"float frames must be [T, 3, H, W] in [-1, 1], got {frames.dtype} {frames.shape}")
    if not np.isfinite(frames).all():
        raise MediaError(path, "frames contain NaN or infinite values")
    scaled = np.clip(np.rint((frames.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1))


def _audio_to_float(audio: Any, path: Path) -> np.ndarray:
    """Mono float32 [N] from [N] or [1, N] (numpy or torch)."""
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise MediaError(path, f"audio must be mono [N] or [1, N], got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise MediaError(path, "audio contains NaN or infinite values")
    return np.clip(audio, -1.0, 1.0)


def _atomic_target(path: Path) -> contextlib.AbstractContextManager[Path]:
    """:func:`mmldm.files.atomic_target` for ``path``, its folder made first: a temporary name
    with the same suffix, renamed over ``path`` when complete, with the mode a plain open gives."""
    with disk_full_as_error(path):
        make_folder(path.parent)
    return atomic_target(path)


def h264_encoder() -> str:
    """Name of the first available software H.264 encoder of PyAV's FFmpeg."""
    for name in _H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError
            continue
        return name
    raise MediaError("PyAV", f"its FFmpeg build has no H.264 encoder (looked for {', '.join(_H264_ENCODERS)})")


def check_writable_suffix(path: str | Path) -> str:
    """The container format :func:`write_av` uses for ``path``; a folder or another suffix is a MediaError."""
    path = Path(path)
    if path.is_dir():
        raise MediaError(path, f"is a folder; give a video file name ({', '.join(sorted(_WRITE_FORMATS))})")
    container_format = _WRITE_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise MediaError(path, f"cannot write '{path.suffix}' files; use one of {sorted(_WRITE_FORMATS)}")
    return container_format


def write_av(
    path: str | Path,
    frames: Any,
    audio: Any | None,
    fps: float,
    sample_rate: int,
    wav: bool = False,
    crf: int = 18,
) -> Path:
    """Write an H.264 + AAC MP4 whose audio is in sync to the sample; return its path.

    Args:
        frames: uint8 [T, H, W, 3], or float [T, 3, H, W] in [-1, 1] (numpy or torch).
            H.264 (4:2:0) needs even H and W; odd sizes are refused.
        audio: mono float [N] or [1, N] in [-1, 1], or None for a file without audio.
            It is trimmed or zero-padded to ``round(T * sample_rate / fps)`` samples,
            exactly the video duration.
        wav: also write the (trimmed) audio as 16-bit PCM WAV beside the video.
        crf: libx264 quality (0 lossless .. 51 worst); libx264 is used when PyAV has it
            (its wheels do), otherwise another H.264 encoder (:func:`h264_encoder`).

    The file appears atomically: it is written under a temporary name in the same
    folder and renamed when complete. The same frames and audio give the same bytes,
    on any machine and however busy it is (one encoder thread, x264's cpu-independent mode).
    """
    path = Path(path)
    container_format = check_writable_suffix(path)
    frames = _frames_to_uint8(frames, path)
    num_frames, height, width = frames.shape[:3]
    if num_frames == 0:
        raise MediaError(path, "no frames to write")
    if height % 2 or width % 2:
        raise MediaError(path, f"H.264 needs even frame sizes, got {width}x{height}; pad or resize the frames")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise MediaError(path, f"frames of {width}x{height} exceed the {MAX_SIDE} px limit per side")
    rate = _exact(fps)
    if audio is not None:
        wave = _audio_to_float(audio, path)
        num_samples = int(round(num_frames * sample_rate / rate))
        wave = np.pad(wave[:num_samples], (0, max(0, num_samples - len(wave))))
    with _atomic_target(path) as tmp, _open(tmp, "w", format=container_format) as container:
        encoder = h264_encoder()
        vstream = container.add_stream(encoder, rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        # One encoder thread: with its default (as many as the CPUs this process may use),
        # x264's output depends on the machine and on the CPU affinity at the time (which
        # other work in the process can change), so the same frames gave other bytes.
        vstream.codec_context.thread_count = 1
        vstream.codec_context.thread_type = "NONE"
        if encoder == "libx264":
            # cpu-independent: with x264's CPU-tuned macroblock-tree code the same frames gave one
            # of several encodings from run to run when the CPUs were busy (a few in ten with two
            # processes encoding on two cores); this option makes x264 pick the same code each time.
            vstream.options = {"crf": str(crf), "threads": "1", "x264-params": "cpu-independent=1"}
        else:  # no constant-quality mode: a generous bit rate instead
            vstream.bit_rate = 8 * width * height * int(math.ceil(rate))
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            chunk = astream.codec_context.frame_size or 1024
            for first in range(0, len(wave), chunk):
                frame = av.AudioFrame.from_ndarray(wave[None, first:first + chunk], format="fltp", layout="mono")
                # The pts is what makes the encoder's priming delay end up in the edit list.
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, first, Fraction(1, sample_rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    if wav and audio is not None:
        write_wav(path.with_suffix(".wav"), wave, sample_rate)
    return path


def write_wav(path: str | Path, audio: Any, sample_rate: int) -> Path:
    """Write mono float audio [N] in [-1, 1] as 16-bit PCM WAV (stdlib ``wave``), atomically."""
    import wave

    path = Path(path)
    samples = _audio_to_float(audio, path)
    pcm = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2")  # decoders divide by 32768
    with _atomic_target(path) as tmp, wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any audio file PyAV decodes as mono float32 [N]; resample when ``sample_rate`` is given.

    Returns ``(audio, sample_rate)``.
    """
    path = Path(path)
    info = probe(path)
    if not info.has_audio:
        raise MediaError(path, "no audio stream")
    rate = sample_rate or info.sample_rate
    try:
        with _open(path) as container:
            astream = _audio_stream(container)
            track = _AudioTrack(_seconds(astream.start_time, astream.time_base) or Fraction(0))
            for frame in container.decode(astream):
                track.add(frame)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot decode ({exc.strerror or exc})") from None
    if track.rate is None:
        raise MediaError(path, "no decodable audio")
    total = track.next_offset or 0
    return track.render(Fraction(0), int(round(total * rate / track.rate)), rate), rate
