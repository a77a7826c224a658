"""The data settings every pixel-level training stage shares: which videos, cut how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..timing import AVTiming


@dataclass
class ClipDataConfig:
    #: folder of videos (or the base of ``manifest``), e.g. a Sounding Shapes folder
    root: str = "data/shapes"
    manifest: str | None = None
    fps: float = 10.0
    num_frames: int = 16
    sample_rate: int = 16000
    size: int = 64
    geometry: Literal["letterbox", "crop"] = "letterbox"
    val_fraction: float = 0.1
    #: leave out windows that reach past the end of a file's audio (audio shorter than its
    #: video) instead of padding them with silence; a warning names such files either way
    skip_short_audio: bool = False

    @property
    def timing(self) -> AVTiming:
        return AVTiming(fps=self.fps, num_frames=self.num_frames, sample_rate=self.sample_rate)

    def dataset(self, split: str):
        """The :class:`~mmldm.data.datasets.VideoFolderDataset` these settings describe."""
        from .datasets import VideoFolderDataset

        return VideoFolderDataset(self.root, self.timing, size=self.size, geometry=self.geometry, split=split,
                                  val_fraction=self.val_fraction, manifest=self.manifest,
                                  skip_short_audio=self.skip_short_audio)
