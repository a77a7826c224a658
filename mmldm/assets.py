"""Where the real material fetched by ``make assets`` (scripts/fetch_assets.py) is found.

Nothing is downloaded here: the assets are looked up in ``$MMLDM_ASSETS`` if set, else in
the ``assets/`` folder of a source checkout, and a missing one is the caller's one-line
error naming ``make assets``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the assets folder of a source checkout (beside the package)
CHECKOUT_ASSETS = Path(__file__).resolve().parents[1] / "assets"

#: the released HiFi-GAN universal V1 generator (22.05 kHz; the ``hifigan-22k`` audio preset)
HIFIGAN_UNIVERSAL = "hifigan/generator_universal.pth.tar"
#: the name a model folder's ``audio.yaml`` gives it as its vocoder, instead of a copy (55 MB)
HIFIGAN_UNIVERSAL_NAME = "hifigan-universal-v1"


def assets_folder() -> Path:
    """``$MMLDM_ASSETS`` if set, else the checkout's ``assets/``."""
    return Path(os.environ["MMLDM_ASSETS"]) if os.environ.get("MMLDM_ASSETS") else CHECKOUT_ASSETS


def find_asset(relative: str) -> Path | None:
    """The asset ``relative`` (e.g. ``"bbb/bbb.mp4"``) if it is there, else None."""
    path = assets_folder() / relative
    return path if path.is_file() else None
