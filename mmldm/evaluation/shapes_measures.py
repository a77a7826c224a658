"""Exact audio-video measures for Sounding Shapes (no learned network).

A clip is in sync exactly when its sound obeys the dataset's law given its own
frames: f0(t_i) = 220 * 8 ** (1 - y_i / H), with y_i the object's centre row in
frame i (``mmldm.data.sounding_shapes``). These functions measure, from pixels
and samples alone:

- the object (pixels far from the background colour), its centroid, how many
  objects a frame holds (connected components, compression specks ignored) and
  its colour class;
- the audio's f0 at each frame instant and its timbre class;
- the sync error (median over frames of |12 log2(f0_audio / f0_law(y_video))|
  semitones), class agreement, and the fraction of frames with one object;
- folder aggregates, with the shuffled-pair baseline (audio of clip i against
  the video of clip pi(i), pi a fixed-seed random cyclic permutation).

Frames are numpy or torch, uint8 [T, H, W, 3] or float in [-1, 1] [T, 3, H, W];
audio is mono, [N] (or [1, N]).

Conventions: a frame without an object, or a frame whose audio window is
silent, cannot be in sync and counts as an infinite error (the median then
ignores a few such frames, but a clip mostly without object or sound scores
inf). Class ids are those of ``CLASSES``; -1 means "no class" (no object, or a
spectrum matching no timbre).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.sounding_shapes import BACKGROUND, CLASSES, MANIFEST_NAME, law_f0, read_manifest
from ..errors import DataError

# Object pixels: RGB distance from the background above this (class colours are 190-230 away).
OBJECT_THRESHOLD = 80.0
# Connected components smaller than this fraction of the frame (at least MIN_SPECK pixels) are
# compression specks, not objects. The smallest object covers ~1.7% of the frame.
SPECK_FRACTION = 0.002
MIN_SPECK = 4
# f0 search range (the law spans 220..1760 Hz) and analysis window.
F0_MIN_HZ = 180.0
F0_MAX_HZ = 2000.0
WINDOW_SECONDS = 0.064
EDGE_TAPER_SECONDS = 0.010
SILENCE_RMS = 1e-4
# A subharmonic f/d at least this fraction of the peak's power means the peak was a harmonic.
SUBHARMONIC_POWER = 0.25
# Power of a harmonic relative to the fundamental above which it counts as present.
# Saw: 2nd 0.25, 3rd 0.11; square: 3rd 0.11, 2nd 0; sine: none.
HARMONIC_PRESENT = 0.02


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def frames_to_rgb(frames: Any) -> np.ndarray:
    """uint8 [T, H, W, 3] or float [-1, 1] [T, 3, H, W] (numpy or torch) -> float32 RGB 0..255 [T, H, W, 3]."""
    array = _as_numpy(frames)
    if array.dtype == np.uint8:
        if array.ndim != 4 or array.shape[-1] != 3:
            raise DataError(f"frames: uint8 frames must be [T, H, W, 3], got shape {array.shape}")
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        if array.ndim != 4 or array.shape[1] != 3:
            raise DataError(f"frames: float frames must be [T, 3, H, W] in [-1, 1], got shape {array.shape}")
        rgb = (np.transpose(array, (0, 2, 3, 1)).astype(np.float32) + 1.0) * 127.5
        return np.clip(rgb, 0.0, 255.0)
    raise DataError(f"frames: expected uint8 or float frames, got dtype {array.dtype}")


def _audio_mono(audio: Any) -> np.ndarray:
    array = _as_numpy(audio)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    numeric = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    if array.ndim != 1 or not numeric:
        raise DataError(f"audio: expected mono samples [N], got shape {array.shape} dtype {array.dtype}")
    if array.size == 0:
        raise DataError("audio: no samples")
    return array.astype(np.float64)


# ---------------------------------------------------------------- video


def object_mask(frames: Any, threshold: float = OBJECT_THRESHOLD) -> np.ndarray:
    """Pixels whose RGB distance from the background exceeds ``threshold``: bool [T, H, W]."""
    return _mask(frames_to_rgb(frames), threshold)


def _mask(rgb: np.ndarray, threshold: float) -> np.ndarray:
    return np.linalg.norm(rgb - np.asarray(BACKGROUND, np.float32), axis=-1) > threshold


def _min_area(height: int, width: int, min_area: int | None) -> int:
    return max(MIN_SPECK, round(SPECK_FRACTION * height * width)) if min_area is None else min_area


def _components(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Objects of each frame: (count [T], per frame a bool [H, W] mask of the largest object, or None)."""
    eight_neighbours = np.ones((3, 3), dtype=bool)
    counts = np.zeros(mask.shape[0], dtype=np.int64)
    largest = []
    for t, frame_mask in enumerate(mask):
        labels, num = ndimage.label(frame_mask, structure=eight_neighbours)
        sizes = np.bincount(labels.ravel(), minlength=num + 1)[1:]
        kept = np.flatnonzero(sizes >= min_area) + 1
        counts[t] = len(kept)
        largest.append(labels == kept[np.argmax(sizes[kept - 1])] if len(kept) else None)
    return counts, largest


