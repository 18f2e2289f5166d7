"""Shared pieces of the file-based loaders: normalisation, official splits, image decoding."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from pgu.data.base import ArrayDataset, DataSplits, per_class_split

__all__ = ["channel_stats", "normalise_uint8", "official_splits", "decode_image_buffers", "decode_image_files",
           "check_labels", "read_npz"]


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, H, W)`` or ``(N, H, W, C)``, on the 0..1
    scale, computed exactly from per-channel histograms (no float copy of the images)."""
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    chans = [images] if images.ndim == 3 else [images[..., c] for c in range(images.shape[-1])]
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for ch in chans:
        hist = np.bincount(np.ascontiguousarray(ch).reshape(-1), minlength=256).astype(np.float64)
        n = hist.sum()
        m = float((hist * levels).sum() / n)
        var = float((hist * (levels - m) ** 2).sum() / n)
        means.append(m)
        stds.append(max(var, 1e-12) ** 0.5)
    return means, stds


def normalise_uint8(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """float32 ``(N, C, H, W)`` tensor ``(images / 255 - mean) / std`` from uint8 ``(N, H, W)`` or ``(N, H, W, C)``."""
    src = torch.from_numpy(np.ascontiguousarray(images))
    if src.dim() == 3:
        src = src.unsqueeze(-1)
    n, h, w, c = src.shape
    if len(mean) != c or len(std) != c:
        raise ValueError(f"{c} channels but {len(mean)} means and {len(std)} stds")
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    for k in range(c):
        out[:, k].copy_(src[..., k])
        out[:, k].mul_(1.0 / (255.0 * std[k])).sub_(mean[k] / std[k])
    return out


def read_npz(path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` file ``path``, loaded without pickles. A missing key, or a file that
    is not a readable zip (truncated, corrupt), raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            names = set(z.files)
            missing = [k for k in keys if k not in names]
            out = {} if missing else {k: z[k] for k in keys}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file, corrupt or truncated "
                         f"({type(exc).__name__}: {exc})") from exc
    if missing:
        raise ValueError(f"{path}: missing arrays {missing} (the file has {sorted(names)})")
    return out


def check_labels(y: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    """``y`` as int64 after checking it has ``n`` entries in ``0..num_classes-1``; else ``ValueError`` naming
    ``what``."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{what}: expected {n} labels, got shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def official_splits(name: str, train_u8: np.ndarray, y_train: np.ndarray, held_u8: np.ndarray, y_held: np.ndarray,
                    class_names: list[str], split_seed: int, info: dict,
                    extra_u8: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> DataSplits:
    """``DataSplits`` with the whole official training set as ``train`` and the official held-out set split
    per class in halves (shuffled by ``split_seed``) into ``val`` and ``test``.

    Pixels are normalised with the training set's per-channel mean and std (recorded in ``info``);
    ids are indices in each set's official order. ``extra_u8`` maps names to further ``(images, labels)``
    sets, normalised the same way and kept whole in ``DataSplits.extra``.
    """
    mean, std = channel_stats(train_u8)
    train = ArrayDataset(normalise_uint8(train_u8, mean, std), torch.from_numpy(np.asarray(y_train, np.int64)),
                         torch.arange(len(y_train)))
    y_h = torch.from_numpy(np.asarray(y_held, np.int64))
    val_pos, test_pos = per_class_split(y_h, 0.5, seed=split_seed)
    held_x = normalise_uint8(held_u8, mean, std)
    held = ArrayDataset(held_x, y_h, torch.arange(len(y_h)))
    extra = {}
    for key, (xu8, yy) in (extra_u8 or {}).items():
        extra[key] = ArrayDataset(normalise_uint8(xu8, mean, std), torch.from_numpy(np.asarray(yy, np.int64)),
                                  torch.arange(len(yy)))
    info = dict(info, split_seed=split_seed, normalise={"mean": mean, "std": std, "scale": "pixels / 255"})
    return DataSplits(name=name, train=train, val=held.subset(val_pos), test=held.subset(test_pos),
                      class_names=list(class_names), info=info, extra=extra)


def _decode_one(source, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{what}: does not decode as an image ({exc})") from exc


def _decode_all(n: int, source, describe, shape=None) -> np.ndarray:
    out = None
    for i in range(n):
        arr = _decode_one(source(i), describe(i))
        if out is None:
            h, w = shape if shape is not None else arr.shape[:2]
            out = np.empty((n, h, w, 3), dtype=np.uint8)
        if arr.shape != out.shape[1:]:
            raise ValueError(f"{describe(i)}: image is {arr.shape[1]}x{arr.shape[0]}, expected "
                             f"{out.shape[2]}x{out.shape[1]} like the others")
        out[i] = arr
    if out is None:
        h, w = shape if shape is not None else (0, 0)
        out = np.empty((0, h, w, 3), dtype=np.uint8)
    return out


def decode_image_buffers(buf: np.ndarray, offsets: np.ndarray, what: str, shape=None) -> np.ndarray:
    """Decode images stored back to back in ``buf`` (uint8), image ``i`` being ``buf[offsets[i]:offsets[i+1]]``,
    into a uint8 ``(N, H, W, 3)`` array. Bad offsets or an undecodable image raise ``ValueError`` naming ``what``."""
    buf, offsets = np.asarray(buf), np.asarray(offsets)
    if buf.ndim != 1 or buf.dtype != np.uint8:
        raise ValueError(f"{what}: expected a 1-D uint8 byte buffer, got {buf.dtype} {buf.shape}")
    if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"{what}: expected 1-D integer offsets, got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != len(buf) or (len(offsets) > 1 and np.any(np.diff(offsets) <= 0)):
        raise ValueError(f"{what}: offsets do not cut the {len(buf)}-byte buffer into images "
                         f"(first {int(offsets[0])}, last {int(offsets[-1])}, increasing: "
                         f"{bool(np.all(np.diff(offsets) > 0))}); the file is corrupt or truncated")
    raw = memoryview(np.ascontiguousarray(buf))
    offs = offsets.tolist()
    return _decode_all(len(offs) - 1, lambda i: io.BytesIO(raw[offs[i]:offs[i + 1]]), lambda i: f"{what} image {i}",
                       shape)


def decode_image_files(paths: list[Path], shape=None) -> np.ndarray:
    """Decode image files (as RGB) into a uint8 ``(N, H, W, 3)`` array; all must share one size."""
    paths = list(paths)
    return _decode_all(len(paths), lambda i: paths[i], lambda i: str(paths[i]), shape)
