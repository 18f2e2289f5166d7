"""A cache of decoded arrays, so images are decoded once per source file.

Where: ``$PGU_CACHE_DIR``, else ``~/.cache/pgu``. Entries are plain ``.npy`` files (read back
with ``allow_pickle=False``) named by a key that hashes the source files' paths, sizes and
modification times, a format version and the Pillow version (a different libjpeg may decode
differently), so a changed source or decoder is decoded afresh. Writes are atomic (a temporary
file in the same folder, then ``os.replace``); a cache that cannot be written only warns.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = ["cache_dir", "source_key", "cached_arrays", "save_array_atomic"]

FORMAT_VERSION = 1


def cache_dir() -> Path:
    """``$PGU_CACHE_DIR`` if set, else ``~/.cache/pgu``."""
    env = os.environ.get("PGU_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pgu"


def source_key(paths: Iterable, extra: str = "") -> str:
    """A short hex key from each path's absolute name, size and mtime (plus ``extra``)."""
    try:
        import PIL

        pillow = PIL.__version__
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pillow = "none"
    h = hashlib.sha256(f"pgu-cache-v{FORMAT_VERSION}|pillow-{pillow}|{extra}".encode())
    for p in paths:
        p = Path(p)
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache holds public data
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_arrays(group: str, key: str, names: list[str],
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``names`` cached under ``group``/``key``, built with ``build()`` when absent.

    A cache entry that cannot be read is rebuilt; a cache that cannot be written warns and the
    freshly built arrays are returned all the same.
    """
    folder = cache_dir() / group
    files = {n: folder / f"{key}-{n}.npy" for n in names}
    if all(f.is_file() for f in files.values()):
        try:
            return {n: np.load(f, allow_pickle=False) for n, f in files.items()}
        except (OSError, ValueError, EOFError) as exc:
            warnings.warn(f"ignoring an unreadable cache entry in {folder} ({exc}); decoding again", stacklevel=3)
    arrays = build()
    missing = [n for n in names if n not in arrays]
    if missing:
        raise KeyError(f"cache builder for {group} did not return {missing}")
    try:
        for n, f in files.items():
            save_array_atomic(f, arrays[n])
    except OSError as exc:
        warnings.warn(f"could not write the decoded-data cache in {folder} ({exc}); set PGU_CACHE_DIR to a writable "
                      f"folder to avoid decoding again next time", stacklevel=3)
    return arrays