def _objects(rgb: np.ndarray, threshold: float, min_area: int | None) -> tuple[np.ndarray, list[np.ndarray | None]]:
    mask = _mask(rgb, threshold)
    return _components(mask, _min_area(*mask.shape[1:], min_area))


def _centroids(largest: list[np.ndarray | None]) -> np.ndarray:
    centres = np.full((len(largest), 2), np.nan)
    for t, pixels in enumerate(largest):
        if pixels is not None:
            rows, cols = np.nonzero(pixels)
            centres[t] = cols.mean() + 0.5, rows.mean() + 0.5
    return centres


def _colour_class(rgb: np.ndarray, largest: list[np.ndarray | None]) -> int:
    return _nearest_class([rgb[t][px] for t, px in enumerate(largest) if px is not None])


def _nearest_class(pixels: list[np.ndarray]) -> int:
    """Class of the palette colour nearest the median of the object pixels (each [P, 3]); -1 without any."""
    if not pixels:
        return -1
    colour = np.median(np.concatenate(pixels), axis=0)
    palette = np.asarray([cls.colour for cls in CLASSES], np.float32)
    return int(np.argmin(np.linalg.norm(palette - colour, axis=-1)))


def object_counts(frames: Any, threshold: float = OBJECT_THRESHOLD, min_area: int | None = None) -> np.ndarray:
    """Objects per frame: 8-connected components of the object mask of at least ``min_area`` pixels.

    ``min_area`` defaults to 0.2% of the frame (at least 4 pixels). Returns int64 [T].
    """
    return _objects(frames_to_rgb(frames), threshold, min_area)[0]


def object_centroids(frames: Any, threshold: float = OBJECT_THRESHOLD, min_area: int | None = None) -> np.ndarray:
    """Centre (x, y) of each frame's largest object, in continuous pixel coordinates.

    Pixel (row k, column j) has its centre at (j + 0.5, k + 0.5), so a frame's
    middle is (W/2, H/2) as in the dataset. Returns float64 [T, 2]; NaN when a
    frame holds no object.
    """
    return _centroids(_objects(frames_to_rgb(frames), threshold, min_area)[1])


def colour_class(frames: Any, threshold: float = OBJECT_THRESHOLD, min_area: int | None = None) -> int:
    """Class whose colour is nearest the median colour of the pixels of each frame's largest object,
    over all frames; -1 if no frame holds an object."""
    rgb = frames_to_rgb(frames)
    return _colour_class(rgb, _objects(rgb, threshold, min_area)[1])


def one_object_fraction(frames: Any, threshold: float = OBJECT_THRESHOLD, min_area: int | None = None) -> float:
    """Fraction of frames holding exactly one object."""
    return float(np.mean(object_counts(frames, threshold, min_area) == 1))


# ---------------------------------------------------------------- audio


def _num_frames(num_samples: int, sample_rate: int, fps: float, num_frames: int | None) -> int:
    if num_frames is not None:
        return num_frames
    return max(1, int(math.floor(num_samples * fps / sample_rate + 1e-9)))


