"""Seeded supervised training: the recipe that makes the original model and the retrain reference.

``train_model(name, splits, config, subset=None)`` builds the named model with the seed's
initialisation and trains it on ``splits.train`` (or a subset of it, e.g. D_r for the retrain
reference), so the original and the reference differ only in the data they see. Data stay
on the compute device as whole tensors; augmentation (random crop with zero padding, flip)
runs on batches of tensors. Evaluation is excluded from the reported training seconds.

Under ``torchrun`` (a process group of several ranks) training is data-parallel: every rank draws
the same global batch (the loader is seeded), takes its share (rank ``r`` of ``W``: samples
``r, r + W, ...``), and the gradients are summed over ranks weighted by each share's size before
the step, so every rank takes the same step a single process takes on the whole batch (BatchNorm
sees each rank's share; its running statistics are averaged over ranks after every epoch).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from pgu import distributed
from pgu.data.augment import RandomCropFlip
from pgu.data.base import ArrayDataset, DataSplits
from pgu.evaluation import accuracy
from pgu.zoo.models import build_model

__all__ = ["TrainConfig", "TrainResult", "train", "train_model", "resolve_device", "synchronize"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "exponential", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. Defaults: the small CPU recipe of the demo (see ``pgu/zoo/recipes/`` for the rest).

    ``lr`` is the one-cycle peak, the exponential schedule's first rate, or the constant rate;
    ``lr_end`` the exponential schedule's last-epoch rate. ``crop_padding`` > 0 turns on random
    crops of zero-padded images, ``flip`` random horizontal flips. ``eval_every`` evaluates val
    accuracy every N epochs (0: only after the last).
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    lr_end: float | None = None
    schedule: str = "onecycle"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1  # keeps the softmax off saturation, which PGU's loss needs to move
    crop_padding: int = 0
    flip: bool = False
    channels_last: bool = False
    seed: int = 0
    width: float = 1.0
    eval_every: int = 1

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"invalid training setting: {msg}")

        need(isinstance(self.epochs, int) and self.epochs >= 1,
             f"epochs must be a positive integer, got {self.epochs!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch_size must be a positive integer, got {self.batch_size!r}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}")
        need(self.schedule != "exponential" or (self.lr_end is not None and self.lr_end > 0),
             "the exponential schedule needs lr_end > 0")
        need(0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        need(isinstance(self.crop_padding, int) and self.crop_padding >= 0, "crop_padding must be an integer >= 0")
        need(self.width > 0, f"width must be > 0, got {self.width}")
        need(isinstance(self.eval_every, int) and self.eval_every >= 0, "eval_every must be an integer >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict (e.g. a recipe's ``[train]`` table), refusing unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        out = {}
        for key, value in values.items():
            default = getattr(cls(), key)
            if key == "lr_end":
                out[key] = None if value is None else float(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"training setting {key} must be true or false, got {value!r}")
                out[key] = value
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"training setting {key} must be an integer, got {value!r}")
                out[key] = value
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"training setting {key} must be a number, got {value!r}")
                out[key] = float(value)
            else:
                out[key] = value
        return cls(**out)


@dataclass
class TrainResult:
    model: nn.Module
    seconds: float  # training only, evaluation excluded
    samples_seen: int
    history: list[dict] = field(default_factory=list)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): the GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but this machine has no usable GPU")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (for honest timing); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Rate of epoch ``epoch`` (0-based) for the per-epoch schedules."""
    if config.schedule == "exponential":
        return config.lr * (config.lr_end / config.lr) ** (epoch / max(config.epochs - 1, 1))
    return config.lr


def _augmentation(config: TrainConfig):
    if config.crop_padding == 0 and not config.flip:
        return None

    return RandomCropFlip(padding=config.crop_padding, flip=config.flip)


