"""Tiny ImageNet on a small generated folder in the tiny-imagenet-200 layout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgu.data import DatasetNotFoundError, load_dataset
from pgu.data import tinyimagenet as tin

WNIDS = ["n03444034", "n01443537", "n02124075"]  # deliberately unsorted, as in the real wnids.txt


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("PGU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PGU_DATA_DIR", raising=False)


def make_tiny(root, n_train=3, n_val=4, seed=0):
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "val" / "images").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)  # unlabelled, ignored
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                    "n03444034\tgo-kart\nn09999999\tnot in this set\n")

    def image(grey=False):
        small = rng.integers(0, 256, (8, 8) if grey else (8, 8, 3), dtype=np.uint8)
        return Image.fromarray(small).resize((64, 64), Image.NEAREST)

    for w in WNIDS:
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(n_train):
            image(grey=(k == 1)).save(folder / f"{w}_{k}.JPEG", quality=90)
    lines = []
    for k in range(n_val * len(WNIDS)):
        w = WNIDS[int(rng.integers(len(WNIDS)))] if k >= len(WNIDS) * 2 else WNIDS[k % len(WNIDS)]
        image().save(root / "val" / "images" / f"val_{k}.JPEG", quality=90)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return lines


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def unnormalise(x, info):
    mean = torch.tensor(info["normalise"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["normalise"]["std"]).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def test_generated_folder_loads_with_official_order_ids_and_halves(tmp_path):
    root = tmp_path / "data" / "tiny-imagenet-200"
    lines = make_tiny(root)
    s = load_dataset("tinyimagenet", data_dir=tmp_path / "data", split_seed=3)
    order = sorted(WNIDS)
    assert s.info["wnids"] == order and s.class_names == ["goldfish", "Egyptian cat", "go-kart"]
    assert s.input_shape == (3, 64, 64) and s.num_classes == 3 and s.train.x.dtype == torch.float32
    assert torch.equal(s.train.ids, torch.arange(9)) and s.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    train_files = [root / "train" / w / "images" / f"{w}_{k}.JPEG" for w in order for k in range(3)]
    got = unnormalise(s.train.x, s.info).numpy()
    assert all(np.array_equal(got[i], _pixels(f)) for i, f in enumerate(train_files))  # grey ones as RGB too
    # held-out: val/ in val_annotations.txt order, split per class in halves
    val_labels = [order.index(line.split("\t")[1]) for line in lines]
    assert sorted(torch.cat([s.val.ids, s.test.ids]).tolist()) == list(range(len(lines)))
    assert s.val.y.tolist() == [val_labels[i] for i in s.val.ids.tolist()]
    diff = torch.bincount(s.val.y, minlength=3) - torch.bincount(s.test.y, minlength=3)
    assert diff.abs().max() <= 1
    got = unnormalise(s.test.x, s.info).numpy()
    assert all(np.array_equal(got[k], _pixels(root / "val" / "images" / lines[i].split("\t")[0]))
               for k, i in enumerate(s.test.ids.tolist()))
    assert s.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_decoded_images_are_cached(tmp_path, monkeypatch):
    make_tiny(tmp_path / "tiny-imagenet-200")
    first = load_dataset("tinyimagenet", data_dir=tmp_path)
    assert len(list((tmp_path / "cache" / "tinyimagenet").glob("*.npy"))) == 2
    monkeypatch.setattr(tin, "decode_image_files", lambda *a, **k: pytest.fail("decoded again"))
    again = load_dataset("tinyimagenet", data_dir=tmp_path)
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.val.ids, first.val.ids)


def test_malformed_folder_and_missing_data(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    lines = make_tiny(root)
    ann = root / "val" / "val_annotations.txt"
    ann.write_text("\n".join(lines + ["val_0.JPEG\tn00000000\t0\t0\t1\t1"]))
    with pytest.raises(ValueError, match=r"val_annotations.txt line 13: class 'n00000000' is not in"):
        load_dataset("tinyimagenet", data_dir=tmp_path)
    ann.write_text("\n".join(lines))
    (root / "val" / "images" / "val_5.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"val_5.JPEG: does not decode as an image"):
        load_dataset("tinyimagenet", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200") as err:
        load_dataset("tinyimagenet", data_dir=tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "tiny-imagenet-200") in str(err.value)
