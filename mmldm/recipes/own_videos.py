"""``mmldm recipe videos --source PATH [PATH ...] --out DIR``: a complete small MM-LDM of your own sounding videos.

The steps, scales, configs and evaluation of the Big Buck Bunny recipe
(:mod:`mmldm.recipes.real_video`: 64x64 centre crops at 10 fps, 22.05 kHz for the released
HiFi-GAN universal V1, 3.2 s clips every 1.6 s; KL-VAE, autoencoder and its ablation, the fast
decoders, the generator, export, and the evaluation in the paper's columns), on the video files
and folders of ``--source`` instead of the film: the first 80 % of every source trains, the last
20 % is held out. The evaluation needs ``make assets`` (HiFi-GAN, I3D) and at least
``scale.eval_clips`` held-out clips (64 by default: about 2 minutes of held-out footage, so 10
minutes of sources or more). No ``ATTRIBUTION.md`` is written: the licence of your footage is yours
to state.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .real_video import SCALES, RealVideoRecipe


class OwnVideosRecipe(RealVideoRecipe):
    """The Big Buck Bunny recipe's steps on the given sources (see the module docstring)."""

    name = "videos"
    attribution = None

    def __init__(self, out: Path, scale, progress: bool = True, sources: tuple[Path, ...] | list[Path] = ()):
        if not sources:
            raise ConfigError("recipe videos: give the videos to learn from (--source FILE_OR_FOLDER ...)")
        super().__init__(out, scale, progress)
        self.sources = tuple(Path(source) for source in sources)

    def _sources(self) -> list[Path]:
        missing = [str(source) for source in self.sources if not source.exists()]
        if missing:
            raise ConfigError(f"recipe videos: {missing[0]} does not exist (--source)")
        return list(self.sources)


RECIPE = OwnVideosRecipe

__all__ = ["RECIPE", "SCALES", "OwnVideosRecipe"]
