"""``evaluate_folders``: FVD, KVD, FAD, AV-Align (and Sounding Shapes measures) of a folder of
generated clips against a folder of reference videos, recording every protocol choice.

What is scored (docs/evaluation.md has the full protocol); every metric scores the same clips:

- generated: the first ``num_frames`` frames (and their audio) of each file;
  when the folder holds more than ``num_samples`` files, a seeded random subset.
- reference: random ``num_frames``-frame windows (stride 1, at ``fps``) drawn
  without replacement from every window of every reference file, with
  ``numpy.random.default_rng(seed)``. Window counts come from the file headers
  (``probe``), so an unusable reference folder fails before anything is scored;
  a window the decoder cannot fill is dropped and counted.
- files that cannot be read (or are too short) are skipped, listed in the
  result and warned about; an evaluation with no usable file on a side is an error.

Memory: files are never decoded whole. A generated clip is read up to its
``num_frames`` frames; a reference file is read in pieces covering nearby
windows, at most ``READ_BYTES`` of decoded frames each, and every metric keeps
only its features of a clip (I3D input tensors, embeddings, event lists).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..devices import check_device
from ..errors import (
    ConfigError,
    DataError,
    MMLDMError,
    WeightsError,
    check_positive_int,
)
from ..weights import sha256_file
from .audio_features import (
    VGGISH_EMBEDDING_DIM,
    VGGISH_SAMPLE_RATE,
    VGGISH_WHAT,
    load_vggish,
    random_vggish,
    vggish_embeddings,
)
from .audioclip import (
    AUDIOCLIP_EMBEDDING_DIM,
    AUDIOCLIP_SAMPLE_RATE,
    AUDIOCLIP_WHAT,
    audioclip_embeddings,
    load_audioclip,
    random_audioclip,
)
from .features import i3d_batch_features, preprocess_video
from .frechet import frechet_distance
from .i3d import I3D_FEATURE_DIM, I3D_WHAT, load_i3d, random_i3d
from .mmd import kernel_distance
from .protocol import EvalProtocol

RANDOM_FEATURES_BANNER = "RANDOM FEATURES: NOT COMPARABLE TO ANY PUBLISHED NUMBER"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv")
#: metrics computed from feature nets; those on the I3D features are VIDEO_FEATURE_METRICS
FEATURE_METRICS = ("fvd", "kvd", "fad", "memorisation")
VIDEO_FEATURE_METRICS = ("fvd", "kvd", "memorisation")
ALL_METRICS = (*FEATURE_METRICS, "shapes", "av-align")
#: what ``evaluate`` scores when no metric is named
DEFAULT_METRICS = ("fvd", "kvd", "fad")
#: metrics that listen: with any of them, files without an audio stream are skipped for all metrics.
AUDIO_METRICS = ("fad", "shapes", "av-align")
#: decoded frames (uint8, source resolution) of one read of a reference file: a few seconds of 720p.
READ_BYTES = 128 * 1024**2
#: the Sounding Shapes measures see frames at most this large (their law is in units of the frame
#: height, so scale does not change it; Sounding Shapes clips are smaller and measured as they are).
SHAPES_MAX_SIDE = 256
AUDIO_NETS = ("audioclip", "vggish")

Log = Callable[[str], None]


def _once(log: Log) -> Log:
    """``log`` that passes each distinct line on once."""
    said: set[str] = set()

    def say(message: str) -> None:
        if message not in said:
            said.add(message)
            log(message)

    return say


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class AudioNet:
    """An audio feature net: ``embed`` maps mono [-1, 1] audio at ``sample_rate`` to [E, D] float64."""

    embed: Callable[[np.ndarray], np.ndarray]
    sample_rate: int


@dataclass(frozen=True)
class FeatureNets:
    """The feature networks of one evaluation and what to record about them.

    ``video_cache``: when a dict, the I3D features of every clip scored are kept in it, keyed
    by the clip (its file's SHA-256 and its first frame) and the protocol's input settings,
    and a clip met again is not passed through I3D again: several evaluations
    with the same nets (a recipe scoring many folders against one reference) share it.
    """

    i3d: torch.nn.Module | None
    audio: AudioNet | None
    record: dict[str, Any]
    video_cache: dict[tuple[Any, ...], np.ndarray] | None = None

    @classmethod
    def build(
        cls,
        metrics: tuple[str, ...],
        protocol: EvalProtocol,
        i3d_path: str | Path | None,
        audio_weights: str | Path | None,
        random_features: bool,
        seed: int,
        device: str = "cpu",
    ) -> "FeatureNets":
        """Load (or, with ``random_features``, build seeded random) nets for the requested metrics.

        The audio net is ``protocol.audio_net``. A metric whose weights are not
        given is a WeightsError: there is no silent fallback.
        """
        record: dict[str, Any] = {"random_features": random_features}
        i3d = audio = None
        if set(VIDEO_FEATURE_METRICS) & set(metrics):
            if random_features:
                i3d = random_i3d(seed)
                record["video"] = {"net": "I3D (random weights)", "weights": None, "sha256": None, "seed": seed}
            else:
                if i3d_path is None:
                    raise WeightsError(None, I3D_WHAT, "no weight file given for FVD/KVD/memorisation; pass "
                                       "--i3d PATH (or --metrics without fvd,kvd,memorisation, or --features "
                                       "random for a smoke test)")
                i3d = load_i3d(i3d_path)
                record["video"] = {"net": I3D_WHAT, "weights": str(i3d_path), "sha256": sha256_file(i3d_path)}
            # eps and max-pool padding follow the weight file (1e-3 / -inf converted from DeepMind's
            # checkpoint, 1e-5 / zero for the PyTorch port): they change the features
            record["video"].update(feature="400-d pre-softmax logits, averaged over time", dim=I3D_FEATURE_DIM,
                                   batchnorm_eps=i3d.bn_eps, max_pool_padding=i3d.max_pool_padding)
        if "fad" in metrics:
            audio, record["audio"] = _build_audio_net(protocol, audio_weights, random_features, seed, device)
        return cls(i3d=i3d, audio=audio, record=record)


def _build_audio_net(protocol: EvalProtocol, weights: str | Path | None, random_features: bool,
                     seed: int, device: str) -> tuple[AudioNet, dict[str, Any]]:
    name = protocol.audio_net
    if name not in AUDIO_NETS:
        raise DataError(f"unknown audio feature net {name!r} (known: {', '.join(AUDIO_NETS)})")
    what = AUDIOCLIP_WHAT if name == "audioclip" else VGGISH_WHAT
    if random_features:
        model = random_audioclip(seed) if name == "audioclip" else random_vggish(seed)
        record: dict[str, Any] = {"net": f"{name} (random weights)", "weights": None, "sha256": None, "seed": seed}
    else:
        if weights is None:
            raise WeightsError(None, what, "no weight file given for FAD; pass --audio-weights PATH "
                               "(or --metrics without fad, or --features random for a smoke test)")
        model = load_audioclip(weights) if name == "audioclip" else load_vggish(weights)
        record = {"net": what, "weights": str(weights), "sha256": sha256_file(weights)}
    model = model.to(device)
    if name == "audioclip":
        int16 = protocol.audioclip_input == "int16"
        record.update(
            feature="raw 1024-d audio embedding (not L2-normalised), one per clip", dim=AUDIOCLIP_EMBEDDING_DIM,
            sample_rate=AUDIOCLIP_SAMPLE_RATE,
            input="[-1, 1] audio x 32768 (int16 range, as the net expects)" if int16 else
                  "[-1, 1] audio fed as is (reproduces the released evaluator; about -90 dB to the net)",
            windowing="whole 1.6 s clip (70,560 samples): 1654-sample Blackman-Harris frames, hop 561, FBSP",
        )
        net = AudioNet(lambda a: audioclip_embeddings(model, a, AUDIOCLIP_SAMPLE_RATE, int16), AUDIOCLIP_SAMPLE_RATE)
    else:
        record.update(
            feature="128-d embedding (last ReLU, before PCA/quantisation)", dim=VGGISH_EMBEDDING_DIM,
            sample_rate=VGGISH_SAMPLE_RATE, input="mono float in [-1, 1]",
            windowing="0.96 s log-mel examples (25 ms / 10 ms STFT, 64 mel 125-7500 Hz), hop 0.96 s, "
                      "trailing part dropped; every example is one sample",
        )
        net = AudioNet(lambda a: vggish_embeddings(model, a, VGGISH_SAMPLE_RATE), VGGISH_SAMPLE_RATE)
    return net, record


def list_videos(folder: str | Path, what: str) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted). Missing or empty folders are DataErrors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{what} folder {folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return files


def _subset(files: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    """All files when there are at most ``count``, else a seeded random subset kept in sorted order."""
    if len(files) <= count:
        return files
    return [files[i] for i in sorted(rng.choice(len(files), count, replace=False))]


class _Collector:
    """Feature vectors of clips fed one at a time (video in batches, audio per clip), in the order fed.

    Each clip's frames are brought to the I3D input ([3, T, 224, 224] float) as it arrives, so
    a pending batch never holds frames at their source resolution. A clip whose features are in
    the nets' ``video_cache`` is not passed through I3D again.
    """

    def __init__(self, nets: FeatureNets, protocol: EvalProtocol, batch_size: int, device: str):
        self.nets, self.protocol, self.batch_size, self.device = nets, protocol, batch_size, device
        self._pending: list[tuple[int, torch.Tensor, tuple[Any, ...] | None]] = []  # (slot, input, cache key)
        self.video: list[np.ndarray | None] = []  # one [400] row per clip; None until its batch has run
        self.audio: list[np.ndarray] = []
        self.cached = 0

    def add(self, frames: np.ndarray, audio: np.ndarray, path: Path, start: int) -> None:
        if self.nets.i3d is not None:
            cache = self.nets.video_cache
            key = None if cache is None else (*_clip_key(path, start), *_video_input_settings(self.protocol))
            if key is not None and key in cache:
                self.video.append(cache[key])
                self.cached += 1
            else:
                self.video.append(None)
                self._pending.append((len(self.video) - 1, preprocess_video(
                    frames, self.protocol.downsample_to, antialias=self.protocol.letterbox_antialias), key))
                if len(self._pending) == self.batch_size:
                    self.flush()
        if self.nets.audio is not None:
            self.audio.append(self.nets.audio.embed(audio))

    def flush(self) -> None:
        """Run the pending batch (its features enter the cache, for the clips fed after it)."""
        if self._pending:
            slots, inputs, keys = zip(*self._pending)
            features = i3d_batch_features(self.nets.i3d, torch.stack(inputs), self.device)
            for slot, key, row in zip(slots, keys, features):
                self.video[slot] = row
                if key is not None:
                    self.nets.video_cache[key] = row
            self._pending = []

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        self.flush()
        video = np.stack(self.video) if self.video else None
        audio = np.concatenate(self.audio) if self.audio else None
        return video, audio


def _video_input_settings(protocol: EvalProtocol) -> tuple[Any, ...]:
    """The protocol fields that change a clip's I3D input (part of a feature cache key)."""
    return (protocol.num_frames, protocol.fps, protocol.downsample_to, protocol.letterbox_antialias,
            protocol.i3d_resolution)


def _clip_key(path: Path, start: int) -> tuple[Any, ...]:
    """A clip by its file's content (SHA-256: a copied file is the same clip) and first frame."""
    stat = path.stat()
    return (_file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns), start)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, read once per (path, size, modification time)."""
    return sha256_file(path)


class _Side:
    """What every requested metric keeps of one side's clips (features, never the clips themselves)."""

    def __init__(self, metrics: tuple[str, ...], nets: FeatureNets | None, protocol: EvalProtocol,
                 sample_rate: int, batch_size: int, device: str):
        self.protocol, self.sample_rate = protocol, sample_rate
        self.features = _Collector(nets, protocol, batch_size, device) if nets is not None else None
        self.shapes: list[tuple[dict[str, Any], dict[str, Any]]] | None = [] if "shapes" in metrics else None
        self.av: list[tuple[Any, Any]] | None = [] if "av-align" in metrics else None
        self.clips = 0
        self.labels: list[list[Any]] = []  # [path, first frame] of each clip, in the order fed

    def flush(self) -> None:
        """Compute the features still pending (a side is complete: later sides may reuse them)."""
        if self.features is not None:
            self.features.flush()

    def add(self, frames: np.ndarray, audio: np.ndarray, path: Path, start: int) -> None:
        """Shapes: frames uint8 [num_frames, H, W, 3]; audio float32 [num_frames * sample_rate / fps].

        ``path``, ``start``: the file and first frame the clip was cut from.
        """
        self.clips += 1
        self.labels.append([str(path), start])
        fps = self.protocol.fps
        if self.features is not None:
            self.features.add(frames, audio, path, start)
        if self.shapes is not None:
            from .shapes_measures import audio_features, video_features

            video = video_features(_shrink(frames, SHAPES_MAX_SIDE))
            self.shapes.append((video, audio_features(audio, self.sample_rate, fps, len(video["y"]))))
        if self.av is not None:
            from .av_align import audio_events, video_events

            self.av.append((video_events(frames, fps), audio_events(audio, self.sample_rate, fps, len(frames))))


