"""Slow, obviously right oracles, shipped so users can check layers of their own.

``explicit_rows`` builds the rows a layer multiplies its weight with by looping over output
positions and reading each input patch element by element; ``explicit_gram`` sums ``x x^T``
over those rows in float64. They mirror :mod:`pgu.gram.layers` and :mod:`pgu.stats` without
sharing any code with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["explicit_rows", "explicit_gram"]


def _same_padding(k: int, d: int) -> tuple[int, int]:
    total = d * (k - 1)
    return total // 2, total - total // 2


def explicit_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows of ``module`` on input ``x`` by an explicit loop (float64)."""
    if isinstance(module, nn.Embedding):
        return explicit_rows_of_tokens(module, x)
    x = x.double()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    if isinstance(module, nn.Conv1d):
        return _conv1d_rows(module, x)

    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"no oracle for {type(module).__name__}")
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    if module.padding == "same":
        (top, bottom), (left, right) = _same_padding(kh, dh), _same_padding(kw, dw)
    elif module.padding == "valid":
        top = bottom = left = right = 0
    else:
        top = bottom = module.padding[0]
        left = right = module.padding[1]
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    xp = F.pad(x, (left, right, top, bottom), mode=mode)
    n, c, h, w = xp.shape
    out_h = (h - dh * (kh - 1) - 1) // sh + 1
    out_w = (w - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                row = []
                for ch in range(c):
                    for u in range(kh):
                        for v in range(kw):
                            row.append(xp[b, ch, i * sh + u * dh, j * sw + v * dw])
                rows.append(torch.stack(row))
    return torch.stack(rows)


def _conv1d_rows(module: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """One row per (sample, output position), each element read from the layer's definition (padding included)."""
    (k,), (s,), (d,) = module.kernel_size, module.stride, module.dilation
    if module.padding == "same":
        left, right = _same_padding(k, d)
    elif module.padding == "valid":
        left = right = 0
    else:
        left = right = module.padding[0]
    n, c, length = x.shape

    def at(b: int, ch: int, pos: int) -> torch.Tensor:
        if 0 <= pos < length:
            return x[b, ch, pos]
        if module.padding_mode == "zeros":
            return torch.zeros((), dtype=x.dtype)
        if module.padding_mode == "circular":
            return x[b, ch, pos % length]
        if module.padding_mode == "replicate":
            return x[b, ch, min(max(pos, 0), length - 1)]
        return x[b, ch, -pos if pos < 0 else 2 * (length - 1) - pos]  # reflect

    out_len = (length + left + right - d * (k - 1) - 1) // s + 1
    rows = [torch.stack([at(b, ch, t * s - left + j * d) for ch in range(c) for j in range(k)])
            for b in range(n) for t in range(out_len)]
    return torch.stack(rows)


def explicit_rows_of_tokens(module: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """An Embedding's rows: one one-hot row per token, set element by element."""
    rows = torch.zeros(tokens.numel(), module.num_embeddings, dtype=torch.float64)
    for i, token in enumerate(tokens.reshape(-1).tolist()):
        rows[i, token] = 1.0
    return rows


def explicit_gram(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sum over rows r of r r^T`` by an explicit loop over rows (float64); for a grouped convolution the
    ``(g, d, d)`` stack of each group's Gram, group ``j`` taking the ``j``-th ``d`` entries of every row."""
    rows = explicit_rows(module, x)
    groups = getattr(module, "groups", 1)
    d = rows.shape[1] // groups
    g = torch.zeros(groups, d, d, dtype=torch.float64)
    for r in rows:
        for j in range(groups):
            part = r[j * d : (j + 1) * d]
            g[j] += torch.outer(part, part)
    return g[0] if groups == 1 else g
