"""Sample files: the samples a deletion request reads, and the digest that says a sample is what was trained on.

A sample file is an ``.npz`` archive (read with ``allow_pickle=False``) holding

* ``y``: int64 ``(N,)`` labels;
* ``ids``: int64 ``(N,)`` sample ids, distinct (the ids the model store knows the training set by;
  optional in a val file);
* and either ``x``: float32 ``(N, C, H, W)``, the model's inputs exactly as training saw them, or
  ``images``: uint8 ``(N, H, W)`` / ``(N, H, W, C)`` raw pixels, which are normalised as the
  training set was, ``(pixels / 255 - mean) / std`` per channel (:func:`pgu.data.common.normalise_uint8`),
  with the mean and std the dataset recorded.

:func:`write_samples` writes one (``pgu samples`` on the command line, from a dataset).

Content digest (:func:`sample_digests`): SHA-256 of a sample's float32 input bytes (C order,
little-endian) followed by its label as 8 little-endian bytes. A store records every trained
sample's digest when it is made; a forget sample whose digest differs (another image, another
label) is not the sample the model trained on, and the request is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from pgu.data import ArrayDataset
from pgu.data.common import normalise_uint8, read_npz

__all__ = ["sample_digests", "write_samples", "read_samples", "pixel_normalisation", "val_fingerprint"]


def sample_digests(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    """The 32-byte content digest of each sample (see the module docstring)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    xs = np.ascontiguousarray(x.detach().cpu().to(torch.float32).numpy()).astype("<f4", copy=False)
    ys = np.ascontiguousarray(y.detach().cpu().to(torch.int64).numpy()).astype("<i8", copy=False)
    rows = xs.reshape(xs.shape[0], -1)
    return [hashlib.sha256(rows[i].tobytes() + ys[i].tobytes()).digest() for i in range(rows.shape[0])]


def val_fingerprint(data) -> str:
    """SHA-256 (hex) of a set of samples (inputs as little-endian float32, labels as int64, in order): a key for
    what was measured on exactly these samples."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.x.detach().cpu().to(torch.float32).numpy()).astype("<f4", copy=False))
    digest.update(np.ascontiguousarray(data.y.detach().cpu().to(torch.int64).numpy()).astype("<i8", copy=False))
    return digest.hexdigest()


def pixel_normalisation(info: dict) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` per channel when a dataset's ``info`` records a uint8 pixel normalisation, else ``None``."""
    norm = info.get("normalise") if isinstance(info, dict) else None
    if isinstance(norm, dict) and norm.get("scale") == "pixels / 255" and "mean" in norm and "std" in norm:
        return [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    return None


def write_samples(path, ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Path:
    """Write model inputs ``x`` with their labels and ids as a sample file (atomically: temporary file, rename)."""
    path = Path(path)
    ids, y = torch.as_tensor(ids, dtype=torch.long).reshape(-1), torch.as_tensor(y, dtype=torch.long).reshape(-1)
    if not (x.shape[0] == y.shape[0] == ids.shape[0]):
        raise ValueError(f"ids, x and y must hold the same number of samples: "
                         f"{ids.shape[0]}, {x.shape[0]}, {y.shape[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=ids.numpy(), x=x.detach().cpu().to(torch.float32).numpy(), y=y.numpy())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_samples(path, *, input_shape: tuple[int, ...], num_classes: int, normalisation=None,
                 require_ids: bool = True, what: str = "sample file") -> ArrayDataset:
    """Read and check a sample file (module docstring) for a model of ``input_shape`` ``(C, H, W)``.

    ``normalisation``: the ``(mean, std)`` that turns ``images`` into inputs (``None``: only ``x``
    is accepted). Every problem raises ``ValueError`` saying what to fix: a missing array,
    wrong shapes or dtypes, non-finite inputs, labels out of range, duplicate ids, no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    names = _npz_names(path, what)
    has_x, has_images = "x" in names, "images" in names
    if has_x == has_images:
        raise ValueError(f"{what} {path}: it must hold exactly one of 'x' (float32 model inputs) or 'images' "
                         f"(uint8 pixels); it has {sorted(names)}")
    keys = ["y", "x" if has_x else "images"] + (["ids"] if require_ids or "ids" in names else [])
    arrays = read_npz(path, keys)
    y = np.asarray(arrays["y"])
    n = y.shape[0] if y.ndim == 1 else -1
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} {path}: 'y' must be a 1-D integer array of labels, got {y.dtype} {y.shape}")
    if n == 0:
        raise ValueError(f"{what} {path} holds no samples")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what} {path}: labels must lie in 0..{num_classes - 1}, "
                         f"found {int(y.min())}..{int(y.max())}")
    if has_x:
        x = np.asarray(arrays["x"])
        if x.dtype != np.float32 or x.shape != (n, *input_shape):
            raise ValueError(f"{what} {path}: 'x' must be float32 of shape {(n, *input_shape)} (N, C, H, W), got "
                             f"{x.dtype} {x.shape}")
        inputs = torch.from_numpy(np.ascontiguousarray(x))
    else:
        images = np.asarray(arrays["images"])
        c, h, w = input_shape
        shapes = [(n, h, w, c)] + ([(n, h, w)] if c == 1 else [])
        if images.dtype != np.uint8 or images.shape not in shapes:
            raise ValueError(f"{what} {path}: 'images' must be uint8 of shape {shapes[-1]} (N, H, W"
                             f"{', C' if c > 1 else ''}), got {images.dtype} {images.shape}")
        if normalisation is None:
            raise ValueError(f"{what} {path}: this model's dataset records no pixel normalisation, so uint8 'images' "
                             f"cannot be turned into its inputs; give 'x', the float32 inputs training saw")
        inputs = normalise_uint8(images, *normalisation)
    if not torch.isfinite(inputs).all():
        raise ValueError(f"{what} {path}: the inputs hold NaN or infinite values")
    if "ids" in arrays:
        ids = np.asarray(arrays["ids"])
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{what} {path}: 'ids' must be {n} integers, got {ids.dtype} {ids.shape}")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][:10].tolist()
            raise ValueError(f"{what} {path}: duplicate ids {dup}; each sample may appear once")
        ids_t = torch.from_numpy(ids.astype(np.int64))
    else:
        ids_t = torch.arange(n, dtype=torch.long)
    return ArrayDataset(inputs, torch.from_numpy(y.astype(np.int64)), ids_t)


def _npz_names(path: Path, what: str) -> set[str]:
    """The array names of an ``.npz`` file; ``ValueError`` naming the file when it is not a readable one."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{what} {path} is not a readable .npz archive ({exc}); see pgu.store.sample_files for the "
                         f"format (`pgu samples` writes one)") from exc
