"""Tiny ImageNet (``tiny-imagenet-200``): 64x64 colour images, 200 classes, 500 training and 50
labelled validation images per class.

Where (``DIR`` is ``data_dir`` / ``--data-dir``, else ``$PGU_DATA_DIR``): the standard folder at
``DIR/tiny-imagenet-200``, ``DIR/tinyimagenet/tiny-imagenet-200``, ``DIR/tinyimagenet`` or ``DIR``
itself, laid out as ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` and
``val/val_annotations.txt`` (``words.txt``, when present, names the classes).

Classes are numbered in sorted wnid order (as torchvision's ``ImageFolder`` numbers them).
Official order: training images by class, then by file name (ImageFolder's order); validation
images in the order of ``val_annotations.txt``; ids are indices in these orders. The whole
training set is ``train``; the labelled ``val/`` set is split per class in halves (``split_seed``)
into ``val`` and ``test`` (the official test set has no labels and is not used). Images are
decoded once with Pillow (grey ones as RGB) and cached, keyed by every file's name, size and
mtime. Pixels are standardised per channel with the training set's mean and std (in ``info``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from pgu.data.base import DataSplits
from pgu.data.cache import cached_arrays, source_key
from pgu.data.common import decode_image_files, official_splits
from pgu.data.registry import DatasetNotFoundError, register_dataset

__all__ = ["TinyImageNetLayout", "scan_tinyimagenet", "load_tinyimagenet_splits"]

_IMAGE_EXT = {".jpeg", ".jpg", ".png"}


class TinyImageNetLayout:
    """The files of a ``tiny-imagenet-200`` folder, in official order, with their labels."""

    def __init__(self, root: Path, wnids: list[str], class_names: list[str], train_files: list[Path],
                 y_train: np.ndarray, val_files: list[Path], y_val: np.ndarray):
        self.root, self.wnids, self.class_names = root, wnids, class_names
        self.train_files, self.y_train, self.val_files, self.y_val = train_files, y_train, val_files, y_val

    def cache_key(self) -> str:
        """A key over every file's relative name, size and mtime (and the label files)."""
        h = hashlib.sha256()
        for p in [self.root / "wnids.txt",
                  self.root / "val" / "val_annotations.txt"] + self.train_files + self.val_files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return source_key([self.root / "wnids.txt"], f"tinyimagenet|{h.hexdigest()}")


def is_tinyimagenet_folder(folder) -> bool:
    folder = Path(folder)
    return (folder / "wnids.txt").is_file() and (folder / "train").is_dir() and (folder / "val").is_dir()


def _image_files(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in _IMAGE_EXT)
    return [folder / n for n in names]


def scan_tinyimagenet(root) -> TinyImageNetLayout:
    """List a ``tiny-imagenet-200`` folder; a malformed layout raises ``ValueError`` naming the file."""
    root = Path(root)
    wnids_file = root / "wnids.txt"
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    if not wnids:
        raise ValueError(f"{wnids_file}: no class ids (wnids) in the file")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{wnids_file}: repeated class ids")
    wnids = sorted(wnids)
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    words_file = root / "words.txt"
    if words_file.is_file():
        for line in words_file.read_text(errors="replace").splitlines():
            parts = line.split("\t", 1)
            if len(parts) == 2 and parts[0] in index:
                words[parts[0]] = parts[1].split(",")[0].strip()
    class_names = [words.get(w, w) for w in wnids]

    train_files, y_train = [], []
    for w in wnids:
        folder = root / "train" / w / "images"
        if not folder.is_dir():
            raise ValueError(f"{folder}: missing: every class in {wnids_file} needs a train/<wnid>/images folder")
        files = _image_files(folder)
        if not files:
            raise ValueError(f"{folder}: no images")
        train_files += files
        y_train += [index[w]] * len(files)

    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise ValueError(f"{ann}: missing (it labels the images in val/images)")
    val_files, y_val = [], []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{ann} line {lineno}: expected '<file>\\t<wnid>\\t...', got {line!r}")
        name, wnid = parts[0].strip(), parts[1].strip()
        if wnid not in index:
            raise ValueError(f"{ann} line {lineno}: class {wnid!r} is not in {wnids_file}")
        path = root / "val" / "images" / name
        if not path.is_file():
            raise ValueError(f"{ann} line {lineno}: image {path} is missing")
        val_files.append(path)
        y_val.append(index[wnid])
    if not val_files:
        raise ValueError(f"{ann}: no labelled validation images")
    return TinyImageNetLayout(root, wnids, class_names, train_files, np.asarray(y_train, np.int64), val_files,
                              np.asarray(y_val, np.int64))


def decode_tinyimagenet(layout: TinyImageNetLayout) -> dict[str, np.ndarray]:
    """Decoded uint8 ``(N, H, W, 3)`` ``train`` and ``val`` images (cached)."""

    def build():
        train = decode_image_files(layout.train_files)
        val = decode_image_files(layout.val_files, shape=train.shape[1:3])
        return {"train": train, "val": val}

    return cached_arrays("tinyimagenet", layout.cache_key(), ["train", "val"], build)


@register_dataset("tinyimagenet")
def load_tinyimagenet_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    looked = []
    if data_dir is not None:
        root = Path(data_dir)
        for folder in (root / "tiny-imagenet-200", root / "tinyimagenet" / "tiny-imagenet-200", root / "tinyimagenet",
                       root):
            looked.append(folder / "{wnids.txt,train/,val/}")
            if is_tinyimagenet_folder(folder):
                layout = scan_tinyimagenet(folder)
                images = decode_tinyimagenet(layout)
                info = {"source": str(folder), "format": "tiny-imagenet-200", "held_out": "val",
                        "wnids": layout.wnids}
                return official_splits("tinyimagenet", images["train"], layout.y_train, images["val"], layout.y_val,
                                       layout.class_names, split_seed, info)
    raise DatasetNotFoundError(
        "tinyimagenet", looked,
        "the tiny-imagenet-200 folder (unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip) at "
        "DIR/tiny-imagenet-200, with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
        "val/val_annotations.txt.", data_dir)
