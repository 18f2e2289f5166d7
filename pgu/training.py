"""Seeded supervised training: the recipe that makes the original model and the retrain reference.

``train_model(name, splits, config, subset=None)`` builds the named model with the seed's
initialisation and trains it on ``splits.train`` (or a subset of it, e.g. D_r for the
retrain reference), so the original and the reference differ only in the data they see.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data.base import ArrayDataset, DataSplits
from .evaluation import accuracy
from .models import build_model

__all__ = ["TrainConfig", "TrainResult", "train", "train_model"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (defaults: the small CPU-tier recipe of PROTOCOL.md)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05  # peak of the one-cycle schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1  # keeps the softmax off saturation, as the CPU recipes do
    seed: int = 0
    width: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    seconds: float
    samples_seen: int
    history: list[dict] = field(default_factory=list)


def train(model: nn.Module, data: ArrayDataset, config: TrainConfig, *, val: ArrayDataset | None = None,
          progress: bool = False, desc: str = "train") -> TrainResult:
    """Train ``model`` in place with SGD (Nesterov momentum), one-cycle LR, label smoothing."""
    if len(data) == 0:
        raise ValueError("cannot train on an empty set")
    device = next(model.parameters()).device
    loader = data.loader(config.batch_size, shuffle=True, seed=config.seed, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * len(loader))
    history, seen = [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc=desc, leave=False)
    start = time.perf_counter()
    model.train()
    for epoch in range(1, config.epochs + 1):
        total, count = 0.0, 0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            count += len(y)
        seen += count
        history.append({"epoch": epoch, "loss": total / count})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.3f}")
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    model.eval()
    if val is not None:
        history[-1]["val_acc"] = accuracy(model, val.loader(512, device=device))
    return TrainResult(model, seconds, seen, history)


def train_model(model_name: str, splits: DataSplits, config: TrainConfig, *, subset: torch.Tensor | None = None,
                device=None, progress: bool = False, desc: str = "train") -> TrainResult:
    """Build ``model_name`` from ``config.seed`` and train it on ``splits.train`` (or the ``subset`` mask/positions)."""
    torch.manual_seed(config.seed)
    model = build_model(model_name, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                        width=config.width, input_size=splits.input_shape[-1])
    if device is not None:
        model = model.to(device)
    data = splits.train if subset is None else splits.train.subset(subset)
    return train(model, data, config, progress=progress, desc=desc)