def _shrink(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames whose longer side exceeds ``max_side`` brought down to it (aspect kept, OpenCV area
    interpolation); smaller frames are returned as they are.

    Shapes: uint8 [T, H, W, 3] -> uint8 [T, H', W', 3].
    """
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frames
    import cv2

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])


def _warn_short_audio(info: Any, end: float, fps: float, log: Log) -> None:
    """Warn (through the once-only ``log``: once per file) when a file's audio ends before ``end``,
    the end of the part of its video being scored."""
    if not info.has_audio or info.audio_duration is None:
        return
    if end > info.audio_duration + 0.5 / fps:  # half a frame: container rounding is not a gap
        log(f"warning: {info.path}: its audio ({info.audio_duration:.2f} s) is shorter than its video "
            f"({info.duration:.2f} s); scored audio past {info.audio_duration:.2f} s is zero-padded (silence)")


def _collect_generated(files: list[Path], protocol: EvalProtocol, side: _Side, need_audio: bool,
                       log: Log) -> list[dict[str, str]]:
    """Feed the first ``num_frames`` frames (and their audio) of each file; returns the skipped files."""
    from ..data import media_io

    skipped = []
    samples = int(round(protocol.num_frames * side.sample_rate / protocol.fps))
    duration = protocol.num_frames / protocol.fps
    for path in files:
        try:
            info = media_io.probe(path)
            clip = media_io.read_av(path, fps=protocol.fps, sample_rate=side.sample_rate, size=None,
                                    duration=duration, require_audio=need_audio)
            if clip.num_frames < protocol.num_frames:
                raise DataError(f"{path}: {clip.num_frames} frames at {protocol.fps} fps, "
                                f"fewer than the {protocol.num_frames} scored")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        _warn_short_audio(info, duration, protocol.fps, log)
        side.add(clip.frames[:protocol.num_frames], clip.audio[:samples], path, 0)
        del clip
    if side.clips < 2:  # one line saying why, rather than a warning per file and then the error
        why = f" (skipped {len(skipped)}, e.g. {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"generated folder: {side.clips} usable clip(s); at least 2 are needed{why}")
    for item in skipped:
        log(f"warning: skipping generated clip: {item['reason']}")
    return skipped


@dataclass
class _ReferencePlan:
    """The reference windows to score, chosen from the file headers alone (nothing decoded)."""

    starts: dict[Path, list[int]]  # start frames by file, both sorted
    infos: dict[Path, Any]  # media_io.MediaInfo of each file holding a window
    available: int
    skipped: list[dict[str, str]]

    @property
    def windows(self) -> list[list[Any]]:
        return [[str(path), start] for path, file_starts in self.starts.items() for start in file_starts]

    @property
    def sample_rate(self) -> int | None:
        """The first usable file's audio rate (None without audio)."""
        return next((info.sample_rate for info in self.infos.values() if info.sample_rate), None)


def _plan_reference(files: list[Path], protocol: EvalProtocol, count: int, rng: np.random.Generator,
                    need_audio: bool, log: Log) -> _ReferencePlan:
    """Draw ``count`` windows (file, start frame) uniformly from all windows of all files.

    Window counts come from the headers (``probe``), so an unusable reference folder is an error
    before anything is decoded or scored.
    """
    from ..data.media_io import probe

    skipped, per_file, infos = [], [], {}
    for path in files:
        try:
            info = probe(path)
            if not info.has_video or (need_audio and not info.has_audio):
                raise DataError(f"{path}: needs a video{' and an audio' if need_audio else ''} stream")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        # Output frame i shows time i / fps; those instants inside the video's duration.
        frames = math.ceil(round(info.duration * protocol.fps, 6))
        windows = frames - protocol.num_frames + 1
        if windows < 1:
            reason = (f"{path}: {frames} frames at {protocol.fps} fps, "
                      f"shorter than one {protocol.num_frames}-frame window")
            skipped.append({"path": str(path), "reason": reason})
            continue
        per_file.append((path, windows))
        infos[path] = info
    available = sum(w for _, w in per_file)
    if available < 2:  # one line saying why, rather than a warning per file and then the error
        why = f" (skipped {len(skipped)}, e.g. {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"reference folder: {available} usable {protocol.num_frames}-frame window(s) at "
                        f"{protocol.fps:g} fps; at least 2 are needed{why}")
    for item in skipped:
        log(f"warning: skipping reference file: {item['reason']}")
    offsets = np.cumsum([0] + [w for _, w in per_file])
    chosen = np.sort(rng.choice(available, min(count, available), replace=False))
    starts: dict[Path, list[int]] = {}
    for index in chosen:
        k = int(np.searchsorted(offsets, index, side="right") - 1)
        starts.setdefault(per_file[k][0], []).append(int(index - offsets[k]))
    return _ReferencePlan(starts, {path: infos[path] for path in starts}, available, skipped)


