"""Encode a dataset once with a frozen encoder and read the latents back fast.

Later stages never look at pixels of the frozen parts again: the KL-VAE latents
of frames and audio images (stage 1) or the autoencoder's perceptual latents
(stage 2) are computed once here.

Layout of a cache folder::

    shard-00000-of-00004.safetensors   # tensors [n, ...] per key + per-item metadata
    ...
    index.json                         # written last, once every shard is there

* **Shards.** Items ``[s * shard_size, (s + 1) * shard_size)`` form shard ``s``.
  Each is written to a temporary name and renamed (atomic), so a file with the
  final name is always complete. Its safetensors metadata repeats the config
  hash, item range and per-item metadata (source, start_time, class_id, index, text).
* **Resume.** Running again skips shards that exist and verify (same config
  hash, same item range, every key present with n rows); everything else,
  including temporary files left by a killed run, is redone.
* **Several processes.** Rank ``r`` of ``world_size`` (arguments, else the
  ``RANK``/``WORLD_SIZE`` environment variables, else 0/1) takes shards
  ``s % world_size == r``. Whichever rank finds all shards complete when it
  ends writes ``index.json`` (:func:`finalize_latent_cache` can also be called
  on its own).
* **Reading.** :class:`LatentCacheDataset` memory-maps shards with
  ``safetensors.safe_open`` (one handle per shard and process, opened lazily,
  so it works with DataLoader workers).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from ..config import atomic_write_text, make_folder
from ..errors import DataError, iterate_loader
from ..files import atomic_target, disk_full_as_error, missing_folders, remove_empty_folders

INDEX_NAME = "index.json"
FORMAT_NAME = "mmldm-latent-cache"
FORMAT_VERSION = 1
#: per-item fields copied from dataset items into the index (when present)
META_KEYS = ("source", "start_time", "class_id", "index", "text")

Encoder = Callable[[dict[str, Any]], Mapping[str, torch.Tensor]]


#: config entries that hold a set as a list, in the set's order (which changes with
#: ``PYTHONHASHSEED``): diffusers records so which values of a model's config were defaults
SET_VALUED_KEYS = frozenset({"_use_default_values"})


def _sorted_set(items: Any) -> list[Any]:
    values = [canonical_config(item) for item in items]
    return sorted(values, key=lambda item: json.dumps(item, sort_keys=True))


def canonical_config(value: Any) -> Any:
    """``value`` as plain JSON data in one form that does not depend on the process: mappings
    with string keys, sets (and the lists of :data:`SET_VALUED_KEYS`) sorted, tuples as lists,
    paths as posix strings, anything else JSON cannot hold as its ``str``."""
    if isinstance(value, Mapping):
        return {str(key): _sorted_set(item) if key in SET_VALUED_KEYS and isinstance(item, (list, tuple, set))
                else canonical_config(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return _sorted_set(value)
    if isinstance(value, (list, tuple)):
        return [canonical_config(item) for item in value]
    if isinstance(value, PurePath):
        return value.as_posix()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return canonical_config(value.tolist())
    return str(value)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (hex, 16 chars) of the canonical JSON of ``config`` (:func:`canonical_config`, keys sorted):
    the same in every process, whatever its hash seed."""
    text = json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_digest(module: torch.nn.Module) -> str:
    """sha256 (hex, 16 chars) of a module's state dict (names, dtypes, shapes and values).

    Goes into a cache's config so that other weights never mix with an old cache.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.safetensors"


def shard_ranges(num_items: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) item range of every shard."""
    return [(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``rank``/``world_size`` from the arguments, else RANK/WORLD_SIZE, else (0, 1)."""
    try:
        world = int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", 1))
        this = int(rank if rank is not None else os.environ.get("RANK", 0))
    except ValueError:
        raise DataError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= this < world:
        raise DataError(f"rank {this} is not in [0, world_size={world})")
    return this, world


@dataclass
class CacheStats:
    """What one :func:`write_latent_cache` call did."""

    items_encoded: int
    shards_written: int
    shards_skipped: int
    seconds: float
    index_written: bool

    @property
    def items_per_second(self) -> float:
        return self.items_encoded / self.seconds if self.seconds > 0 else 0.0


def _item_meta(batch: Mapping[str, Any], row: int) -> dict[str, Any]:
    meta = {}
    for key in META_KEYS:
        if key not in batch:
            continue
        value = batch[key][row]
        meta[key] = value.item() if isinstance(value, torch.Tensor) else value
    return meta


def _verify_shard(path: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The shard's header if ``path`` is a complete shard of this run, else None."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads(handle.metadata()["mmldm"])
            keys = set(handle.keys())
            shapes = {key: handle.get_slice(key).get_shape() for key in keys}
    except Exception:  # noqa: BLE001 - unreadable or foreign file: redo the shard
        return None
    if any(header.get(k) != v for k, v in expected.items()):
        return None
    count = header["stop"] - header["start"]
    if set(header.get("keys", {})) != keys or len(header.get("items", [])) != count:
        return None
    if any(shape[0] != count for shape in shapes.values()):
        return None
    return header


def _first_header(out_dir: Path) -> dict[str, Any] | None:
    """Header of the first readable shard in ``out_dir`` (None if there is none)."""
    for path in sorted(out_dir.glob("shard-*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                return json.loads(handle.metadata()["mmldm"])
        except Exception:  # noqa: BLE001 - a broken shard says nothing; it is redone
            continue
    return None


def _existing_hash(out_dir: Path) -> str | None:
    header = _first_header(out_dir)
    if header is not None:
        return header.get("config_hash")
    index = out_dir / INDEX_NAME
    if index.is_file():
        try:
            return json.loads(index.read_text())["config_hash"]
        except (json.JSONDecodeError, KeyError):
            return None
    return None


def write_latent_cache(dataset: Dataset, encode: Encoder, out_dir: str | Path, config: Mapping[str, Any],
                       *, shard_size: int = 64, batch_size: int = 8, num_workers: int = 0,
                       rank: int | None = None, world_size: int | None = None,
                       store_dtype: torch.dtype | None = None,
                       on_shard_written: Callable[[int], None] | None = None,
                       progress: bool = False) -> CacheStats:
    """Encode this rank's shards of ``dataset`` into ``out_dir``; write the index when all are done.

    Args:
        dataset: items are dicts (tensors plus the metadata fields of ``META_KEYS``).
        encode: frozen encoder, collated batch dict -> {key: tensor [b, ...]}.
        config: describes encoder and data (weights, preset, dataset root and
            settings); its hash marks every shard so a changed config never
            mixes with an old cache.
        store_dtype: cast latents before storing (e.g. ``torch.float16``); None keeps them.
        on_shard_written: called with each shard index after its file is in place.

    A run that fails removes its temporary files, and the folders it created if they are still
    empty; the shards it finished stay, for a rerun to skip.
    """
    if shard_size < 1 or batch_size < 1:
        raise DataError(f"shard_size and batch_size must be >= 1 (got {shard_size}, {batch_size})")
    if num_workers < 0:
        raise DataError(f"num_workers must be >= 0 (0: decode in this process), got {num_workers}")
    this_rank, world = resolve_rank(rank, world_size)
    made = missing_folders(out_dir)
    try:
        with disk_full_as_error(out_dir):
            make_folder(out_dir)
        return _write_shards(dataset, encode, Path(out_dir), config, shard_size=shard_size, batch_size=batch_size,
                             num_workers=num_workers, this_rank=this_rank, world=world, store_dtype=store_dtype,
                             on_shard_written=on_shard_written, progress=progress)
    except BaseException:
        remove_empty_folders(made)
        raise


@torch.no_grad()
def _write_shards(dataset: Dataset, encode: Encoder, out_dir: Path, config: Mapping[str, Any], *, shard_size: int,
                  batch_size: int, num_workers: int, this_rank: int, world: int, store_dtype: torch.dtype | None,
                  on_shard_written: Callable[[int], None] | None, progress: bool) -> CacheStats:
    """:func:`write_latent_cache` into the existing folder ``out_dir``."""
    num_items = len(dataset)
    if num_items == 0:
        raise DataError(f"cache {out_dir}: the dataset is empty")
    digest = config_hash(config)
    plain_config = canonical_config(config)
    previous = _existing_hash(out_dir)
    if previous is not None and previous != digest:
        raise DataError(f"cache {out_dir} was written with another config (hash {previous}, now {digest}); "
                        "choose a new output folder or delete it")
    earlier = _first_header(out_dir)
    if earlier is not None and (earlier["num_items"], earlier["shard_size"]) != (num_items, shard_size):
        raise DataError(f"cache {out_dir} holds shards of {earlier['num_items']} items in shards of "
                        f"{earlier['shard_size']}; now {num_items} items in shards of {shard_size} (did the "
                        "dataset or --shard-size change?); choose a new output folder or delete it")
    ranges = shard_ranges(num_items, shard_size)
    num_shards = len(ranges)
    for stale in out_dir.glob(".shard-*.tmp*"):
        # ".shard-00003.tmp1234": left by a killed writer of shard 3
        if int(stale.name[len(".shard-"):].split(".")[0]) % world == this_rank:
            stale.unlink(missing_ok=True)

    start_time = time.perf_counter()
    mine = [s for s in range(num_shards) if s % world == this_rank]
    todo = []
    for shard in mine:
        expected = {"config_hash": digest, "start": ranges[shard][0], "stop": ranges[shard][1],
                    "num_items": num_items, "shard_size": shard_size}
        if _verify_shard(out_dir / shard_name(shard, num_shards), expected) is None:
            todo.append(shard)
    batches = [list(range(b, min(b + batch_size, ranges[s][1])))
               for s in todo for b in range(ranges[s][0], ranges[s][1], batch_size)]
    # no worker start-up when every shard of this rank is already done
    batch_iter: Iterator[dict[str, Any]] = (
        iterate_loader(DataLoader(dataset, batch_sampler=batches, num_workers=num_workers)) if batches else iter(()))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(ranges[s][1] - ranges[s][0] for s in todo), desc=f"cache rank {this_rank}",
                   unit="clip")
    encoded = 0
    try:
        for shard in todo:
            start, stop = ranges[shard]
            rows: dict[str, list[torch.Tensor]] = {}
            items: list[dict[str, Any]] = []
            while len(items) < stop - start:
                batch = next(batch_iter)
                out = encode(batch)
                count = next(iter(out.values())).shape[0] if out else 0
                if not out or any(v.shape[0] != count for v in out.values()):
                    raise DataError(f"cache {out_dir}: the encoder must return tensors with one row per item")
                for key, value in out.items():
                    value = value.detach().cpu()
                    rows.setdefault(key, []).append(value if store_dtype is None else value.to(store_dtype))
                items += [_item_meta(batch, row) for row in range(count)]
                if bar is not None:
                    bar.update(count)
            tensors = {key: torch.cat(parts).contiguous() for key, parts in rows.items()}
            header = {"config_hash": digest, "config": plain_config, "start": start, "stop": stop,
                      "num_items": num_items, "shard_size": shard_size, "items": items,
                      "keys": {k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype).removeprefix("torch.")}
                               for k, v in tensors.items()}}
            final = out_dir / shard_name(shard, num_shards)
            # a fixed temporary name per shard and process: a rerun finds and removes it
            with atomic_target(final, tmp=out_dir / f".shard-{shard:05d}.tmp{os.getpid()}") as tmp:
                save_file(tensors, str(tmp), metadata={"mmldm": json.dumps(header)})
            encoded += stop - start
            if on_shard_written is not None:
                on_shard_written(shard)
    finally:  # a closed bar ends its line, so an error message starts on a line of its own
        if bar is not None:
            bar.close()
    index_written = finalize_latent_cache(out_dir, must_be_complete=False)
    return CacheStats(items_encoded=encoded, shards_written=len(todo), shards_skipped=len(mine) - len(todo),
                      seconds=time.perf_counter() - start_time, index_written=index_written)


def finalize_latent_cache(out_dir: str | Path, must_be_complete: bool = True) -> bool:
    """Write ``index.json`` if every shard is present and verifies; returns whether it did.

    The run's settings (config, item count, shard size) come from the shard
    headers, so any process can merge once all ranks are done. With
    ``must_be_complete`` a missing shard is a :class:`DataError` naming it.
    """
    out_dir = Path(out_dir)
    reference = _first_header(out_dir)
    if reference is None:
        if must_be_complete:
            raise DataError(f"cache {out_dir}: holds no readable shard; run `mmldm cache` first")
        return False
    config, digest = reference["config"], reference["config_hash"]
    num_items, shard_size = reference["num_items"], reference["shard_size"]
    ranges = shard_ranges(num_items, shard_size)
    shards, items, keys = [], [], None
    for shard, (start, stop) in enumerate(ranges):
        name = shard_name(shard, len(ranges))
        expected = {"config_hash": digest, "start": start, "stop": stop, "num_items": num_items,
                    "shard_size": shard_size}
        header = _verify_shard(out_dir / name, expected)
        if header is None:
            if must_be_complete:
                raise DataError(f"cache {out_dir}: shard {name} is missing or incomplete; run the "
                                f"rank {shard} mod world_size again")
            return False
        if keys is None:
            keys = header["keys"]
        elif header["keys"] != keys:
            raise DataError(f"cache {out_dir}: shard {name} holds other keys or shapes than shard 0")
        shards.append({"file": name, "start": start, "count": stop - start})
        items += header["items"]
    index = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "num_items": num_items,
             "shard_size": shard_size, "shards": shards, "keys": keys, "config_hash": digest,
             "config": config, "items": items}
    atomic_write_text(out_dir / INDEX_NAME, json.dumps(index, indent=1))
    return True


class LatentCacheDataset(Dataset):
    """Items of a finished latent cache: {key: tensor, "source": str, "start_time": float, ...}.

    Args:
        directory: the cache folder (holding ``index.json``).
        expected_config_hash: if given, a cache made with another config is a DataError.
    """

    def __init__(self, directory: str | Path, expected_config_hash: str | None = None):
        self.directory = Path(directory)
        index_path = self.directory / INDEX_NAME
        if not index_path.is_file():
            raise DataError(f"latent cache {self.directory}: no {INDEX_NAME} (missing, or not every "
                            "rank has finished; run `mmldm cache` again to complete it)")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"latent cache {index_path}: not valid JSON ({exc.msg})") from None
        if index.get("format") != FORMAT_NAME or index.get("version") != FORMAT_VERSION:
            raise DataError(f"latent cache {index_path}: not a {FORMAT_NAME} v{FORMAT_VERSION} index")
        if expected_config_hash is not None and index["config_hash"] != expected_config_hash:
            raise DataError(f"latent cache {self.directory} was made with config {index['config_hash']}, "
                            f"expected {expected_config_hash}")
        self.index = index
        self.keys: dict[str, dict[str, Any]] = index["keys"]
        self.config: dict[str, Any] = index["config"]
        self._starts = [shard["start"] for shard in index["shards"]]
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.index["num_items"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles are opened again in each worker
        return state

    def _handle(self, shard: int) -> Any:
        if shard not in self._handles:
            path = self.directory / self.index["shards"][shard]["file"]
            if not path.is_file():
                raise DataError(f"latent cache {self.directory}: shard file {path.name} is missing")
            self._handles[shard] = safe_open(str(path), framework="pt")
        return self._handles[shard]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"latent cache item {i} out of range ({len(self)} items)")
        i = i % len(self)
        shard = bisect.bisect_right(self._starts, i) - 1
        row = i - self._starts[shard]
        handle = self._handle(shard)
        item: dict[str, Any] = {key: handle.get_slice(key)[row] for key in self.keys}
        item.update(self.index["items"][i])
        return item
