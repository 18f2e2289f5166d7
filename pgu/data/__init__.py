"""Datasets as tensors, by name: ``load_dataset("digits")``."""

from . import digits  # noqa: F401  (registers "digits")
from .base import ArrayDataset, DataSplits, TensorLoader, per_class_split
from .registry import available_datasets, load_dataset, register_dataset, resolve_data_dir

__all__ = ["ArrayDataset", "DataSplits", "TensorLoader", "per_class_split", "available_datasets",
           "load_dataset", "register_dataset", "resolve_data_dir"]
