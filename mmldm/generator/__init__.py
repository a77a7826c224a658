"""The multi-modal DiT (stage 2): network, tasks, generation settings, training stage.

Names below are imported on first use (:mod:`mmldm.lazy`): the task table and the
generation settings load without torch.
"""

from ..lazy import lazy_exports

__all__ = ["AVDiT", "DIT_PRESETS", "DiTConfig", "PAPER_TABLE4"]

__getattr__, __dir__ = lazy_exports(__name__, {name: ".dit" for name in __all__})
