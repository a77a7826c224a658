"""``mmldm data prepare``: long videos of any kind -> a clip dataset that the training reads.

    prepare(["footage/"], "data/footage", PrepareConfig(fps=10, num_frames=16, size=64,
            sample_rate=22050, test_fraction=0.2, split="time"), workers=2)

Every source is cut into clips of ``clip_frames`` frames at ``fps`` (a whole number of training
windows of ``num_frames``), ``hop_frames`` apart, each written as a small H.264 + AAC mp4 by
:func:`~mmldm.data.media_io.write_av` (sample-exact: audio sample ``k`` of a clip is the sound at
``start + k / sample_rate``). The output folder::

    DIR/manifest.jsonl       the training clips: what ``--set data.root=DIR`` trains on
    DIR/test-manifest.jsonl  the held-out clips (``--set data.root=DIR data.manifest=test-manifest.jsonl``)
    DIR/train/<source>/<first frame>.mp4, DIR/test/<source>/<first frame>.mp4
                             (``<source>``: the file's path below its SRC folder, without suffix);
                             DIR/test holds no manifest.jsonl, so ``evaluate --reference DIR/test``
                             reads it as a plain folder of videos
    DIR/prepare.json         settings, sources and the summary of the last run
    DIR/skipped.jsonl        the sources left out and why (only when there are some)
    DIR/.prepare/            resume state: one journal per piece of work, a lock

Memory: sources are read by :func:`~mmldm.data.media_io.iter_windows`, which decodes a piece of a
file in one pass, resizes frames as they leave the decoder and holds only the frames of the
clip being filled and about a second of audio.

Work: each source is cut, from its header alone, into pieces of about ``chunk_seconds`` of
consecutive clips of one split. A worker decodes a piece from its first clip (a seek lands a
second earlier) to its last, so a piece gives the same clips whichever process takes it and
however many there are: the clip bytes and manifests do not depend on ``--workers``.

Resume: a clip is written under a temporary name and renamed when complete
(:func:`~mmldm.files.atomic_target`), then one line is appended to its piece's journal and
fsync'ed; a piece ends with a ``done`` line. The manifests are rewritten atomically from the
journals (in source and time order) while the work goes on and at the end, so they only ever list
complete clips. After a ``kill -9`` the same command goes on: finished pieces are not decoded
again, finished clips are not written again (also a clip renamed just before the kill, whose
journal line was never written), a torn last journal line is cut off, and temporary files left
by the killed writers are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import atomic_write_text, make_folder
from ..errors import ConfigError, DataError, MediaError, MMLDMError, warn
from ..files import (
    check_input_file,
    check_writable_folder,
    disk_full_as_error,
    is_partial_name,
)
from .media_io import MAX_SIDE, iter_windows, probe, write_av

MANIFEST_NAME = "manifest.jsonl"
TEST_MANIFEST_NAME = "test-manifest.jsonl"
SETTINGS_NAME = "prepare.json"
SKIPPED_NAME = "skipped.jsonl"
STATE_FOLDER = ".prepare"
SPLITS = ("train", "test")
FORMAT = "mmldm-prepare/1"
#: video files a SRC folder is scanned for (any file given by name is tried whatever its suffix)
SOURCE_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
#: a clip whose audio RMS is below this (about -80 dBFS, the floor of the audio image) is flagged silent
SILENT_RMS = 1e-4
#: audio a clip may lack (at its end, usually) and still count as complete: encoders often end the
#: audio track an audio frame or two before the video (the datasets allow the same)
AUDIO_SHORTFALL_S = 0.1
#: seconds between rewrites of the manifests while the work goes on
MANIFEST_EVERY_S = 10.0
_WARN_LISTED = 10


@dataclass(frozen=True)
class PrepareConfig:
    """How sources are cut into clips. Times are checked to be whole numbers of frames at ``fps``."""

    fps: float = 10.0
    #: frames of one training window (the datasets' ``data.num_frames``); a clip holds a whole number of them
    num_frames: int = 16
    #: seconds per clip (None: one window). Two windows (e.g. 3.2 s at 10 fps, 16 frames) train continuation
    clip_seconds: float | None = None
    #: seconds between the starts of consecutive clips of a source (None: the clip length, no overlap)
    hop_seconds: float | None = None
    size: int = 64
    geometry: Literal["letterbox", "crop"] = "letterbox"
    sample_rate: int = 16000
    #: share held out for testing: the last part of every source (``split="time"``) or whole sources
    test_fraction: float = 0.0
    split: Literal["time", "source"] = "time"
    #: clips whose audio RMS is below this are left out (0: keep all; silent clips are flagged)
    min_audio_rms: float = 0.0
    #: clips reaching past the end (or before the start) of the source's audio: "skip" or "flag"
    incomplete_audio: Literal["skip", "flag"] = "skip"
    #: use at most this many seconds of each source (None: all)
    max_seconds: float | None = None
    #: seconds of a source one piece of work covers (the unit workers take and resume redoes)
    chunk_seconds: float = 60.0
    #: libx264 quality of the clips (0 lossless .. 51 worst)
    crf: int = 18
    #: salt of the hash that picks the test sources of ``split="source"``
    seed: int = 0

    def _frames(self, seconds: float, option: str) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ConfigError(f"{option} must be a number of seconds, got {seconds!r}")
        count = seconds * self.fps
        if seconds <= 0 or abs(count - round(count)) > 1e-6:
            raise ConfigError(f"{option} {seconds!r} is {count:g} frames at {self.fps:g} fps; "
                              "it must be a positive whole number of frames")
        return int(round(count))

    @property
    def clip_frames(self) -> int:
        if self.clip_seconds is None:
            return self.num_frames
        return self._frames(self.clip_seconds, "--clip-seconds")

    @property
    def hop_frames(self) -> int:
        return self.clip_frames if self.hop_seconds is None else self._frames(self.hop_seconds, "--hop-seconds")

    def check(self) -> PrepareConfig:
        """``self`` if every setting is usable, else a ConfigError naming the first bad one."""
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 240):
            raise ConfigError(f"--fps must be in (0, 240], got {self.fps!r}")
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ConfigError(f"--num-frames must be a positive integer, got {self.num_frames!r}")
        if self.clip_frames % self.num_frames:
            raise ConfigError(f"--clip-seconds {self.clip_seconds:g} is {self.clip_frames} frames at {self.fps:g} fps, "
                              f"not a whole number of {self.num_frames}-frame windows "
                              f"(e.g. {self.num_frames / self.fps:g} or {2 * self.num_frames / self.fps:g})")
        _ = self.hop_frames  # evaluating it checks --hop-seconds
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 2 <= self.size <= MAX_SIDE \
                or self.size % 2:
            raise ConfigError(f"--size must be an even number of pixels in 2..{MAX_SIDE} (H.264), got {self.size!r}")
        if self.geometry not in ("letterbox", "crop"):
            raise ConfigError(f"--geometry must be letterbox or crop, got {self.geometry!r}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) \
                or not 8000 <= self.sample_rate <= 192000:
            raise ConfigError(f"--sample-rate must be an integer in 8000..192000 Hz, got {self.sample_rate!r}")
        if not (isinstance(self.test_fraction, (int, float)) and 0 <= self.test_fraction < 1):
            raise ConfigError(f"--test-fraction must be in [0, 1), got {self.test_fraction!r}")
        if self.split not in ("time", "source"):
            raise ConfigError(f"--split must be time or source, got {self.split!r}")
        if not (isinstance(self.min_audio_rms, (int, float)) and 0 <= self.min_audio_rms < 1):
            raise ConfigError(f"--min-audio-rms must be in [0, 1), got {self.min_audio_rms!r}")
        if self.incomplete_audio not in ("skip", "flag"):
            raise ConfigError(f"--incomplete-audio must be skip or flag, got {self.incomplete_audio!r}")
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ConfigError(f"--max-seconds must be positive, got {self.max_seconds!r}")
        if not (isinstance(self.chunk_seconds, (int, float)) and self.chunk_seconds > 0):
            raise ConfigError(f"--chunk-seconds must be positive, got {self.chunk_seconds!r}")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be an integer in 0..51, got {self.crf!r}")
        return self

    def settings(self) -> dict[str, Any]:
        """The settings as prepare.json records them (a folder is only resumed with the same ones)."""
        return {**dataclasses.asdict(self), "clip_frames": self.clip_frames, "hop_frames": self.hop_frames}


@dataclass(frozen=True)
class Source:
    """A video file to cut. ``key``: its path below its SRC folder (the file name for a file given
    by name), without suffix; its clips go to ``DIR/<split>/<key>/``."""

    path: Path
    key: str
    label: str | int | None = None


@dataclass(frozen=True)
class Task:
    """One piece of work: consecutive clips of one source and one split."""

    source: Source
    split: str
    chunk: int
    starts: tuple[int, ...]  # first output frame of each clip
    class_id: int | None
    class_name: str | None

    @property
    def journal_name(self) -> str:
        digest = hashlib.sha1(self.source.key.encode()).hexdigest()[:16]
        return f"{digest}-{self.split}-{self.chunk:05d}.jsonl"


@dataclass
class TaskResult:
    """What the journal of a finished piece says."""

    clips: int = 0
    written: int = 0  # clips this run wrote (the rest were there already)
    flagged: int = 0  # clips kept with incomplete audio (incomplete_audio="flag")
    silent: int = 0  # clips kept although silent (flagged in the manifest)
    skipped_quiet: int = 0  # left out by min_audio_rms
    skipped_audio: int = 0  # left out for incomplete audio
    missing: int = 0  # planned clips the video did not reach (the header promised more)
    error: str | None = None


@dataclass
class PrepareSummary:
    """What a run did (also written into prepare.json)."""

    out: Path
    clips: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    sources_used: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"}
    source_seconds: float = 0.0  # seconds of video of the usable sources (up to max_seconds each)
    written: int = 0
    flagged: int = 0
    silent: int = 0
    skipped_quiet: int = 0
    skipped_audio: int = 0
    missing: int = 0
    seconds: float = 0.0  # wall time of this run

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "out"}


# --------------------------------------------------------------------------- sources


def _scan(folder: Path, out: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted), leaving out hidden and temporary files and
    anything inside the output folder. (The datasets' scan_videos would do, but its module imports
    torch, which every worker process would then load for nothing.)"""
    out = out.resolve()
    found = []
    for path in folder.rglob("*"):
        if path.suffix.lower() not in SOURCE_SUFFIXES or not path.is_file():
            continue
        if any(is_partial_name(part) for part in path.relative_to(folder).parts):
            continue
        if path.resolve().is_relative_to(out):
            continue
        found.append(path)
    return sorted(found)


