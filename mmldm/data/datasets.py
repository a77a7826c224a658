"""A folder (or manifest) of sounding videos as fixed-length, in-sync training windows.

    ds = VideoFolderDataset("data/landscape", AVTiming(fps=10, num_frames=16, sample_rate=16000),
                            size=64, split="train")
    item = ds[0]   # frames [16, 3, 64, 64], waveform [25600], audio_image [3, 64, 64], ...

Files are found by a recursive scan (``.mp4 .mov .mkv .webm .avi``) or listed in a
manifest (JSONL or CSV with a ``path`` column, paths relative to the manifest's
folder). Only headers are read while indexing (:func:`~mmldm.data.media_io.probe`);
a file that cannot be used is skipped and all skipped files are reported in one
warning. Frames and audio are decoded per item with :func:`~mmldm.data.media_io.read_av`,
so the dataset object holds no open file and works with DataLoader workers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, MediaError, warn
from ..timing import AVTiming
from .media_io import Geometry, cut_windows, probe, read_av

if TYPE_CHECKING:
    from .audio_image import AudioConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
Split = Literal["train", "val", "all"]
#: Manifest columns that may hold the class (an integer id or a name), in order of preference.
_CLASS_KEYS = ("class_id", "class", "label", "class_name")
_PATH_KEYS = ("path", "file")
#: the manifest column holding a clip's caption (text-conditioned generators; "" or absent: no text)
TEXT_KEY = "text"
_WARN_LISTED = 20  # skipped files named in the warning; the rest are counted
#: audio a window may lack at its end before it counts as past the end of the audio: encoders
#: often end the audio track an audio frame or two before the video
_AUDIO_SHORTFALL_S = 0.1


@dataclass(frozen=True)
class VideoFile:
    """One usable file of the dataset; ``num_frames`` is at the dataset's frame rate."""

    path: Path
    key: str  # relative path (posix): the split hash and the report use it
    class_id: int
    num_frames: int
    audio_seconds: float = math.inf  # length of the audio track, from the header (inf: unknown)
    text: str = ""  # caption from the manifest's text column ("" = none)


def _listed(entries: list[str]) -> str:
    """The first entries of a list for a warning, and how many more there are."""
    more = f"; and {len(entries) - _WARN_LISTED} more" if len(entries) > _WARN_LISTED else ""
    return "; ".join(entries[:_WARN_LISTED]) + more


def _not_a_folder(root: Path) -> str:
    """Why a dataset root that is not a folder cannot be scanned (one phrase)."""
    if root.is_file():
        hint = (" (for a manifest, set data.manifest and make data.root its folder)"
                if root.suffix.lower() in (".jsonl", ".json", ".csv") else "")
        return f"is a file, not a dataset folder; give the folder holding the videos{hint}"
    from ..files import missing_file_reason

    reason = missing_file_reason(root)
    if reason in (None, "file not found"):
        return "dataset folder does not exist"
    return reason.replace("not a file", "not a dataset folder")


