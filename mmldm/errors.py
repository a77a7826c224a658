"""Error types of mmldm.

Every error a user can cause (a bad file, a missing weight file, a wrong config
key, too short a clip) is raised as a subclass of :class:`MMLDMError` whose
message is ONE line naming the thing and the problem. The CLI prints that line
and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class MMLDMError(Exception):
    """Base class: a user-facing, one-line error."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class MediaError(MMLDMError):
    """A media file cannot be used: corrupt, truncated, missing a stream, too short..."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DataError(MMLDMError):
    """A dataset cannot be used (empty folder, bad manifest, unknown class...)."""


class ConfigError(MMLDMError):
    """A configuration is invalid (unknown key, wrong type, bad value)."""


class WeightsError(MMLDMError):
    """A weight file is missing or does not fit the network it is loaded into."""

    def __init__(self, path: str | Path | None, what: str, reason: str):
        self.path = None if path is None else Path(path)
        super().__init__(f"{what}: {reason}" + ("" if path is None else f" ({path})"))


class TrainingError(MMLDMError):
    """Training cannot go on (non-finite loss, no checkpoint to resume...)."""