def frame_spectra(audio: Any, sample_rate: int, fps: float = 10.0, num_frames: int | None = None,
                  window_seconds: float = WINDOW_SECONDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectra of Hann windows centred on the frame instants t_i = i / fps.

    Windows are clipped to the clip (zeros outside it) and, where they cross a
    clip edge, also ramped linearly over EDGE_TAPER_SECONDS inside it, so that
    an abrupt start or end splatters no energy across the spectrum. The FFT is
    zero-padded 8x for a fine frequency grid. Returns (power [T, F],
    frequencies [F] in Hz, rms [T] of the clipped, unwindowed segments).
    """
    samples = _audio_mono(audio)
    num_frames = _num_frames(len(samples), sample_rate, fps, num_frames)
    length = max(8, round(window_seconds * sample_rate))
    nfft = 1 << int(math.ceil(math.log2(8 * length)))
    centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(np.int64)
    index = centres[:, None] - length // 2 + np.arange(length)[None, :]  # [T, L] sample of each window slot
    inside = (index >= 0) & (index < len(samples))
    segments = np.where(inside, samples[np.clip(index, 0, len(samples) - 1)], 0.0)  # [T, L]
    taper = max(1, round(EDGE_TAPER_SECONDS * sample_rate))
    edge_ramp = np.clip(np.minimum(index + 1, len(samples) - index) / taper, 0.0, 1.0)  # 0 outside the clip
    rms = np.sqrt(np.mean(segments**2, axis=1))
    power = np.abs(np.fft.rfft(segments * edge_ramp * np.hanning(length), n=nfft, axis=1)) ** 2
    return power, np.fft.rfftfreq(nfft, 1.0 / sample_rate), rms


def _band_max(power: np.ndarray, freqs: np.ndarray, centre: float, rel: float) -> tuple[float, float]:
    band = (freqs >= centre * (1 - rel)) & (freqs <= centre * (1 + rel))
    if not band.any():
        return 0.0, centre
    index = np.flatnonzero(band)[np.argmax(power[band])]
    return float(power[index]), float(freqs[index])


def _estimate_f0(power: np.ndarray, freqs: np.ndarray) -> float:
    """f0 of one spectrum: strongest peak in range, octave guard, then spectral centroid.

    The tones' fundamentals are their strongest partials (harmonic n has
    amplitude 1/n), so the peak is the fundamental; the guard still moves to
    f/2 or f/3 when that holds a strong partial (a weak-fundamental sound).
    The refinement is the power-weighted mean frequency over [0.7 f, 1.3 f]: the
    centre of a steady tone's (symmetric) main lobe, and for a glide the
    Hann-weighted mean of its instantaneous frequency, i.e. close to f at the
    window centre (the law's glides span at most +-0.11 octave per window).
    """
    search = (freqs >= F0_MIN_HZ) & (freqs <= F0_MAX_HZ)
    peak = np.flatnonzero(search)[np.argmax(power[search])]
    peak_power, peak_freq = float(power[peak]), float(freqs[peak])
    for divisor in (3, 2):
        sub = peak_freq / divisor
        if sub >= F0_MIN_HZ:
            sub_power, sub_freq = _band_max(power, freqs, sub, 0.06)
            if sub_power >= SUBHARMONIC_POWER * peak_power:
                peak_freq = sub_freq
                break
    band = (freqs >= 0.7 * peak_freq) & (freqs <= 1.3 * peak_freq)
    weights = power[band]
    return float(np.sum(weights * freqs[band]) / np.sum(weights))


def _pitch_and_harmonics(audio: Any, sample_rate: int, fps: float,
                         num_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """f0 [T] (NaN when silent) and 2nd/3rd-harmonic power ratios [T, 2] from one set of spectra."""
    power, freqs, rms = frame_spectra(audio, sample_rate, fps, num_frames)
    f0 = np.full(len(power), np.nan)
    ratios = np.full((len(power), 2), np.nan)
    for t, (p, level) in enumerate(zip(power, rms)):
        if level < SILENCE_RMS:
            continue
        f0[t] = _estimate_f0(p, freqs)
        if 3.5 * f0[t] < sample_rate / 2:
            bands = [p[(freqs >= (n - 0.5) * f0[t]) & (freqs < (n + 0.5) * f0[t])].sum() for n in (1, 2, 3)]
            ratios[t] = bands[1] / bands[0], bands[2] / bands[0]
    return f0, ratios


def f0_per_frame(audio: Any, sample_rate: int, fps: float = 10.0, num_frames: int | None = None) -> np.ndarray:
    """The audio's fundamental frequency at each frame instant, from a ~64 ms window: float64 [T] Hz.

    NaN where the window is silent. ``num_frames`` defaults to the whole frames the audio spans.
    """
    return _pitch_and_harmonics(audio, sample_rate, fps, num_frames)[0]


def harmonic_ratios(audio: Any, sample_rate: int, fps: float = 10.0,
                    num_frames: int | None = None) -> np.ndarray:
    """Power of the 2nd and 3rd harmonics relative to the fundamental, per frame: float64 [T, 2].

    Harmonic n's power is the spectrum summed over [(n - 1/2) f0, (n + 1/2) f0].
    NaN on silent frames and where 3.5 f0 reaches Nyquist.
    """
    return _pitch_and_harmonics(audio, sample_rate, fps, num_frames)[1]


def _timbre_class(ratios: np.ndarray) -> int:
    valid = ~np.isnan(ratios[:, 0])
    if not valid.any():
        return -1
    second, third = np.median(ratios[valid], axis=0) > HARMONIC_PRESENT
    by_harmonics = {(False, False): "sine", (False, True): "square", (True, True): "saw"}
    name = by_harmonics.get((bool(second), bool(third)))
    return -1 if name is None else next(cls.id for cls in CLASSES if cls.tone == name)


def audio_class(audio: Any, sample_rate: int, fps: float = 10.0, num_frames: int | None = None) -> int:
    """Timbre class from the median harmonic ratios over frames: sine (no 2nd, no 3rd), square
    (3rd, no 2nd), saw (2nd and 3rd); -1 for silence or a spectrum matching none (2nd without 3rd)."""
    return _timbre_class(harmonic_ratios(audio, sample_rate, fps, num_frames))


# ---------------------------------------------------------------- clip measures


def video_features(frames: Any, threshold: float = OBJECT_THRESHOLD, min_area: int | None = None) -> dict[str, Any]:
    """What the measures need from a video: centre rows y [T], height, object counts [T], colour class.

    Frames are converted to float one at a time: a clip of large frames costs one float frame
    (and its object pixels), not a float copy of the whole clip.
    """
    array = _as_numpy(frames)
    height, width = frames_to_rgb(array[:1]).shape[1:3]  # also checks the layout
    area = _min_area(height, width, min_area)
    counts = np.zeros(len(array), dtype=np.int64)
    y = np.full(len(array), np.nan)
    pixels = []
    for t in range(len(array)):
        rgb = frames_to_rgb(array[t:t + 1])
        count, largest = _components(_mask(rgb, threshold), area)
        counts[t] = count[0]
        if largest[0] is not None:
            y[t] = _centroids(largest)[0, 1]
            pixels.append(rgb[0][largest[0]])
    return {"y": y, "height": height, "counts": counts, "colour_class": _nearest_class(pixels)}


def audio_features(audio: Any, sample_rate: int, fps: float, num_frames: int) -> dict[str, Any]:
    """What the measures need from a sound: f0 per frame [T] and timbre class."""
    f0, ratios = _pitch_and_harmonics(audio, sample_rate, fps, num_frames)
    return {"f0": f0, "audio_class": _timbre_class(ratios)}


def _semitone_errors(f0_audio: np.ndarray, y: np.ndarray, height: float) -> np.ndarray:
    frames = min(len(f0_audio), len(y))
    errors = np.abs(12.0 * np.log2(f0_audio[:frames] / law_f0(y[:frames], height)))
    return np.where(np.isnan(errors), np.inf, errors)


def combine_features(video: dict[str, Any], audio: dict[str, Any]) -> dict[str, Any]:
    """Clip measures from :func:`video_features` and :func:`audio_features` (possibly of different clips)."""
    return {
        "sync_error": float(np.median(_semitone_errors(audio["f0"], video["y"], video["height"]))),
        "class_agreement": bool(video["colour_class"] != -1 and video["colour_class"] == audio["audio_class"]),
        "one_object_fraction": float(np.mean(video["counts"] == 1)),
        "colour_class": int(video["colour_class"]),
        "audio_class": int(audio["audio_class"]),
    }


def sync_error(frames: Any, audio: Any, sample_rate: int, fps: float = 10.0, height: int | None = None) -> float:
    """Median over frames of |12 log2(f0_audio(t_i) / (220 * 8 ** (1 - y_i / H)))| in semitones.

    ``height`` defaults to the frames' height (y is measured in the same pixels).
    Frames without an object or with a silent window count as infinite error.
    """
    video = video_features(frames)
    f0 = f0_per_frame(audio, sample_rate, fps, len(video["y"]))
    return float(np.median(_semitone_errors(f0, video["y"], height or video["height"])))


def class_agreement(frames: Any, audio: Any, sample_rate: int, fps: float = 10.0) -> bool:
    """Whether the object's colour class equals the sound's timbre class (never for class -1)."""
    colour = colour_class(frames)
    return colour != -1 and colour == audio_class(audio, sample_rate, fps, len(frames_to_rgb(frames)))


def measure_clip(frames: Any, audio: Any, sample_rate: int, fps: float = 10.0) -> dict[str, Any]:
    """sync_error (semitones), class_agreement, one_object_fraction, colour_class, audio_class of one clip."""
    video = video_features(frames)
    return combine_features(video, audio_features(audio, sample_rate, fps, len(video["y"])))


def aggregate(measures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Folder numbers: clips, median sync error, class agreement %, one-object % (of frames, per clip mean)."""
    if not measures:
        raise DataError("Sounding Shapes measures: no clips to aggregate")
    errors = np.asarray([m["sync_error"] for m in measures])
    return {
        "clips": len(measures),
        "sync_error_median": float(np.median(errors)),
        "sync_error_within_1_semitone_pct": float(100.0 * np.mean(errors <= 1.0)),  # the bound: at most 1
        "class_agreement_pct": float(100.0 * np.mean([m["class_agreement"] for m in measures])),
        "one_object_pct": float(100.0 * np.mean([m["one_object_fraction"] for m in measures])),
    }


def shuffled_pairs(clips: Sequence[tuple[Any, Any]], seed: int = 0) -> list[tuple[Any, Any]]:
    """Mismatched pairs for the baseline: (video of clip pi(i), audio of clip i).

    ``pi`` is one cycle through a ``seed``-ed random order of the clips, so no clip keeps its
    own video and the pairing does not follow the file order (a folder sorted by class would
    otherwise pair mostly same-class neighbours). Works on any (video, audio) pairs: raw
    arrays or features. Needs at least two clips.
    """
    if len(clips) < 2:
        raise DataError(f"shuffled pairs need at least 2 clips, got {len(clips)}")
    order = np.random.default_rng(seed).permutation(len(clips))
    partner = np.empty(len(clips), dtype=int)
    partner[order] = np.roll(order, -1)  # order[k] takes the video of order[k + 1]
    return [(clips[int(partner[i])][0], clips[i][1]) for i in range(len(clips))]


def measure_pairs(clips: Sequence[tuple[Any, Any]], sample_rate: int, fps: float = 10.0) -> dict[str, Any]:
    """Aggregate measures of (frames, audio) pairs."""
    return aggregate([measure_clip(frames, audio, sample_rate, fps) for frames, audio in clips])


def _clip_paths(folder_or_files: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(folder_or_files, (str, Path)):
        folder = Path(folder_or_files)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of mp4 clips")
        if (folder / MANIFEST_NAME).is_file():
            paths = [record["path"] for record in read_manifest(folder)]
        else:
            paths = sorted(folder.rglob("*.mp4"))
    else:
        paths = [Path(p) for p in folder_or_files]
    if not paths:
        raise DataError(f"{folder_or_files}: no mp4 clips to measure")
    return paths


def measure_folder(folder_or_files: str | Path | Sequence[str | Path], fps: float = 10.0,
                   sample_rate: int = 16000, shuffled_baseline: bool = False,
                   progress: bool = False) -> dict[str, Any]:
    """Aggregate measures of mp4 clips (a folder, in manifest order if it has one, or a list of files).

    With ``shuffled_baseline`` the result also holds ``shuffled_pairs``: the same
    aggregate for audio of clip i against the video of another clip (:func:`shuffled_pairs`), the score of
    sound and picture that are each realistic but unrelated.
    """
    from ..data.media_io import read_av

    paths = _clip_paths(folder_or_files)
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="Sounding Shapes measures", unit="clip")
    features = []
    for path in paths:
        clip = read_av(path, fps=fps, sample_rate=sample_rate)
        video = video_features(clip.frames)
        features.append((video, audio_features(clip.audio, sample_rate, fps, len(video["y"]))))
    result = aggregate([combine_features(video, audio) for video, audio in features])
    if shuffled_baseline:
        result["shuffled_pairs"] = aggregate([combine_features(v, a) for v, a in shuffled_pairs(features)])
    return result
