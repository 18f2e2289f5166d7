"""The SGD loop the gradient-based baselines share: epochs of batches, a loss per batch, a budget.

Each baseline supplies a ``step_loss(model, epoch) -> (loss, n_samples) | None`` pass over
its data; this module owns the optimizer (SGD with the settings' ``lr``, ``momentum``,
``weight_decay``), the per-epoch learning rate (``schedule``: ``"constant"``, or
``"linear"`` / ``"cosine"`` decay to 0 over the run), the non-finite-loss check and the
budget (:class:`~pgu.bench.methods.base.Budget`).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import nn

from pgu.bench.methods.base import Budget

__all__ = ["make_sgd", "epoch_lr", "run_epochs"]


def make_sgd(params, settings: dict) -> torch.optim.SGD:
    lr = float(settings["lr"])
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive and finite, got {settings['lr']!r}")
    return torch.optim.SGD(params, lr=lr, momentum=float(settings.get("momentum", 0.0)),
                           weight_decay=float(settings.get("weight_decay", 0.0)))


def epoch_lr(settings: dict, epoch: int, epochs: int) -> float:
    """Rate of epoch ``epoch`` (0-based) of ``epochs``."""
    lr, schedule = float(settings["lr"]), settings.get("schedule", "constant")
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * (1 - epoch / epochs)
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"schedule must be constant, linear or cosine, got {schedule!r}")


def run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, settings: dict, epochs: int, budget: Budget,
               batch_losses: Callable[[int], Iterator[tuple[torch.Tensor, int]]],
               after_step: Callable[[], None] | None = None) -> dict:
    """Train ``model`` for ``epochs``: each item of ``batch_losses(epoch)`` is ``(loss, samples)`` of one step.

    A step whose samples would pass the budget is not taken, and the run ends there.
    ``after_step`` runs after every optimizer step (e.g. to re-apply a mask). Returns a
    history of per-epoch mean losses and the epochs run.
    """
    history, epochs_run = [], 0
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(settings, epoch, epochs)
        total, seen = 0.0, 0
        for loss, n in batch_losses(epoch):
            if not budget.take(n):
                break
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * n
            seen += n
        if seen:
            epochs_run = epoch + 1
            history.append({"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "loss": total / seen,
                            "samples": seen})
        if budget.hit:
            break
    return {"epochs": epochs_run, "history": history}
