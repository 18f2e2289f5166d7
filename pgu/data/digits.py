"""scikit-learn's bundled digits: 1,797 real 8x8 handwritten digits, no files needed.

The set has no official split: per class, two thirds go to ``train`` (shuffled by
``split_seed``) and the rest is held out, split per class in halves into ``val`` and
``test``. Pixels (0..16) are scaled by 1/16 and standardised with the training set's mean
and standard deviation. Sample ids are indices into ``load_digits()``.
"""

from __future__ import annotations

import torch

from pgu.data.base import ArrayDataset, DataSplits, per_class_split
from pgu.data.registry import register_dataset


@register_dataset("digits")
def load_digits_splits(data_dir=None, split_seed: int = 0) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    ids = torch.arange(len(y))
    train_idx, held_idx = per_class_split(y, 2 / 3, seed=split_seed)
    val_pos, test_pos = per_class_split(y[held_idx], 0.5, seed=split_seed + 1)
    val_idx, test_idx = held_idx[val_pos], held_idx[test_pos]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std

    def part(idx):
        return ArrayDataset(x[idx], y[idx], ids[idx])

    return DataSplits(
        name="digits",
        train=part(train_idx),
        val=part(val_idx),
        test=part(test_idx),
        class_names=[str(i) for i in range(10)],
        info={"source": "sklearn.datasets.load_digits", "split_seed": split_seed,
              "normalise": [float(mean), float(std)]},
    )
