"""CIFAR-10: 50,000 training and 10,000 test 32x32 colour images, 10 classes.

Sources, first found wins (``DIR`` is ``data_dir`` / ``--data-dir``, else ``$PGU_DATA_DIR``):

1. the standard ``cifar-10-batches-py`` folder (torchvision's download) at
   ``DIR/cifar-10-batches-py``, ``DIR/cifar10/cifar-10-batches-py`` or ``DIR`` itself: the original
   pixels. Its files are Python pickles, but they are never unpickled: :class:`RestrictedUnpickler`
   decodes their opcodes with :func:`pgu.data.opcode_stream.read_opcodes` and rebuilds the dicts, lists, bytes and numpy
   arrays itself, refusing every other global or opcode (nothing named in a file is imported or called,
   so a malicious file cannot run code).
2. the compact file ``DIR/cifar10/cifar10_compact.npz`` (or ``DIR/cifar10_compact.npz``) of the
   shared data folder: training images as JPEG, the test set both as JPEG (``test_jpeg``, same
   processing as training) and lossless (``test_png``). Decoded once with Pillow and cached (see
   :mod:`pgu.data.cache`); the decoded arrays are checked against the SHA-256 values in the data
   README (a mismatch warns).

The whole official training set is ``train``; the held-out set (``test_jpeg`` for the compact file,
so that train and held-out data are processed alike for membership inference; the one test set
for the pickles) is split per class in halves (``split_seed``) into ``val`` and ``test``. From the
compact file the whole lossless test set is also given as ``extra["test_png"]``. Ids are indices
in the official order (``data_batch_1..5``; ``test_batch``). Pixels are standardised per channel
with the training set's mean and std (in ``info``).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pgu.data.base import DataSplits
from pgu.data.cache import cached_arrays, source_key
from pgu.data.common import check_labels, decode_image_buffers, official_splits, read_npz
from pgu.data.registry import DatasetNotFoundError, register_dataset
from pgu.data.restricted_pickle import NOT_A_BATCH, RestrictedUnpickler, UnsafePickleError, restricted_load

__all__ = ["CIFAR10_CLASSES", "EXPECTED_SHA256", "RestrictedUnpickler", "UnsafePickleError", "restricted_load",
           "read_cifar_batches", "decode_compact", "check_sha256", "load_cifar10_splits", "load_cifar10_10k_splits",
           "first_per_class", "MEMORIZE_PER_CLASS"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)]
COMPACT_NAME = "cifar10_compact.npz"
_COMPACT_SETS = ("train_jpeg", "test_jpeg", "test_png")

# SHA-256 of the decoded uint8 arrays (N, 32, 32, 3), C order, Pillow 13 (shared data README).
EXPECTED_SHA256 = {
    "train_jpeg": ((50000, 32, 32, 3), "5aaf8a2cf2e577ff4dbb15e4f368840fab5aca1812bcc69682005f8dc661d466"),
    "test_jpeg": ((10000, 32, 32, 3), "b7018a062865e9348a704e72416eb53c816b43cc8ac42ab43276a2b967508ab6"),
    "test_png": ((10000, 32, 32, 3), "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04"),
}


def _get(d, key: str, path: Path):
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(d).__name__}: {NOT_A_BATCH}")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{path}: no {key!r} entry (has {sorted(map(repr, d))})")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = restricted_load(path)
    data = _get(d, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be a uint8 array (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    labels = check_labels(np.asarray(_get(d, "labels", path)), len(data), 10, f"{path} 'labels'")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R(1024) G(1024) B(1024) planes
    return np.ascontiguousarray(images), labels


def is_batches_folder(folder) -> bool:
    folder = Path(folder)
    return all((folder / n).is_file() for n in BATCH_FILES + ["test_batch"])


def read_cifar_batches(folder) -> dict:
    """``x_train, y_train, x_test, y_test`` (uint8 ``(N, 32, 32, 3)``, int64) and ``class_names`` from a
    ``cifar-10-batches-py`` folder, read with :func:`restricted_load`."""
    folder = Path(folder)
    parts = [_read_batch(folder / n) for n in BATCH_FILES]
    x_test, y_test = _read_batch(folder / "test_batch")
    names = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        raw = _get(restricted_load(meta), "label_names", meta)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
        if len(names) != 10:
            raise ValueError(f"{meta}: expected 10 label names, got {len(names)}")
    return {"x_train": np.concatenate([p[0] for p in parts]), "y_train": np.concatenate([p[1] for p in parts]),
            "x_test": x_test, "y_test": y_test, "class_names": names}


# ---------------------------------------------------------------- the compact file

def check_sha256(name: str, images: np.ndarray) -> bool | None:
    """Compare decoded ``images`` with the data README's SHA-256 for ``name``: True when they match; on a
    mismatch warn (``warnings.warn``) and return False; None when the set is not the official one (other shape)."""
    expected = EXPECTED_SHA256.get(name)
    if expected is None or tuple(images.shape) != tuple(expected[0]):
        return None
    got = hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()
    if got != expected[1]:
        warnings.warn(f"CIFAR-10 {name}: the decoded pixels have SHA-256 {got}, not {expected[1]} as in the data "
                      f"README (decoded with Pillow 13). The file may be damaged, or this Pillow/libjpeg decodes "
                      f"JPEG differently; results may differ slightly from runs on the reference decode.",
                      UserWarning, stacklevel=2)
        return False
    return True


def decode_compact(path) -> dict[str, np.ndarray]:
    """The decoded uint8 ``(N, 32, 32, 3)`` image sets ``train_jpeg``, ``test_jpeg``, ``test_png`` of a compact
    ``.npz``, decoded once and cached (key: the file's path, size and mtime)."""
    path = Path(path)

    def build():
        keys = [k for s in _COMPACT_SETS for k in (s, f"{s}_offsets")]
        raw = read_npz(path, keys)
        return {s: decode_image_buffers(raw[s], raw[f"{s}_offsets"], f"{path} {s}", shape=(32, 32))
                for s in _COMPACT_SETS}

    return cached_arrays("cifar10", source_key([path], "cifar10-compact"), list(_COMPACT_SETS), build)


def _compact_splits(path: Path, split_seed: int) -> DataSplits:
    meta = read_npz(path, ["y_train", "y_test", "class_names"])
    images = decode_compact(path)
    sha = {s: check_sha256(s, images[s]) for s in _COMPACT_SETS}
    y_train = check_labels(meta["y_train"], len(images["train_jpeg"]), 10, f"{path} y_train")
    y_test = check_labels(meta["y_test"], len(images["test_jpeg"]), 10, f"{path} y_test")
    if len(images["test_png"]) != len(y_test):
        raise ValueError(f"{path}: test_png has {len(images['test_png'])} images but y_test {len(y_test)} labels")
    names = [str(n) for n in meta["class_names"].tolist()]
    if len(names) != 10:
        raise ValueError(f"{path}: expected 10 class names, got {len(names)}")
    info = {"source": str(path), "format": "compact-npz", "held_out": "test_jpeg", "sha256_ok": sha}
    return official_splits("cifar10", images["train_jpeg"], y_train, images["test_jpeg"], y_test, names, split_seed,
                           info, extra_u8={"test_png": (images["test_png"], y_test)})


@register_dataset("cifar10")
def load_cifar10_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    looked = []
    if data_dir is not None:
        root = Path(data_dir)
        for folder in (root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py", root):
            looked.append(folder / "{data_batch_1..5,test_batch}")
            if is_batches_folder(folder):
                arrays = read_cifar_batches(folder)
                info = {"source": str(folder), "format": "cifar-10-batches-py", "held_out": "test_batch"}
                return official_splits("cifar10", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                                       arrays["y_test"], arrays["class_names"], split_seed, info)
        for path in (root / "cifar10" / COMPACT_NAME, root / COMPACT_NAME):
            looked.append(path)
            if path.is_file():
                return _compact_splits(path, split_seed)
    raise DatasetNotFoundError(
        "cifar10", looked,
        f"the shared compact file {COMPACT_NAME} (put it at DIR/cifar10/{COMPACT_NAME}), or the standard "
        "cifar-10-batches-py folder (what torchvision's CIFAR10 dataset fetches, or what "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz unpacks to) at DIR/cifar-10-batches-py.", data_dir)


MEMORIZE_PER_CLASS = 1000
"""Training images per class of ``cifar10-10k``: 10,000 in all, few enough for a CPU model to memorise."""


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Sorted positions of the first ``per_class`` samples of every class, in the order given (a fixed subset)."""
    keep = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} samples, fewer than the {per_class} asked for")
        keep.append(members[:per_class])
    return torch.cat(keep).sort().values


@register_dataset("cifar10-10k")
def load_cifar10_10k_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    """CIFAR-10 with a fixed class-balanced training set: the first :data:`MEMORIZE_PER_CLASS` images of each class
    in the official order (ids stay official indices). Val, test and the pixel normalisation are ``cifar10``'s, so
    an image has the same inputs in both. The data of the ``cifar10-memorize`` tier, whose model memorises its
    training set as the models of the sample-forgetting literature do."""
    full = load_cifar10_splits(data_dir, split_seed)
    keep = first_per_class(full.train.y, MEMORIZE_PER_CLASS)
    info = dict(full.info, train_subset=f"the first {MEMORIZE_PER_CLASS} images of each class, official order")
    return replace(full, name="cifar10-10k", train=full.train.subset(keep), info=info)