def _spans(starts: list[int], num_frames: int, max_frames: int) -> list[tuple[int, int, list[int]]]:
    """Group sorted window starts into reads of at most ``max_frames`` frames: (first, end, starts)."""
    spans: list[tuple[int, int, list[int]]] = []
    for start in starts:
        if spans and start + num_frames - spans[-1][0] <= max_frames:
            first, _, members = spans[-1]
            members.append(start)
            spans[-1] = (first, start + num_frames, members)
        else:
            spans.append((start, start + num_frames, [start]))
    return spans


def _collect_reference(plan: _ReferencePlan, protocol: EvalProtocol, side: _Side, need_audio: bool,
                       log: Log) -> tuple[int, list[dict[str, str]]]:
    """Feed every planned window, reading each file in pieces of at most READ_BYTES of decoded frames.

    Returns (windows dropped, files that failed to decode).
    """
    from ..data.media_io import read_av

    dropped, skipped = 0, []
    per_frame = side.sample_rate / protocol.fps
    samples = int(round(protocol.num_frames * per_frame))
    for path, file_starts in plan.starts.items():
        info = plan.infos[path]
        # frames come at their display aspect
        max_frames = max(protocol.num_frames, READ_BYTES // (info.shown_width * info.height * 3))
        for first, end, members in _spans(file_starts, protocol.num_frames, max_frames):
            try:
                clip = read_av(path, fps=protocol.fps, sample_rate=side.sample_rate, size=None,
                               start=first / protocol.fps, duration=(end - first) / protocol.fps,
                               require_audio=need_audio)
            except MMLDMError as exc:
                if not any(s["path"] == str(path) for s in skipped):
                    skipped.append({"path": str(path), "reason": str(exc)})
                    log(f"warning: reference file {path}: windows dropped: {exc}")
                dropped += len(members)
                continue
            for start in members:
                offset = start - first
                if offset + protocol.num_frames > clip.num_frames:
                    dropped += 1
                    continue
                _warn_short_audio(info, (start + protocol.num_frames) / protocol.fps, protocol.fps, log)
                a = int(round(offset * per_frame))
                side.add(clip.frames[offset:offset + protocol.num_frames], clip.audio[a:a + samples], path, start)
            del clip
    if dropped:
        log(f"warning: {dropped} reference windows could not be decoded in full and were dropped")
    return dropped, skipped


#: the manifest a prepared (or Sounding Shapes) folder lists its training clips in
TRAINING_MANIFEST = "manifest.jsonl"


def training_clips(source: str | Path) -> tuple[list[tuple[Path, dict[str, Any]]], str]:
    """The training clips ``source`` names, with their manifest records, and how they were found.

    ``source``: a manifest file (JSON lines with ``path``, relative to the manifest's folder or
    absolute); a folder holding ``manifest.jsonl`` (the clips it lists: what ``--set
    data.root=DIR`` trains on, so a prepared folder's held-out ``test/`` clips are left out); or
    a folder of videos (every video file under it, records empty).
    """
    source = Path(source)
    manifest = source / TRAINING_MANIFEST if source.is_dir() else source
    if source.is_dir() and not manifest.is_file():
        return [(path, {}) for path in list_videos(source, "training")], "folder"
    if not manifest.is_file():
        raise DataError(f"training clips {source}: neither a folder nor a manifest file")
    import json

    clips = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            path = Path(record["path"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"training manifest {manifest} line {number}: not a JSON object with a 'path'") from None
        clips.append((path if path.is_absolute() else manifest.parent / path, record))
    if not clips:
        raise DataError(f"training manifest {manifest}: lists no clips")
    return clips, f"manifest {manifest}"


def _plan_training(source: Path, protocol: EvalProtocol, stride: int, max_windows: int | None,
                   rng: np.random.Generator, log: Log) -> tuple[_ReferencePlan, dict[str, Any]]:
    """The training windows to compare with: every ``num_frames`` window starting at a multiple of
    ``stride`` frames of each training clip (from the headers alone), at most ``max_windows`` of
    them (a seeded random subset).

    Clips of a manifest that records ``source``, ``start_frame`` and ``fps`` (what ``data
    prepare`` writes) are placed on their source's frame grid, and windows showing the same
    source frames (overlapping clips) are scored once: the one nearest its clip's start is kept.
    """
    from ..data.media_io import probe

    clips, found = training_clips(source)
    skipped, infos = [], {}
    candidates: list[tuple[int, int, Path, tuple[Any, ...]]] = []  # (start, clip order, path, what it shows)
    for order, (path, record) in enumerate(clips):
        try:
            info = probe(path)
            if not info.has_video:
                raise DataError(f"{path}: has no video stream")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        frames = math.ceil(round(info.duration * protocol.fps, 6))
        if frames < protocol.num_frames:
            skipped.append({"path": str(path), "reason": f"{path}: {frames} frames at {protocol.fps:g} fps, shorter "
                                                          f"than one {protocol.num_frames}-frame window"})
            continue
        infos[path] = info
        on_grid = (record.get("fps") == protocol.fps and isinstance(record.get("start_frame"), int)
                   and record.get("source") is not None)
        for start in range(0, frames - protocol.num_frames + 1, stride):
            shows = (record["source"], record["start_frame"] + start) if on_grid else (str(path.resolve()), start)
            candidates.append((start, order, path, shows))
    for item in skipped:
        log(f"warning: skipping training clip: {item['reason']}")
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for start, order, path, shows in sorted(candidates, key=lambda c: (c[0], c[1])):
        if shows not in seen:
            seen.add(shows)
            kept.append((order, start, path))
    kept.sort(key=lambda k: (k[0], k[1]))
    if not kept:
        why = f" (skipped {len(skipped)}, e.g. {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"training clips {source}: no usable {protocol.num_frames}-frame window{why}")
    available = len(kept)
    if max_windows is not None and available > max_windows:
        kept = [kept[i] for i in sorted(rng.choice(available, max_windows, replace=False))]
    starts: dict[Path, list[int]] = {}
    for _, start, path in kept:
        starts.setdefault(path, []).append(start)
    record = {
        "source": str(source), "found": found, "files_found": len(clips), "stride_frames": stride,
        "selection": f"every {protocol.num_frames}-frame window starting at a multiple of {stride} frames of each "
                     "training clip; windows showing the same source frames (manifest source, start_frame, fps) "
                     "scored once; " + ("all of them" if max_windows is None else
                                        f"at most {max_windows}, a random subset drawn with numpy "
                                        "default_rng([seed, 1])"),
        "windows_available": available, "duplicate_windows_dropped": len(candidates) - available,
        "windows_drawn": len(kept),
    }
    return _ReferencePlan(starts, {path: infos[path] for path in starts}, available, skipped), record


def _is_shapes(reference: Path, shapes: bool | None) -> bool:
    from ..data.sounding_shapes import MANIFEST_NAME

    return (reference / MANIFEST_NAME).is_file() if shapes is None else shapes


def _read_sample_rate(metrics: tuple[str, ...], nets: FeatureNets | None, plan: _ReferencePlan) -> int:
    """One audio rate serves every metric: the audio net's, else the reference's own, else the onset rate."""
    if nets is not None and nets.audio is not None:
        return nets.audio.sample_rate
    if "shapes" in metrics and plan.sample_rate:
        return int(plan.sample_rate)
    if "av-align" in metrics:
        from .av_align import ONSET_SAMPLE_RATE

        return ONSET_SAMPLE_RATE
    return VGGISH_SAMPLE_RATE  # no metric listens: any rate


def evaluate_folders(
    generated: str | Path,
    reference: str | Path,
    protocol: EvalProtocol,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    i3d_path: str | Path | None = None,
    audio_weights: str | Path | None = None,
    random_features: bool = False,
    seed: int = 0,
    shapes: bool | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    nets: FeatureNets | None = None,
    log: Log = _stderr,
    training: str | Path | None = None,
    training_stride: int | None = None,
    training_windows: int | None = None,
    reference_draws: int = 1,
) -> dict[str, Any]:
    """Score ``generated`` against ``reference``; returns the JSON-able result record.

    ``metrics``: any of fvd, kvd, fad, memorisation, shapes, av-align. ``shapes=None`` adds the
    Sounding Shapes measures when the reference folder has a manifest.jsonl; True/False forces.
    ``nets``: prebuilt feature nets (otherwise built from the paths / ``random_features``).
    ``training``: the training clips (:func:`training_clips`) for the memorisation check, which
    it adds to ``metrics``: the generated clips' and the reference (held-out) windows' distances
    to their nearest training window in I3D feature space (:mod:`mmldm.evaluation.memorisation`).
    The training windows start at multiples of ``training_stride`` frames (default
    ``num_frames``) of each clip; ``training_windows`` caps their number (default: all).
    ``reference_draws`` K > 1: the feature metrics (FVD, KVD, FAD) are computed against K independent
    draws of ``num_samples`` reference windows each and their mean is the value (each draw's value and
    the spread are recorded); the first draw is the one a single-draw run makes, the others draw from
    ``numpy default_rng([seed, 2, k])``. At N = 64 the reference draw alone moves FVD by about +-100 on
    real footage (docs/evaluation.md), so comparing two sets on one draw can rank them either way.

    Order: the reference folder is checked first (headers only: streams, window counts), then the
    feature nets are built, then generated clips and reference windows are read, one clip (or one
    bounded piece of a long file) at a time, and every metric keeps only its features of it.
    """
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise DataError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(ALL_METRICS)})")
    log = _once(log)  # every reference draw plans the same files again: say each warning about one once
    check_positive_int(batch_size, "batch size")
    check_device(device)
    generated, reference = Path(generated), Path(reference)
    if training is not None and "memorisation" not in metrics:
        metrics = (*metrics, "memorisation")
    if "memorisation" in metrics and training is None:
        raise ConfigError("the memorisation metric needs the training clips: pass --training DIR (a folder or "
                          "manifest of them)")
    stride = protocol.num_frames if training_stride is None else check_positive_int(training_stride,
                                                                                     "training stride")
    if training_windows is not None:
        check_positive_int(training_windows, "training windows")
    check_positive_int(reference_draws, "reference draws")
    gen_files_all = list_videos(generated, "generated")
    ref_files = list_videos(reference, "reference")
    if _is_shapes(reference, shapes) and "shapes" not in metrics:
        metrics = (*metrics, "shapes")
    feature_metrics = tuple(m for m in metrics if m in FEATURE_METRICS)
    random_features = random_features and bool(feature_metrics)  # the weight-free metrics have no nets to randomise
    need_audio = any(m in AUDIO_METRICS for m in metrics)
    rng = np.random.default_rng(seed)
    gen_files = _subset(gen_files_all, protocol.num_samples, rng)
    plan = _plan_reference(ref_files, protocol, protocol.num_samples, rng, need_audio, log)
    if training is not None:  # its own generator: asking for the check changes no other draw
        train_plan, train_record = _plan_training(Path(training), protocol, stride, training_windows,
                                                  np.random.default_rng([seed, 1]), log)
        shared = {p.resolve() for p in plan.starts} & {p.resolve() for p in train_plan.starts}
        if shared:
            log(f"warning: {len(shared)} reference file(s) are also training clips (e.g. {min(shared)}): the "
                "memorisation check needs held-out reference clips")

    result: dict[str, Any] = {
        "mmldm_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "metrics_requested": list(metrics),
        "protocol": protocol.to_dict(),
        "random_features": random_features,
        "torch_version": torch.__version__,
        "device": device,
    }
    if random_features:
        result["warning"] = RANDOM_FEATURES_BANNER
    result["generated"] = {
        "folder": str(generated), "files_found": len(gen_files_all), "files_selected": len(gen_files),
        "selection": f"first {protocol.num_frames} frames of each file; a seeded random subset of files "
                     f"when more than num_samples",
    }
    result["reference"] = {
        "folder": str(reference), "files_found": len(ref_files),
        "split": "every video file under the folder (the paper-era protocol uses the training videos)",
        "selection": f"random {protocol.num_frames}-frame windows at {protocol.fps} fps, stride 1, drawn without "
                     f"replacement from all windows with numpy default_rng(seed)",
    }
    if feature_metrics:
        nets = nets or FeatureNets.build(feature_metrics, protocol, i3d_path, audio_weights, random_features, seed,
                                         device)
        result["feature_nets"] = nets.record
    else:
        nets = None
    sample_rate = _read_sample_rate(metrics, nets, plan)
    gen = _Side(metrics, nets, protocol, sample_rate, batch_size, device)
    result["generated"]["skipped"] = _collect_generated(gen_files, protocol, gen, need_audio, log)
    gen.flush()
    ref = _Side(metrics, nets, protocol, sample_rate, batch_size, device)
    dropped, unreadable = _collect_reference(plan, protocol, ref, need_audio, log)
    ref.flush()
    result["reference"].update(
        windows_available=plan.available, windows_drawn=sum(map(len, plan.starts.values())),
        windows_dropped=dropped, skipped=plan.skipped + unreadable, windows=plan.windows,
    )
    result["generated"]["files"] = [str(p) for p in gen_files]
    if ref.clips < 2:
        raise DataError(f"reference folder: {ref.clips} usable window(s) after decoding; at least 2 are needed")
    if training is not None:
        train = _Side((), dataclasses.replace(nets, audio=None), protocol, sample_rate, batch_size, device)
        train_dropped, train_unreadable = _collect_reference(train_plan, protocol, train, False, log)
        if train.clips < 1:
            raise DataError(f"training clips {training}: no window could be decoded")
        train_record.update(windows_dropped=train_dropped, skipped=train_plan.skipped + train_unreadable,
                            clips_scored=train.clips, windows=train.labels)
        result["training"] = train_record
    result["generated"]["clips_scored"], result["reference"]["clips_scored"] = gen.clips, ref.clips
    short = [f"{n} {what}" for n, what in ((gen.clips, "generated clips"), (ref.clips, "reference windows"))
             if n < protocol.num_samples]
    if short:
        log(f"warning: scored {' and '.join(short)}, fewer than the protocol's {protocol.num_samples}: "
            f"numbers are not comparable to {protocol.num_samples}-sample ones")
    if feature_metrics:
        result["metrics"] = _feature_metrics(gen.features, ref.features, protocol, feature_metrics, result)
        if reference_draws > 1:
            draws, windows = [result["metrics"]], []
            for k in range(1, reference_draws):
                draw_plan = _plan_reference(ref_files, protocol, protocol.num_samples,
                                            np.random.default_rng([seed, 2, k]), need_audio, log)
                draw = _Side(feature_metrics, nets, protocol, sample_rate, batch_size, device)
                _collect_reference(draw_plan, protocol, draw, need_audio, log)
                draw.flush()
                if draw.clips < 2:
                    raise DataError(f"reference folder, draw {k}: {draw.clips} usable window(s); at least 2 are "
                                    "needed")
                windows.append(draw_plan.windows)
                draws.append(_feature_metrics(gen.features, draw.features, protocol, feature_metrics, result))
            result["metrics"] = _mean_over_draws(draws)
            result["reference"]["draws"] = {
                "count": reference_draws,
                "selection": "draw 0 as a single-draw run; draw k >= 1 from numpy default_rng([seed, 2, k])",
                "windows": windows}  # draws 1 .. K-1 (draw 0's are reference.windows)
    if "shapes" in metrics:
        result["shapes"] = _shapes_result(gen, ref, sample_rate, result)
    if "av-align" in metrics:
        result["av_align"] = _av_align_result(gen, ref, protocol)
    if "memorisation" in metrics:
        result["memorisation"] = _memorisation_result(gen, ref, train)
    return result


