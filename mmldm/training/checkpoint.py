"""Crash-safe checkpoint folders.

Layout of ``<out_dir>/checkpoints/``::

    step_000100/              one complete checkpoint
        model_<key>.safetensors   weights of each trainable module
        ema_<key>.safetensors     its EMA (if enabled)
        optim_<group>.pt          optimiser state (torch.save of tensors/numbers only)
        sched_<group>.pt          LR scheduler state
        scaler.pt                 fp16 loss scaler state (fp16 only)
        rng_rank<r>.safetensors   RNG states of process r (python/numpy as JSON metadata)
        state.json                step, data position, world size, EMA update count
        config.yaml               the resolved config
        COMPLETE                  manifest (file names and sizes), written last
    latest                    text file naming the newest complete folder
    .tmp_step_000200/         a checkpoint being written (ignored by resume)

A checkpoint is written into a temporary folder; every file is fsync'ed, the
manifest ``COMPLETE`` is written last, then the folder is renamed into place
(atomic on POSIX) and ``latest`` is replaced atomically. A process killed at any
instant therefore leaves either the previous checkpoints or the new one, never a
half-written folder under a ``step_*`` name. Resume still checks the manifest
(sizes of all listed files), so a folder damaged later is skipped too. A write that fails
(a full disk) abandons the checkpoint: its temporary folder is removed at once, so it holds no
space, and a full disk is one error line naming the checkpoints folder.

Why not ``Accelerator.save_state``: it writes in place (not atomic), pickles the
RNG states (loading needs ``weights_only=False``) and knows nothing of our data
position.

Resuming from an older checkpoint of the same run folder abandons the newer
ones: they are deleted when the resumed run writes its first checkpoint, so that
``--resume auto`` never jumps back to the abandoned run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import atomic_write_text
from ..errors import DiskFullError, TrainingError
from ..files import give_new_file_mode, is_disk_full, torch_save

MANIFEST = "COMPLETE"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- writing files


@contextlib.contextmanager
def _checkpoint_file(path: Path) -> Iterator[None]:
    """Writing ``path`` into a checkpoint's temporary folder: if it fails, the whole checkpoint is
    abandoned and its temporary folder removed (it would only hold space: resume ignores it); a
    full disk is a one-line :class:`DiskFullError` naming the checkpoints folder."""
    try:
        yield
    except BaseException as exc:
        folder = path.parent
        if not folder.name.startswith(".tmp_step_"):
            raise
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise DiskFullError(folder.parent, f"writing the checkpoint {folder.name.removeprefix('.tmp_')} "
                                "failed; its partial files were removed and the earlier checkpoints are "
                                "untouched") from exc
        raise


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Safetensors file (contiguous CPU copies), fsync'ed, with the mode a plain ``open`` gives
    (safetensors creates files 0o600)."""
    with _checkpoint_file(path):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
        give_new_file_mode(path)
        _fsync_file(path)


def save_torch_state(path: Path, state: dict[str, Any]) -> None:
    """A state dict of tensors, numbers and strings (loadable with ``weights_only=True``), fsync'ed."""
    with _checkpoint_file(path):
        torch_save(state, path)


def save_json(path: Path, data: Any) -> None:
    with _checkpoint_file(path), open(path, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def save_text(path: Path, text: str) -> None:
    with _checkpoint_file(path), open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- reading files


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"{path}: cannot read checkpoint tensors ({exc})") from None


def load_torch_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainingError(f"{path}: cannot read checkpoint state ({type(exc).__name__})") from None


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: cannot read checkpoint metadata ({exc})") from None


# ---------------------------------------------------------------- RNG states


