"""Audio-video timing arithmetic for one clip.

A clip is ``num_frames`` video frames at ``fps``; frame ``i`` shows time
``i / fps`` and owns the audio samples ``[i * sr / fps, (i + 1) * sr / fps)``.
The sample rate must give a whole number of samples per frame so that audio
and video cut at exactly the same instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .errors import ConfigError


@dataclass(frozen=True)
class AVTiming:
    fps: float = 10.0
    num_frames: int = 16
    sample_rate: int = 16000

    def __post_init__(self):
        if self.fps <= 0 or self.num_frames <= 0 or self.sample_rate <= 0:
            raise ConfigError(f"timing: fps, num_frames and sample_rate must be positive ({self})")
        per_frame = Fraction(self.sample_rate) / Fraction(self.fps).limit_denominator(1001)
        if per_frame.denominator != 1:
            raise ConfigError(
                f"timing: {self.sample_rate} Hz at {self.fps} fps is not a whole number of samples "
                "per frame; choose fps and sample rate so that sample_rate / fps is an integer"
            )

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.fps))

    @property
    def samples_per_clip(self) -> int:
        return self.samples_per_frame * self.num_frames

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def frame_to_sample(self, frame_index: int) -> int:
        """First audio sample of frame ``frame_index`` (sample = frame * sr / fps)."""
        return frame_index * self.samples_per_frame
