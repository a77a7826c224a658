"""Lazy package exports: a package's names are imported when first used, not with the package.

The CLI must start in well under a second (``mmldm --help``), and importing torch or
diffusers takes seconds; a package ``__init__`` that imported its modules eagerly would
make every light module of the package (a config dataclass, the sampler registry) pay
for its heaviest sibling. A package lists its exports instead::

    __getattr__, __dir__ = lazy_exports(__name__, {"sample": ".samplers", "DiffusionConfig": ".config"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each name to the relative module
    that defines it (PEP 562)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
