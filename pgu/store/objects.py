"""The store's object files: written under a temporary name, fsynced, renamed to the SHA-256 of their bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["file_sha256", "fsync_dir", "write_object"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_object(folder: Path, write) -> str:
    """Write a file with ``write(path)`` to a temporary name, fsync it, and rename it to its SHA-256;
    return the hash."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=".safetensors")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        sha = file_sha256(Path(tmp))
        os.replace(tmp, folder / f"{sha}.safetensors")
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sha
