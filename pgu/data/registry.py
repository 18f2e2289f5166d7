"""The dataset registry: ``load_dataset(name, data_dir=None, split_seed=0) -> DataSplits``.

Loaders read from a path, never from the network. Where the data lives: the ``data_dir``
argument, else the ``PGU_DATA_DIR`` environment variable; datasets bundled with a package
(scikit-learn's digits) need neither.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .base import DataSplits

__all__ = ["register_dataset", "load_dataset", "available_datasets", "resolve_data_dir"]

_DATASETS: dict[str, Callable[..., DataSplits]] = {}


def register_dataset(name: str):
    """Decorator: register ``fn(data_dir: Path | None, split_seed: int) -> DataSplits`` as ``name``."""

    def decorate(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = fn
        return fn

    return decorate


def available_datasets() -> list[str]:
    return sorted(_DATASETS)


def resolve_data_dir(data_dir=None) -> Path | None:
    """``data_dir`` if given, else ``$PGU_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("PGU_DATA_DIR")
    return Path(env) if env else None


def load_dataset(name: str, data_dir=None, split_seed: int = 0) -> DataSplits:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return _DATASETS[name](resolve_data_dir(data_dir), split_seed)
