"""AV-Align and an audio-video offset estimate: sync of real sounding video, without learned weights.

AV-Align (Yariv et al. 2024, "Diverse and Aligned Audio-to-Video Generation via
Text-to-Video Model Adaptation", the metric of their released ``av_align.py``):

- audio events A: onsets of the audio, librosa's ``onset_detect`` (default peak
  picking) on ``onset_strength`` of the audio resampled to 22.05 kHz (what
  ``librosa.load`` gives the released script), hop 512 samples;
- video events V: frames ``i`` (``1 <= i <= T - 2``) whose motion ``m[i]`` is a
  strict local maximum, ``m[i-1] < m[i] > m[i+1]``, where ``m[i]`` is the mean
  magnitude of OpenCV's Farneback optical flow from frame ``i - 1`` to frame
  ``i`` (grey frames; pyramid scale 0.5, 3 levels, window 15, 3 iterations,
  poly_n 5, poly_sigma 1.2) and ``m[0] = m[1]``; event time ``i / fps``;
- an audio onset at ``a`` and a video peak at ``v`` match when
  ``|a - v| < 1 / fps``; ``I`` = matched pairs, score ``I / (|A| + |V| - I)``.

Matching is one-to-one (each video peak pairs with at most one onset, found
greedily in time order, which gives a maximum matching for such interval
constraints), so the score is an intersection over union in [0, 1]. The
released script instead counts every onset that has any peak within a frame,
so two onsets near one peak both count and the score can exceed 1;
``matching="released"`` reproduces that count. Both agree whenever no two
onsets share a peak. A clip without any event on either side has no score
(NaN): nothing to align.

Offset: the audio onset-strength envelope is pooled to the frame rate (the
maximum over each frame's interval ``[(i - 1/2) / fps, (i + 1/2) / fps)``) and
correlated (Pearson, over the frames both cover) with the motion curve
``m[1:]``, for lags ``-max_lag..max_lag`` frames; the lag with the highest
correlation is the estimate. A positive lag means the sound comes late: audio
event at frame ``i + lag`` for a motion peak at frame ``i``.

Frames larger than ``max_side`` on their longer side are shrunk (OpenCV area
interpolation) before the optical flow, because the flow's cost grows with the
pixels: on Big Buck Bunny (4 windows of 3.2 s at 10 fps) the video peaks found
at 256 px and at the source's 720p agree to an IoU of 0.89, at 1/23 of the time
(docs/evaluation.md, "AV-Align").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError

#: librosa.load's default rate, which the released script analyses audio at.
ONSET_SAMPLE_RATE = 22050
ONSET_HOP = 512
#: cv2.calcOpticalFlowFarneback(prev, next, None, *FARNEBACK) as in the released script.
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
DEFAULT_MAX_SIDE = 256
DEFAULT_MAX_LAG = 8
MATCHINGS = ("one-to-one", "released")


@dataclass(frozen=True)
class VideoEvents:
    """Motion of a clip: ``motion`` float64 [T] (``motion[i]``: mean flow magnitude from frame i-1 to i,
    ``motion[0] = motion[1]``) and ``peaks`` float64 [P], peak times in seconds."""

    motion: np.ndarray
    peaks: np.ndarray
    fps: float


@dataclass(frozen=True)
class AudioEvents:
    """Onsets of a clip's sound: ``onsets`` float64 [K] seconds and ``envelope`` float64 [T], the
    onset strength pooled to the frame rate."""

    onsets: np.ndarray
    envelope: np.ndarray
    fps: float


@dataclass(frozen=True)
class Offset:
    """The lag (frames, positive: audio late) of highest correlation and that correlation
    (NaN where a curve is constant)."""

    lag: int
    correlation: float


def _grey(frames: np.ndarray, max_side: int | None) -> list[np.ndarray]:
    import cv2

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"AV-Align: expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 3:
        raise DataError(f"AV-Align: needs at least 3 frames, got {frames.shape[0]}")
    height, width = frames.shape[1:3]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = []
    for frame in frames:
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        out.append(grey if scale == 1.0 else cv2.resize(grey, size, interpolation=cv2.INTER_AREA))
    return out


def motion_curve(frames: np.ndarray, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Mean Farneback flow magnitude into each frame.

    Shapes: frames uint8 [T, H, W, 3] RGB (T >= 3) -> float64 [T]; entry 0 repeats entry 1.
    """
    import cv2

    grey = _grey(frames, max_side)
    motion = np.empty(len(grey))
    for i in range(1, len(grey)):
        flow = cv2.calcOpticalFlowFarneback(grey[i - 1], grey[i], None, *FARNEBACK)
        motion[i] = float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))
    motion[0] = motion[1]
    return motion


