"""Generation: the model folder, :class:`SoundingVideoPipeline` and its output (``docs/generation.md``)."""

from ..generator.generation import GenerationConfig, SamplingSettings
from ..generator.tasks import TASKS
from .output import SoundingVideoOutput
from .pipeline import SoundingVideoPipeline

__all__ = ["GenerationConfig", "SamplingSettings", "SoundingVideoOutput", "SoundingVideoPipeline", "TASKS"]
