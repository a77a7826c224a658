"""Typed configuration: dataclasses, strict YAML loading and dotted overrides.

Every configurable part of mmldm is a (nested) dataclass. Loading is strict: an
unknown key is a :class:`~mmldm.errors.ConfigError` naming the full dotted key,
and values are checked against the field's type. Overrides come from the command
line as ``--set model.depth=12`` (values are parsed as YAML scalars/lists).

    cfg = load_config(TrainConfig, "configs/vae/tiny.yaml", ["optim.lr=1e-4"])
    save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (strictly)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming the key.

    A config whose layout changed defines ``upgrade_keys(data) -> data`` (a staticmethod), which
    rewrites the old layout into the new one, so files written before the change keep loading.
    """
    data = dict(data or {})
    upgrade = getattr(cls, "upgrade_keys", None)
    if upgrade is not None:
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (known keys here: {', '.join(sorted(names))})"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data and f.init:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], prefix + f.name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config '{prefix.rstrip('.') or cls.__name__}': {exc}") from None


def to_dict(cfg: Any) -> Any:
    """Plain, YAML-safe dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["model.depth=12", "optim.lr=1e-4"]`` -> nested dict. Values are YAML-parsed."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.subkey=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads 1e-4 as a string; numbers are converted by the typed loader.
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (update wins)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- ``base`` <- YAML file ``path`` <- dotted ``overrides``."""
    data = dict(base or {})
    if path is not None:
        data = merge(data, read_yaml(path))
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def replace(cfg: T, overrides: list[str]) -> T:
    """A copy of ``cfg`` with dotted overrides applied (strictly)."""
    return from_dict(type(cfg), merge(to_dict(cfg), parse_overrides(overrides)))


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(to_dict(data), sort_keys=False)


def make_folder(path: str | Path) -> Path:
    """Create folder ``path`` (and its parents) if needed; a file in the way is a ConfigError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        problem = "is a file, not a folder" if blocker == path else f"cannot create this folder, {blocker} is a file"
        raise ConfigError(f"{path}: {problem}") from None
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file, fsync and rename
    (:func:`mmldm.files.atomic_target`: the file gets the mode a plain ``open`` gives it, a
    failed write leaves no temporary file, a full disk is one error line naming ``path``).

    A folder at ``path`` is refused (ConfigError naming it) rather than reported
    through the temporary file's name.
    """
    from .files import atomic_target, disk_full_as_error

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name to write to")
    with disk_full_as_error(path.parent):
        make_folder(path.parent)
    with atomic_target(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
    return path


def save_config(cfg: Any, path: str | Path) -> Path:
    """Save the resolved config as YAML (atomically)."""
    return atomic_write_text(path, dump_yaml(cfg))