def strict_local_maxima(curve: np.ndarray) -> np.ndarray:
    """Indices i (1 <= i <= len - 2) with curve[i - 1] < curve[i] > curve[i + 1]: int64 [P]."""
    curve = np.asarray(curve)
    inner = (curve[1:-1] > curve[:-2]) & (curve[1:-1] > curve[2:])
    return np.flatnonzero(inner) + 1


def video_events(frames: np.ndarray, fps: float, max_side: int | None = DEFAULT_MAX_SIDE) -> VideoEvents:
    """Motion curve and its strict local maxima (as times i / fps) of frames uint8 [T, H, W, 3]."""
    motion = motion_curve(frames, max_side)
    return VideoEvents(motion, strict_local_maxima(motion) / float(fps), float(fps))


def _to_onset_rate(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise DataError(f"AV-Align: expected mono audio [N], got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise DataError("AV-Align: audio contains NaN or infinite values")
    if sample_rate == ONSET_SAMPLE_RATE:
        return wave
    # librosa.load's resampler, so onsets match the released script's.
    return librosa.resample(wave, orig_sr=sample_rate, target_sr=ONSET_SAMPLE_RATE, res_type="soxr_hq")


def audio_events(wave: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> AudioEvents:
    """Onset times (librosa defaults at 22.05 kHz) and the onset envelope pooled to ``num_frames`` frames.

    Shapes: wave float [N] mono -> onsets float64 [K] seconds, envelope float64 [num_frames].
    """
    import librosa

    y = _to_onset_rate(wave, sample_rate)
    strength = librosa.onset.onset_strength(y=y, sr=ONSET_SAMPLE_RATE, hop_length=ONSET_HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=strength, sr=ONSET_SAMPLE_RATE, hop_length=ONSET_HOP,
                                        units="time")
    times = librosa.frames_to_time(np.arange(len(strength)), sr=ONSET_SAMPLE_RATE, hop_length=ONSET_HOP)
    # Envelope bin k belongs to frame round(t_k * fps): the interval [(i - 1/2) / fps, (i + 1/2) / fps).
    owner = np.floor(times * fps + 0.5).astype(np.int64)
    envelope = np.zeros(num_frames)
    inside = (owner >= 0) & (owner < num_frames)
    np.maximum.at(envelope, owner[inside], strength[inside])
    return AudioEvents(np.asarray(onsets, dtype=np.float64), envelope, float(fps))


def matched_events(onsets: Sequence[float], peaks: Sequence[float], fps: float,
                   matching: str = "one-to-one") -> int:
    """Number of onsets within one frame (strictly) of a video peak.

    ``one-to-one``: each peak serves at most one onset (greedy in time order, a maximum matching);
    ``released``: every onset with any peak in reach counts, as the released script does.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    tolerance = 1.0 / fps
    onsets, peaks = np.sort(np.asarray(onsets, float)), np.sort(np.asarray(peaks, float))
    if matching == "released":
        return int(sum(np.any(np.abs(peaks - a) < tolerance) for a in onsets))
    count, j = 0, 0
    for a in onsets:
        while j < len(peaks) and peaks[j] <= a - tolerance:  # too early for this and every later onset
            j += 1
        if j < len(peaks) and peaks[j] < a + tolerance:
            count += 1
            j += 1
    return count


def iou_score(onsets: Sequence[float], peaks: Sequence[float], fps: float, matching: str = "one-to-one") -> float:
    """I / (|A| + |V| - I); NaN when neither side has an event."""
    matched = matched_events(onsets, peaks, fps, matching)
    union = len(onsets) + len(peaks) - matched
    return float("nan") if union == 0 else matched / union


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float("nan") if norm == 0.0 else float(a @ b) / norm


def correlation_curve(envelope: np.ndarray, motion: np.ndarray, max_lag: int = DEFAULT_MAX_LAG) -> np.ndarray:
    """Pearson correlation of ``envelope[i + lag]`` with ``motion[i]`` over frames 1..T-1 (``motion[0]``
    only repeats ``motion[1]``), for lag = -max_lag..max_lag.

    Lags are tried while the two overlap on about half of those frames (|lag| <= T // 2); the
    others, and lags where a curve is constant, are NaN. Shapes: envelope float [T], motion float [T] -> float64 [2 max_lag + 1].
    """
    envelope, motion = np.asarray(envelope, float)[1:], np.asarray(motion, float)[1:]
    if len(envelope) != len(motion):
        raise ValueError(f"envelope and motion differ in length: {len(envelope) + 1} != {len(motion) + 1}")
    curve = np.full(2 * max_lag + 1, np.nan)
    reach = min(max_lag, (len(motion) + 1) // 2)  # the overlap, len - |lag|, keeps about half the frames
    for lag in range(-reach, reach + 1):
        if lag >= 0:
            curve[lag + max_lag] = _pearson(envelope[lag:], motion[:len(motion) - lag])
        else:
            curve[lag + max_lag] = _pearson(envelope[:lag], motion[-lag:])
    return curve


def best_lag(curve: np.ndarray) -> Offset:
    """The lag of a :func:`correlation_curve` (or a mean of several) with the highest correlation.

    Ties go to the smallest |lag|, then the negative one; a curve without any value gives (0, NaN).
    """
    max_lag = (len(curve) - 1) // 2
    best = Offset(0, float("nan"))
    for lag in sorted(range(-max_lag, max_lag + 1), key=lambda k: (abs(k), k)):
        r = float(curve[lag + max_lag])
        if not math.isnan(r) and (math.isnan(best.correlation) or r > best.correlation):
            best = Offset(lag, r)
    return best


def estimate_offset(envelope: np.ndarray, motion: np.ndarray, max_lag: int = DEFAULT_MAX_LAG) -> Offset:
    """The lag in frames (positive: audio late) maximising :func:`correlation_curve`, and that correlation."""
    return best_lag(correlation_curve(envelope, motion, max_lag))


def combine(video: VideoEvents, audio: AudioEvents, max_lag: int = DEFAULT_MAX_LAG,
            matching: str = "one-to-one") -> dict[str, Any]:
    """AV-Align score and offset of one (video, audio) pair, possibly from different clips."""
    curve = correlation_curve(audio.envelope, video.motion, max_lag)
    offset = best_lag(curve)
    return {"score": iou_score(audio.onsets, video.peaks, video.fps, matching),
            "audio_onsets": int(len(audio.onsets)), "video_peaks": int(len(video.peaks)),
            "offset_frames": offset.lag, "offset_correlation": offset.correlation, "correlation_curve": curve}


def av_align(frames: np.ndarray, wave: np.ndarray, fps: float, sample_rate: int,
             max_side: int | None = DEFAULT_MAX_SIDE, max_lag: int = DEFAULT_MAX_LAG,
             matching: str = "one-to-one") -> dict[str, Any]:
    """AV-Align of one clip: frames uint8 [T, H, W, 3] RGB at ``fps``, mono audio [N] at ``sample_rate``.

    Returns ``score`` (NaN without events), ``audio_onsets``, ``video_peaks``, ``offset_frames``,
    ``offset_correlation`` and ``correlation_curve`` (float64 [2 max_lag + 1], lags -max_lag..max_lag).
    """
    video = video_events(frames, fps, max_side)
    return combine(video, audio_events(wave, sample_rate, fps, len(video.motion)), max_lag, matching)


def aggregate(measures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Folder numbers of :func:`combine` results.

    ``av_align_mean``: mean score over the clips with events; ``audio_onsets_mean`` and
    ``video_peaks_mean``: the events per clip it matched (an IoU of onsets and peaks rises with
    their density alone, so a set with sparser onsets scores lower at the same alignment).
    Offsets: the per-clip estimates' median and share within one frame of 0, and the pooled
    estimate, the argmax of the clips' mean correlation curve (far steadier than any one short
    clip's).
    """
    if not measures:
        raise DataError("AV-Align: no clips to aggregate")
    scores = np.asarray([m["score"] for m in measures], float)
    lags = np.asarray([m["offset_frames"] for m in measures], float)
    curves = np.asarray([m["correlation_curve"] for m in measures], float)
    defined = ~np.isnan(scores)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: lags no clip reaches
        mean_curve = np.nanmean(curves, axis=0)
    pooled = best_lag(mean_curve)
    max_lag = (curves.shape[1] - 1) // 2
    return {
        "clips": len(measures),
        "clips_with_events": int(defined.sum()),
        "av_align_mean": float(scores[defined].mean()) if defined.any() else float("nan"),
        "av_align_std": float(scores[defined].std()) if defined.any() else float("nan"),
        "audio_onsets_mean": float(np.mean([m["audio_onsets"] for m in measures])),
        "video_peaks_mean": float(np.mean([m["video_peaks"] for m in measures])),
        "offset_frames_median": float(np.median(lags)),
        "offset_within_1_frame_pct": float(100.0 * np.mean(np.abs(lags) <= 1)),
        "pooled_offset_frames": pooled.lag,
        "pooled_offset_correlation": pooled.correlation,
        "mean_correlation_by_lag": {str(lag): (None if np.isnan(r) else round(float(r), 6))
                                    for lag, r in zip(range(-max_lag, max_lag + 1), mean_curve)},
    }
