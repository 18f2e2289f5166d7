"""A Conv2d's geometry as the statistics routes read it: explicit padding, input check, output size.

Shared by the layer adapters (:mod:`pgu.gram.layers`) and the Gram accumulators
(:mod:`pgu.gram.accumulators`). Padding is always ``(left, right, top, bottom)``, the order
of :func:`torch.nn.functional.pad`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv2d_explicit_padding", "conv2d_input", "conv2d_output_size", "conv2d_padded", "UnsupportedLayerError"]


class UnsupportedLayerError(ValueError):
    """A layer (or layer configuration) PGU cannot compute statistics for, with the fix in the message."""


def conv2d_explicit_padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """The ``(left, right, top, bottom)`` padding the layer applies, ``'same'`` resolved.

    For ``padding='same'`` PyTorch pads ``dilation * (k - 1)`` in total per dimension, the
    smaller half before and the larger half after; ``'valid'`` pads nothing.
    """
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0, 0, 0)
        if pad == "same":
            out = []
            for k, d in ((module.kernel_size[1], module.dilation[1]), (module.kernel_size[0], module.dilation[0])):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)  # type: ignore[return-value]
        raise UnsupportedLayerError(f"unknown Conv2d padding {pad!r}")
    ph, pw = pad
    return (pw, pw, ph, ph)


def conv2d_input(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input as an (N, C, H, W) batch (an unbatched (C, H, W) input gets N = 1), or a clear error."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != module.in_channels:
        raise ValueError(f"expected inputs of shape (N, {module.in_channels}, H, W), got {tuple(x.shape)}")
    return x


def conv2d_output_size(padded_hw, kernel, stride, dilation) -> tuple[int, int]:
    """``(Ho, Wo)`` of a conv over an already padded ``(Hp, Wp)`` map."""
    return tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation))


def conv2d_padded(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input padded as the layer pads it (its ``padding_mode``), once."""
    x = conv2d_input(module, x)
    pads = conv2d_explicit_padding(module)
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads, mode=mode)
    return x