def find_sources(srcs: Sequence[str | Path], out: str | Path, class_from_folder: bool = False,
                 class_map: str | Path | None = None) -> list[Source]:
    """The video files that ``srcs`` (files or folders) name, sorted by key, with their class."""
    if not srcs:
        raise ConfigError("give at least one source video or folder")
    out = Path(out)
    mapping = _load_class_map(Path(class_map)) if class_map is not None else None
    by_key: dict[str, Source] = {}
    for src in map(Path, srcs):
        if src.is_dir():
            files = _scan(src, out)
            if not files:
                raise DataError(f"{src}: no video files in this folder (looked for {' '.join(SOURCE_SUFFIXES)})")
            found = [(path, path.relative_to(src)) for path in files]
        else:
            check_input_file(src, "a source video")
            found = [(src, Path(src.name))]
        for path, rel in found:
            key = rel.with_suffix("").as_posix()
            label: str | int | None = None
            if class_from_folder:
                if len(rel.parts) < 2:
                    raise ConfigError(f"{path}: --class-from-folder needs every source inside a class folder "
                                      "(SRC/CLASS/...); this one is not")
                label = rel.parts[0]
            elif mapping is not None:
                label = next((mapping[name] for name in (key, rel.name, rel.stem) if name in mapping), None)
                if label is None:
                    raise ConfigError(f"{class_map}: no class for source {path} (looked up '{key}', "
                                      f"'{rel.name}' and '{rel.stem}')")
            if key in by_key:
                raise ConfigError(f"two sources would share the clip folder '{key}': {by_key[key].path} and {path}; "
                                  "rename one or give them in one SRC folder")
            by_key[key] = Source(path.resolve(), key, label)
    return [by_key[key] for key in sorted(by_key)]


