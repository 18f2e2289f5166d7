"""A reader for the IDX files MNIST and Fashion-MNIST ship as (plain or gzip-compressed).

An IDX file is a 4-byte magic number ``0x0000TTDD`` (``TT`` the element type, ``DD`` the number
of dimensions), ``DD`` big-endian uint32 sizes, then the elements in C order, big-endian. Labels
are ``0x00000801`` (uint8, 1-D), images ``0x00000803`` (uint8, 3-D).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "IDX_LABELS_MAGIC", "IDX_IMAGES_MAGIC"]

IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":  # gzip, whatever the file's name
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    return path.read_bytes()


def read_idx(path, expect_magic: int | None = None) -> np.ndarray:
    """The array held in the IDX file ``path`` (``.gz`` or plain), in native byte order.

    ``expect_magic`` (e.g. :data:`IDX_IMAGES_MAGIC`) makes any other magic number an error. A wrong
    magic number, or a data length that does not match the header, raises ``ValueError`` naming
    the file and what is wrong.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX file ({len(data)} bytes; the header alone is 4+ bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _TYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[type_code]
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have != want:
        raise ValueError(f"{path}: wrong length: header says shape {tuple(dims)} ({want} bytes of data) "
                         f"but the file holds {have} bytes after the header" + (" (truncated?)" if have < want else ""))
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True) if dtype.itemsize > 1 else arr.copy()
