"""Error types of mmldm.

Every error a user can cause (a bad file, a missing weight file, a wrong config
key, too short a clip) is raised as a subclass of :class:`MMLDMError` whose
message is ONE line naming the thing and the problem. The CLI prints that line
and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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


class DiskFullError(MMLDMError):
    """A file could not be written because its file system is full (or the quota is used up)."""

    def __init__(self, path: str | Path, detail: str = ""):
        self.path = Path(path)
        super().__init__(f"no space left on device: {path}" + (f" ({detail})" if detail else ""))


class MMLDMWarning(UserWarning):
    """A user-facing warning, printed as one line ``mmldm: warning: ...`` (no source line)."""


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue ``message`` (made one line) as an :class:`MMLDMWarning`."""
    warnings.warn(MMLDMWarning(" ".join(str(message).split())), stacklevel=stacklevel + 1)


_format_other_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None):  # noqa: ANN001 - warnings' signature
    # Python prints a warning with the file, line number and source line that issued it:
    # noise for a user, who needs only the message.
    if isinstance(category, type) and issubclass(category, MMLDMWarning):
        return f"mmldm: warning: {message}\n"
    return _format_other_warning(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning


# A DataLoader worker's exception reaches the main process rebuilt by torch from
# its type and its formatted traceback: as that type called with the traceback
# text, or as RuntimeError when the type wants other arguments (MediaError). Our
# errors end that text with "mmldm.errors.<Type>: <one-line message>".
_WORKER_CAUGHT = re.compile(r"^Caught (\w+) in DataLoader worker process \d+")
_OUR_ERROR = re.compile(r"mmldm\.errors\.(\w+): ")


def check_positive_int(value: object, name: str) -> int:
    """``value`` if it is an integer >= 1 (not a bool), else ConfigError "``name`` must be a
    positive integer, got ``value``"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def user_error_from_worker(exc: BaseException) -> MMLDMError | None:
    """The one-line error a DataLoader worker raised, rebuilt as its own type; None if ``exc`` is not one."""
    text = str(exc.args[0]) if exc.args else ""
    caught = _WORKER_CAUGHT.match(text)
    last = next(reversed(list(_OUR_ERROR.finditer(text))), None)  # the raised one; earlier ones are chained
    if caught is None or last is None or caught.group(1) != last.group(1):
        return None
    cls = globals().get(last.group(1))
    if not (isinstance(cls, type) and issubclass(cls, MMLDMError)):
        return None
    error = cls.__new__(cls)
    MMLDMError.__init__(error, text[last.end():])
    return error


def iterate_loader(loader: Iterable[T]) -> Iterator[T]:
    """Iterate a DataLoader; a user error raised in a worker comes out as itself (one line), not
    as a RuntimeError holding the worker's traceback."""
    iterator = iter(loader)
    while True:
        error = None
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            error = user_error_from_worker(exc)
            if error is None:
                raise
        if error is not None:
            # raised outside the except block: no chained worker exception keeps the loader (and
            # its worker processes) alive after this frame drops it
            del iterator
            raise error
        yield item