def train(model: nn.Module, data: ArrayDataset, config: TrainConfig, *, val: ArrayDataset | None = None,
          progress: bool = False, desc: str = "train") -> TrainResult:
    """Train ``model`` in place; per-epoch history of lr, loss, train and val accuracy, seconds."""
    if len(data) == 0:
        raise ValueError("cannot train on an empty set")
    device = next(model.parameters()).device
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    transform = _augmentation(config)
    loader_kwargs = {"transform": transform} if transform is not None else {}
    loader = data.loader(config.batch_size, shuffle=True, seed=config.seed, device=device, **loader_kwargs)
    if len(loader) == 0:
        raise ValueError(f"the training set ({len(data)} samples) gives no batch of {config.batch_size}")
    opt = _make_optimizer(model, config)
    sched = None
    if config.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * len(loader))
    val_loader = None if val is None else val.loader(1024, device=device)
    history, seen, seconds = [], 0, 0.0
    parallel = distributed.active()
    world, rank = distributed.world_size(), distributed.rank()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs * len(loader), desc=desc, leave=False, unit="batch")
    for epoch in range(config.epochs):
        if sched is None:
            for group in opt.param_groups:
                group["lr"] = _epoch_lr(config, epoch)
        lr_start = opt.param_groups[0]["lr"]
        model.train()
        synchronize(device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count = 0
        for x, y in loader:
            n_batch = len(y)
            if parallel:
                x, y = x[rank::world], y[rank::world]
            x = x.contiguous(memory_format=memory_format)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if parallel:
                _average_gradients(model, len(y), n_batch)
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            count += len(y)
            if bar is not None:
                bar.update(1)
        synchronize(device)
        seconds += time.perf_counter() - start
        if parallel:
            loss_sum, correct, count = _epoch_totals(model, loss_sum, correct, count)
        seen += count
        loss_value = float(loss_sum) / count
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"the training loss became {loss_value} in epoch {epoch + 1}; "
                                     f"lower the learning rate")
        record = {"epoch": epoch + 1, "lr": lr_start, "loss": loss_value, "train_acc": 100.0 * int(correct) / count,
                  "seconds": seconds}
        last = epoch + 1 == config.epochs
        if val_loader is not None and (last or (config.eval_every and (epoch + 1) % config.eval_every == 0)):
            record["val_acc"] = accuracy(model, val_loader)
        history.append(record)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "train_acc", "val_acc")})
    if bar is not None:
        bar.close()
    model.eval()
    return TrainResult(model, seconds, seen, history)


def _average_gradients(model: nn.Module, n_local: int, n_batch: int) -> None:
    """Every gradient becomes the whole batch's: the sum over ranks of ``grad * n_local / n_batch``."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(n_local / n_batch)
            distributed.all_reduce_sum_(p.grad)


def _epoch_totals(model: nn.Module, loss_sum: torch.Tensor, correct: torch.Tensor, count: int):
    """The epoch's loss sum, correct count and sample count over all ranks; BatchNorm's running statistics
    averaged over ranks, so every rank holds the same model."""
    totals = torch.stack([loss_sum.detach().double().cpu(), correct.double().cpu(), torch.tensor(float(count))])
    distributed.all_reduce_sum_(totals)
    for buffer in model.buffers():
        if buffer.is_floating_point():
            distributed.all_reduce_sum_(buffer).div_(distributed.world_size())
    return totals[0], int(totals[1]), int(totals[2])


def train_model(model_name: str, splits: DataSplits, config: TrainConfig, *, subset: torch.Tensor | None = None,
                device=None, progress: bool = False, desc: str = "train", validate: bool = False) -> TrainResult:
    """Build ``model_name`` from ``config.seed`` and train it on ``splits.train`` (or the ``subset`` mask/positions)."""
    device = resolve_device(device) if device is not None else torch.device("cpu")
    torch.manual_seed(config.seed)
    model = build_model(model_name, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                        width=config.width, input_size=splits.input_shape[-1]).to(device)
    data = splits.train if subset is None else splits.train.subset(subset)
    return train(model, data, config, val=splits.val if validate else None, progress=progress, desc=desc)
