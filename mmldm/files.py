"""Writing files safely, and checking the paths a user gives.

* :func:`atomic_target`: write under a temporary name beside the file, then rename. The
  file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask,
  or the mode of the file it replaces): ``tempfile.mkstemp`` and safetensors create files
  ``0o600``, which other users and web servers could not read.
* A full disk (or an exhausted quota) is a :class:`~mmldm.errors.DiskFullError`, one line
  naming the file; :func:`is_disk_full` recognises it also where a library hides the
  ``errno`` (safetensors' Rust error text, torch's zip writer).
* :func:`torch_save`: ``torch.save`` that reports the ``OSError`` behind a failed write
  (torch itself only says ``[enforce fail at inline_container.cc]``).
* :func:`missing_folders` / :func:`remove_empty_folders`: a failed run removes the folders
  it created and nothing else.
* :func:`check_input_file` / :func:`check_writable_folder`: what is wrong with a path, in
  one line, before any work starts.

Only the standard library is imported at module level: CLI modules use these checks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ConfigError, DiskFullError, MediaError

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: how errors without an errno say "disk full": safetensors reports the Rust io::Error as text
_DISK_FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
#: how torch's zip writer (torch.save) reports a failed write, without the OSError behind it
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "inline_container.cc")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # elsewhere os.umask is the only way to read it: set and put back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """Permission bits ``open(new_path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def plain_file_mode(path: str | Path) -> int:
    """Permission bits a plain ``open(path, "w")`` leaves ``path`` with: those of the file already
    there (open keeps them), else :func:`new_file_mode`."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return new_file_mode()


def give_new_file_mode(path: str | Path) -> None:
    """Set a file that a library created ``0o600`` (safetensors does) to :func:`new_file_mode`."""
    os.chmod(path, new_file_mode())


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- a full disk

def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception behind it) is a write refused for want of space or quota."""
    for error in _chain(exc):
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if isinstance(error, Exception) and any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
    return False


def is_failed_torch_write(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's zip writer failing to write a file (it gives no errno)."""
    return any(isinstance(e, RuntimeError) and any(t in str(e) for t in _TORCH_WRITE_FAILED) for e in _chain(exc))


def write_failure_message(exc: BaseException) -> str | None:
    """One line for a write that failed for want of space (or, from torch, for an unknown reason)
    or on a read-only file system, for an error handler that does not know which file was
    written; None for other errors."""
    if is_disk_full(exc):
        for error in _chain(exc):
            if isinstance(error, DiskFullError):
                return str(error)
            if isinstance(error, OSError) and error.filename:
                return str(DiskFullError(error.filename))
        return "no space left on device (a file could not be written; free some space and run it again)"
    if is_failed_torch_write(exc):
        first = " ".join(str(exc).split())
        return f"a file could not be written; is the disk full? (torch: {first})"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{exc.filename}: cannot write there ({exc.strerror})" if exc.filename else str(exc.strerror)
    return None


@contextlib.contextmanager
def disk_full_as_error(path: str | Path, detail: str = "") -> Iterator[None]:
    """Turn a failed write in the block into :class:`DiskFullError` naming ``path`` when it was
    for want of space; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path, detail) from exc
        raise


# --------------------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_target(path: str | Path, tmp: str | Path | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it becomes ``path`` when the block ends
    without an error.

    Then the file gets :func:`plain_file_mode`, is fsync'ed and renamed over ``path`` (atomic on
    POSIX): ``path`` is always the old file or the complete new one. On any error or interrupt the
    temporary file is removed. A full disk is a :class:`DiskFullError` naming ``path`` (not the
    temporary name). ``tmp``: the temporary name to use (default: a fresh hidden
    ``.{stem}.XXXX.partial{suffix}``, so a reader that goes by the suffix still sees the format).
    The folder of ``path`` must exist.
    """
    path = Path(path)
    with disk_full_as_error(path):
        if tmp is None:
            try:
                fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                            dir=path.parent)
            except OSError as exc:  # e.g. a read-only folder: name the file asked for, not the temporary one
                raise type(exc)(exc.errno, exc.strerror, str(path)) from None
            os.close(fd)
            tmp = name
        tmp = Path(tmp)
        try:
            yield tmp
            os.chmod(tmp, plain_file_mode(path))
            fsync_file(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def is_partial_name(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_target`'s temporary names (or hidden): a file
    still being written, or left by a killed writer, never a finished one."""
    return name.startswith(".") or ".partial." in name or name.endswith(".partial")


class _ErrorKeepingWriter:
    """A binary file's ``write`` that keeps the OSError it raised (torch.save replaces it by a
    RuntimeError that does not say what went wrong)."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` into ``path``, fsync'ed; a failed write raises the OSError behind it
    (ENOSPC for a full disk), chained to torch's RuntimeError."""
    import torch

    with open(path, "wb") as fh:
        writer = _ErrorKeepingWriter(fh)
        try:
            torch.save(obj, writer)  # type: ignore[arg-type]
        except RuntimeError as exc:
            if writer.error is not None:
                raise writer.error from exc
            raise
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- folders

def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what
    ``mkdir -p path`` would create, so that a failed run can remove them again."""
    missing = []
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each folder that is empty (deepest first, as :func:`missing_folders` lists them);
    a folder holding anything is left as it is, and so are those above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


# --------------------------------------------------------------------------- checks of paths given

def missing_file_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (one phrase), or None when it is a readable regular file."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (to {os.readlink(path)})"
        return "file not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back to itself), not a file"
        if exc.errno == errno.EACCES:
            return "permission denied (a folder on its way cannot be entered)"
        if exc.errno == errno.ENOTDIR:
            return "file not found (a part of this path is a file, not a folder)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def check_input_file(path: str | Path, what: str = "") -> Path:
    """``path`` if it is a readable file, else a :class:`MediaError` saying what it is instead
    (a folder, a symbolic link loop, nothing...). ``what``: the role of the file, added to the
    message (e.g. "task a2v needs an audio file")."""
    reason = missing_file_reason(path)
    if reason is not None:
        raise MediaError(path, f"{reason} ({what})" if what else reason)
    return Path(path)


def check_writable_folder(path: str | Path) -> Path:
    """Refuse, before any work, an output folder that nothing can be written to.

    ``path`` may not exist yet: then its nearest existing parent must be a folder where files
    (and so ``path``) can be created. Tried by creating and removing a hidden empty file, since
    permission bits do not tell (root, read-only mounts, ACLs). Raises :class:`ConfigError`
    (a file in the way, a read-only folder) or :class:`DiskFullError`; leaves nothing behind.
    Returns ``path``.
    """
    path = Path(path)
    base = path
    while not base.exists():
        if base.is_symlink():
            raise ConfigError(f"{path}: {missing_file_reason(base) or 'is a broken symbolic link'}")
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        problem = "is a file, not a folder" if base == path else f"cannot create this folder, {base} is a file"
        raise ConfigError(f"{path}: {problem}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmldm-write-check-", dir=base)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        where = "" if base == path else f" (cannot create files in {base})"
        raise ConfigError(f"{path}: cannot write there: {exc.strerror or exc}{where}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def give_new_modes_under(folder: str | Path) -> None:
    """Give ``folder``, and every folder and file under it, the mode ``mkdir`` / ``open`` give new
    ones (``0o777`` / ``0o666`` less the umask): for a tree written under a temporary name
    (``tempfile.mkdtemp`` makes it ``0o700``) by libraries that create files ``0o600``."""
    umask = current_umask()
    folder = Path(folder)
    os.chmod(folder, 0o777 & ~umask)
    for base, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(base, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(base, name), 0o666 & ~umask)
