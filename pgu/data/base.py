"""Datasets held whole as tensors; subsets are index sets; batches are tensor slices.

Conventions: inputs ``x`` are float32 ``(N, C, H, W)`` already normalised; labels ``y`` are
int64 ``(N,)``; ``ids`` are int64 ``(N,)`` stable sample ids (the index of each sample in its
split's official order), so a forget set can be named, recorded and found again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["ArrayDataset", "DataSplits", "TensorLoader", "per_class_split"]


class TensorLoader:
    """Re-iterable ``(inputs, targets)`` batches sliced from tensors, no per-sample Python.

    With ``shuffle=True`` each pass draws a new permutation from ``seed`` and the pass number,
    so a run is reproducible from its seed. An optional ``transform(x_batch, generator) -> x_batch``
    (e.g. :class:`pgu.data.augment.RandomCropFlip`) is applied to every batch of inputs with a CPU
    ``torch.Generator`` seeded from ``(seed, pass number)``, so augmented passes are reproducible too.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, *, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, device=None,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable(x, generator), got {type(transform).__name__}")
        device = torch.device(device) if device is not None else x.device
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.transform = transform
        self.passes = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    def __iter__(self):
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
            order = torch.randperm(n, generator=g).to(self.x.device)
        else:
            order = None
        # A stream of its own (not the shuffle's), fixed by the seed and the pass number.
        gen = (torch.Generator().manual_seed((self.seed * 1_000_003 + self.passes) * 2 + 1)
               if self.transform is not None else None)
        self.passes += 1
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.drop_last and stop - start < self.batch_size:
                break
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                xb, yb = self.x[idx], self.y[idx]
            if gen is not None:
                xb = self.transform(xb, gen)
            yield xb, yb


@dataclass
class ArrayDataset:
    """A set of samples held as tensors (see the module docstring for conventions)."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def __post_init__(self):
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(f"x, y and ids must agree on the number of samples: {tuple(self.x.shape)}, "
                             f"{tuple(self.y.shape)}, {tuple(self.ids.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        """The samples at ``index`` (positions, or a boolean mask over this set)."""
        index = torch.as_tensor(index)
        return ArrayDataset(self.x[index], self.y[index], self.ids[index])

    def positions_of(self, ids) -> torch.Tensor:
        """Positions of the given sample ids in this set; unknown ids raise ``KeyError``."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        lookup = {int(v): i for i, v in enumerate(self.ids.tolist())}
        missing = [int(v) for v in ids.tolist() if int(v) not in lookup]
        if missing:
            raise KeyError(f"sample ids not in this set: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return torch.tensor([lookup[int(v)] for v in ids.tolist()], dtype=torch.long)

    def mask_of(self, ids) -> torch.Tensor:
        """Boolean mask over this set, true at the given ids."""
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[self.positions_of(ids)] = True
        return mask

    def loader(self, batch_size: int = 128, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
               device=None, transform=None) -> TensorLoader:
        return TensorLoader(self.x, self.y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, device=device,
                            transform=transform)


@dataclass
class DataSplits:
    """A dataset's splits: ``train``, and held-out data split per class into ``val`` and ``test``.

    ``val`` is what methods may use for their own stopping and selection; ``test`` is reported
    only (docs/protocol.md, Splits). ``extra`` holds further named sets a dataset offers beside the
    splits, e.g. CIFAR-10's lossless test set as ``extra["test_png"]``.
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    class_names: list[str]
    info: dict = field(default_factory=dict)
    extra: dict[str, ArrayDataset] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def per_class_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions per class: ``round(fraction * n_c)`` of each class (shuffled by ``seed``) go first.

    Returns two sorted LongTensors of positions that partition ``range(len(labels))``.
    """
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(fraction * len(idx)))
        first.append(idx[:k])
        second.append(idx[k:])
    return torch.cat(first).sort().values, torch.cat(second).sort().values
