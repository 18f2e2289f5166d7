"""MNIST and Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey images, 10 classes.

Sources, first found wins (``DIR`` is ``data_dir`` / ``--data-dir``, else ``$PGU_DATA_DIR``):

- ``mnist``: ``DIR/mnist/mnist.npz`` or ``DIR/mnist.npz`` (keys ``x_train, y_train, x_test, y_test``,
  as in the shared data folder), else the four official IDX files (plain or ``.gz``) in
  ``DIR/mnist``, ``DIR/MNIST/raw`` (torchvision's layout) or ``DIR`` itself.
- ``fashion``: the four IDX files in ``DIR/fashion-mnist``, ``DIR/fashion_mnist``, ``DIR/fashion``,
  ``DIR/FashionMNIST/raw`` or ``DIR``, else ``/usr/share/datasets/fashion-mnist`` (Debian's
  ``dataset-fashion-mnist`` package), which is used even when no data directory is given.

The whole official training set is ``train``; the official test set is split per class in
halves (``split_seed``) into ``val`` and ``test``. Ids are indices in the official order. Pixels
are scaled to 0..1 and standardised with the training set's mean and std (in ``info``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgu.data.base import DataSplits
from pgu.data.common import check_labels, official_splits, read_npz
from pgu.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx
from pgu.data.registry import DatasetNotFoundError, register_dataset

__all__ = ["IDX_NAMES", "FASHION_SYSTEM_DIR", "find_idx_files", "read_idx_set", "read_mnist_npz",
           "load_mnist_splits", "load_fashion_splits"]

IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def find_idx_files(folder) -> dict[str, Path] | None:
    """The four IDX files (plain preferred over ``.gz``) in ``folder``, or None unless all four are there."""
    folder = Path(folder)
    found = {}
    for key, stem in IDX_NAMES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    return found if len(found) == len(IDX_NAMES) else None


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{what}: expected uint8 images of shape (N, 28, 28), got {x.dtype} {x.shape}")
    return x


def read_idx_set(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The arrays of an IDX set found by :func:`find_idx_files`, checked for shape and agreement."""
    out = {}
    for key, path in files.items():
        magic = IDX_IMAGES_MAGIC if key.startswith("x") else IDX_LABELS_MAGIC
        arr = read_idx(path, expect_magic=magic)
        out[key] = _check_images(arr, str(path)) if key.startswith("x") else arr
    for part in ("train", "test"):
        out[f"y_{part}"] = check_labels(out[f"y_{part}"], len(out[f"x_{part}"]), 10, str(files[f"y_{part}"]))
    return out


def read_mnist_npz(path) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` from an ``.npz`` like the shared ``mnist.npz`` (no pickles)."""
    path = Path(path)
    out = read_npz(path, list(IDX_NAMES))
    for part in ("train", "test"):
        _check_images(out[f"x_{part}"], f"{path} x_{part}")
        out[f"y_{part}"] = check_labels(out[f"y_{part}"], len(out[f"x_{part}"]), 10, f"{path} y_{part}")
    return out


def _splits(name, arrays, class_names, split_seed, info) -> DataSplits:
    return official_splits(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                           class_names, split_seed, info)


@register_dataset("mnist")
def load_mnist_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    looked = []
    if data_dir is not None:
        root = Path(data_dir)
        for npz in (root / "mnist" / "mnist.npz", root / "mnist.npz"):
            looked.append(npz)
            if npz.is_file():
                return _splits("mnist", read_mnist_npz(npz), [str(i) for i in range(10)], split_seed,
                               {"source": str(npz), "format": "npz"})
        for folder in (root / "mnist", root / "MNIST" / "raw", root):
            looked.append(folder / "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
            files = find_idx_files(folder)
            if files:
                return _splits("mnist", read_idx_set(files), [str(i) for i in range(10)], split_seed,
                               {"source": str(folder), "format": "idx", "files": {k: str(v) for k, v in files.items()}})
    raise DatasetNotFoundError(
        "mnist", looked,
        "the shared file mnist.npz (put it at DIR/mnist/mnist.npz), or the four official IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        "(plain or .gz, e.g. torchvision's MNIST/raw folder) in DIR/mnist.", data_dir)


@register_dataset("fashion")
def load_fashion_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    folders = []
    if data_dir is not None:
        root = Path(data_dir)
        folders += [root / "fashion-mnist", root / "fashion_mnist", root / "fashion", root / "FashionMNIST" / "raw",
                    root]
    folders.append(FASHION_SYSTEM_DIR)
    looked = []
    for folder in folders:
        looked.append(folder / "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
        files = find_idx_files(folder)
        if files:
            return _splits("fashion", read_idx_set(files), FASHION_CLASSES, split_seed,
                           {"source": str(folder), "format": "idx", "files": {k: str(v) for k, v in files.items()}})
    raise DatasetNotFoundError(
        "fashion", looked,
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) puts the four official IDX .gz files in "
        f"{FASHION_SYSTEM_DIR}; or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (e.g. torchvision's FashionMNIST/raw) in "
        "DIR/fashion-mnist.",
        data_dir)
