"""Sounding Shapes v1: a synthetic sounding-video dataset with an exact audio-video law.

Implements ``/work/shared/spec/sounding-shapes.md`` (kept in the project as the
dataset's specification). One filled object moves with elastic bounces over a
dark background; its class fixes shape, colour and timbre, and the pitch of the
sound follows the object's height exactly:

    f0(t) = 220 * 8 ** (1 - y(t) / H)  Hz        (top of frame 1760 Hz, bottom 220 Hz)

where ``y(t)`` is the centre row (continuous pixel coordinates, row k covers
[k, k+1), so the middle of a 64-pixel frame is y = 32), interpolated linearly
between frame instants t_i = i / fps and held after the last one.

Choices the specification leaves open, fixed here:

- Triangle: equilateral, side 2r (r is the "half side"), apex up, centred on its
  centroid, so the centroid of its pixels is the centre whose row drives the
  pitch. It reaches 2r/sqrt(3) above the centre and r/sqrt(3) below it; the
  bounce uses each shape's own extents so no object ever leaves the frame.
- Rasterisation: a pixel takes the class colour when its centre lies inside the
  shape (no anti-aliasing), so frames hold exactly two colours.
- Random draws, in this order from ``numpy.random.default_rng(seed)``: class
  (always drawn, then overridden by ``class_id`` if given, so the other draws do
  not depend on it), r, start x, start y, direction, speed.
- Phase: the exact integral of f0 (f0 is exponential in t between frame
  instants, so each segment integrates in closed form); no numerical drift.
- Amplitude: fades first, then the peak is normalised to exactly 0.5.
- Datasets: clip ``i`` has class ``i % 3`` (balanced; each class within one clip
  of the others) and seed ``SeedSequence([seed, i])``'s first 32-bit word.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_text, make_folder
from ..errors import ConfigError, DataError
from ..files import disk_full_as_error, missing_folders, remove_empty_folders
from ..timing import AVTiming

BACKGROUND: tuple[int, int, int] = (16, 16, 16)
F0_BOTTOM_HZ = 220.0  # pitch at the bottom of the frame (y = H)
PITCH_RANGE = 8.0  # three octaves: top of the frame is 8 * 220 = 1760 Hz
FADE_SECONDS = 0.010
PEAK = 0.5
MIN_SIZE = 16
#: the most memory one clip may take while its frames are drawn (about 32 bytes per pixel per frame)
MAX_DRAW_BYTES = 4 * 1024**3
# The measures need the 3rd harmonic of the highest tone (3 * 1760 = 5280 Hz) below Nyquist.
MIN_SAMPLE_RATE = 12000
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class ShapeClass:
    """One Sounding Shapes class: its shape, colour (RGB) and timbre."""

    id: int
    name: str
    shape: str  # "disc" | "square" | "triangle"
    colour: tuple[int, int, int]
    tone: str  # "sine" | "square" | "saw"


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(0, "sine", "disc", (230, 40, 40), "sine"),
    ShapeClass(1, "square", "square", (40, 200, 60), "square"),
    ShapeClass(2, "saw", "triangle", (50, 90, 230), "saw"),
)


#: colour words of the captions, by class id (the colours of :data:`CLASSES`)
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue")
#: how a caption names each tone
TONE_PHRASES: dict[str, str] = {"sine": "a sine tone", "square": "a square wave", "saw": "a sawtooth wave"}
#: a clip whose pitch ends within this many semitones of where it started is "steady"
STEADY_SEMITONES = 1.0


def pitch_direction(f0: Any) -> str:
    """"rising", "falling" or "steady": the pitch at the last frame against the first (per-frame f0 in Hz)."""
    f0 = np.asarray(f0, dtype=np.float64)
    change = 12.0 * math.log2(f0[-1] / f0[0])
    if change > STEADY_SEMITONES:
        return "rising"
    if change < -STEADY_SEMITONES:
        return "falling"
    return "steady"


def caption(class_id: int, direction: str) -> str:
    """The text of a clip, from its law: colour, shape and tone of the class and the pitch direction,
    e.g. "a green square and a square wave, rising"."""
    cls = CLASSES[class_id]
    return f"a {COLOUR_NAMES[cls.id]} {cls.shape} and {TONE_PHRASES[cls.tone]}, {direction}"


def caption_words() -> list[str]:
    """Every word a Sounding Shapes caption can hold (for a tokenizer that must hold them whole)."""
    texts = [caption(cls.id, direction) for cls in CLASSES for direction in ("rising", "falling", "steady")]
    return sorted({word for text in texts for word in text.replace(",", " ").split()})


@dataclass(frozen=True)
class ShapesConfig:
    """Clip geometry and timing. Frames are ``size`` x ``size``; audio is mono."""

    size: int = 64
    fps: float = 10.0
    num_frames: int = 16
    sample_rate: int = 16000

    def __post_init__(self):
        if not isinstance(self.size, (int, np.integer)) or self.size < MIN_SIZE:
            raise ConfigError(f"Sounding Shapes: size must be an integer of at least {MIN_SIZE} pixels, "
                              f"got {self.size!r}")
        draw_bytes = 32 * self.num_frames * self.size**2 if isinstance(self.num_frames, (int, np.integer)) else 0
        if draw_bytes > MAX_DRAW_BYTES:
            raise ConfigError(f"Sounding Shapes: a clip of {self.num_frames} frames of {self.size}x{self.size} would "
                              f"take {draw_bytes / 1024**3:.1f} GiB to draw (at most {MAX_DRAW_BYTES / 1024**3:g}); "
                              "use a smaller size or fewer frames")
        if self.sample_rate < MIN_SAMPLE_RATE:
            raise ConfigError(f"Sounding Shapes: sample rate must be at least {MIN_SAMPLE_RATE} Hz so the 3rd "
                              f"harmonic of 1760 Hz is below Nyquist, got {self.sample_rate}")
        AVTiming(fps=self.fps, num_frames=self.num_frames, sample_rate=self.sample_rate)  # raises if invalid

    @property
    def timing(self) -> AVTiming:
        return AVTiming(fps=self.fps, num_frames=self.num_frames, sample_rate=self.sample_rate)

    @property
    def num_samples(self) -> int:
        """Audio samples per clip: num_frames * sample_rate / fps."""
        return self.timing.samples_per_clip


@dataclass
class ShapesClip:
    """One clip: ``frames`` uint8 [T, H, W, 3], ``audio`` float32 [N], ground ``truth``.

    ``truth`` keys: class_id, class_name, r, x [T], y [T], f0 [T] (Hz, at frame
    instants), seed.
    """

    frames: np.ndarray
    audio: np.ndarray
    truth: dict[str, Any]


def law_f0(y: np.ndarray | float, height: float) -> np.ndarray:
    """The audio-video law: f0 = 220 * 8 ** (1 - y / H) Hz for centre row ``y`` (any shape)."""
    return F0_BOTTOM_HZ * PITCH_RANGE ** (1.0 - np.asarray(y, dtype=np.float64) / height)


def shape_extent(shape: str, r: float) -> tuple[float, float, float, float]:
    """How far a shape of size ``r`` reaches from its centre: (left, right, up, down) in pixels."""
    if shape in ("disc", "square"):
        return r, r, r, r
    if shape == "triangle":
        return r, r, 2.0 * r / math.sqrt(3.0), r / math.sqrt(3.0)
    raise DataError(f"Sounding Shapes: unknown shape '{shape}'")


def _bounce(path: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold a free straight-line path into [low, high]: elastic reflection at both ends."""
    span = high - low
    u = np.mod(path - low, 2.0 * span)
    return low + np.where(u <= span, u, 2.0 * span - u)