def _load_class_map(path: Path) -> dict[str, str | int]:
    check_input_file(path, "a class map")
    try:
        mapping = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: class map is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                for v in mapping.values()):
        raise ConfigError(f"{path}: class map must be a JSON object {{source name: class name or id}}")
    return mapping


def _class_ids(sources: Sequence[Source]) -> tuple[dict[str | int, int], list[str]]:
    """Class id of every label (names sorted and numbered; integer labels are ids) and the names."""
    labels = {source.label for source in sources if source.label is not None}
    names = sorted(label for label in labels if isinstance(label, str))
    numbers = [label for label in labels if isinstance(label, int)]
    if names and numbers:
        raise ConfigError(f"class labels mix integer ids and names (names: {', '.join(names[:5])}); use one or the other")
    if any(number < 0 for number in numbers):
        raise ConfigError(f"class ids must be >= 0, got {min(numbers)}")
    ids: dict[str | int, int] = {name: number for number, name in enumerate(names)}
    ids.update({number: number for number in numbers})
    return ids, names


# --------------------------------------------------------------------------- planning


def _test_sources(keys: Sequence[str], cfg: PrepareConfig) -> set[str]:
    """Whole sources held out (``split="source"``): the ``round(fraction * n)`` (at least one) whose
    seeded hash of the key is smallest, so the choice depends on neither order nor worker count."""
    if cfg.test_fraction == 0 or cfg.split != "source":
        return set()
    if len(keys) < 2:
        raise ConfigError("--split source holds out whole files, but there is only one usable source; "
                          "use --split time to hold out the end of it")
    count = min(len(keys) - 1, max(1, round(cfg.test_fraction * len(keys))))
    ranked = sorted(keys, key=lambda key: hashlib.sha256(f"{cfg.seed}:{key}".encode()).digest())
    return set(ranked[:count])


