"""Poisoning generators (pgu.data.poisoning): exact labels and pixels under a seed, and the attack success rate."""

import pytest
import torch

from pgu.data import ArrayDataset
from pgu.data.poisoning import add_backdoor, attack_success_rate, flip_labels, stamp_trigger, trigger_values


def toy(n_per_class=20, classes=10, shape=(2, 6, 6)):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.rand(len(y), *shape, generator=g) * 2 - 1
    return ArrayDataset(x, y, torch.arange(len(y)) + 1000)


def test_label_flip_relabels_n_images_each_way_between_disjoint_pairs():
    data = toy()
    poisoned, record = flip_labels(data, 4, n_pairs=5, seed=3)
    flat = [c for pair in record.details["pairs"] for c in pair]
    assert sorted(flat) == list(range(10))  # five disjoint pairs cover the ten classes
    changed = torch.nonzero(poisoned.y != data.y).flatten()
    assert len(changed) == 40 == record.ids.numel()
    assert torch.equal(data.ids[changed], record.ids)  # record sorted by id, as the positions here
    assert torch.equal(data.y[changed], record.true_labels) and torch.equal(poisoned.y[changed], record.poisoned_labels)
    partner = {a: b for a, b in record.details["pairs"]} | {b: a for a, b in record.details["pairs"]}
    for t, p in zip(record.true_labels.tolist(), record.poisoned_labels.tolist()):
        assert partner[t] == p
    for c in range(10):
        assert int((record.true_labels == c).sum()) == 4
    assert torch.equal(poisoned.x, data.x)
    again, record2 = flip_labels(data, 4, n_pairs=5, seed=3)
    assert torch.equal(again.y, poisoned.y) and record2.to_dict() == record.to_dict()
    other, _ = flip_labels(data, 4, n_pairs=5, seed=4)
    assert not torch.equal(other.y, poisoned.y)
    with pytest.raises(ValueError, match="need 12 classes"):
        flip_labels(data, 4, n_pairs=6)
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        flip_labels(data, 21)


def test_backdoor_stamps_exactly_the_corner_of_the_chosen_images_and_relabels_them():
    data = toy()
    poisoned, record = add_backdoor(data, 0.1, target=7, size=2, seed=5)
    others = int((data.y != 7).sum())
    assert record.ids.numel() == round(0.1 * others) == 18
    assert (record.true_labels != 7).all() and (record.poisoned_labels == 7).all()
    pos = torch.nonzero(torch.isin(data.ids, record.ids)).flatten()
    untouched = torch.ones(len(data), dtype=torch.bool)
    untouched[pos] = False
    assert (torch.equal(poisoned.x[untouched], data.x[untouched])
            and torch.equal(poisoned.y[untouched], data.y[untouched]))
    top = data.x.amax(dim=(0, 2, 3))
    assert torch.equal(trigger_values(data.x), top)
    for i in pos.tolist():
        expected = data.x[i].clone()
        expected[:, 4:, 4:] = top.view(-1, 1, 1)  # the bottom-right 2 x 2 of a 6 x 6 image
        assert torch.equal(poisoned.x[i], expected)
        assert poisoned.y[i] == 7
    again, _ = add_backdoor(data, 0.1, target=7, size=2, seed=5)
    assert torch.equal(again.x, poisoned.x)
    with pytest.raises(ValueError, match="target class 12"):
        add_backdoor(data, 0.1, target=12)
    with pytest.raises(ValueError, match="trigger size"):
        stamp_trigger(data.x[:1], top, size=7)


def test_attack_success_rate_counts_target_predictions_on_other_classes_only():
    labels = torch.tensor([0, 1, 2, 2, 3, 3])
    predictions = torch.tensor([3, 3, 2, 3, 3, 1])
    # target 3: the two images of class 3 do not count; of the other four, three are predicted 3
    assert attack_success_rate(predictions, labels, target=3) == pytest.approx(75.0)
    assert attack_success_rate(labels, labels, target=3) == 0.0
    with pytest.raises(ValueError, match="undefined"):
        attack_success_rate(torch.tensor([3]), torch.tensor([3]), target=3)
