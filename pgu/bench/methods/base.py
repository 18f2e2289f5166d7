"""The interface every unlearning method implements, its registry and the shared training loop.

A method is a function ``run(model, forget_loader, retain_loader, settings, context) ->
MethodResult`` registered with :func:`register` under a name and a :class:`MethodInfo`:

* ``model`` is never changed: a method works on a copy (``copy_for_unlearning``).
* ``forget_loader`` and ``retain_loader`` are re-iterable loaders of ``(inputs, targets)``;
  a data-free method (``MethodInfo.data_free``) gets ``retain_loader=None`` from the bench and
  must not iterate one it is given (tested).
* ``settings`` is the method's section of ``settings.toml`` (the authors' values, each with a
  one-line source), possibly overridden by the caller; ``context`` carries what the request
  knows beyond the data (:class:`MethodContext`).
* Every method counts its sample passes (one forward and backward of one sample; a forward
  alone, as an importance or label pass, counts too) against ``context.max_samples``, the
  bench's compute budget, and stops, reporting ``hit_budget``, before passing it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

__all__ = ["MethodInfo", "MethodContext", "MethodResult", "Budget", "register", "get_method", "method_names",
           "copy_for_unlearning", "epochs_for", "batches", "require_retain", "gradient_sums"]


@dataclass(frozen=True)
class MethodInfo:
    """What a method is: its name, whether it runs without the retain data, and where it comes from."""

    name: str
    data_free: bool
    summary: str
    reference: str


@dataclass
class MethodContext:
    """What a request knows besides its data.

    ``num_classes``: classes of the model's output. ``pixel_mean`` / ``pixel_std``: the
    dataset's normalisation (methods that perturb images work in pixel units). ``train_epochs``: epochs of the original
    training (settings given as a share of it scale with the tier). ``max_samples``: the
    compute budget in sample passes (``None``: none). ``forget_mode``: ``"sample"`` or
    ``"class"`` (the forget set is whole classes). ``val_loader``: held-out data, never the
    test split. ``stats``: the Gram statistics of the data the model retains (PGU). ``seed``:
    for every random draw a method makes. ``progress``: show a progress bar where the method has one.
    ``reference``: the model as trained, before any request of a sequence (``pgu-heldout`` aims at
    and anchors to its held-out behaviour, as a model store does; None: the model the request starts from).
    """

    num_classes: int
    train_epochs: int = 1
    max_samples: int | None = None
    forget_mode: str = "sample"
    val_loader: object = None
    stats: object = None
    seed: int = 0
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None
    progress: bool = False
    reference: object = None

    def pixel_scale(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, std)`` that map pixels in 0..1 to the model's inputs (``x = (p - mean) / std``).

        ``pixel_mean`` / ``pixel_std`` (one value, or one per channel) come from the dataset's
        normalisation; without them inputs are taken to be pixels (mean 0, std 1).
        """
        mean = self.pixel_mean if self.pixel_mean is not None else (0.0,)
        std = self.pixel_std if self.pixel_std is not None else (1.0,)
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"pixel mean/std must give one value or one per channel ({channels}), with std > 0; "
                             f"got {self.pixel_mean} / {self.pixel_std}")
        return torch.tensor(mean).view(1, channels, 1, 1), torch.tensor(std).view(1, channels, 1, 1)


@dataclass
class MethodResult:
    """The unlearned model, the sample passes it took, whether the budget stopped it, and what it reports.

    ``details`` is JSON-serialisable (it goes into the bench's results); ``extras`` holds other
    objects a caller may use (PGU's retain statistics, for the next request).
    """

    model: nn.Module
    samples_processed: int = 0
    hit_budget: bool = False
    details: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


RunFn = Callable[[nn.Module, Iterable, Iterable | None, dict, MethodContext], MethodResult]
_REGISTRY: dict[str, tuple[MethodInfo, RunFn]] = {}


def register(info: MethodInfo) -> Callable[[RunFn], RunFn]:
    """Register ``run`` under ``info.name`` (a name may be registered once)."""

    def decorate(run: RunFn) -> RunFn:
        if info.name in _REGISTRY:
            raise ValueError(f"an unlearning method named {info.name!r} is already registered")
        _REGISTRY[info.name] = (info, run)
        return run

    return decorate


def get_method(name: str) -> tuple[MethodInfo, RunFn]:
    """``(info, run)`` of a registered method."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown unlearning method {name!r}; available: {', '.join(method_names())}") from None


def method_names() -> list[str]:
    return list(_REGISTRY)


class Budget:
    """Sample passes against a cap: ``take(n)`` is False (and marks the budget hit) when ``n`` more would pass it."""

    def __init__(self, max_samples: int | None):
        if max_samples is not None and max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        self.max_samples, self.used, self.hit = max_samples, 0, False

    def take(self, n: int) -> bool:
        if self.max_samples is not None and self.used + n > self.max_samples:
            self.hit = True
            return False
        self.used += n
        return True


def copy_for_unlearning(model: nn.Module) -> tuple[nn.Module, torch.device]:
    """A trainable deep copy of ``model`` (the input is never changed) and its device."""
    work = copy.deepcopy(model)
    for p in work.parameters():
        p.requires_grad_(True)
    params = list(work.parameters())
    device = params[0].device if params else torch.device("cpu")
    return work, device


def epochs_for(settings: dict, context: MethodContext) -> int:
    """Epochs a method runs: ``epochs`` as given, or ``epochs_share`` of the original training (at least 1)."""
    if "epochs" in settings:
        epochs = int(settings["epochs"])
    else:
        epochs = max(1, math.ceil(float(settings["epochs_share"]) * context.train_epochs - 1e-9))
    if epochs < 1:
        raise ValueError(f"a method needs at least one epoch, got {epochs}")
    return epochs


def batches(loader: Iterable, device: torch.device, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of each batch on ``device``, checked; empty batches skipped."""
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"{what} must yield (inputs, targets) batches, got {type(batch).__name__}")
        x, y = batch[0], batch[1]
        if x.shape[0] == 0:
            continue
        yield x.to(device), y.to(device)


def require_retain(retain_loader, name: str) -> None:
    if retain_loader is None:
        raise ValueError(f"{name} trains on the retain data: pass a retain_loader (it is not a data-free method)")


def gradient_sums(model: nn.Module, batch_iter, budget: Budget, loss_fn, square: bool):
    """Per-parameter sums over batches of the gradient of ``loss_fn(model(x), y)`` (squared if ``square``).

    Returns ``(sums, batches counted, complete)``; ``complete`` is False when the budget ran out
    first (the sums then cover the batches before). Gradients are cleared afterwards.
    """
    params = list(model.parameters())
    sums = [torch.zeros_like(p) for p in params]
    count, complete = 0, True
    for x, y in batch_iter:
        if not budget.take(x.shape[0]):
            complete = False
            break
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for total, p in zip(sums, params):
            if p.grad is not None:
                total.add_(p.grad.detach() ** 2 if square else p.grad.detach())
        count += 1
    model.zero_grad(set_to_none=True)
    return sums, count, complete
