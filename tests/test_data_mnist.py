"""MNIST / Fashion-MNIST loaders, the IDX parser, missing and corrupt data, the data-dir rules."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pgu.data import DatasetNotFoundError, load_dataset, read_idx
from pgu.data import mnist as mnist_mod
from pgu.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC

SHARED = Path(os.environ.get("PGU_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("PGU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PGU_DATA_DIR", raising=False)


def write_idx(path, arr, type_code=0x08, compress=False):
    """A hand-made IDX file: magic 0x0000TTDD, big-endian dims, big-endian data."""
    arr = np.asarray(arr)
    big = arr.astype(arr.dtype.newbyteorder(">"))
    payload = struct.pack(">I", (type_code << 8) | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def fake_mnist_folder(folder, n_train=30, n_test=20, seed=0, compress=(True, False, True, False)):
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": np.arange(n_train, dtype=np.uint8) % 10,
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.permutation(np.arange(n_test, dtype=np.uint8) % 10)}
    for (key, stem), gz in zip(mnist_mod.IDX_NAMES.items(), compress):
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key], compress=gz)
    return arrays


def unnormalise(x, info):
    mean = torch.tensor(info["normalise"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["normalise"]["std"]).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def check_official_splits(s, arrays, n_classes=10):
    """train is the whole training set in order; val/test are per-class halves of the test set; ids index it."""
    n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    assert s.train.x.dtype == torch.float32 and s.train.y.dtype == torch.int64 and s.train.ids.dtype == torch.int64
    assert s.input_shape == (1, 28, 28) and s.num_classes == n_classes
    assert torch.equal(s.train.ids, torch.arange(n_train))
    assert torch.equal(s.train.y, torch.as_tensor(arrays["y_train"], dtype=torch.long))
    assert sorted(torch.cat([s.val.ids, s.test.ids]).tolist()) == list(range(n_test))
    y_test = torch.as_tensor(arrays["y_test"], dtype=torch.long)
    assert torch.equal(s.val.y, y_test[s.val.ids]) and torch.equal(s.test.y, y_test[s.test.ids])
    diff = torch.bincount(s.val.y, minlength=n_classes) - torch.bincount(s.test.y, minlength=n_classes)
    assert diff.abs().max() <= 1
    assert abs(float(s.train.x.mean())) < 1e-3 and abs(float(s.train.x.std()) - 1) < 1e-3
    assert torch.equal(unnormalise(s.val.x[:50, :], s.info)[:, 0], torch.as_tensor(arrays["x_test"])[s.val.ids[:50]])
    assert torch.equal(unnormalise(s.train.x[-50:], s.info)[:, 0], torch.as_tensor(arrays["x_train"])[-50:])


# ---------------------------------------------------------------- IDX parsing

def test_read_idx_hand_made_files(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">IIII", 0x00000803, 2, 3, 4) + imgs.tobytes()
    (tmp_path / "imgs").write_bytes(raw)
    (tmp_path / "imgs.gz").write_bytes(gzip.compress(raw))
    for name in ("imgs", "imgs.gz"):
        got = read_idx(tmp_path / name, expect_magic=IDX_IMAGES_MAGIC)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4) and np.array_equal(got, imgs)
    labels = struct.pack(">II", 0x00000801, 5) + bytes([3, 1, 4, 1, 5])
    (tmp_path / "labels").write_bytes(labels)
    assert read_idx(tmp_path / "labels", expect_magic=IDX_LABELS_MAGIC).tolist() == [3, 1, 4, 1, 5]
    # big-endian int32 elements come back as native ints
    (tmp_path / "ints").write_bytes(struct.pack(">II", 0x00000C01, 3) + struct.pack(">3i", 1, -2, 70000))
    assert read_idx(tmp_path / "ints").tolist() == [1, -2, 70000]
    assert np.array_equal(read_idx(write_idx(tmp_path / "w", imgs)), imgs)  # the helper agrees


def test_corrupt_idx_files_say_which_file_and_what(tmp_path):
    good = write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels: wrong IDX magic number 0x00000801, expected 0x00000803"):
        read_idx(good, expect_magic=IDX_IMAGES_MAGIC)
    short = tmp_path / "short"
    short.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"short: wrong length: header says shape \(10,\) .*holds 7 bytes.*truncated"):
        read_idx(short)
    long = tmp_path / "long"
    long.write_bytes(good.read_bytes() + b"xx")
    with pytest.raises(ValueError, match="long: wrong length"):
        read_idx(long)
    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(ValueError, match="junk: not an IDX file"):
        read_idx(junk)
    gz = tmp_path / "trunc.gz"
    gz.write_bytes(gzip.compress(good.read_bytes())[:-8])
    with pytest.raises(ValueError, match="trunc.gz: corrupt or truncated gzip"):
        read_idx(gz)


# ---------------------------------------------------------------- MNIST from generated files

def test_mnist_from_idx_files_in_the_data_dir(tmp_path):
    arrays = fake_mnist_folder(tmp_path / "data" / "mnist")
    s = load_dataset("mnist", data_dir=tmp_path / "data", split_seed=4)
    check_official_splits(s, arrays)
    assert s.info["format"] == "idx" and s.class_names == [str(i) for i in range(10)]
    other = load_dataset("mnist", data_dir=tmp_path / "data", split_seed=5)
    assert not torch.equal(other.val.ids, s.val.ids) and torch.equal(other.train.x, s.train.x)


def test_mnist_from_an_npz_and_from_pgu_data_dir(tmp_path, monkeypatch):
    arrays = fake_mnist_folder(tmp_path / "idx")
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    np.savez_compressed(tmp_path / "data" / "mnist" / "mnist.npz", class_names=np.array([str(i) for i in range(10)]),
                        **arrays)
    monkeypatch.setenv("PGU_DATA_DIR", str(tmp_path / "data"))
    s = load_dataset("mnist")
    check_official_splits(s, arrays)
    assert s.info["format"] == "npz" and s.info["source"].endswith("mnist.npz")


def test_mnist_idx_with_the_wrong_magic_is_a_clear_error(tmp_path):
    folder = tmp_path / "mnist"
    fake_mnist_folder(folder, compress=(False,) * 4)
    (folder / "t10k-images-idx3-ubyte").write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: wrong IDX magic number"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_npz_is_a_clear_error(tmp_path):
    arrays = fake_mnist_folder(tmp_path / "idx", n_train=200)
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **arrays)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"mnist\.npz: not a readable \.npz file, corrupt or truncated"):
        load_dataset("mnist", data_dir=tmp_path)
    np.savez(path, x_train=arrays["x_train"])
    with pytest.raises(ValueError, match=r"mnist\.npz: missing arrays \['y_train', 'x_test', 'y_test'\]"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_data_says_where_it_looked_and_where_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "mnist" / "mnist.npz") in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "mnist.npz" in msg
    with pytest.raises(DatasetNotFoundError, match="PGU_DATA_DIR"):
        load_dataset("mnist")
    for name, hint in [("cifar10", "cifar-10-batches-py"), ("tinyimagenet", "tiny-imagenet-200")]:
        with pytest.raises(DatasetNotFoundError, match=hint) as err:
            load_dataset(name, data_dir=tmp_path / "nowhere")
        assert str(tmp_path / "nowhere") in str(err.value)
    monkeypatch.setattr(mnist_mod, "FASHION_SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion", data_dir=tmp_path)
    assert str(tmp_path / "no-system-copy") in str(err.value) and str(tmp_path / "fashion-mnist") in str(err.value)


def test_fashion_prefers_the_data_dir_then_falls_back_to_the_system_folder(tmp_path, monkeypatch):
    system = fake_mnist_folder(tmp_path / "system", seed=1, compress=(True,) * 4)
    monkeypatch.setattr(mnist_mod, "FASHION_SYSTEM_DIR", tmp_path / "system")
    s = load_dataset("fashion", data_dir=tmp_path / "empty")
    check_official_splits(s, system)
    assert s.info["source"] == str(tmp_path / "system") and s.class_names[0] == "T-shirt/top"
    mine = fake_mnist_folder(tmp_path / "data" / "fashion-mnist", seed=2)
    s = load_dataset("fashion", data_dir=tmp_path / "data")
    check_official_splits(s, mine)
    assert load_dataset("fashion").info["source"] == str(tmp_path / "system")  # no data dir at all


# ---------------------------------------------------------------- the real files, where present

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_from_the_shared_npz():
    path = SHARED / "mnist" / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    s = load_dataset("mnist", data_dir=SHARED)
    assert (len(s.train), len(s.val), len(s.test)) == (60000, 5000, 5000)
    assert torch.bincount(s.train.y).tolist() == MNIST_TRAIN_COUNTS
    assert (torch.bincount(s.val.y) + torch.bincount(s.test.y)).tolist() == MNIST_TEST_COUNTS
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    check_official_splits(s, arrays)
    again = load_dataset("mnist", data_dir=SHARED)
    assert torch.equal(again.val.ids, s.val.ids) and torch.equal(again.test.x, s.test.x)


def test_real_fashion_from_the_debian_package():
    if mnist_mod.find_idx_files(FASHION_DIR) is None:
        pytest.skip(f"{FASHION_DIR} has no Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    s = load_dataset("fashion", data_dir=SHARED)
    assert s.info["source"] == str(FASHION_DIR)
    assert (len(s.train), len(s.val), len(s.test)) == (60000, 5000, 5000)
    assert torch.bincount(s.train.y).tolist() == [6000] * 10
    assert torch.bincount(s.val.y).tolist() == [500] * 10 and torch.bincount(s.test.y).tolist() == [500] * 10
    files = mnist_mod.find_idx_files(FASHION_DIR)
    arrays = {k: read_idx(p) for k, p in files.items()}
    check_official_splits(s, arrays)
