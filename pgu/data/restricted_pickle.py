"""Pickle files read without unpickling: :class:`RestrictedUnpickler` (the CIFAR-10 python batches).

The batch files are Python pickles (protocol 2, written by Python 2's cPickle). They are never unpickled:
:class:`RestrictedUnpickler` walks the byte stream with :func:`~pgu.data.opcode_stream.read_opcodes`, which only
decodes opcodes,
and rebuilds the few kinds of value a batch holds (dicts, lists, tuples, bytes, str, numbers and numpy arrays)
itself. Globals are only names to it: the handful that numpy's array pickling uses are mapped to code of this
module, anything else is refused. Nothing named in a file is ever imported or called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgu.data.opcode_stream import read_opcodes  # decodes opcodes only; executes nothing

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "restricted_load", "NOT_A_BATCH"]

NOT_A_BATCH = "not a CIFAR-10 python batch"


class UnsafePickleError(ValueError):
    """A pickle that uses a global, opcode or call outside the few a CIFAR-10 batch (numpy arrays, lists,
    dicts, bytes, numbers) needs: refused before anything from it is imported or run."""


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x, numpy >= 2
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_ALLOWED_GLOBALS = {
    **{(m, "_reconstruct"): "_reconstruct" for m in _MULTIARRAY},  # ndarray.__reduce__ (protocols 0 to 4)
    **{(m, "scalar"): "scalar" for m in _MULTIARRAY},  # numpy scalars
    **{(m, "_frombuffer"): "_frombuffer" for m in _NUMERIC},  # ndarray.__reduce_ex__ (protocol 5)
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # how Python 3 writes bytes under protocols 0 to 2: encode(str, "latin1")
    ("__builtin__", "bytes"): "bytes",  # ... and empty bytes: bytes()
    ("builtins", "bytes"): "bytes",
}
_ALLOWED_NAMES = ", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS))
_KEY_TYPES = (str, bytes, int, float, bool, type(None))
_DTYPE_KINDS = "biufc"  # bool, integers, floats, complex: plain bytes, no objects


class _Global:
    """A global named by the pickle: only a tag (one of ``_ALLOWED_GLOBALS``' values), never the object."""

    __slots__ = ("tag",)

    def __init__(self, tag):
        self.tag = tag


class _Pending:
    """A numpy array or dtype under construction: made by REDUCE, completed by BUILD (``value``)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value=None):
        self.kind, self.value = kind, value


class _Corrupt(Exception):
    """Internal: the stream is malformed (becomes a ValueError naming the file)."""


class RestrictedUnpickler:
    """Reads a pickle holding dicts, lists, tuples, bytes, str, numbers and numpy arrays without unpickling it.

    The stream is decoded with :func:`~pgu.data.opcode_stream.read_opcodes` (which executes nothing) and the value is
    rebuilt here, opcode by opcode, by a small stack machine. The globals numpy's array pickling names
    (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.numeric._frombuffer``,
    ``numpy.core.multiarray.scalar``, and ``_codecs.encode`` and ``bytes`` for Python 3's protocol-2 bytes;
    ``numpy._core`` spellings too) are only names here, interpreted by this class's own code on checked
    arguments; any other global, a REDUCE or BUILD on anything else, a dtype holding Python objects, and the
    opcodes a batch never uses (instances, extension codes, persistent ids, out-of-band buffers, sets) raise
    :class:`UnsafePickleError`. A truncated or malformed stream raises ``ValueError``. Protocols 0 to 5.

    ``encoding`` is what Python 2 strings (``STRING``/``BINSTRING``/``SHORT_BINSTRING``) become: ``"bytes"``
    (the default, as the standard unpickler's ``encoding="bytes"``) or a codec name they are decoded with.
    """

    def __init__(self, data, source: str = "<pickle>", encoding: str = "bytes"):
        self.data = bytes(data)
        self.source = str(source)
        self.encoding = encoding

    # -- errors
    def _refuse(self, what: str):
        raise UnsafePickleError(f"{self.source}: {what}; {NOT_A_BATCH} (its files hold only numpy arrays, lists, "
                                f"dicts, bytes and numbers), and it may be malicious: refused, nothing from it was "
                                f"imported or run")

    # -- the value rebuilders for the allowed globals
    def _py2_string(self, text: str):
        raw = text.encode("latin-1")  # read_opcodes hands Python 2 strings over as latin-1 text
        return raw if self.encoding == "bytes" else raw.decode(self.encoding)

    @staticmethod
    def _text(v, what):
        if isinstance(v, (bytes, bytearray)):
            try:
                return bytes(v).decode("ascii")
            except UnicodeDecodeError:
                raise _Corrupt(f"{what} {v!r} is not ASCII") from None
        if isinstance(v, str):
            return v
        raise _Corrupt(f"{what} must be text, got {type(v).__name__}")

    def _raw(self, v, what):
        if isinstance(v, str):  # Python 2 strings read with a text encoding, as numpy's own unpickling allows
            try:
                return v.encode("latin-1")
            except UnicodeEncodeError:
                raise _Corrupt(f"{what} holds characters beyond latin-1") from None
        if isinstance(v, (bytes, bytearray)):
            return bytes(v)
        self._refuse(f"{what} is a {type(v).__name__}, not raw bytes")

    def _dtype(self, v, what="dtype"):
        if isinstance(v, _Pending) and v.kind == "dtype":
            return v.value
        self._refuse(f"the {what} of an array is a {type(v).__name__}, not a numpy dtype")

    def _make_dtype(self, args):
        if not isinstance(args, tuple) or not 1 <= len(args) <= 3:
            raise _Corrupt(f"numpy.dtype called with {type(args).__name__} arguments")
        spec = self._text(args[0], "dtype code")
        if len(spec) > 4 or not spec[:1] or spec[0] not in _DTYPE_KINDS or not spec[1:].isdigit():
            self._refuse(f"the dtype {spec!r} is not a plain numeric dtype")
        try:
            return _Pending("dtype", np.dtype(spec))
        except TypeError:
            raise _Corrupt(f"unknown dtype {spec!r}") from None

    def _build_dtype(self, pending, state):
        # state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5:
            raise _Corrupt("a dtype's state is not a tuple of 5 or more items")
        order = self._text(state[1], "dtype byte order")
        if order not in ("<", ">", "|", "="):
            raise _Corrupt(f"dtype byte order {order!r}")
        if any(s is not None for s in state[2:5]) or (len(state) > 8 and state[8] is not None):
            self._refuse("a structured or sub-array dtype")
        if order in "<>":
            pending.value = pending.value.newbyteorder(order)

    def _array(self, raw, dtype, shape, fortran, what):
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                     for s in shape):
            raise _Corrupt(f"{what}: bad shape {shape!r}")
        count = 1
        for s in shape:
            count *= s
        if count * dtype.itemsize != len(raw):
            raise _Corrupt(f"{what}: {len(raw)} bytes of data for shape {shape} of {dtype}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy(
            order="F" if fortran else "C")

    def _build_array(self, pending, state):
        # ndarray.__setstate__: (version, shape, dtype, is_fortran, raw data), or without the version
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Corrupt("an array's state is not a tuple of 4 or 5 items")
        shape, dtype, fortran, raw = state[-4:]
        if fortran not in (True, False, 0, 1):
            raise _Corrupt(f"an array's order flag is {fortran!r}")
        dtype = self._dtype(dtype)
        value = self._array(self._raw(raw, "an array's data"), dtype, shape, bool(fortran), "an array")
        pending.value = value if dtype.isnative else value.astype(dtype.newbyteorder("="))  # as numpy does

    def _reduce(self, func, args):
        if not isinstance(func, _Global):
            self._refuse(f"REDUCE calls a {type(func).__name__}, not a numpy constructor")
        if not isinstance(args, tuple):
            raise _Corrupt("REDUCE arguments are not a tuple")
        args = tuple(a.value if isinstance(a, _Pending) and a.kind == "dtype" else a for a in args)
        tag = func.tag
        if tag == "encode":  # _codecs.encode(text, "latin1")
            if (len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str)
                    or args[1].lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591")):
                self._refuse("_codecs.encode used for something other than latin-1 bytes")
            return self._raw(args[0], "encoded text")
        if tag == "bytes":
            if args:
                self._refuse("bytes() called with arguments")
            return b""
        if tag == "dtype":
            return self._make_dtype(args)
        if tag == "_reconstruct":  # _reconstruct(numpy.ndarray, (0,), b"b"), completed by BUILD
            if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].tag == "ndarray"):
                self._refuse("numpy's _reconstruct asked for something other than a plain numpy.ndarray")
            return _Pending("array")
        if tag == "_frombuffer":  # _frombuffer(buffer, dtype, shape, order)
            if len(args) != 4 or not isinstance(args[1], np.dtype) or self._text(args[3], "order") not in ("C", "F"):
                self._refuse("numpy's _frombuffer called with unexpected arguments")
            return self._array(self._raw(args[0], "an array's buffer"), args[1], args[2],
                               self._text(args[3], "order") == "F", "an array")
        if tag == "scalar":  # scalar(dtype, raw bytes)
            if len(args) != 2 or not isinstance(args[0], np.dtype):
                self._refuse("numpy's scalar called with unexpected arguments")
            return self._array(self._raw(args[1], "a scalar's data"), args[0], (), False, "a scalar")[()]
        self._refuse(f"REDUCE calls {tag}")

    # -- the stack machine
    def load(self):
        """The value the pickle holds; raises :class:`UnsafePickleError` or ``ValueError`` (see the class)."""
        try:
            return self._resolve(self._run(), {})
        except _Corrupt as exc:
            raise ValueError(f"{self.source}: corrupt or truncated pickle ({exc}); {NOT_A_BATCH} file") from None
        except UnsafePickleError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError, MemoryError) as exc:
            raise ValueError(f"{self.source}: corrupt or truncated pickle ({type(exc).__name__}: {exc}); "
                             f"{NOT_A_BATCH} file") from exc

    def _run(self):
        stack, marks, memo = [], [], {}

        def pop_mark():
            nonlocal stack
            if not marks:
                raise _Corrupt("no MARK on the stack")
            items, stack = stack, marks.pop()
            return items

        def key(k):
            if not isinstance(k, _KEY_TYPES):
                self._refuse(f"a dict key is a {type(k).__name__}")
            return k

        for name, arg, pos in read_opcodes(self.data):
            if name in ("PROTO", "FRAME"):
                if name == "PROTO" and not 0 <= arg <= 5:
                    raise _Corrupt(f"unsupported pickle protocol {arg}")
            elif name == "STOP":
                if len(stack) != 1 or marks:
                    raise _Corrupt(f"STOP with {len(stack)} values and {len(marks)} marks left")
                return stack[0]
            elif name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP":
                stack.pop() if stack else pop_mark()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                          "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                          "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                stack.append(arg)  # numbers, str, bytes: decoded by read_opcodes already
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                stack.append(self._py2_string(arg))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name in ("LIST", "TUPLE"):
                items = pop_mark()  # before naming ``stack``: pop_mark rebinds it
                stack.append(items if name == "LIST" else tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise _Corrupt(f"{name} with {len(stack)} values on the stack")
                stack[-n:] = [tuple(stack[-n:])]
            elif name == "DICT":
                items = pop_mark()
                stack.append({key(k): v for k, v in zip(items[::2], items[1::2])})
            elif name in ("APPEND", "APPENDS"):
                items = [stack.pop()] if name == "APPEND" else pop_mark()
                if not isinstance(stack[-1], list):
                    self._refuse(f"{name} to a {type(stack[-1]).__name__}")
                stack[-1].extend(items)
            elif name in ("SETITEM", "SETITEMS"):
                items = stack[-2:] if name == "SETITEM" else pop_mark()
                if name == "SETITEM":
                    if len(items) != 2:
                        raise _Corrupt("SETITEM with too few values on the stack")
                    del stack[-2:]
                if not isinstance(stack[-1], dict) or len(items) % 2:
                    self._refuse(f"{name} on a {type(stack[-1]).__name__}")
                for k, v in zip(items[::2], items[1::2]):
                    stack[-1][key(k)] = v
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise _Corrupt(f"{name} {arg} of an unset memo entry")
                stack.append(memo[arg])
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, qualname = arg.partition(" ")
                else:
                    if len(stack) < 2 or not all(isinstance(s, str) for s in stack[-2:]):
                        self._refuse("STACK_GLOBAL with a name that is not text")
                    module, qualname = stack[-2:]
                    del stack[-2:]
                tag = _ALLOWED_GLOBALS.get((module, qualname))
                if tag is None:
                    raise UnsafePickleError(
                        f"{self.source}: refusing to load the global {module}.{qualname} from a pickle: {NOT_A_BATCH} "
                        f"(it holds only numpy arrays, lists and bytes), and it may be malicious; nothing from it "
                        f"was imported or run. Allowed: {_ALLOWED_NAMES}")
                stack.append(_Global(tag))
            elif name == "REDUCE":
                if len(stack) < 2:
                    raise _Corrupt("REDUCE with too few values on the stack")
                args = stack.pop()
                stack[-1] = self._reduce(stack[-1], args)
            elif name == "BUILD":
                if len(stack) < 2:
                    raise _Corrupt("BUILD with too few values on the stack")
                state, target = stack.pop(), stack[-1]
                if not isinstance(target, _Pending) or (target.kind == "array" and target.value is not None):
                    self._refuse(f"BUILD on a {type(target).__name__}, not a numpy array or dtype being rebuilt")
                if target.kind == "dtype":
                    self._build_dtype(target, state)
                else:
                    self._build_array(target, state)
            else:  # INST, OBJ, NEWOBJ(_EX), EXT1/2/4, PERSID, BINPERSID, NEXT_BUFFER, READONLY_BUFFER, sets
                self._refuse(f"the opcode {name} at byte {pos}")
        raise _Corrupt("no STOP opcode")  # unreachable: read_opcodes raises first

    def _resolve(self, v, seen):
        """``v`` with every :class:`_Pending` replaced by its value (shared lists and dicts stay shared)."""
        if isinstance(v, _Pending):
            if v.value is None:
                raise _Corrupt("a numpy array was never given its data (no BUILD)")
            return v.value
        if isinstance(v, _Global):
            self._refuse("a global is used as a value")
        if isinstance(v, (list, dict)):
            if id(v) in seen:
                return seen[id(v)]
            if isinstance(v, list):
                out = seen[id(v)] = []
                out.extend(self._resolve(x, seen) for x in v)
            else:
                out = seen[id(v)] = {}
                for k, x in v.items():
                    out[k] = self._resolve(x, seen)
            return out
        if isinstance(v, tuple):
            return tuple(self._resolve(x, seen) for x in v)
        return v


def restricted_load(path, encoding: str = "bytes"):
    """The value the pickle file ``path`` holds, rebuilt by :class:`RestrictedUnpickler` without unpickling
    (``encoding='bytes'``: Python 2 strings become bytes, as the CIFAR-10 batches need).

    A refused global, opcode or call raises :class:`UnsafePickleError` (a ``ValueError``); a truncated or
    corrupt file ``ValueError``; both name the file.
    """
    path = Path(path)
    return RestrictedUnpickler(path.read_bytes(), source=str(path), encoding=encoding).load()