def _memorisation_result(gen: _Side, ref: _Side, train: _Side) -> dict[str, Any]:
    from .memorisation import DEFINITION, memorisation

    check = memorisation(gen.features.result()[0], ref.features.result()[0], train.features.result()[0])
    out = check.summary()
    out["generated"].update(windows=gen.labels,
                            nearest_training_windows=[train.labels[i] for i in check.generated_nearest],
                            flagged=[bool(f) for f in check.flagged])
    out["reference"].update(windows=ref.labels,
                            nearest_training_windows=[train.labels[i] for i in check.reference_nearest])
    out.update(training_windows=train.clips, features="I3D logits, the FVD features (feature_nets.video)",
               distance="L2 (Euclidean), float64, exact (scipy cdist)",
               target=f"at most {check.max_share_pct:g} % of generated clips nearer to a training window than the "
                      f"{check.percentile:g}th percentile of the reference clips' nearest-training distances",
               definition=DEFINITION)
    return out


def _shapes_result(gen: _Side, ref: _Side, sample_rate: int, result: dict[str, Any]) -> dict[str, Any]:
    from .shapes_measures import aggregate, combine_features, shuffled_pairs

    def measures(pairs):
        return aggregate([combine_features(video, audio) for video, audio in pairs])

    return {
        "sample_rate": sample_rate,
        "skipped": result["generated"]["skipped"] + result["reference"]["skipped"],
        "generated": measures(gen.shapes),
        "reference": measures(ref.shapes),
        "shuffled_pairs": measures(shuffled_pairs(ref.shapes)),
        "shuffled_pairs_definition": "reference audio of clip i against reference video of clip pi(i), pi one cycle "
                                     "through a random order of the clips (numpy default_rng(0))",
    }


