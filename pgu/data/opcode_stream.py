"""The opcodes of a serialised Python object stream (protocols 0 to 5), decoded and nothing else.

:func:`read_opcodes` walks the bytes and yields ``(name, argument, position)`` per opcode, with
the argument decoded as the format defines it (numbers, text, bytes, ``"module name"`` for a
``GLOBAL``). It builds no object, imports nothing and calls nothing: what the opcodes mean is
up to the caller (:class:`pgu.data.restricted_pickle.RestrictedUnpickler` rebuilds plain values from
them and refuses everything else). Opcodes a caller can only refuse (``INST``, ``PERSID``,
``EXT1/2/4``) are yielded with ``None`` and end the stream. Truncated input, unknown opcodes
and malformed arguments raise ``ValueError``. Python 2 strings (``STRING``, ``BINSTRING``,
``SHORT_BINSTRING``) come as latin-1 text.
"""

from __future__ import annotations

import codecs
import struct
from typing import Iterator

__all__ = ["read_opcodes"]

# opcode byte -> (name, how its argument is read)
_OPCODES = {
    b"(": ("MARK", None), b".": ("STOP", None), b"0": ("POP", None), b"1": ("POP_MARK", None), b"2": ("DUP", None),
    b"F": ("FLOAT", "float_line"), b"I": ("INT", "int_line"), b"J": ("BININT", "<i"), b"K": ("BININT1", "<B"),
    b"L": ("LONG", "long_line"), b"M": ("BININT2", "<H"), b"N": ("NONE", None), b"P": ("PERSID", "refused"),
    b"Q": ("BINPERSID", None), b"R": ("REDUCE", None), b"S": ("STRING", "string_line"),
    b"T": ("BINSTRING", ("<i", "latin-1")), b"U": ("SHORT_BINSTRING", ("<B", "latin-1")),
    b"V": ("UNICODE", "unicode_line"), b"X": ("BINUNICODE", ("<I", "utf-8")), b"a": ("APPEND", None),
    b"b": ("BUILD", None), b"c": ("GLOBAL", "global_lines"), b"d": ("DICT", None), b"}": ("EMPTY_DICT", None),
    b"e": ("APPENDS", None), b"g": ("GET", "int_line"), b"h": ("BINGET", "<B"), b"i": ("INST", "refused"),
    b"j": ("LONG_BINGET", "<I"), b"l": ("LIST", None), b"]": ("EMPTY_LIST", None), b"o": ("OBJ", None),
    b"p": ("PUT", "int_line"), b"q": ("BINPUT", "<B"), b"r": ("LONG_BINPUT", "<I"), b"s": ("SETITEM", None),
    b"t": ("TUPLE", None), b")": ("EMPTY_TUPLE", None), b"u": ("SETITEMS", None), b"G": ("BINFLOAT", ">d"),
    b"\x80": ("PROTO", "<B"), b"\x81": ("NEWOBJ", None), b"\x82": ("EXT1", "refused"), b"\x83": ("EXT2", "refused"),
    b"\x84": ("EXT4", "refused"), b"\x85": ("TUPLE1", None), b"\x86": ("TUPLE2", None), b"\x87": ("TUPLE3", None),
    b"\x88": ("NEWTRUE", None), b"\x89": ("NEWFALSE", None), b"\x8a": ("LONG1", ("<B", "long")),
    b"\x8b": ("LONG4", ("<i", "long")), b"B": ("BINBYTES", ("<I", None)), b"C": ("SHORT_BINBYTES", ("<B", None)),
    b"\x8c": ("SHORT_BINUNICODE", ("<B", "utf-8")), b"\x8d": ("BINUNICODE8", ("<Q", "utf-8")),
    b"\x8e": ("BINBYTES8", ("<Q", None)), b"\x8f": ("EMPTY_SET", None), b"\x90": ("ADDITEMS", None),
    b"\x91": ("FROZENSET", None), b"\x92": ("NEWOBJ_EX", None), b"\x93": ("STACK_GLOBAL", None),
    b"\x94": ("MEMOIZE", None), b"\x95": ("FRAME", "<Q"), b"\x96": ("BYTEARRAY8", ("<Q", None)),
    b"\x97": ("NEXT_BUFFER", None), b"\x98": ("READONLY_BUFFER", None),
}


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"truncated: {n} bytes wanted at byte {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise ValueError(f"truncated: no end of line after byte {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end + 1
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]


def _string_line(raw: bytes) -> str:
    if len(raw) < 2 or raw[:1] not in (b"'", b'"') or raw[-1:] != raw[:1]:
        raise ValueError(f"a STRING argument must be quoted, got {raw[:40]!r}")
    return codecs.escape_decode(raw[1:-1])[0].decode("latin-1")


def _argument(reader: _Reader, how):
    if how is None:
        return None
    if isinstance(how, tuple):  # a length, then that many bytes: text, a little-endian integer, or bytes
        size_fmt, kind = how
        data = reader.take(reader.unpack(size_fmt))
        if kind == "long":
            return int.from_bytes(data, "little", signed=True)
        return data if kind is None else data.decode(kind, "surrogatepass" if kind == "utf-8" else "strict")
    if how == "int_line":
        text = reader.line()
        return {b"00": False, b"01": True}[text] if text in (b"00", b"01") else int(text)
    if how == "long_line":
        text = reader.line()
        return int(text[:-1] if text.endswith(b"L") else text)
    if how == "float_line":
        return float(reader.line())
    if how == "string_line":
        return _string_line(reader.line())
    if how == "unicode_line":
        return reader.line().decode("raw-unicode-escape")
    if how == "global_lines":
        module, name = reader.line(), reader.line()
        return f"{module.decode('utf-8')} {name.decode('utf-8')}"
    return reader.unpack(how)  # a struct format


def read_opcodes(data: bytes) -> Iterator[tuple[str, object, int]]:
    """``(name, argument, byte position)`` of each opcode of ``data`` up to and including ``STOP``."""
    reader = _Reader(bytes(data))
    while True:
        pos = reader.pos
        code = reader.take(1)
        if code not in _OPCODES:
            raise ValueError(f"unknown opcode {code!r} at byte {pos}")
        name, how = _OPCODES[code]
        if how == "refused":  # nothing a caller can do with it but refuse: its argument is not read
            yield name, None, pos
            return
        yield name, _argument(reader, how), pos
        if name == "STOP":
            return
