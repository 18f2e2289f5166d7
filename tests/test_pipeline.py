"""The pieces the demo is built from: dataset registry, splits, loader, model registry, trainer."""

import pytest
import torch

from pgu.data import TensorLoader, available_datasets, load_dataset, per_class_split
from pgu.zoo.models import available_models, build_model
from pgu.zoo.training import TrainConfig, train_model


def test_digits_splits_are_disjoint_stratified_and_normalised():
    s = load_dataset("digits")
    ids = [set(p.ids.tolist()) for p in (s.train, s.val, s.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == 1797
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    counts = torch.bincount(s.val.y, minlength=10) - torch.bincount(s.test.y, minlength=10)
    assert counts.abs().max() <= 1  # val and test are per-class halves
    assert abs(float(s.train.x.mean())) < 1e-4 and abs(float(s.train.x.std()) - 1) < 1e-4
    again = load_dataset("digits")
    assert torch.equal(again.train.ids, s.train.ids) and torch.equal(again.train.x, s.train.x)
    assert not torch.equal(load_dataset("digits", split_seed=1).train.ids, s.train.ids)


def test_ids_map_back_to_positions():
    s = load_dataset("digits")
    chosen = s.train.ids[[5, 2, 9]]
    assert s.train.positions_of(chosen).tolist() == [5, 2, 9]
    assert int(s.train.mask_of(chosen).sum()) == 3
    with pytest.raises(KeyError, match="not in this set"):
        s.train.positions_of([s.val.ids[0]])


def test_per_class_split_partitions_each_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)
    a, b = per_class_split(labels, 0.6, seed=3)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(18))
    assert torch.bincount(labels[a]).tolist() == [6, 3, 2]


def test_tensor_loader_covers_every_sample_and_is_reproducible():
    x, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    loader = TensorLoader(x, y, batch_size=4, shuffle=True, seed=7)
    first = torch.cat([b for _, b in loader])
    second = torch.cat([b for _, b in loader])
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 3
    assert not torch.equal(first, second)  # a new order every pass
    assert torch.equal(first, torch.cat([b for _, b in TensorLoader(x, y, batch_size=4, shuffle=True, seed=7)]))
    assert [len(b) for _, b in TensorLoader(x, y, batch_size=4, drop_last=True)] == [4, 4]


def test_registries_refuse_unknown_names():
    assert "digits" in available_datasets() and "digits-cnn" in available_models()
    with pytest.raises(ValueError, match="unknown dataset 'nope'; available: digits"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", num_classes=10, in_channels=1)


@pytest.mark.parametrize("width", [0.5, 1.0, 2.0])
def test_digits_cnn_shapes(width):
    net = build_model("digits-cnn", num_classes=7, in_channels=3, width=width)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 7)


def test_training_is_deterministic_and_learns():
    s = load_dataset("digits")
    cfg = TrainConfig(epochs=3, seed=1)
    a = train_model("digits-cnn", s, cfg, subset=s.train.y < 5)
    b = train_model("digits-cnn", s, cfg, subset=s.train.y < 5)
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    assert a.samples_seen == 3 * int((s.train.y < 5).sum())