def _av_align_result(gen: _Side, ref: _Side, protocol: EvalProtocol) -> dict[str, Any]:
    from . import av_align
    from .shapes_measures import shuffled_pairs

    def measures(pairs):
        return av_align.aggregate([av_align.combine(video, audio) for video, audio in pairs])

    return {
        "generated": measures(gen.av),
        "reference": measures(ref.av),
        "shuffled_pairs": measures(shuffled_pairs(ref.av)),
        "settings": {
            "fps": protocol.fps, "clip_frames": protocol.num_frames, "max_side": av_align.DEFAULT_MAX_SIDE,
            "onset_sample_rate": av_align.ONSET_SAMPLE_RATE, "onset_hop": av_align.ONSET_HOP,
            "farneback": dict(zip(("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma", "flags"),
                                  av_align.FARNEBACK)),
            "matching": "one-to-one", "max_lag_frames": av_align.DEFAULT_MAX_LAG,
        },
        "definition": "AV-Align (Yariv et al. 2024): librosa onsets of the audio at 22.05 kHz vs strict local maxima "
                      "of the mean Farneback flow magnitude into each frame; an onset and a peak match within one "
                      "frame (one-to-one); score I / (|A| + |V| - I), mean over clips with any event. Offset: lag "
                      "(frames, + = audio late) maximising the Pearson correlation of the frame-pooled onset "
                      "envelope with the motion curve; pooled = argmax of the clips' mean correlation curve",
        "shuffled_pairs_definition": "reference audio of clip i against reference video of clip pi(i), pi one cycle "
                                     "through a random order of the clips (numpy default_rng(0))",
    }


