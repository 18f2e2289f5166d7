"""Context managers that set a model's train/eval modes and put every module's mode back."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["preserved_modes", "eval_mode", "unlearning_mode", "ChannelsLastWeights"]


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


class ChannelsLastWeights:
    """Hold a model's 4-D parameters and buffers channels-last until :meth:`restore`.

    Values are untouched (a layout change, bit for bit). :meth:`restore` gives each tensor back
    its original storage, so its strides are exactly what they were (the same ``Parameter``
    objects throughout); nothing may write to the model in between (a statistics pass only
    reads it). With channels-last weights a conv gives channels-last outputs even for a
    one-channel input (whose layout is ambiguous), so the whole forward runs channels-last: on
    a 2-core CPU, LeNet's eval forward over 2,048 MNIST images took 0.23 s channels-last
    against 0.36 s (its max-pool alone is 10x faster).
    """

    def __init__(self, model: nn.Module):
        self.saved = []
        seen = set()
        for tensor in list(model.parameters()) + list(model.buffers()):
            if id(tensor) in seen or tensor.dim() != 4:
                continue
            seen.add(id(tensor))
            # .to() also restrides a tensor whose layout is ambiguous (a one-channel weight)
            converted = tensor.data.to(memory_format=torch.channels_last)
            if converted.stride() != tensor.data.stride():
                self.saved.append((tensor, tensor.data))
                tensor.data = converted

    def restore(self) -> None:
        for tensor, original in self.saved:
            tensor.data = original
        self.saved = []
