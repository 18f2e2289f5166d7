"""CIFAR-10: the compact npz (generated small copy; the real file in one slow test), the decode cache,
the SHA-256 check, the cifar-10-batches-py pickles (written here opcode by opcode, without the pickle module)
and the opcode-level reader that rebuilds them without unpickling."""

import hashlib
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgu.data import UnsafePickleError, load_dataset, restricted_load
from pgu.data import cifar10 as cifar_mod
from pgu.data import common as common_mod
from pgu.data.cifar10 import first_per_class
from pgu.data.opcode_stream import read_opcodes

SHARED = Path(os.environ.get("PGU_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("PGU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PGU_DATA_DIR", raising=False)


def unnormalise(x, info):
    mean = torch.tensor(info["normalise"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["normalise"]["std"]).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # back to NHWC


def _encode(images, fmt):
    bufs = []
    for img in images:
        out = io.BytesIO()
        Image.fromarray(img).save(out, format=fmt, **({"quality": 75} if fmt == "JPEG" else {}))
        bufs.append(np.frombuffer(out.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in bufs])]).astype(np.int64)
    return np.concatenate(bufs), offsets


def _decode(buf, offsets, i):
    return np.asarray(Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))


def make_compact(path, n_train=30, n_test=20, seed=0):
    """A small file in the compact format of the shared data folder."""
    rng = np.random.default_rng(seed)
    def smooth(n):
        return np.repeat(np.repeat(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), 4, 1), 4, 2)
    train, test = smooth(n_train), smooth(n_test)
    arrays = {"y_train": (np.arange(n_train) % 10).astype(np.uint8),
              "y_test": rng.permutation(np.arange(n_test) % 10).astype(np.uint8),
              "class_names": np.array(NAMES)}
    arrays["train_jpeg"], arrays["train_jpeg_offsets"] = _encode(train, "JPEG")
    arrays["test_jpeg"], arrays["test_jpeg_offsets"] = _encode(test, "JPEG")
    arrays["test_png"], arrays["test_png_offsets"] = _encode(test, "PNG")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays, test


