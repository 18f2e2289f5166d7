"""Context managers that set a model's train/eval modes and put every module's mode back."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["preserved_modes", "eval_mode", "unlearning_mode"]


@contextmanager
def preserved_modes(model: nn.Module):
    """Restore each module's ``training`` flag on exit, whatever happened inside."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for module, mode in modes:
            module.train(mode)


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode inside (BatchNorm running statistics, dropout off); previous modes after."""
    with preserved_modes(model):
        model.eval()
        yield model


@contextmanager
def unlearning_mode(model: nn.Module):
    """Train mode with every BatchNorm in eval mode (running statistics frozen), as PGU unlearns."""
    with preserved_modes(model):
        model.train()
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
        yield model
