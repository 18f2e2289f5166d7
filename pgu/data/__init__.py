"""Datasets as tensors, by name: ``load_dataset("digits")``, ``load_dataset("cifar10", data_dir=...)``.

Registered: ``digits`` (bundled with scikit-learn, no files), ``mnist``, ``fashion``, ``cifar10``,
``tinyimagenet`` (files under ``data_dir`` / ``$PGU_DATA_DIR``; see each module). Batch
augmentation on tensors: :class:`RandomCropFlip`, passed to a loader as ``transform``.
"""

# Registration order is import order: "digits" first, the file-free default.
# isort: off
from pgu.data import digits  # noqa: F401
from pgu.data import mnist, cifar10, tinyimagenet  # noqa: F401  (register "mnist", "fashion", "cifar10", "tinyimagenet")
# isort: on

from pgu.data.augment import RandomCropFlip
from pgu.data.base import ArrayDataset, DataSplits, TensorLoader, per_class_split
from pgu.data.cache import cache_dir
from pgu.data.idx import read_idx
from pgu.data.registry import (
    DatasetNotFoundError,
    available_datasets,
    load_dataset,
    register_dataset,
    resolve_data_dir,
)
from pgu.data.restricted_pickle import RestrictedUnpickler, UnsafePickleError, restricted_load

__all__ = ["ArrayDataset", "DataSplits", "TensorLoader", "per_class_split", "available_datasets",
           "load_dataset", "register_dataset", "resolve_data_dir", "DatasetNotFoundError", "RandomCropFlip",
           "read_idx", "cache_dir", "RestrictedUnpickler", "UnsafePickleError", "restricted_load"]