def _feature_metrics(gen: _Collector, ref: _Collector, protocol: EvalProtocol, metrics: tuple[str, ...],
                     result: dict[str, Any]) -> dict[str, Any]:
    gen_video, gen_audio = gen.result()
    ref_video, ref_audio = ref.result()
    out: dict[str, Any] = {}
    if "fvd" in metrics:
        fd = frechet_distance(gen_video, ref_video, protocol.covariance)
        out["fvd"] = {"value": fd.value, "covariance": protocol.covariance, "sqrtm_offset": fd.sqrtm_offset,
                      "sqrt_method": fd.method,
                      "max_imaginary_dropped": fd.max_imaginary, "samples": [len(gen_video), len(ref_video)]}
    if "kvd" in metrics:
        kd = kernel_distance(gen_video, ref_video, protocol.kvd_subsets,
                             min(protocol.kvd_subset_size, len(gen_video), len(ref_video)), seed=result["seed"])
        out["kvd"] = {"value": kd.value, "std": kd.std, "subsets": kd.num_subsets, "subset_size": kd.subset_size,
                      "kernel": "(x.y/d + 1)^3", "estimator": "unbiased MMD^2", "scale": 1.0,
                      "samples": [len(gen_video), len(ref_video)]}
    if "fad" in metrics:
        if gen_audio is None or ref_audio is None or len(gen_audio) < 2 or len(ref_audio) < 2:
            raise DataError("FAD: fewer than 2 audio embeddings on a side (clips shorter than 0.975 s?)")
        fd = frechet_distance(gen_audio, ref_audio, protocol.covariance)
        out["fad"] = {"value": fd.value * protocol.fad_scale, "unscaled": fd.value, "scale": protocol.fad_scale,
                      "covariance": protocol.covariance, "sqrtm_offset": fd.sqrtm_offset, "sqrt_method": fd.method,
                      "embeddings": [len(gen_audio), len(ref_audio)], "note": _fad_note(protocol)}
    return out


