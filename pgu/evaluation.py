"""Evaluating a classifier on a loader: predictions and accuracies (percent)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from pgu.fast_forward import FastForward
from pgu.modes import eval_mode
from pgu.outputs import logits_output
from pgu.stats_pass import model_device

__all__ = ["predict", "accuracy", "split_batch"]


def split_batch(batch, what: str = "loader"):
    """``(inputs, targets)`` of a labelled batch, with a clear error for anything else."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, torch.Tensor) for t in batch[:2]):
        inputs, targets = batch[0], batch[1]
        if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{what}: targets must be a 1-D tensor of labels with one entry per input, got inputs "
                f"{tuple(inputs.shape)} and targets {tuple(targets.shape)}"
            )
        return inputs, targets
    raise ValueError(f"{what} must yield (inputs, targets) batches of tensors; got {type(batch).__name__}")


@torch.no_grad()
def predict(model: nn.Module, loader, what: str = "loader", *, output=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` over the whole loader, in eval mode (modes restored after), on CPU.

    ``output``: where the logits are in the model's output (:func:`pgu.outputs.logits_of`; default: a
    tensor, a tuple's first element, a dict's ``"logits"``, a ``.logits`` field).

    Forwards go through :class:`~pgu.fast_forward.FastForward` (on a CPU: channels-last, in
    chunks; the model's weights are put back as they were).
    """
    device = model_device(model)
    logits, targets = [], []
    with eval_mode(model), logits_output(model, output), \
            FastForward(model, device, on_fallback=logits.clear) as forward:
        for batch in loader:
            x, y = split_batch(batch, what)
            logits.extend(out.float().cpu() for out in forward(x.to(device)))
            targets.append(y.cpu())
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(targets)


@torch.no_grad()
def accuracy(model: nn.Module, loader, *, exclude_classes: Iterable[int] = (), what: str = "loader",
             output=None) -> float | None:
    """Top-1 accuracy in percent over samples whose label is not excluded; None when there are none."""
    logits, targets = predict(model, loader, what, output=output)
    if targets.numel() == 0:
        return None
    keep = torch.ones_like(targets, dtype=torch.bool)
    for c in exclude_classes:
        keep &= targets != int(c)
    if not keep.any():
        return None
    correct = int((logits[keep].argmax(1) == targets[keep]).sum())
    return 100.0 * correct / int(keep.sum())
