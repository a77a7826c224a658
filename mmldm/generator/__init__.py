"""The multi-modal DiT generator (stage 2): :class:`AVDiT` and its presets."""

from .dit import DIT_PRESETS, PAPER_TABLE4, AVDiT, DiTConfig

__all__ = ["AVDiT", "DIT_PRESETS", "DiTConfig", "PAPER_TABLE4"]