def rng_state(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """RNG states of this process: (tensors, string metadata) for one safetensors file."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    for name, gen in generators.items():
        tensors[f"generator_{name}"] = gen.get_state()
    version, mt_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    metadata = {
        "python": json.dumps([version, list(mt_state), gauss]),
        "numpy": json.dumps([np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]),
    }
    return tensors, metadata


def restore_rng_state(path: Path, generators: dict[str, torch.Generator]) -> None:
    """Set this process's RNGs (and ``generators``) from a file written with :func:`rng_state`."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    try:
        version, mt_state, gauss = json.loads(metadata["python"])
        np_kind, np_keys, np_pos, np_has_gauss, np_gauss = json.loads(metadata["numpy"])
    except (KeyError, ValueError) as exc:
        raise TrainingError(f"{path}: RNG metadata is missing or damaged ({exc})") from None
    random.setstate((version, tuple(mt_state), gauss))
    np.random.set_state((np_kind, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    for name, gen in generators.items():
        key = f"generator_{name}"
        if key not in tensors:
            raise TrainingError(f"{path}: no state for RNG '{name}'")
        gen.set_state(tensors[key])


# ---------------------------------------------------------------- folders


def begin_checkpoint(root: Path, step: int) -> Path:
    """Fresh temporary folder for the checkpoint of ``step`` (a stale one is removed)."""
    tmp = root / f".tmp_{step_dir_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_checkpoint(tmp: Path, step: int, keep_last: int) -> Path:
    """Seal ``tmp`` with its manifest, rename it into place, point ``latest`` at it, prune old ones."""
    root = tmp.parent
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    save_json(tmp / MANIFEST, {"step": step, "files": files})
    _fsync_dir(tmp)
    final = root / step_dir_name(step)
    if final.exists():  # a rerun from an older checkpoint reaches this step again
        _remove(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    _fsync_dir(root)
    older = []
    for folder in complete_checkpoints(root):
        if _step_of(folder) > step:  # left by a run abandoned when resuming from an older checkpoint
            _remove(folder)
        elif folder != final:
            older.append(folder)
    for folder in older[:max(0, len(older) - (keep_last - 1))]:
        _remove(folder)
    return final


def _step_of(folder: Path) -> int:
    match = _STEP_DIR.match(folder.name)
    return int(match.group(1)) if match else -1


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder: first renamed away, so a half-deleted one never looks complete."""
    trash = folder.with_name(f".trash_{folder.name}")
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(folder, trash)
    shutil.rmtree(trash)


def is_complete(folder: Path) -> bool:
    """True if ``folder`` has a manifest and every file it lists, at the listed size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``step_*`` folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append((_step_of(path), path))
    return [path for _, path in sorted(found)]


def resolve_resume(out_dir: Path, resume: str | Path) -> Path | None:
    """Checkpoint folder to resume from.

    ``"auto"``: the newest complete checkpoint under ``out_dir/checkpoints``, or
    None for a fresh start. A path: that checkpoint (it must be complete), or the
    newest complete checkpoint of that run folder.
    """
    if str(resume) == "auto":
        root = Path(out_dir) / "checkpoints"
        found = complete_checkpoints(root)
        newest = _step_of(found[-1]) if found else -1
        skipped = sorted(p.name for p in root.glob("step_*") if p.is_dir() and _step_of(p) > newest
                         and not is_complete(p)) if root.is_dir() else []
        if skipped:
            print(f"mmldm: note: skipping incomplete checkpoint(s) {', '.join(skipped)}; "
                  + (f"resuming from {found[-1].name}" if found else "starting afresh"), file=sys.stderr)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise TrainingError(f"{path}: no checkpoint folder to resume from")
    if (path / "checkpoints").is_dir() and not (path / MANIFEST).exists():
        found = complete_checkpoints(path / "checkpoints")
        if not found:
            raise TrainingError(f"{path}: run folder has no complete checkpoint to resume from")
        return found[-1]
    if not is_complete(path):
        raise TrainingError(f"{path}: checkpoint is incomplete (no valid {MANIFEST} manifest)")
    return path


def module_weights_name(key: str, ema: bool = False) -> str:
    """File name of trainable module ``key``'s weights (or its EMA's) in a checkpoint folder."""
    return f"{'ema' if ema else 'model'}_{key}.safetensors"


def is_training_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint folder of ``mmldm train`` (it holds the model's weights)."""
    return (Path(path) / module_weights_name("model")).is_file()


def load_trained_weights(module: torch.nn.Module, checkpoint: Path, what: str, key: str = "model",
                         use_ema: bool = True, device: torch.device | str = "cpu") -> Path:
    """Load module ``key`` of a training checkpoint into ``module`` (its EMA when the checkpoint
    has one and ``use_ema``), every name and shape checked; returns the file read."""
    from ..weights import load_state_checked, load_state_dict_file

    weights = Path(checkpoint) / module_weights_name(key, ema=True)
    if not (use_ema and weights.is_file()):
        weights = Path(checkpoint) / module_weights_name(key)
    load_state_checked(module, load_state_dict_file(weights, what, device=device), weights, what)
    return weights