def _mean_over_draws(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric record per metric from the records of several reference draws: the first draw's
    record with ``value`` (and FAD's ``unscaled``) the mean over the draws, and ``draws`` (each draw's
    value), ``draws_std`` (their standard deviation, ddof 1) and ``first_draw`` beside it."""
    out: dict[str, Any] = {}
    for name, first in draws[0].items():
        values = [float(d[name]["value"]) for d in draws]
        out[name] = {**first, "value": float(np.mean(values)), "first_draw": values[0], "draws": values,
                     "draws_std": float(np.std(values, ddof=1))}
        if "unscaled" in first:
            out[name]["unscaled"] = float(np.mean([d[name]["unscaled"] for d in draws]))
    return out


def _fad_note(protocol: EvalProtocol) -> str:
    if protocol.audio_net == "vggish":
        return ("published MM-Diffusion / MM-LDM FADs use the AudioCLIP audio head; a VGGish FAD is a "
                "different number and not comparable to them")
    if protocol.audioclip_input == "int16":
        return ("AudioCLIP fed int16-range audio as it expects; the released evaluator fed [-1, 1] audio, so "
                "published FADs correspond to --audioclip-input unit")
    return "AudioCLIP fed [-1, 1] audio as the released evaluator did (about -90 dB to the net)"


def _spread(metric: dict[str, Any]) -> str:
    """`` (mean of K reference draws, std S)`` for a metric scored against several draws, else nothing."""
    if "draws" not in metric:
        return ""
    return f" (mean of {len(metric['draws'])} reference draws, std {metric['draws_std']:.4g})"


def format_result(result: dict[str, Any]) -> str:
    """Human-readable summary (markdown tables) of an :func:`evaluate_folders` record."""
    lines = []
    if result.get("random_features"):
        lines += [f"**{RANDOM_FEATURES_BANNER}**", ""]
    p = result["protocol"]
    if "clips_scored" in result["generated"]:
        lines.append(f"protocol {p['name']}: {result['generated']['clips_scored']} generated clips vs "
                     f"{result['reference']['clips_scored']} reference windows, {p['num_frames']} frames at "
                     f"{p['fps']} fps, seed {result['seed']}")
    else:
        lines.append(f"protocol {p['name']}: {result['generated']['files_selected']} generated files, "
                     f"seed {result['seed']}")
    metrics = result.get("metrics", {})
    if metrics:
        lines += ["", "| metric | value | notes |", "|---|---|---|"]
        nets = result["feature_nets"]
        if "fvd" in metrics:
            eps = nets["video"].get("batchnorm_eps")
            lines.append(f"| FVD | {metrics['fvd']['value']:.3f}{_spread(metrics['fvd'])} | {nets['video']['net']}, "
                         + (f"BatchNorm eps {eps:g}, " if eps is not None else "")
                         + f"{metrics['fvd']['covariance']} covariance, "
                         f"letterbox {p['downsample_to']} -> {p['i3d_resolution']} |")
        if "kvd" in metrics:
            k = metrics["kvd"]
            sub = ("no subsets" if k["subsets"] == 0
                   else f"{k['subsets']} subsets of {k['subset_size']}, std {k['std']:.4g}")
            lines.append(f"| KVD | {k['value']:.4f}{_spread(k)} | unbiased MMD^2, (x.y/d+1)^3, {sub} |")
        if "fad" in metrics:
            a = nets["audio"]
            lines.append(f"| FAD | {metrics['fad']['value']:.4f}{_spread(metrics['fad'])} | {a['net']}, "
                         f"{a['sample_rate']} Hz, "
                         f"x{metrics['fad']['scale']:g} (unscaled {metrics['fad']['unscaled']:.6g}) |")
    shapes = result.get("shapes")
    if shapes:
        lines += ["", "Sounding Shapes (no learned weights)", "",
                  "| | generated | reference | shuffled pairs |", "|---|---|---|---|"]
        rows = [("clips", "clips", "{:d}"), ("median sync error (semitones)", "sync_error_median", "{:.3f}"),
                ("within 1 semitone %", "sync_error_within_1_semitone_pct", "{:.1f}"),
                ("class agreement %", "class_agreement_pct", "{:.1f}"), ("one object %", "one_object_pct", "{:.1f}")]
        for label, key, fmt in rows:
            cells = [fmt.format(shapes[side][key]) for side in ("generated", "reference", "shuffled_pairs")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    av = result.get("av_align")
    if av:
        lines += ["", f"AV-Align and A/V offset (no learned weights; {av['settings']['clip_frames']} frames at "
                  f"{av['settings']['fps']:g} fps, offset in frames, + = audio late)", "",
                  "| | generated | reference | shuffled pairs |", "|---|---|---|---|"]
        rows = [("clips (with events)", lambda a: f"{a['clips']} ({a['clips_with_events']})"),
                ("AV-Align mean", lambda a: f"{a['av_align_mean']:.3f}"),
                ("offset median (per clip)", lambda a: f"{a['offset_frames_median']:+.1f}"),
                ("offset within 1 frame %", lambda a: f"{a['offset_within_1_frame_pct']:.1f}"),
                ("pooled offset (correlation)",
                 lambda a: f"{a['pooled_offset_frames']:+d} ({a['pooled_offset_correlation']:.3f})")]
        for label, cell in rows:
            lines.append(f"| {label} | " + " | ".join(cell(av[side]) for side in
                                                       ("generated", "reference", "shuffled_pairs")) + " |")
    mem = result.get("memorisation")
    if mem:
        lines += ["", f"Memorisation (I3D features, L2 to the nearest of {mem['training_windows']} training windows)",
                  "", "| | generated | reference |", "|---|---|---|",
                  f"| clips | {mem['generated']['clips']} | {mem['reference']['clips']} |",
                  f"| median nearest-training distance | {mem['generated']['median_distance']:.3f} | "
                  f"{mem['reference']['median_distance']:.3f} |",
                  f"| smallest nearest-training distance | {mem['generated']['min_distance']:.3f} | "
                  f"{mem['reference']['min_distance']:.3f} |",
                  "", f"{mem['flagged']} of {mem['generated']['clips']} generated clips "
                  f"({mem['flagged_pct']:.1f} %) are nearer to a training window than the {mem['percentile']:g}th "
                  f"percentile of the reference clips' distances ({mem['threshold']:.3f}); target at most "
                  f"{mem['max_share_pct']:g} %: {'met' if mem['met'] else 'NOT met'}. A generated clip is nearer "
                  f"than a reference clip in {mem['nearer_than_reference_pct']:.1f} % of pairs."]
    if result.get("random_features"):
        lines += ["", f"**{RANDOM_FEATURES_BANNER}**"]
    return "\n".join(lines)
