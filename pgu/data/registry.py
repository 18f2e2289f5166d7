"""The dataset registry: ``load_dataset(name, data_dir=None, split_seed=0) -> DataSplits``.

Loaders read from a path, never from the network. Where the data lives: the ``data_dir``
argument (the CLI's ``--data-dir``), else the ``PGU_DATA_DIR`` environment variable; datasets
bundled with a package (scikit-learn's digits) need neither, and Fashion-MNIST also falls back
to the folder Debian's ``dataset-fashion-mnist`` package installs. Data that cannot be found
raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) saying where it looked and where to
get the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pgu.data.base import DataSplits

__all__ = ["register_dataset", "load_dataset", "available_datasets", "resolve_data_dir", "DatasetNotFoundError"]

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
    """Registered names, in registration order (the file-free ``digits`` first)."""
    return list(_DATASETS)


def resolve_data_dir(data_dir=None) -> Path | None:
    """``data_dir`` if given, else ``$PGU_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("PGU_DATA_DIR")
    return Path(env) if env else None


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where pgu looked; the message lists the places and how to get them."""

    def __init__(self, name: str, looked_in: list, how_to_get: str, data_dir=None):
        self.dataset, self.looked_in = name, [str(p) for p in looked_in]
        lines = [f"dataset {name!r}: data not found."]
        if data_dir is None:
            lines.append("No data directory given: pass --data-dir DIR (data_dir=...) or set PGU_DATA_DIR.")
        if self.looked_in:
            lines.append("Looked in:")
            lines += [f"  {p}" for p in self.looked_in]
        lines.append(f"Where to get it: {how_to_get}")
        super().__init__("\n".join(lines))


def load_dataset(name: str, data_dir=None, split_seed: int = 0) -> DataSplits:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return _DATASETS[name](resolve_data_dir(data_dir), split_seed)
