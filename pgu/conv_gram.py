"""The patch Gram of a Conv2d batch without unfolding: products per tap offset, summed over windows.

For a conv with kernel ``(kh, kw)``, stride ``(sh, sw)``, dilation ``(dh, dw)`` on the padded
input ``X`` (N, C, Hp, Wp), the patch of output position ``(i, j)`` holds
``X[n, c, u*dh + i*sh, v*dw + j*sw]`` for channel ``c`` and kernel tap ``(u, v)``. The Gram
block of taps ``(u, v)`` and ``(u', v')`` is therefore

    G[(c,u,v), (c',u',v')] = sum_{i,j} P_delta[u*dh + i*sh, v*dw + j*sw][c, c']
    P_delta[a, b] = sum_n X[n, :, a, b] X[n, :, a + du*dh, b + dv*dw]^T,   delta = (u'-u, v'-v)

so every tap pair with the same offset ``delta`` reads the same per-position channel products
``P_delta``, and only ``(2kh-1)(2kw-1)`` offsets exist (half of them by symmetry, since the
block of ``-delta`` is the transpose) instead of ``(kh kw)^2`` tap pairs. Computing ``P_delta``
at every position costs ``C^2 N Hp Wp`` multiply-adds; the window sums that follow are small.
Against the unfold-then-multiply route (``(C kh kw)^2 N Ho Wo``) this saves about
``k^4 / ((2k-1)^2 / 2)`` for stride 1 (6x for 3x3, 15x for 5x5 before border effects); for a
strided conv it saves little, and :func:`prefer_offsets` picks the cheaper route.

Products are taken in ``dtype`` (the input's own, float32 for a float32 model), per-position
products are summed over windows in float64, and the result is float64. The order of rows and
columns is that of ``weight.reshape(C_out, -1)``: channel, then kernel row, then kernel column.
"""

from __future__ import annotations

import torch

__all__ = ["offset_patch_gram", "prefer_offsets"]


def _out_size(padded: int, k: int, stride: int, dilation: int) -> int:
    return (padded - dilation * (k - 1) - 1) // stride + 1


def prefer_offsets(kernel, stride, dilation, padded_hw, out_hw) -> bool:
    """True when the offset route needs clearly fewer multiply-adds than unfold + product."""
    kh, kw = kernel
    if kh * kw == 1:
        return False
    offsets = ((2 * kh - 1) * (2 * kw - 1) + 1) / 2
    offset_cost = offsets * padded_hw[0] * padded_hw[1]
    unfold_cost = (kh * kw) ** 2 * out_hw[0] * out_hw[1]
    return offset_cost * 2.0 < unfold_cost  # bmm of small matrices runs slower than one big product


def offset_patch_gram(xp: torch.Tensor, kernel, stride, dilation, dtype: torch.dtype) -> torch.Tensor:
    """``(d, d)`` float64 patch Gram of an already padded batch ``xp`` (N, C, Hp, Wp) (see module docstring)."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    n, c, hp, wp = xp.shape
    ho, wo = _out_size(hp, kh, sh, dh), _out_size(wp, kw, sw, dw)
    x = xp.to(dtype).permute(2, 3, 1, 0).contiguous()  # (Hp, Wp, C, N): channel products per position
    gram = torch.zeros(c, kh, kw, c, kh, kw, dtype=torch.float64, device=xp.device)
    for du in range(kh):
        for dv in range(-(kw - 1), kw):
            if du == 0 and dv < 0:
                continue  # the transpose of offset (0, -dv)
            ra, rb = du * dh, dv * dw  # shift of the second factor in the padded map
            b0, b1 = max(0, -rb), min(wp, wp - rb)
            a = x[: hp - ra, b0:b1]
            b = x[ra:, b0 + rb : b1 + rb]
            rows, cols = a.shape[0], a.shape[1]
            prod = torch.bmm(a.reshape(rows * cols, c, n), b.reshape(rows * cols, c, n).transpose(1, 2))
            prod = prod.view(rows, cols, c, c).to(torch.float64)
            for u in range(kh - du):
                top = u * dh
                rows_sum = prod[top : top + (ho - 1) * sh + 1 : sh]
                for v in range(max(0, -dv), min(kw, kw - dv)):
                    left = v * dw - b0
                    block = rows_sum[:, left : left + (wo - 1) * sw + 1 : sw].sum(dim=(0, 1))
                    gram[:, u, v, :, u + du, v + dv] = block
                    if du != 0 or dv != 0:
                        gram[:, u + du, v + dv, :, u, v] = block.T
    d = c * kh * kw
    return gram.reshape(d, d)