def render_frames(size: int, class_id: int, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Draw the class's shape of size ``r`` centred at (x[t], y[t]) on the background.

    A pixel (row k, column j) is coloured when its centre (j + 0.5, k + 0.5) is
    inside the shape. Returns uint8 [T, H, W, 3] with H = W = ``size``.
    """
    cls = CLASSES[class_id]
    x = np.asarray(x, dtype=np.float64)[:, None, None]  # [T, 1, 1]
    y = np.asarray(y, dtype=np.float64)[:, None, None]
    centres = np.arange(size, dtype=np.float64) + 0.5
    dx = centres[None, None, :] - x  # [T, 1, W]
    dy = centres[None, :, None] - y  # [T, H, 1]
    if cls.shape == "disc":
        inside = dx**2 + dy**2 <= r**2
    elif cls.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # equilateral triangle, apex up, centred on its centroid
        _, _, up, down = shape_extent("triangle", r)
        height = up + down
        inside = (dy <= down) & (np.abs(dx) <= r * (dy + up) / height)
    frames = np.empty((x.shape[0], size, size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    frames[inside] = cls.colour
    return frames


def _segment_integral(rate: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """(1 - exp(-rate * s)) / rate, i.e. the integral of exp(-rate * t) over [0, s]; s where rate = 0."""
    z = rate * duration
    safe = np.where(z == 0.0, 1.0, z)
    ratio = np.where(np.abs(z) < 1e-12, 1.0 - z / 2.0, -np.expm1(-z) / safe)
    return duration * ratio


def pitch_track(cfg: ShapesConfig, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample f0 (Hz) and phase (in cycles) for frame-instant centre rows ``y`` [T].

    y(t) is linear between frame instants and held after the last one, so on
    segment i, f0(t) = f0_i * exp(-k_i (t - t_i)) with k_i = ln 8 * (y_{i+1} - y_i) / (H dt),
    and the phase (the integral of f0) is exact in closed form.
    Returns (f0 [N], cycles [N]), float64.
    """
    y = np.asarray(y, dtype=np.float64)
    timing = cfg.timing
    if y.shape != (timing.num_frames,):
        raise DataError(f"Sounding Shapes: expected {timing.num_frames} centre rows, got shape {y.shape}")
    frame_dt = 1.0 / cfg.fps
    f0_frames = law_f0(y, cfg.size)  # [T]
    rate = np.zeros_like(y)  # k_i per second; the held segment after the last frame has k = 0
    rate[:-1] = math.log(PITCH_RANGE) * np.diff(y) / (cfg.size * frame_dt)
    cycles_per_segment = f0_frames[:-1] * _segment_integral(rate[:-1], np.full(len(y) - 1, frame_dt))
    cycles_at_frames = np.concatenate([[0.0], np.cumsum(cycles_per_segment)])  # [T]

    n = np.arange(timing.samples_per_clip)
    seg = np.minimum(n // timing.samples_per_frame, timing.num_frames - 1)  # integer: exact frame cuts
    since = (n - seg * timing.samples_per_frame) / cfg.sample_rate  # seconds since t_seg
    f0 = f0_frames[seg] * np.exp(-rate[seg] * since)
    cycles = cycles_at_frames[seg] + f0_frames[seg] * _segment_integral(rate[seg], since)
    return f0, cycles


def harmonics(tone: str, max_harmonic: int) -> list[int]:
    """Harmonic numbers of a timbre up to ``max_harmonic`` (amplitude 1/n each)."""
    if tone == "sine":
        return [1]
    if tone == "square":
        return list(range(1, max_harmonic + 1, 2))
    if tone == "saw":
        return list(range(1, max_harmonic + 1))
    raise DataError(f"Sounding Shapes: unknown tone '{tone}'")


def synth_audio(cfg: ShapesConfig, class_id: int, y: np.ndarray) -> np.ndarray:
    """The sound of class ``class_id`` whose pitch follows centre rows ``y`` [T]. Returns float32 [N].

    Band-limited: harmonic n sounds at a sample only while n * f0 < Nyquist there.
    """
    f0, cycles = pitch_track(cfg, y)
    nyquist = cfg.sample_rate / 2.0
    wave = np.zeros_like(f0)
    for n in harmonics(CLASSES[class_id].tone, int(nyquist // f0.min())):
        below_nyquist = n * f0 < nyquist
        wave += below_nyquist * np.sin(2.0 * np.pi * np.mod(n * cycles, 1.0)) / n
    fade = max(1, round(FADE_SECONDS * cfg.sample_rate))
    index = np.arange(len(wave))
    wave *= np.clip(np.minimum(index, len(wave) - 1 - index) / fade, 0.0, 1.0)
    return (PEAK * wave / np.abs(wave).max()).astype(np.float32)


def _check_seed(seed: int, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"Sounding Shapes: {what} must be a non-negative integer, got {seed!r}")
    return int(seed)


def synth_truth(cfg: ShapesConfig, seed: int, class_id: int | None = None) -> dict[str, Any]:
    """The ground truth of the clip made from ``seed``: class, r, per-frame centre and f0 (no pixels, no audio).

    Keys: class_id, class_name, r, x [T], y [T], f0 [T] (Hz at frame instants), seed, text (the
    clip's caption, :func:`caption`: its class and pitch direction).
    """
    seed = _check_seed(seed, "seed")
    if class_id is not None and class_id not in range(len(CLASSES)):
        raise DataError(f"Sounding Shapes: class id must be one of 0..{len(CLASSES) - 1}, got {class_id!r}")
    rng = np.random.default_rng(seed)
    drawn = int(rng.integers(len(CLASSES)))
    cls = CLASSES[drawn if class_id is None else int(class_id)]
    size = cfg.size
    r = size / 8.0 * rng.uniform(0.8, 1.2)
    left, right, up, down = shape_extent(cls.shape, r)
    x0 = rng.uniform(left, size - right)
    y0 = rng.uniform(up, size - down)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    speed = rng.uniform(0.25, 0.75) * r  # pixels per frame
    steps = np.arange(cfg.num_frames, dtype=np.float64)
    x = _bounce(x0 + speed * math.cos(direction) * steps, left, size - right)
    y = _bounce(y0 + speed * math.sin(direction) * steps, up, size - down)
    f0 = law_f0(y, size)
    return {
        "class_id": cls.id,
        "class_name": cls.name,
        "r": float(r),
        "x": [float(v) for v in x],
        "y": [float(v) for v in y],
        "f0": [float(v) for v in f0],
        "seed": seed,
        "text": caption(cls.id, pitch_direction(f0)),
    }


def synth_clip(cfg: ShapesConfig, seed: int, class_id: int | None = None) -> ShapesClip:
    """Generate one clip deterministically from ``seed`` (class drawn from the seed unless given)."""
    truth = synth_truth(cfg, seed, class_id)
    frames = render_frames(cfg.size, truth["class_id"], truth["r"], np.asarray(truth["x"]), np.asarray(truth["y"]))
    return ShapesClip(frames=frames, audio=synth_audio(cfg, truth["class_id"], np.asarray(truth["y"])), truth=truth)


def clip_seed(seed: int, index: int) -> int:
    """Seed of clip ``index`` in a dataset made with ``seed``: a 32-bit word of SeedSequence([seed, index])."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_dataset(out: str | Path, n: int, seed: int, cfg: ShapesConfig | None = None,
                  progress: bool = False) -> Path:
    """Write ``n`` mp4 clips under ``out/<class name>/NNNNN.mp4`` and ``out/manifest.jsonl``.

    Clip i has class i % 3 and seed :func:`clip_seed` (seed, i). The manifest
    (one JSON object per clip: path relative to ``out``, index, ground truth with
    the caption in ``text``, clip geometry and timing) is written atomically after all clips, so an
    interrupted run never leaves a manifest naming missing clips. The same
    arguments always give the same manifest bytes. Files already in ``out``
    are overwritten when they share a name and otherwise left alone (the
    manifest names only this run's clips). A run that fails (a full disk) or is
    interrupted removes the clips and folders it created, and nothing else.
    Returns the manifest path.
    """
    from .media_io import write_av

    cfg = cfg or ShapesConfig()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"Sounding Shapes: number of clips must be a positive integer, got {n!r}")
    seed = _check_seed(seed, "dataset seed")
    if cfg.size % 2:
        raise DataError(f"Sounding Shapes: mp4 (H.264 4:2:0) needs an even frame size, got {cfg.size}")
    out = Path(out)
    made = missing_folders(out)  # what this run creates, deepest first
    created: list[Path] = []
    bar = None
    try:
        with disk_full_as_error(out):
            make_folder(out)
        lines = []
        indices: Any = range(int(n))
        if progress:
            from tqdm import tqdm

            indices = bar = tqdm(indices, desc="Sounding Shapes", unit="clip")
        for index in indices:
            cls = CLASSES[index % len(CLASSES)]
            clip = synth_clip(cfg, clip_seed(seed, index), class_id=cls.id)
            rel = f"{cls.name}/{index:05d}.mp4"
            target = out / rel
            made[:0] = missing_folders(target.parent)
            new = not target.exists()
            write_av(target, clip.frames, clip.audio, cfg.fps, cfg.sample_rate, wav=False)
            if new:
                created.append(target)
            record = {"path": rel, "index": index, **clip.truth, "size": cfg.size, "fps": cfg.fps,
                      "num_frames": cfg.num_frames, "sample_rate": cfg.sample_rate}
            lines.append(json.dumps(record, sort_keys=False))
        return atomic_write_text(out / MANIFEST_NAME, "\n".join(lines) + "\n")
    except BaseException:
        # clips without a manifest would still be found by a folder scan: take them away again
        for path in created:
            path.unlink(missing_ok=True)
        for folder in made:
            remove_empty_folders([folder])
        raise
    finally:  # a closed bar ends its line, so an error message starts on a line of its own
        if bar is not None:
            bar.close()


_MANIFEST_KEYS = ("path", "class_id", "class_name", "r", "x", "y", "f0", "seed")


def read_manifest(folder: str | Path) -> list[dict[str, Any]]:
    """Records of ``folder/manifest.jsonl``, with ``path`` made absolute; checks every clip exists."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise DataError(f"{folder}: no {MANIFEST_NAME} (make one with `mmldm data synth --out {folder}`)")
    records = []
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{manifest}: line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise DataError(f"{manifest}: line {number} is not a JSON object")
        missing = [key for key in _MANIFEST_KEYS if key not in record]
        if missing:
            raise DataError(f"{manifest}: line {number} lacks {', '.join(missing)}")
        if record["class_id"] not in range(len(CLASSES)):
            raise DataError(f"{manifest}: line {number} has unknown class id {record['class_id']!r}")
        rel = Path(record["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{manifest}: line {number} path '{rel}' must be relative, inside the folder")
        path = folder / rel
        if not path.is_file():
            raise DataError(f"{manifest}: line {number} names {path}, which does not exist")
        records.append({**record, "path": path})
    if not records:
        raise DataError(f"{manifest}: holds no clips")
    return records
