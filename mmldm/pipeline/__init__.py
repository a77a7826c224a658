"""Generation: the model folder, :class:`SoundingVideoPipeline` and its output (``docs/generation.md``)."""

from ..generator.tasks import TASKS
from .folder import GenerationConfig
from .output import SoundingVideoOutput
from .pipeline import SoundingVideoPipeline

__all__ = ["GenerationConfig", "SoundingVideoOutput", "SoundingVideoPipeline", "TASKS"]
