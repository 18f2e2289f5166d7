"""CIFAR-10: the compact npz (generated small copy; the real file in one slow test), the decode cache,
the SHA-256 check, the cifar-10-batches-py pickles and the restricted unpickler."""

import hashlib
import io
import os
import pickle
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
    smooth = lambda n: np.repeat(np.repeat(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), 4, 1), 4, 2)
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
    assert all(np.array_equal(got[i], _decode(arrays["train_jpeg"], arrays["train_jpeg_offsets"], i)) for i in range(30))
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

def make_batches(folder, per_batch=4, n_test=20, seed=0, protocol=pickle.DEFAULT_PROTOCOL):
    """Fake batches laid out exactly as the real files: dicts with bytes keys, data (n, 3072) uint8 R,G,B planes."""
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
        (folder / name).write_bytes(pickle.dumps(d, protocol=2 if name == "data_batch_2" else protocol))
        batches.append((data, labels))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [f"class{c}".encode() for c in range(10)],
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches


def test_batches_folder_loads_in_official_order(tmp_path):
    batches = make_batches(tmp_path / "cifar-10-batches-py")
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


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": _Evil(f"touch {marker}"), b"labels": [1]}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load the global (posix|os|nt)\.system"):
        restricted_load(evil)
    assert not marker.exists()
    (tmp_path / "evil2").write_bytes(pickle.dumps([_EvalEvil()], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        restricted_load(tmp_path / "evil2")
    # a malicious batch inside an otherwise valid folder stops the load, nothing runs
    make_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil.read_bytes())
    with pytest.raises(UnsafePickleError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    # numpy arrays (pickle protocols 2 to 5) still load
    for proto in (2, 3, 4, 5):
        (tmp_path / "ok").write_bytes(pickle.dumps({b"a": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=proto))
        assert restricted_load(tmp_path / "ok")[b"a"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_corrupt_batch_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_batches(folder)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="test_batch: corrupt or truncated pickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array \(N, 3072\)"):
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