def _segments(total: int, split: str | None, cfg: PrepareConfig) -> list[tuple[str, int, int]]:
    """``(split, first frame, end frame)`` of the parts of a source of ``total`` frames."""
    if cfg.test_fraction == 0:
        return [("train", 0, total)]
    if cfg.split == "source":
        return [(split or "train", 0, total)]
    boundary = int(math.floor(total * (1 - cfg.test_fraction) + 1e-9))
    # train clips end at or before the boundary and test clips start at or after it: no overlap
    return [("train", 0, boundary), ("test", boundary, total)]


def plan(sources: Sequence[Source], cfg: PrepareConfig) -> tuple[list[Task], list[dict[str, str]], dict[str, Any]]:
    """Pieces of work from the sources' headers, the sources left out (``{"source", "reason"}``) and
    facts for the summary (``source_seconds``: seconds of usable video; ``no_test``: sources too short
    to hold out a test clip; ``classes``: class names by id; ``sources_used``)."""
    usable: list[tuple[Source, int]] = []
    covered = 0.0  # seconds of video of the usable sources (up to max_seconds each)
    skipped: list[dict[str, str]] = []
    clip, hop = cfg.clip_frames, cfg.hop_frames
    for source in sources:
        try:
            info = probe(source.path)
        except MediaError as exc:
            skipped.append({"source": str(source.path), "reason": exc.reason})
            continue
        reason = None
        if not info.has_video:
            reason = "no video stream"
        elif not info.has_audio:
            reason = "no audio track"
        else:
            seconds = min(info.duration, cfg.max_seconds or math.inf)
            total = max(0, math.ceil(seconds * cfg.fps - 1e-6))
            if total < clip:
                reason = f"shorter than one clip ({total} frames at {cfg.fps:g} fps < {clip})"
        if reason is not None:
            skipped.append({"source": str(source.path), "reason": reason})
            continue
        usable.append((source, total))
        covered += seconds
    test_keys = _test_sources([source.key for source, _ in usable], cfg)
    ids, names = _class_ids([source for source, _ in usable])
    per_chunk = max(1, int(cfg.chunk_seconds * cfg.fps // hop))
    tasks: list[Task] = []
    no_test: list[str] = []
    for source, total in usable:
        class_id = None if source.label is None else ids[source.label]
        class_name = source.label if isinstance(source.label, str) else None
        split = "test" if source.key in test_keys else "train"
        for part, lo, hi in _segments(total, split, cfg):
            starts = list(range(lo, hi - clip + 1, hop))
            if part == "test" and cfg.split == "time" and not starts:
                no_test.append(str(source.path))
            for chunk, first in enumerate(range(0, len(starts), per_chunk)):
                tasks.append(Task(source, part, chunk, tuple(starts[first:first + per_chunk]), class_id, class_name))
    return tasks, skipped, {"source_seconds": covered, "no_test": no_test, "classes": names,
                            "sources_used": len(usable)}


# --------------------------------------------------------------------------- one piece of work


def clip_path(task: Task, start: int) -> str:
    """A clip's path relative to the output folder."""
    return f"{task.split}/{task.source.key}/{start:07d}.mp4"


def read_journal(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The entries of a piece's journal. A last line without its newline is a write that a kill cut
    short: ignored, and with ``repair`` cut off the file (only the piece's own worker repairs)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete = data[:data.rfind(b"\n") + 1]
    if repair and len(complete) < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(complete))
            fh.flush()
            os.fsync(fh.fileno())
    entries = []
    for number, line in enumerate(complete.decode("utf-8", "replace").splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            raise DataError(f"{path}: line {number} is not a journal entry (the resume state is damaged; "
                            f"delete {path.parent.parent} to redo this folder)")
        entries.append(entry)
    return entries


def _result(entries: Iterable[dict[str, Any]]) -> TaskResult:
    result = TaskResult()
    for entry in entries:
        if "path" in entry:
            result.clips += 1
            result.flagged += not entry["audio_complete"]
            result.silent += entry["silent"]
        elif entry.get("skipped") == "quiet":
            result.skipped_quiet += 1
        elif entry.get("skipped") == "audio":
            result.skipped_audio += 1
        elif entry.get("done"):
            result.missing, result.error = entry["missing"], entry["error"]
    return result


def _append(fh: Any, entry: dict[str, Any], journal: Path) -> None:
    """One journal line, on disk before this returns (a kill after it cannot lose it)."""
    with disk_full_as_error(journal):
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_task(task: Task, cfg: PrepareConfig, out: Path, progress: Callable[[int], None] | None = None) -> TaskResult:
    """Write the clips of one piece that its journal does not list yet; returns its result."""
    journal = out / STATE_FOLDER / "journal" / task.journal_name
    entries = read_journal(journal, repair=True)
    if any(entry.get("done") for entry in entries):
        if progress is not None:
            progress(len(task.starts))
        return _result(entries)
    finished = {entry["start_frame"] for entry in entries}
    pending = [start for start in task.starts if start not in finished]
    if progress is not None and finished:
        progress(len(finished))
    make_folder(journal.parent)
    written = 0
    seen: set[int] = set()
    error = None
    shortfall = AUDIO_SHORTFALL_S / (cfg.clip_frames / cfg.fps)
    with disk_full_as_error(journal), open(journal, "a") as fh:
        try:
            # decoding always starts at the piece's first clip, so that a resumed piece decodes its
            # clips exactly as an uninterrupted run does (AAC output after a seek differs in the
            # last bits, which can change the encoded clip)
            windows = iter_windows(task.source.path, pending, cfg.clip_frames, fps=cfg.fps,
                                   sample_rate=cfg.sample_rate, size=cfg.size, geometry=cfg.geometry,
                                   decode_from=task.starts[0])
            for window in windows:
                start = window.start_frame
                seen.add(start)
                rms = float(np.sqrt(np.mean(np.square(window.audio, dtype=np.float64))))
                complete = window.audio_coverage >= 1 - shortfall
                if rms < cfg.min_audio_rms:
                    entry: dict[str, Any] = {"start_frame": start, "skipped": "quiet", "audio_rms": round(rms, 6)}
                elif not complete and cfg.incomplete_audio == "skip":
                    entry = {"start_frame": start, "skipped": "audio",
                             "audio_coverage": round(window.audio_coverage, 4)}
                else:
                    rel = clip_path(task, start)
                    target = out / rel
                    # a clip on disk under its own name is complete (renamed after an fsync): one
                    # that a killed run wrote but could not list yet is kept as it is
                    if not target.is_file():
                        write_av(target, window.frames, window.audio, cfg.fps, cfg.sample_rate, crf=cfg.crf)
                        written += 1
                    entry = {"path": rel, "split": task.split, "source": str(task.source.path),
                             "start": round(start / cfg.fps, 6), "start_frame": start,
                             "num_frames": cfg.clip_frames, "fps": cfg.fps, "sample_rate": cfg.sample_rate,
                             "size": cfg.size, "audio_rms": round(rms, 6), "silent": rms < SILENT_RMS,
                             "audio_complete": bool(complete)}
                    if task.class_id is not None:
                        entry["class_id"] = task.class_id
                    if task.class_name is not None:
                        entry["class_name"] = task.class_name
                _append(fh, entry, journal)
                entries.append(entry)
                if progress is not None:
                    progress(1)
        except MediaError as exc:  # a file damaged in the middle: its clips so far are good
            error = exc.reason
        # after a decoding error the error says what happened to the rest of the piece
        missing = 0 if error else len([start for start in pending if start not in seen])
        done = {"done": True, "missing": missing, "error": error}
        _append(fh, done, journal)
        entries.append(done)
    if progress is not None and missing:
        progress(missing)
    result = _result(entries)
    result.written = written
    return result


def _ignore_interrupts() -> None:
    """Worker processes leave Ctrl-C to the main process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_worker(job: tuple[Task, PrepareConfig, Path]) -> tuple[Task, TaskResult | tuple[str, str]]:
    """:func:`run_task` in a worker process; a user error comes back as (its class name, its line),
    since MMLDMError subclasses taking several arguments do not survive pickling."""
    task, cfg, out = job
    try:
        return task, run_task(task, cfg, out)
    except MMLDMError as exc:
        return task, (type(exc).__name__, str(exc))


def _rebuilt_error(kind: str, message: str) -> MMLDMError:
    from .. import errors

    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, MMLDMError)):
        cls = DataError
    error = cls.__new__(cls)
    MMLDMError.__init__(error, message)
    return error


# --------------------------------------------------------------------------- the output folder


def _lock(out: Path) -> Any:
    """An exclusive lock on ``out`` for this run (released when the process ends, even by kill -9)."""
    state = make_folder(out / STATE_FOLDER)
    fh = open(state / "lock", "a")  # noqa: SIM115 - held open for the whole run: the lock lives with it
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"{out}: another `mmldm data prepare` is writing this folder") from None
        raise
    return fh


def _source_records(sources: Sequence[Source]) -> list[dict[str, Any]]:
    records = []
    for source in sources:
        try:
            size = source.path.stat().st_size
        except OSError:
            size = None
        records.append({"key": source.key, "path": str(source.path), "bytes": size, "label": source.label})
    return records


def _check_not_foreign(out: Path) -> None:
    """Refuse a folder holding files that no run of prepare wrote (before anything is written there)."""
    if not out.is_dir() or (out / SETTINGS_NAME).is_file():
        return
    others = [p.name for p in out.iterdir() if p.name != STATE_FOLDER]
    if others:
        raise ConfigError(f"{out}: folder is not empty and holds no {SETTINGS_NAME} of `mmldm data prepare` "
                          f"(found {', '.join(sorted(others)[:3])}); give a new or empty folder")


def _check_resumable(out: Path, settings: dict[str, Any], sources: list[dict[str, Any]]) -> None:
    """Refuse a folder that holds something else than this run's dataset."""
    _check_not_foreign(out)
    recorded = out / SETTINGS_NAME
    if not recorded.is_file():
        return
    try:
        before = json.loads(recorded.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{recorded}: not valid JSON; delete {out} to prepare it again") from None
    if not isinstance(before, dict) or before.get("format") != FORMAT:
        raise ConfigError(f"{recorded}: not written by this version of `mmldm data prepare`; give a new folder")
    # named as the options are; the derived clip_frames and hop_frames follow from the others
    changed = [f"--{key.replace('_', '-')} {before['settings'].get(key)!r} there, {value!r} now"
               for key, value in settings.items()
               if before["settings"].get(key) != value and key not in ("clip_frames", "hop_frames")]
    if changed:
        raise ConfigError(f"{out} was prepared with other settings ({'; '.join(changed[:3])}); run the same command "
                          "to resume it, or give another --out")
    if before.get("sources") != sources:
        old = {json.dumps(s, sort_keys=True) for s in before.get("sources", [])}
        new = {json.dumps(s, sort_keys=True) for s in sources}
        example = json.loads(min(new - old or old - new))["path"]
        raise ConfigError(f"{out} was prepared from other sources ({len(new - old)} new or changed, {len(old - new)} "
                          f"gone or changed, e.g. {example}); run the same command to resume it, or give another --out")


def _remove_leftovers(out: Path) -> None:
    """Temporary files that killed writers left (a clip or manifest being written): never complete."""
    for name in SPLITS:
        folder = out / name
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and is_partial_name(path.name):
                    path.unlink(missing_ok=True)
    for path in out.iterdir():
        if path.is_file() and path.name.startswith(".") and ".partial" in path.name:
            path.unlink(missing_ok=True)


def write_manifests(out: Path, tasks: Sequence[Task], with_test: bool) -> dict[str, int]:
    """Rewrite the manifests (atomically) from the journals: every listed clip, in source and time
    order; returns the clip count per split."""
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    for task in tasks:  # planned order: sources by key, then splits, then pieces in time order
        for entry in read_journal(out / STATE_FOLDER / "journal" / task.journal_name):
            if "path" in entry:
                lines[entry["split"]].append(json.dumps(entry))
    atomic_write_text(out / MANIFEST_NAME, "".join(line + "\n" for line in lines["train"]))
    if with_test:
        atomic_write_text(out / TEST_MANIFEST_NAME, "".join(line + "\n" for line in lines["test"]))
    return {split: len(found) for split, found in lines.items()}


def _listed(items: Sequence[dict[str, str]]) -> str:
    more = f"; and {len(items) - _WARN_LISTED} more" if len(items) > _WARN_LISTED else ""
    return "; ".join(f"{item['source']} ({item['reason']})" for item in items[:_WARN_LISTED]) + more


def prepare(
    srcs: Sequence[str | Path],
    out: str | Path,
    cfg: PrepareConfig | None = None,
    workers: int = 1,
    class_from_folder: bool = False,
    class_map: str | Path | None = None,
    progress: bool = False,
) -> PrepareSummary:
    """Cut the videos ``srcs`` (files or folders) into the clip dataset ``out`` (see the module
    docstring); resumes a folder that an interrupted run of the same command left."""
    started = time.perf_counter()
    cfg = (cfg or PrepareConfig()).check()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    out = Path(out)
    check_writable_folder(out)
    sources = find_sources(srcs, out, class_from_folder, class_map)
    tasks, skipped, facts = plan(sources, cfg)
    if not tasks:
        where = ", ".join(map(str, srcs))
        first = f": {_listed(skipped[:1])}" if skipped else ""
        raise DataError(f"{where}: no usable source video ({len(sources)} found, {len(skipped)} unusable{first})")
    _check_not_foreign(out)
    with disk_full_as_error(out):
        make_folder(out)
    lock = _lock(out)
    summary = PrepareSummary(out=out, sources_used=facts["sources_used"], skipped=list(skipped),
                             source_seconds=facts["source_seconds"])
    with_test = cfg.test_fraction > 0
    try:
        settings, source_records = cfg.settings(), _source_records(sources)
        _check_resumable(out, settings, source_records)
        document = {"format": FORMAT, "settings": settings, "sources": source_records,
                    "classes": facts["classes"], "complete": False}
        atomic_write_text(out / SETTINGS_NAME, json.dumps(document, indent=2) + "\n")
        _remove_leftovers(out)
        results = _run_tasks(tasks, cfg, out, workers, progress, with_test)
        for task, result in zip(tasks, results):
            summary.written += result.written
            summary.flagged += result.flagged
            summary.silent += result.silent
            summary.skipped_quiet += result.skipped_quiet
            summary.skipped_audio += result.skipped_audio
            summary.missing += result.missing
            if result.error is not None:
                problem = {"source": str(task.source.path), "reason": f"{result.error}; the clips of its "
                           f"{task.split} part from {task.starts[0] / cfg.fps:.1f} s on were left out"}
                if problem not in summary.skipped:
                    summary.skipped.append(problem)
        summary.clips = write_manifests(out, tasks, with_test)
        if not any(summary.clips.values()):
            raise DataError(f"{out}: every clip was left out ({summary.skipped_quiet} quieter than --min-audio-rms "
                            f"{cfg.min_audio_rms:g}, {summary.skipped_audio} with incomplete audio, "
                            f"{summary.missing} past the end of the video)")
        if summary.skipped:
            atomic_write_text(out / SKIPPED_NAME, "".join(json.dumps(item) + "\n" for item in summary.skipped))
        else:
            (out / SKIPPED_NAME).unlink(missing_ok=True)
        summary.seconds = time.perf_counter() - started
        document.update(complete=True, summary=summary.as_dict())
        atomic_write_text(out / SETTINGS_NAME, json.dumps(document, indent=2) + "\n")
    finally:
        lock.close()
    if summary.skipped:
        warn(f"skipped {len(summary.skipped)} source(s) or part(s) of sources: {_listed(summary.skipped)} "
             f"(listed in {out / SKIPPED_NAME})")
    if facts["no_test"]:
        warn(f"{len(facts['no_test'])} source(s) too short to hold out a test clip at --test-fraction "
             f"{cfg.test_fraction:g}: {'; '.join(facts['no_test'][:_WARN_LISTED])}")
    if summary.missing:
        warn(f"{summary.missing} planned clip(s) lie past the last decodable frame of their source "
             "(the header promised a longer video)")
    return summary


def _run_tasks(tasks: Sequence[Task], cfg: PrepareConfig, out: Path, workers: int, progress: bool,
               with_test: bool) -> list[TaskResult]:
    """Run every piece (in this process for one worker, else in a pool of ``workers`` processes),
    rewriting the manifests now and then; results in the order of ``tasks``."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(task.starts) for task in tasks), desc="prepare", unit="clip")
    results: dict[int, TaskResult] = {}
    last_manifest = time.monotonic()

    def finished(number: int, result: TaskResult) -> None:
        nonlocal last_manifest
        results[number] = result
        if time.monotonic() - last_manifest > MANIFEST_EVERY_S:
            write_manifests(out, tasks, with_test)
            last_manifest = time.monotonic()

    try:
        if workers == 1:
            for number, task in enumerate(tasks):
                finished(number, run_task(task, cfg, out, bar.update if bar is not None else None))
        else:
            numbers = {task.journal_name: number for number, task in enumerate(tasks)}
            context = multiprocessing.get_context("spawn")  # no fork of a process holding decoder threads
            pool = context.Pool(min(workers, len(tasks)), initializer=_ignore_interrupts)
            try:
                jobs = ((task, cfg, out) for task in tasks)
                for task, result in pool.imap_unordered(_run_in_worker, jobs, chunksize=1):
                    if isinstance(result, tuple):
                        raise _rebuilt_error(*result)
                    finished(numbers[task.journal_name], result)
                    if bar is not None:
                        bar.update(len(task.starts))
                pool.close()
            finally:
                pool.terminate()  # a failed or interrupted run stops its workers now (they write atomically)
                pool.join()
    except BaseException:
        # the clips finished so far are complete: list them (best effort, the disk may be full)
        with contextlib.suppress(Exception):
            write_manifests(out, tasks, with_test)
        raise
    finally:
        if bar is not None:
            bar.close()
    return [results[number] for number in range(len(tasks))]