def scan_videos(root: str | Path, suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> list[Path]:
    """Video files under ``root`` (recursive, sorted), leaving out hidden files and folders and the
    temporary ``.partial`` files of an unfinished write (what a killed ``mmldm data synth`` or
    ``generate`` leaves): a scan must see finished files only."""
    from ..files import is_partial_name

    root = Path(root)
    return sorted(path for path in root.rglob("*")
                  if path.suffix.lower() in suffixes and path.is_file()
                  and not any(is_partial_name(part) for part in path.relative_to(root).parts))


def split_of(key: str, val_fraction: float, seed: int) -> str:
    """``"val"`` or ``"train"`` for a file, from a hash of its relative path (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


class VideoFolderDataset(Dataset):
    """Windows of ``timing.num_frames`` frames with exactly their audio.

    Args:
        root: folder scanned recursively for videos (also the base of relative keys).
        timing: frame rate, window length and sample rate of the items.
        size: frames are ``size x size`` (``geometry``: "letterbox" keeps the aspect with
            zero padding, as the paper's data; "crop" cuts the centre square).
        audio_cfg: settings of the audio image (:class:`~mmldm.data.audio_image.AudioConfig`);
            None: the preset for ``timing.sample_rate`` with the clip length of ``timing``.
        split: "train", "val" or "all"; files (never windows) are split by a hash of
            their relative path, ``val_fraction`` of them going to "val".
        stride: frames between window starts (default ``timing.num_frames``: no overlap).
        class_map: {file stem: class id or name} or a JSON file holding it. Without it
            (and without classes in the manifest) the class is the first sub-folder under
            ``root`` (names sorted -> ids); files with no class get -1.
        manifest: JSONL or CSV listing the files (``path``, optionally ``class_id`` /
            ``class`` / ``label`` / ``class_name``, and optionally ``text``, the clip's caption
            for a text-conditioned generator) instead of scanning ``root``. When not
            given and ``root/manifest.jsonl`` exists (as ``mmldm data synth`` writes), that
            manifest is used, so a Sounding Shapes folder keeps its own class ids.
        seed: salt of the split hash.
        skip_short_audio: leave out the windows that reach past the end of a file's audio track
            (by more than 0.1 s) instead of padding their audio with silence. Either way a
            warning names the files whose audio is shorter than their video.

    Items (dicts): ``frames`` float [T, 3, H, W] in [-1, 1]; ``waveform`` float [N] with
    ``N = timing.samples_per_clip``; ``audio_image`` float [3, H, W] in [-1, 1]; ``class_id``
    int; ``source`` str (file path); ``start_time`` float seconds; ``index`` int; ``text`` str (the
    manifest's caption of the file, "" without one).
    """

    def __init__(
        self,
        root: str | Path,
        timing: AVTiming,
        size: int = 64,
        geometry: Geometry = "letterbox",
        audio_cfg: AudioConfig | None = None,
        split: Split = "train",
        val_fraction: float = 0.1,
        stride: int | None = None,
        class_map: dict[str, int | str] | str | Path | None = None,
        manifest: str | Path | None = None,
        seed: int = 0,
        skip_short_audio: bool = False,
    ):
        if split not in ("train", "val", "all"):
            raise ConfigError(f"dataset split must be 'train', 'val' or 'all', got {split!r}")
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"dataset val_fraction must be in [0, 1), got {val_fraction!r}")
        if geometry not in ("letterbox", "crop"):
            raise ConfigError(f"dataset geometry must be 'letterbox' or 'crop', got {geometry!r}")
        self.root = Path(root)
        self.timing = timing
        self.size = int(size)
        self.geometry = geometry
        self.stride = timing.num_frames if stride is None else int(stride)
        if self.stride <= 0:
            raise ConfigError(f"dataset stride must be positive, got {stride!r}")
        self.audio_cfg = self._audio_config(audio_cfg, timing)

        self._texts: dict[Path, str] = {}  # captions from the manifest, by file
        if manifest is None and (self.root / "manifest.jsonl").is_file():
            manifest = self.root / "manifest.jsonl"
        listed = self._read_manifest(Path(manifest)) if manifest is not None else self._scan()
        mapping = self._load_class_map(class_map) if class_map is not None else None
        labels, self.classes = self._assign_classes(listed, mapping)

        self.files: list[VideoFile] = []
        skipped: list[str] = []
        for (path, key, _), class_id in zip(listed, labels):
            if split != "all" and split_of(key, val_fraction, seed) != split:
                continue
            try:
                num_frames, audio_seconds = self._usable_frames(path)
            except MediaError as exc:
                skipped.append(f"{key} ({exc.reason})")
                continue
            self.files.append(VideoFile(path, key, class_id, num_frames, audio_seconds, self._texts.get(path, "")))
        if not self.files:  # one line saying why (no warning before it)
            what = f"in the '{split}' split " if split != "all" and listed else ""
            example = f", e.g. {skipped[0]}" if skipped else ""
            raise DataError(
                f"{self.root}: no usable video file {what}(found {len(listed)} video file(s), "
                f"{len(skipped)} unusable{example}; looked for {' '.join(VIDEO_SUFFIXES)})"
            )
        if skipped:
            warn(f"{self.root}: skipped {len(skipped)} unusable file(s): {_listed(skipped)}")
        # (file number, first frame) of every window
        self.windows: list[tuple[int, int]] = []
        short: list[str] = []
        padded_windows = 0
        for number, file in enumerate(self.files):
            starts = range(0, file.num_frames - timing.num_frames + 1, self.stride)
            padded = {first for first in starts if self._past_audio(file, first)}
            if padded:
                short.append(f"{file.key} (audio {file.audio_seconds:.2f} s, video "
                             f"{file.num_frames / timing.fps:.2f} s: {len(padded)} of {len(starts)} window(s))")
                padded_windows += len(padded)
            self.windows += [(number, first) for first in starts if not (skip_short_audio and first in padded)]
        if short and skip_short_audio:
            warn(f"{self.root}: left out {padded_windows} window(s) past the end of the audio of {len(short)} "
                 f"file(s) whose audio is shorter than their video: {_listed(short)}")
        elif short:
            warn(f"{self.root}: {len(short)} file(s) have audio shorter than their video, so {padded_windows} "
                 f"window(s) get silence for their missing audio: {_listed(short)}; set data.skip_short_audio=true "
                 "to leave those windows out")
        if not self.windows:
            raise DataError(f"{self.root}: no window with complete audio in the '{split}' split (every window "
                            "reaches past the end of its file's audio; skip_short_audio is on)")

    # ------------------------------------------------------------------ indexing
    @staticmethod
    def _audio_config(audio_cfg: AudioConfig | None, timing: AVTiming) -> AudioConfig:
        from .audio_image import AudioConfig

        if audio_cfg is None:
            return dataclasses.replace(AudioConfig.for_sample_rate(timing.sample_rate), clip_seconds=timing.seconds)
        if audio_cfg.sample_rate != timing.sample_rate or audio_cfg.clip_samples != timing.samples_per_clip:
            raise ConfigError(
                f"audio config ({audio_cfg.sample_rate} Hz, {audio_cfg.clip_samples} samples per clip) does not "
                f"match the timing ({timing.sample_rate} Hz, {timing.samples_per_clip} samples per clip)"
            )
        return audio_cfg

    def _key(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()

    def _scan(self) -> list[tuple[Path, str, int | str | None]]:
        """Every video under root: (path, key, class from the first sub-folder or None)."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: {_not_a_folder(self.root)}")
        listed = []
        for path in scan_videos(self.root):
            key = path.relative_to(self.root).as_posix()
            parts = key.split("/")
            listed.append((path, key, parts[0] if len(parts) > 1 else None))
        return listed

    def _read_manifest(self, manifest: Path) -> list[tuple[Path, str, int | str | None]]:
        """Rows of a JSONL or CSV manifest: (path, key, class or None)."""
        if not manifest.is_absolute() and not manifest.exists() and (self.root / manifest).exists():
            manifest = self.root / manifest
        if not manifest.is_file():
            raise DataError(f"{manifest}: manifest not found")
        text = manifest.read_text()
        try:
            if manifest.suffix.lower() == ".csv":
                rows = list(csv.DictReader(text.splitlines()))
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (json.JSONDecodeError, csv.Error) as exc:
            raise DataError(f"{manifest}: not a valid {manifest.suffix or 'JSONL'} manifest ({exc})") from None
        listed = []
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise DataError(f"{manifest}: row {number} is not an object")
            name = next((row[k] for k in _PATH_KEYS if row.get(k)), None)
            if name is None:
                raise DataError(f"{manifest}: row {number} has no 'path' column")
            path = Path(name) if Path(name).is_absolute() else manifest.parent / name
            label = next((row[k] for k in _CLASS_KEYS if row.get(k) not in (None, "")), None)
            text = row.get(TEXT_KEY)
            if text is not None and not isinstance(text, str):
                raise DataError(f"{manifest}: row {number} column '{TEXT_KEY}' must be a string, got "
                                f"{type(text).__name__}")
            if text:
                self._texts[path] = text
            listed.append((path, self._key(path), label))
        return listed

    @staticmethod
    def _load_class_map(class_map: dict[str, int | str] | str | Path) -> dict[str, int | str]:
        if isinstance(class_map, dict):
            return dict(class_map)
        path = Path(class_map)
        try:
            mapping = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: class map not found") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: class map is not valid JSON ({exc})") from None
        if not isinstance(mapping, dict):
            raise DataError(f"{path}: class map must be a JSON object {{clip id: class}}")
        return mapping

    @staticmethod
    def _assign_classes(
        listed: list[tuple[Path, str, int | str | None]], mapping: dict[str, int | str] | None
    ) -> tuple[list[int], list[str]]:
        """Class id per file (-1 unlabelled) and the class names (by id) where known.

        Integer classes (or digit strings from CSV) are ids as they are; names are
        sorted and numbered.
        """
        raw = [mapping.get(path.stem) if mapping is not None else label for path, _, label in listed]

        def as_id(value: int | str | None) -> int | None:
            if isinstance(value, bool):
                return None
            if isinstance(value, int):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            return None

        names = sorted({v for v in raw if v is not None and as_id(v) is None}, key=str)
        if names and any(v is not None and as_id(v) is not None for v in raw):
            raise DataError(f"class labels mix integer ids and names (names: {', '.join(map(str, names[:5]))}); "
                            "use one or the other")
        numbered = {name: number for number, name in enumerate(names)}
        ids = [-1 if v is None else (as_id(v) if as_id(v) is not None else numbered[v]) for v in raw]
        return ids, [str(n) for n in names]

    def _past_audio(self, file: VideoFile, first: int) -> bool:
        """Whether the window starting at frame ``first`` ends more than ``_AUDIO_SHORTFALL_S`` after the audio."""
        end = (first + self.timing.num_frames) / self.timing.fps
        return file.audio_seconds < end - _AUDIO_SHORTFALL_S

    def _usable_frames(self, path: Path) -> tuple[int, float]:
        """Frames at the dataset's rate that ``path`` holds and the seconds of its audio track
        (inf when the header does not say), from its header; MediaError if unusable."""
        info = probe(path)
        if not info.has_video:
            raise MediaError(path, "no video stream")
        if not info.has_audio:
            raise MediaError(path, "no audio track")
        num_frames = math.ceil(info.duration * self.timing.fps - 1e-6)
        if num_frames < self.timing.num_frames:
            raise MediaError(path, f"shorter than one window ({num_frames} frames < {self.timing.num_frames})")
        return num_frames, (math.inf if not info.audio_duration else float(info.audio_duration))

    @property
    def num_classes(self) -> int:
        """Number of classes: named classes, else the largest class id + 1 (0 when unlabelled)."""
        return len(self.classes) or max((f.class_id + 1 for f in self.files), default=0)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from .audio_image import waveform_to_audio_image

        number, first = self.windows[index]
        file = self.files[number]
        timing = self.timing
        frames, audio = self._read_window(file, first)
        if len(frames) < timing.num_frames:
            # The header promised more frames than the video holds (Matroska gives the length
            # of the longest stream): use the file's last full window instead.
            clip = read_av(file.path, fps=timing.fps, sample_rate=timing.sample_rate, size=self.size,
                           geometry=self.geometry)
            if clip.num_frames < timing.num_frames:
                raise DataError(f"{file.path}: holds only {clip.num_frames} frames, fewer than one window "
                                f"of {timing.num_frames}")
            window = cut_windows(clip, timing.num_frames, stride=1)[-1]
            first, frames, audio = window.start_frame, window.frames, window.audio
        video = torch.from_numpy(frames).float().div_(127.5).sub_(1.0)
        waveform = torch.from_numpy(audio)
        audio_image = waveform_to_audio_image(waveform, self.audio_cfg, self.size)[0] * 2.0 - 1.0
        return {
            "frames": rearrange(video, "t h w c -> t c h w"),
            "waveform": waveform,
            "audio_image": audio_image,
            "class_id": file.class_id,
            "source": str(file.path),
            "start_time": first / timing.fps,
            "index": int(index),
            "text": file.text,
        }

    def _read_window(self, file: VideoFile, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames uint8 [<=T, H, W, 3] and audio float32 [N] of the window starting at frame ``first``;
        no frames when the video ends before it."""
        timing = self.timing
        try:
            clip = read_av(
                file.path, fps=timing.fps, sample_rate=timing.sample_rate, size=self.size,
                geometry=self.geometry, start=first / timing.fps, duration=timing.seconds,
            )
        except MediaError:
            if first == 0:
                raise
            # Nothing to decode after `first`; a real defect shows again when the caller
            # reads the whole file.
            return np.zeros((0, self.size, self.size, 3), np.uint8), np.zeros(timing.samples_per_clip, np.float32)
        frames = clip.frames[: timing.num_frames]
        audio = np.zeros(timing.samples_per_clip, np.float32)
        audio[: len(clip.audio)] = clip.audio[: timing.samples_per_clip]
        return frames, audio

    def __repr__(self) -> str:
        return (f"VideoFolderDataset({str(self.root)!r}, {len(self.files)} files, {len(self)} windows, "
                f"{self.timing.num_frames} frames at {self.timing.fps} fps, {self.size}px {self.geometry})")