def test_compact_file_splits_ids_and_pixels(tmp_path):
    arrays, test_pixels = make_compact(tmp_path / "data" / "cifar10" / "cifar10_compact.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small file is not the official one: no SHA-256 warning
        s = load_dataset("cifar10", data_dir=tmp_path / "data", split_seed=2)
    assert s.input_shape == (3, 32, 32) and s.class_names == NAMES and s.info["format"] == "compact-npz"
    assert s.train.x.dtype == torch.float32 and s.train.y.dtype == torch.int64
    assert torch.equal(s.train.ids, torch.arange(30)) and torch.equal(s.train.y, torch.arange(30) % 10)
    assert sorted(torch.cat([s.val.ids, s.test.ids]).tolist()) == list(range(20))
    assert torch.bincount(s.val.y, minlength=10).tolist() == [1] * 10 == torch.bincount(s.test.y, minlength=10).tolist()
    y_test = torch.as_tensor(arrays["y_test"], dtype=torch.long)
    assert torch.equal(s.val.y, y_test[s.val.ids])
    # train and val/test are the JPEG decodes; extra["test_png"] is the whole lossless test set
    mean = s.train.x.mean(dim=(0, 2, 3))
    assert mean.abs().max() < 1e-4
    got = unnormalise(s.train.x, s.info).numpy()
    assert all(np.array_equal(got[i], _decode(arrays["train_jpeg"], arrays["train_jpeg_offsets"], i))
               for i in range(30))
    got = unnormalise(s.val.x, s.info).numpy()
    assert all(np.array_equal(got[k], _decode(arrays["test_jpeg"], arrays["test_jpeg_offsets"], int(i)))
               for k, i in enumerate(s.val.ids))
    png = s.extra["test_png"]
    assert torch.equal(png.ids, torch.arange(20)) and torch.equal(png.y, y_test)
    assert np.array_equal(unnormalise(png.x, s.info).numpy(), test_pixels)
    assert set(s.info["sha256_ok"].values()) == {None}


def test_compact_decode_is_cached_atomically_and_keyed_by_the_file(tmp_path, monkeypatch):
    path = tmp_path / "cifar10" / "cifar10_compact.npz"
    make_compact(path)
    first = load_dataset("cifar10", data_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "cache" / "cifar10").iterdir())
    assert len(files) == 3 and all(f.endswith(".npy") for f in files)  # no temp files left behind
    calls = []
    real = common_mod.decode_image_buffers
    monkeypatch.setattr(cifar_mod, "decode_image_buffers", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_dataset("cifar10", data_dir=tmp_path)
    assert calls == [] and torch.equal(again.train.x, first.train.x)  # read from the cache
    make_compact(path, seed=1)  # a changed source file (new mtime/size) is decoded afresh
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = load_dataset("cifar10", data_dir=tmp_path)
    assert len(calls) == 3 and not torch.equal(changed.train.x, first.train.x)


def test_sha256_check_warns_on_mismatch(tmp_path, monkeypatch):
    make_compact(tmp_path / "cifar10_compact.npz")
    decoded = cifar_mod.decode_compact(tmp_path / "cifar10_compact.npz")
    right = hashlib.sha256(decoded["train_jpeg"].tobytes()).hexdigest()
    monkeypatch.setattr(cifar_mod, "EXPECTED_SHA256", {"train_jpeg": ((30, 32, 32, 3), right),
                                                       "test_png": ((20, 32, 32, 3), "0" * 64)})
    with pytest.warns(UserWarning, match="CIFAR-10 test_png: the decoded pixels have SHA-256"):
        s = load_dataset("cifar10", data_dir=tmp_path)
    assert s.info["sha256_ok"] == {"train_jpeg": True, "test_jpeg": None, "test_png": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cifar_mod.check_sha256("train_jpeg", decoded["train_jpeg"]) is True


def test_corrupt_compact_file_is_a_clear_error(tmp_path):
    arrays, _ = make_compact(tmp_path / "cifar10_compact.npz")
    data = (tmp_path / "cifar10_compact.npz").read_bytes()
    (tmp_path / "cifar10_compact.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cifar10_compact\.npz: not a readable \.npz file"):
        load_dataset("cifar10", data_dir=tmp_path)
    arrays["train_jpeg_offsets"] = arrays["train_jpeg_offsets"] + 1
    np.savez(tmp_path / "cifar10_compact.npz", **arrays)
    with pytest.raises(ValueError, match=r"cifar10_compact\.npz train_jpeg: offsets do not cut"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------- cifar-10-batches-py

class Call:
    """``module.name(*args)`` in a pickle: a global, an argument tuple and REDUCE (for the malicious files)."""

    def __init__(self, module, name, *args):
        self.module, self.name, self.args = module, name, args


class PickleWriter:
    """Pickle bytes built opcode by opcode (the tests never import :mod:`pickle`).

    ``style`` ``"py2"`` writes as Python 2's cPickle wrote the real CIFAR-10 batches (protocol 2, Python 2 strings
    as ``SHORT_BINSTRING``/``BINSTRING``, numpy 1.x's ``numpy.core.multiarray._reconstruct`` + ``BUILD`` with the
    pixels as one string, memo from 1); ``2``, ``3``, ``4``, ``5`` as Python 3 and numpy 2 write with that protocol
    (2: bytes as ``_codecs.encode(text, "latin1")``; 3: ``BINBYTES``; 4: framed, ``STACK_GLOBAL``, ``MEMOIZE``;
    5: arrays as ``numpy._core.numeric._frombuffer`` of a ``BYTEARRAY8``). Like the pickler it memoises strings,
    containers, globals and call results, and writes a global or container met again as a memo ``GET``.
    Values: dict, list, tuple, bytes, str, int, bool, None, numpy arrays, :class:`Call`.
    """

    def __init__(self, style):
        assert style in ("py2", 2, 3, 4, 5)
        self.style, self.proto = style, 2 if style == "py2" else style
        self.numpy_core = "numpy.core" if style == "py2" else "numpy._core"
        self.out, self.memo, self.count = bytearray(), {}, 0

    def dumps(self, obj) -> bytes:
        self.out, self.memo, self.count = bytearray(), {}, 0
        self.save(obj)
        body = bytes(self.out) + b"."  # STOP
        head = b"\x80" + bytes([self.proto])  # PROTO
        if self.proto >= 4:
            head += b"\x95" + len(body).to_bytes(8, "little")  # FRAME: the rest is one frame
        return head + body

    def op(self, code: bytes, payload: bytes = b""):
        self.out += code + payload

    def put(self, key=None):
        index = self.count + (1 if self.style == "py2" else 0)  # cPickle counts from 1
        self.count += 1
        if key is not None:  # what may be met again (globals, lists, dicts)
            self.memo[key] = index
        if self.proto >= 4:
            self.op(b"\x94")  # MEMOIZE
        else:
            # BINPUT, or LONG_BINPUT past 255
            self.op(b"q", bytes([index])) if index < 256 else self.op(b"r", index.to_bytes(4, "little"))

    def get(self, key) -> bool:
        if key not in self.memo:
            return False
        index = self.memo[key]
        self.op(b"h", bytes([index])) if index < 256 else self.op(b"j", index.to_bytes(4, "little"))  # (LONG_)BINGET
        return True

    def save(self, v):
        if isinstance(v, (list, dict)) and self.get(id(v)):
            return
        if v is None:
            self.op(b"N")
        elif isinstance(v, bool):
            self.op(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            self.save_int(v)
        elif isinstance(v, (bytes, bytearray)):
            self.save_bytes(bytes(v))
        elif isinstance(v, str):
            raw = v.encode("utf-8")
            if self.proto >= 4 and len(raw) < 256:
                self.op(b"\x8c", bytes([len(raw)]) + raw)  # SHORT_BINUNICODE
            else:
                self.op(b"X", len(raw).to_bytes(4, "little") + raw)  # BINUNICODE
            self.put()
        elif isinstance(v, tuple):
            if len(v) <= 3:
                for x in v:
                    self.save(x)
                self.op([b")", b"\x85", b"\x86", b"\x87"][len(v)])  # EMPTY_TUPLE, TUPLE1..3
            else:
                self.op(b"(")
                for x in v:
                    self.save(x)
                self.op(b"t")
            if v:
                self.put()
        elif isinstance(v, list):
            self.op(b"]")  # EMPTY_LIST, then MARK ... APPENDS in chunks of 1000 as the pickler does
            self.put(id(v))
            for i in range(0, len(v), 1000):
                self.op(b"(")
                for x in v[i:i + 1000]:
                    self.save(x)
                self.op(b"e")
        elif isinstance(v, dict):
            self.op(b"}")  # EMPTY_DICT, then MARK key value ... SETITEMS
            self.put(id(v))
            if v:
                self.op(b"(")
                for k, x in v.items():
                    self.save(k)
                    self.save(x)
                self.op(b"u")
        elif isinstance(v, np.ndarray):
            self.save_array(v)
        elif isinstance(v, Call):
            self.save_global(v.module, v.name)
            self.save(tuple(v.args))
            self.op(b"R")  # REDUCE
            self.put()
        else:
            raise TypeError(type(v))

    def save_int(self, v):
        if 0 <= v < 256:
            self.op(b"K", bytes([v]))  # BININT1
        elif 0 <= v < 65536:
            self.op(b"M", v.to_bytes(2, "little"))  # BININT2
        elif -2**31 <= v < 2**31:
            self.op(b"J", v.to_bytes(4, "little", signed=True))  # BININT
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.op(b"\x8a", bytes([len(raw)]) + raw)  # LONG1

    def save_bytes(self, raw):
        if self.style == "py2":  # a Python 2 str
            if len(raw) < 256:
                self.op(b"U", bytes([len(raw)]) + raw)  # SHORT_BINSTRING
            else:
                self.op(b"T", len(raw).to_bytes(4, "little") + raw)  # BINSTRING
        elif self.proto == 2:  # Python 3, protocol 2: _codecs.encode(text, "latin1"), or bytes() when empty
            self.save(Call("_codecs", "encode", raw.decode("latin-1"), "latin1") if raw
                      else Call("__builtin__", "bytes"))
            return
        elif len(raw) < 256:
            self.op(b"C", bytes([len(raw)]) + raw)  # SHORT_BINBYTES
        else:
            self.op(b"B", len(raw).to_bytes(4, "little") + raw)  # BINBYTES
        self.put()

    def save_global(self, module, name):
        if self.get(("global", module, name)):
            return
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.op(b"\x93")  # STACK_GLOBAL
        else:
            self.op(b"c", f"{module}\n{name}\n".encode())  # GLOBAL
        self.put(("global", module, name))

    def text(self, s):  # a Python 2 str in py2 files, else str
        return s.encode() if self.style == "py2" else s

    def save_dtype(self, dtype):  # dtype(code, False, True), then BUILD with (3, byte order, None x 3, -1, -1, 0)
        self.save_global("numpy", "dtype")
        self.save((self.text(dtype.str[1:]), *((0, 1) if self.style == "py2" else (False, True))))
        self.op(b"R")
        self.put()
        self.save((3, self.text("|" if dtype.itemsize == 1 else dtype.str[0]), None, None, None, -1, -1, 0))
        self.op(b"b")  # BUILD

    def save_array(self, a):
        a = np.ascontiguousarray(a)
        if self.proto >= 5:  # _frombuffer(bytearray, dtype, shape, "C")
            self.save_global(f"{self.numpy_core}.numeric", "_frombuffer")
            self.op(b"(")
            raw = a.tobytes()
            self.op(b"\x96", len(raw).to_bytes(8, "little") + raw)  # BYTEARRAY8
            self.put()
            self.save_dtype(a.dtype)
            self.save(tuple(a.shape))
            self.save("C")
            self.op(b"t")
            self.op(b"R")
            self.put()
            return
        self.save_global(f"{self.numpy_core}.multiarray", "_reconstruct")  # _reconstruct(ndarray, (0,), b"b")
        self.save_global("numpy", "ndarray")
        self.save((0,))
        self.save(b"b")
        self.op(b"\x87")
        self.op(b"R")
        self.put()
        self.op(b"(")  # state (1, shape, dtype, is_fortran, raw bytes), then BUILD
        self.save(1)
        self.save(tuple(a.shape))
        self.save_dtype(a.dtype)
        self.save(False)
        self.save(a.tobytes())
        self.op(b"t")
        self.op(b"b")


def dumps(obj, style="py2") -> bytes:
    return PickleWriter(style).dumps(obj)


STYLES = ["py2", 2, 3, 4, 5]


def make_batches(folder, per_batch=4, n_test=20, seed=0, protocol="py2"):
    """Fake batches laid out exactly as the real files: dicts with bytes keys, data (n, 3072) uint8 R,G,B planes,
    written as Python 2's cPickle did (``protocol="py2"``) or as Python 3 does with protocol 2 to 5;
    ``data_batch_2`` always with Python 3's protocol 2."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True)
    batches = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)] if name != "test_batch" else [k % 10 for k in range(n)]
        d = {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}_{k}.png".encode() for k in range(n)]}
        (folder / name).write_bytes(dumps(d, 2 if name == "data_batch_2" else protocol))
        batches.append((data, labels))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [f"class{c}".encode() for c in range(10)],
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta, protocol))
    return batches


def test_pickle_writer_writes_the_layout_of_the_real_files():
    """The opcodes of a tiny batch as Python 2 wrote CIFAR-10 (memo opcodes left out)."""
    blob = dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [7]})
    ops = [(name, arg) for name, arg, _ in read_opcodes(blob) if name not in ("BINPUT", "BINGET")]
    array = [("GLOBAL", "numpy.core.multiarray _reconstruct"), ("GLOBAL", "numpy ndarray"), ("BININT1", 0),
             ("TUPLE1", None), ("SHORT_BINSTRING", "b"), ("TUPLE3", None), ("REDUCE", None), ("MARK", None),
             ("BININT1", 1), ("BININT1", 1), ("BININT2", 3072), ("TUPLE2", None),
             ("GLOBAL", "numpy dtype"), ("SHORT_BINSTRING", "u1"), ("BININT1", 0), ("BININT1", 1), ("TUPLE3", None),
             ("REDUCE", None), ("MARK", None), ("BININT1", 3), ("SHORT_BINSTRING", "|"), ("NONE", None),
             ("NONE", None), ("NONE", None), ("BININT", -1), ("BININT", -1), ("BININT1", 0), ("TUPLE", None),
             ("BUILD", None), ("NEWFALSE", None), ("BINSTRING", "\x00" * 3072), ("TUPLE", None), ("BUILD", None)]
    assert ops == [("PROTO", 2), ("EMPTY_DICT", None), ("MARK", None), ("SHORT_BINSTRING", "data"), *array,
                   ("SHORT_BINSTRING", "labels"), ("EMPTY_LIST", None), ("MARK", None), ("BININT1", 7),
                   ("APPENDS", None), ("SETITEMS", None), ("STOP", None)]


@pytest.mark.parametrize("protocol", STYLES)
def test_batches_folder_loads_in_official_order(tmp_path, protocol):
    batches = make_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    make_compact(tmp_path / "cifar10" / "cifar10_compact.npz")  # the original pixels are preferred
    s = load_dataset("cifar10", data_dir=tmp_path, split_seed=1)
    assert s.info["format"] == "cifar-10-batches-py" and s.class_names == [f"class{c}" for c in range(10)]
    train_data = np.concatenate([d for d, _ in batches[:5]])
    train_labels = sum((lab for _, lab in batches[:5]), [])
    assert len(s.train) == 20 and torch.equal(s.train.ids, torch.arange(20))
    assert s.train.y.tolist() == train_labels
    expected = train_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes of 32x32
    assert np.array_equal(unnormalise(s.train.x, s.info).numpy(), expected)
    test_data, test_labels = batches[5]
    assert sorted(torch.cat([s.val.ids, s.test.ids]).tolist()) == list(range(20)) and len(s.val) == 10
    assert s.val.y.tolist() == [test_labels[i] for i in s.val.ids.tolist()]
    got = unnormalise(s.test.x, s.info).numpy()
    assert np.array_equal(got, test_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)[s.test.ids.numpy()])
    assert s.extra == {}


@pytest.mark.parametrize("protocol", STYLES)
def test_batch_files_parse_to_the_arrays_and_labels(tmp_path, protocol):
    batches = make_batches(tmp_path / "b", per_batch=3, n_test=5, protocol=protocol)
    d = restricted_load(tmp_path / "b" / "data_batch_1")
    assert sorted(d) == [b"batch_label", b"data", b"filenames", b"labels"]  # bytes keys, as in the real files
    data, labels = batches[0]
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (3, 3072) and np.array_equal(d[b"data"], data)
    assert d[b"data"].flags.writeable and d[b"labels"] == labels and all(type(v) is int for v in d[b"labels"])
    assert d[b"batch_label"] == b"batch 0" and d[b"filenames"] == [b"img_0_0.png", b"img_0_1.png", b"img_0_2.png"]
    meta = restricted_load(tmp_path / "b" / "batches.meta")
    assert meta[b"label_names"] == [f"class{c}".encode() for c in range(10)] and meta[b"num_vis"] == 3072
    arrays = cifar_mod.read_cifar_batches(tmp_path / "b")
    assert arrays["x_train"].shape == (15, 32, 32, 3) and arrays["y_train"].dtype == np.int64
    assert np.array_equal(arrays["x_test"], batches[5][0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert arrays["class_names"] == [f"class{c}" for c in range(10)]
    # str keys and values, other dtypes, shapes, Fortran order, big and negative ints, shared sub-lists
    shared = [1, 2]
    obj = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "f": np.arange(6.0).reshape(2, 3), "s": "é∆",
           "t": (1, None, True, -7, 2**70, -2**40, 70000), "e": np.zeros((0, 5), np.uint8), "l": [shared, shared]}
    (tmp_path / "x").write_bytes(dumps(obj, protocol))
    got = restricted_load(tmp_path / "x")
    assert got["a"].dtype == np.int32 and got["a"].tolist() == obj["a"].tolist()
    assert got["f"].dtype == np.float64 and got["f"].tolist() == obj["f"].tolist()
    assert got["e"].shape == (0, 5) and got["s"] == "é∆" and got["t"] == obj["t"]
    assert got["l"] == [[1, 2], [1, 2]] and got["l"][0] is got["l"][1]


def _evil_files(tmp_path, marker):
    """Malicious pickles, written opcode by opcode; each would run a command (or more) if unpickled."""
    cmd = f"touch {marker}"
    files = {
        "global_os_system": dumps({b"data": Call("os", "system", cmd), b"labels": [1]}, 2),
        "stack_global_posix_system": dumps({b"data": Call("posix", "system", cmd), b"labels": [1]}, 4),
        "builtin_eval": dumps([Call("__builtin__", "eval", f"__import__('os').system({cmd!r})")], 2),
        "builtins_eval": dumps([Call("builtins", "eval", f"__import__('os').system({cmd!r})")], 5),
        "builtins_getattr": dumps(Call("builtins", "getattr", Call("builtins", "__import__", "os"), "system"), 3),
        # INST os system (protocol 0: imports and calls in one opcode)
        "inst": b"(S'" + cmd.encode() + b"'\nios\nsystem\n.",
        # an allowed name used through another call opcode: NEWOBJ numpy.ndarray
        "newobj": b"\x80\x02cnumpy\nndarray\n)\x81.",
        # the extension registry (names a global by number)
        "ext1": b"\x80\x02\x82\x01)R.",
        # persistent ids
        "persid": b"\x80\x02X\x01\x00\x00\x00aQ.",
        # REDUCE on something that is not a global, BUILD on a dict (would call __setstate__ / update)
        "reduce_non_global": b"\x80\x02])R.",
        "build_dict": b"\x80\x02}}b.",
        # _codecs.encode with another codec; a numpy array of Python objects
        "codecs_rot13": dumps(Call("_codecs", "encode", "abc", "rot13"), 2),
    }
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    w = PickleWriter(3)  # an array of Python objects: its "raw data" would be a list of arbitrary objects
    w.save_dtype = lambda dtype: PickleWriter.save_dtype(w, np.dtype(object))
    (tmp_path / "object_dtype").write_bytes(w.dumps(np.zeros(1, np.uint8)))
    return list(files) + ["object_dtype"]


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)  # were anything called, it would show
    names = _evil_files(tmp_path, marker)
    with pytest.raises(UnsafePickleError, match=r"refusing to load the global (posix|os|nt)\.system"):
        restricted_load(tmp_path / "global_os_system")
    with pytest.raises(UnsafePickleError, match=r"refusing to load the global (posix|os|nt)\.system"):
        restricted_load(tmp_path / "stack_global_posix_system")
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        restricted_load(tmp_path / "builtin_eval")
    for name in names:
        with pytest.raises(UnsafePickleError, match=rf"{name}: .*not a CIFAR-10 python batch") as info:
            restricted_load(tmp_path / name)
        assert isinstance(info.value, ValueError)
    assert not marker.exists() and calls == []
    # a malicious batch inside an otherwise valid folder stops the load, nothing runs
    make_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes((tmp_path / "global_os_system").read_bytes())
    with pytest.raises(UnsafePickleError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists() and calls == []
    # numpy arrays (pickle protocols 2 to 5) still load
    for proto in STYLES:
        (tmp_path / "ok").write_bytes(dumps({b"a": np.arange(6, dtype=np.uint8).reshape(2, 3)}, proto))
        assert restricted_load(tmp_path / "ok")[b"a"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_the_reader_imports_nothing(tmp_path, monkeypatch):
    """Reading a batch, or refusing one, imports no module: not the numpy ones a file names, not any other."""
    make_batches(tmp_path / "b")  # names numpy.core.multiarray, as the real files do
    (tmp_path / "evil").write_bytes(dumps(Call("pgu_no_such_module", "run", "x"), 2))
    before, attempts = set(sys.modules), []

    class Spy:  # sees every import that reaches the finders (builtins.__import__, importlib.import_module, ...)
        def find_spec(self, name, path=None, target=None):
            attempts.append(name)

    monkeypatch.setattr(sys, "meta_path", [Spy(), *sys.meta_path])
    assert restricted_load(tmp_path / "b" / "data_batch_1")[b"data"].shape == (4, 3072)
    with pytest.raises(UnsafePickleError, match=r"pgu_no_such_module\.run"):
        restricted_load(tmp_path / "evil")
    assert attempts == [] and set(sys.modules) == before


@pytest.mark.parametrize("protocol", STYLES)
def test_truncated_or_garbled_files_are_refused_cleanly(tmp_path, protocol):
    blob = dumps({b"data": np.arange(3072 * 2, dtype=np.uint64).astype(np.uint8).reshape(2, 3072),
                  b"labels": [1, 2], b"filenames": [b"a.png", b"b.png"]}, protocol)
    path = tmp_path / "test_batch"
    for cut in sorted(set(range(0, len(blob), 97)) | set(range(len(blob) - 40, len(blob)))):
        path.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match=r"test_batch: corrupt or truncated pickle"):
            restricted_load(path)
    for junk in (b"\xff\xfe\xfd", b"\x80\x09.", b"\x80\x02.", b"\x80\x02(t0.", b"\x80\x02h\x05.", b"\x80\x02NN."):
        path.write_bytes(junk)  # unknown opcode, unknown protocol, empty stack, mark left, unset memo, 2 values
        with pytest.raises(ValueError, match=r"test_batch: corrupt or truncated pickle.*not a CIFAR-10 python batch"):
            restricted_load(path)


def test_corrupt_batch_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_batches(folder)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="test_batch: corrupt or truncated pickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array \(N, 3072\)"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(dumps([1, 2]))
    with pytest.raises(ValueError, match="test_batch: expected a pickled dict, got list: not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------- the real shared file

@pytest.mark.slow
def test_real_cifar10_compact_file():
    path = SHARED / "cifar10" / "cifar10_compact.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = load_dataset("cifar10", data_dir=SHARED)
    assert s.info["sha256_ok"] == {"train_jpeg": True, "test_jpeg": True, "test_png": True}
    assert (len(s.train), len(s.val), len(s.test), len(s.extra["test_png"])) == (50000, 5000, 5000, 10000)
    assert s.input_shape == (3, 32, 32) and s.class_names == NAMES
    assert torch.bincount(s.train.y).tolist() == [5000] * 10
    assert torch.bincount(s.val.y).tolist() == [500] * 10 == torch.bincount(s.test.y).tolist()
    assert torch.equal(s.train.ids, torch.arange(50000))
    assert sorted(torch.cat([s.val.ids, s.test.ids]).tolist()) == list(range(10000))
    assert torch.equal(s.extra["test_png"].y[s.val.ids], s.val.y)
    assert s.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    cold = time.time() - start
    start = time.time()
    again = load_dataset("cifar10", data_dir=SHARED)  # from the cache
    assert time.time() - start < cold and torch.equal(again.val.x, s.val.x)


def test_opcode_stream_reads_protocol_0_text_and_refuses_what_it_cannot_read():
    """The text opcodes of protocol 0, hand-written: {'a': 5, 'b': [1, -2, 1.5, True]} (keys as bytes)."""
    stream = b"(dp0\nS'a'\np1\nI5\nsS'b'\np2\n(lp3\nI1\naL-2L\naF1.5\naI01\nas."
    assert [name for name, _, _ in read_opcodes(stream)][:4] == ["MARK", "DICT", "PUT", "STRING"]
    assert cifar_mod.RestrictedUnpickler(stream).load() == {b"a": 5, b"b": [1, -2, 1.5, True]}
    with pytest.raises(ValueError, match="unknown opcode"):
        list(read_opcodes(b"\x80\x02\xff."))
    with pytest.raises(ValueError, match="truncated"):
        list(read_opcodes(b"\x80\x02X\x10\x00\x00\x00abc"))
    with pytest.raises(ValueError, match="quoted"):
        list(read_opcodes(b"Sabc\n."))
    # an instance opcode is yielded without its argument and ends the stream
    assert list(read_opcodes(b"(ios\nsystem\n.")) == [("MARK", None, 0), ("INST", None, 1)]


def test_first_per_class_keeps_each_class_head_in_order():
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1, 0, 1])
    assert first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4, 6]
    assert first_per_class(labels, 3).tolist() == list(range(9))
    with pytest.raises(ValueError, match="fewer than the 4"):
        first_per_class(labels, 4)


def test_cifar10_10k_is_cifar10_with_the_first_images_of_each_class(tmp_path, monkeypatch):
    make_batches(tmp_path / "cifar-10-batches-py", per_batch=12)
    full = load_dataset("cifar10", data_dir=tmp_path)
    per_class = int(torch.bincount(full.train.y, minlength=10).min())
    assert per_class >= 1
    monkeypatch.setattr(cifar_mod, "MEMORIZE_PER_CLASS", per_class)
    small = load_dataset("cifar10-10k", data_dir=tmp_path)
    assert small.name == "cifar10-10k" and len(small.train) == 10 * per_class
    assert torch.bincount(small.train.y).tolist() == [per_class] * 10
    for c in range(10):  # the first images of each class in the official order, under their official ids
        assert small.train.ids[small.train.y == c].tolist() == full.train.ids[full.train.y == c][:per_class].tolist()
    same = full.train.positions_of(small.train.ids)
    assert torch.equal(small.train.x, full.train.x[same])  # the same inputs: cifar10's normalisation
    for split in ("val", "test"):
        assert torch.equal(getattr(small, split).x, getattr(full, split).x)
        assert torch.equal(getattr(small, split).ids, getattr(full, split).ids)
    monkeypatch.setattr(cifar_mod, "MEMORIZE_PER_CLASS", 10_000)
    with pytest.raises(ValueError, match="fewer than"):
        load_dataset("cifar10-10k", data_dir=tmp_path)
