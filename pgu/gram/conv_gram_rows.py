"""The patch Gram of a Conv2d batch from products per kernel-row offset (columns unfolded, rows not).

For a conv with kernel ``(kh, kw)``, stride ``(sh, sw)``, dilation ``(dh, dw)`` on the padded
input ``X`` (N, C, Hp, Wp), the patch of output position ``(i, j)`` holds
``X[n, c, u*dh + i*sh, v*dw + j*sw]`` for channel ``c`` and kernel tap ``(u, v)``. Unfold the
columns only: ``Y[a]`` is the ``(C kw, N Wo)`` matrix of row ``a`` of the padded map with entry
``[(c, v), (n, j)] = X[n, c, a, v*dw + j*sw]``. The Gram block of kernel rows ``u`` and
``u' = u + du`` is then

    G[(c,u,v), (c',u',v')] = sum_i Q_du[u*dh + i*sh][(c,v), (c',v')],   Q_du[a] = Y[a] Y[a + du*dh]^T

so every pair of kernel rows with the same offset ``du`` reads the same per-row products, and
only ``kh`` offsets are needed (the block of ``-du`` is the transpose). That is about
``kh Hp (C kw)^2 N Wo`` multiply-adds against ``(C kh kw)^2 N Ho Wo`` for unfold-then-multiply
(about ``kh`` times fewer for stride 1), in matrix products whose inner size ``N Wo`` is large
enough to run at full speed, and with a column-unfolded copy ``kh`` times smaller than the
fully unfolded one. Any stride works. For wide stride-1 convs :mod:`pgu.gram.conv_gram` (offsets
along both axes) needs fewer still; this route is the one for few input channels, where
channel-by-channel products are too small to run fast but ``C kw``-wide ones are not.

Products are taken in ``dtype`` (the input's own, float32 for a float32 model), per-row
products are summed over windows in float64, and the result is float64. Rows and columns are
ordered as ``weight.reshape(C_out, -1)``: channel, then kernel row, then kernel column.
"""

from __future__ import annotations

import torch

__all__ = ["row_offset_patch_gram", "row_offset_products"]


def _out_size(padded: int, k: int, stride: int, dilation: int) -> int:
    return (padded - dilation * (k - 1) - 1) // stride + 1


def row_offset_products(channels: int, kernel, padded_hw, out_hw) -> float:
    """Multiply-adds per image of :func:`row_offset_patch_gram`: ``kh Hp (C kw)^2 Wo``."""
    return kernel[0] * padded_hw[0] * (channels * kernel[1]) ** 2 * out_hw[1]


def row_offset_patch_gram(xp: torch.Tensor, kernel, stride, dilation, dtype: torch.dtype,
                          max_elements: int = 1 << 26) -> torch.Tensor:
    """``(d, d)`` float64 patch Gram of an already padded batch ``xp`` (N, C, Hp, Wp).

    See the module docstring. The batch is split so that the column-unfolded copy holds at most
    ``max_elements`` numbers at a time.
    """
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    n, c, hp, wp = xp.shape
    ho, wo = _out_size(hp, kh, sh, dh), _out_size(wp, kw, sw, dw)
    ckw = c * kw
    gram = torch.zeros(c, kh, kw, c, kh, kw, dtype=torch.float64, device=xp.device)
    chunk = max(1, max_elements // max(1, ckw * hp * wo))
    for start in range(0, n, chunk):
        x = xp[start : start + chunk].to(dtype)
        m = x.shape[0]
        cols = torch.stack([x[:, :, :, v * dw : v * dw + (wo - 1) * sw + 1 : sw] for v in range(kw)], dim=2)
        y = cols.permute(3, 1, 2, 0, 4).reshape(hp, ckw, m * wo)  # (Hp, C kw, N Wo)
        for du in range(kh):
            shift = du * dh
            q = torch.bmm(y[: hp - shift], y[shift:].transpose(1, 2)).to(torch.float64)  # (rows, C kw, C kw)
            for u in range(kh - du):
                block = q[u * dh : u * dh + (ho - 1) * sh + 1 : sh].sum(0).view(c, kw, c, kw)
                gram[:, u, :, :, u + du, :] += block
                if du:
                    gram[:, u + du, :, :, u, :] += block.permute(2, 3, 0, 1)
    d = c * kh * kw
    return gram.reshape(d, d)
