"""The patch Gram of a stride-1 Conv2d batch from products at kernel-tap offsets, no unfolding.

Conventions (as everywhere in pgu): the uncentred Gram ``sum_rows r r^T`` of the rows the
weight multiplies (docs/method.md section 2), rows and columns ordered as ``weight.reshape(C_out, -1)``:
channel, then kernel row ``u``, then kernel column ``v``; products in ``dtype`` (float32 for a
float32 model), every sum across input rows and batches in float64; float64 result.

Why: unfolding a 3x3 conv repeats each input value 9 times and multiplies the
``(C kh kw)``-wide rows, ``(C kh kw)^2`` multiply-adds per output position. But the block of
taps ``(u, v)`` and ``(u + du, v + dv)`` only pairs input positions ``p`` and ``p + delta`` with
``delta = (du dh, dv dw)``, summed over the output window of tap ``(u, v)``:

    G[(c,u,v), (c',u+du,v+dv)] = sum_{p in Win(u,v)} x[c, p] x[c', p + delta]          (1)

For stride 1 the windows of all taps are the same rectangle shifted, so every block with the
same offset ``delta`` sums the same per-position products over a slightly different rectangle.
This module computes, per offset, the products of whole input rows (one matrix product per
offset per input row, channels by channels, inner size ``images x row width``, reading the
input in place through shifted views), and corrects the few border columns that a window
leaves out (exact per-position products of those columns); row ranges are sums over row
segments between the windows' edges. Only ``du >= 0`` (and ``dv >= 0`` when ``du = 0``) are
computed; the other half of the Gram is the transpose. That is ``kw + (kh - 1)(2 kw - 1)`` channel-by-channel products
per input position (13 for 3x3, 41 for 5x5) instead of ``(kh kw)^2 / 2`` (40.5 / 312.5) for the
unfolded rows' upper triangle.

Zero padding is never materialised: positions outside the map hold zeros, and a window that
reaches into padding just has fewer real positions. The input is laid out per chunk of images
as ``(row, image, column, channel)`` with ``dh (kh - 1)`` zero rows below and ``dw (kw - 1)``
zero columns after each image row, so that shifting by ``delta`` is a constant offset in the
flattened buffer and a partner that falls off the map reads a zero.

This route is for stride 1 with zero padding (or any padding already applied to the map,
passed with padding 0); :func:`offset_products` is its cost, which the Conv2d adapter compares
with the other routes'. With few channels the ``C x C`` products are too small to run fast,
and :mod:`pgu.gram.conv_gram_rows` is the better route. (Lag products by FFT need still fewer
multiply-adds; measured slower on CPU at these map sizes, see the performance notes.)
"""

from __future__ import annotations

import torch

__all__ = ["OffsetGramAccumulator", "offset_patch_gram", "offset_products", "offset_buffer_elements"]


def _out_size(size: int, pad_before: int, pad_after: int, k: int, dilation: int) -> int:
    return size + pad_before + pad_after - dilation * (k - 1)


def _windows(size: int, pad_before: int, out: int, k: int, dilation: int):
    """Per tap, the ``[lo, hi)`` range of map positions its output window covers (clipped to the map)."""
    return [(max(0, t * dilation - pad_before), min(size, t * dilation - pad_before + out)) for t in range(k)]


def _border(size: int, windows) -> list[int]:
    """Map positions outside at least one tap's window: the border a correction must handle."""
    lo, hi = max(w[0] for w in windows), min(w[1] for w in windows)
    return [i for i in range(size) if not lo <= i < hi]


def _border_col_count(width: int, kw: int, dw: int, padding) -> int:
    wo = _out_size(width, padding[0], padding[1], kw, dw)
    return len(_border(width, _windows(width, padding[0], wo, kw, dw)))


def offset_products(channels: int, kernel, dilation, in_hw, padding) -> float:
    """Multiply-adds per image of :func:`offset_patch_gram` (main products plus border columns)."""
    (kh, kw), (dh, dw), (h, w) = kernel, dilation, in_hw
    pairs = sum(max(0, h - du * dh) * (kw if du == 0 else 2 * kw - 1) for du in range(kh))
    return channels * channels * pairs * (w + dw * (kw - 1) + _border_col_count(w, kw, dw, padding))


def offset_buffer_elements(channels: int, kernel, dilation, in_hw, padding) -> int:
    """Float64 numbers :func:`offset_patch_gram` keeps per call (per row segment, at most 2 kh + 1 of them)."""
    (kh, kw), w = kernel, in_hw[1]
    border = _border_col_count(w, kw, dilation[1], padding)
    return kh * (2 * kw - 1) * (2 * kh + 1) * channels * channels * (1 + border)


def offset_patch_gram(x: torch.Tensor, kernel, dilation, padding, dtype: torch.dtype,
                      chunk_elements: int = 1 << 21, border_images: int = 256) -> torch.Tensor:
    """``(d, d)`` float64 patch Gram of a stride-1 conv over the batch ``x`` (N, C, H, W); see the module doc.

    ``padding`` is ``(left, right, top, bottom)`` zero padding (not applied to ``x``). One batch
    through :class:`OffsetGramAccumulator`.
    """
    acc = OffsetGramAccumulator(x.shape[1], tuple(x.shape[2:]), kernel, dilation, padding, dtype, x.device,
                                chunk_elements=chunk_elements, border_images=border_images)
    acc.add(x)
    return acc.result()


class OffsetGramAccumulator:
    """The tap-offset patch Gram of any number of batches of one map size, assembled once.

    :meth:`add` takes the products of a batch (float64 sums per row segment and border
    column, see the module doc); :meth:`result` assembles the ``(d, d)`` float64 Gram. The
    main products run over chunks of images whose zero-gapped copy holds about
    ``chunk_elements`` numbers (cache-sized), one matrix product per tap offset per input
    row (inner size: the chunk's images times the row width, summed in ``dtype``); border
    products are taken over groups of at most ``border_images`` images.
    """

    def __init__(self, channels: int, in_hw, kernel, dilation, padding, dtype: torch.dtype, device,
                 chunk_elements: int = 1 << 21, border_images: int = 256):
        (kh, kw), (dh, dw) = tuple(kernel), tuple(dilation)
        pl, pr, pt, pb = padding
        h, w = in_hw
        ho, wo = _out_size(h, pt, pb, kh, dh), _out_size(w, pl, pr, kw, dw)
        if ho < 1 or wo < 1:
            raise ValueError(f"the kernel does not fit the {h}x{w} input with this padding")
        self.kernel, self.dilation, self.dtype, self.device = (kh, kw), (dh, dw), dtype, device
        self.c, self.h, self.w = channels, h, w
        self.chunk_elements, self.border_images = chunk_elements, border_images
        self.rows_win, self.cols_win = _windows(h, pt, ho, kh, dh), _windows(w, pl, wo, kw, dw)
        self.border_cols = _border(w, self.cols_win)
        # Rows only ever enter as window ranges, so products are kept per row segment between the
        # windows' edges. R[du, j, s]: products of the rows of segment s with their partner rows
        # at offset (du, dv_j), summed over images and columns; Q[du, s, i]: the same at the single
        # border column border_cols[i].
        self.edges, self.row_segment = _segments(h, self.rows_win, device)
        nseg, nb, nd = len(self.edges) - 1, len(self.border_cols), 2 * kw - 1
        self.row_products = torch.zeros(kh, nd, nseg, channels, channels, dtype=torch.float64, device=device)
        self.border_products = torch.zeros(kh, nseg, nb, channels, nd, channels, dtype=torch.float64, device=device)
        self._buffer = None

    def add(self, x: torch.Tensor) -> None:
        """Add the products of a batch ``x`` (N, C, H, W) of this accumulator's map size."""
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        c, h, w, dtype, dev = self.c, self.h, self.w, self.dtype, self.device
        if tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"expected a batch of shape (N, {c}, {h}, {w}), got {tuple(x.shape)}")
        n_img = x.shape[0]
        gap_h, gap_w = dh * (kh - 1), dw * (kw - 1)
        hg, wg = h + gap_h, w + gap_w
        nd = 2 * kw - 1  # column offsets dv = j - (kw - 1), j in [0, nd)
        border_cols = self.border_cols
        nb = len(border_cols)
        chunk = max(1, min(n_img, self.chunk_elements // max(1, (hg + 2) * wg * c)))
        group = max(chunk, self.border_images // chunk * chunk)
        col_index = torch.tensor(border_cols, dtype=torch.long, device=dev)
        shift_cols = (torch.arange(nd, device=dev) - (kw - 1)) * dw
        for g_start in range(0, n_img, group):
            g_n = min(group, n_img - g_start)
            if nb:
                a_border = torch.empty(h, nb, c, g_n, dtype=dtype, device=dev)
                b_border = torch.empty(h, nb, g_n, nd, c, dtype=dtype, device=dev)
            for start in range(g_start, g_start + g_n, chunk):
                xb = x[start : min(start + chunk, g_start + g_n)].to(dtype)
                n = xb.shape[0]
                buffer = self._buffer
                if buffer is None or buffer.shape[1] != n:
                    # a zero row in front (so no offset is negative), the map, gap_h zero rows, and a
                    # zero row behind (the last row's partners at dv > 0 when there is no row gap)
                    buffer = self._buffer = torch.zeros(hg + 2, n, wg, c, dtype=dtype, device=dev)
                buffer[1 : h + 1, :, :w, :] = xb.permute(2, 0, 3, 1)
                flat = buffer.view(-1)
                slab = n * wg  # positions per buffer row
                base = slab * c  # element offset of map row 0
                for du in range(kh):
                    rows = h - du * dh
                    if rows <= 0:
                        continue
                    # one product per input row (a batched product: both cores busy; one long
                    # product of 32 x 32 outputs ran on one)
                    first = flat.as_strided((rows, c, slab), (slab * c, 1, c), base)
                    for j in range(kw - 1 if du == 0 else 0, nd):
                        shift = (du * dh * slab + (j - (kw - 1)) * dw) * c
                        partner = flat.as_strided((rows, slab, c), (slab * c, c, 1), base + shift)
                        self.row_products[du, j].index_add_(0, self.row_segment[:rows],
                                                            torch.bmm(first, partner).to(torch.float64))
                if nb:
                    s = start - g_start
                    a_border[:, :, :, s : s + n] = buffer[1 : h + 1][:, :, col_index, :].permute(0, 2, 3, 1)
                    # partners of the border positions at every column offset, read through the gaps
                    pos = (torch.arange(1, h + 1, device=dev).view(h, 1, 1, 1, 1) * slab
                           + torch.arange(n, device=dev).view(1, 1, n, 1, 1) * wg
                           + col_index.view(1, nb, 1, 1, 1) + shift_cols.view(1, 1, 1, nd, 1))
                    b_border[:, :, s : s + n] = buffer.view(-1, c)[pos.view(-1)].view(h, nb, n, nd, c)
            if nb:
                for du in range(kh):
                    rows = h - du * dh
                    if rows <= 0:
                        continue
                    first = a_border[:rows].reshape(rows * nb, c, g_n)
                    partner = b_border[du * dh : du * dh + rows].reshape(rows * nb, g_n, nd * c)
                    products = torch.bmm(first, partner).view(rows, nb, c, nd, c).to(torch.float64)
                    self.border_products[du].index_add_(0, self.row_segment[:rows], products)

    def result(self) -> torch.Tensor:
        """The ``(d, d)`` float64 Gram of every batch added so far."""
        return _assemble(self.row_products, self.border_products, self.rows_win, self.cols_win, self.border_cols,
                         self.edges, self.kernel, self.c)


def _segments(h: int, rows_win, device):
    """Row segments between the windows' edges: ``(edges, segment index of every row)``."""
    edges = sorted({0, h} | {min(max(e, 0), h) for window in rows_win for e in window})
    segment = torch.empty(h, dtype=torch.long, device=device)
    for i in range(len(edges) - 1):
        segment[edges[i] : edges[i + 1]] = i
    return edges, segment


def _assemble(row_products, border_products, rows_win, cols_win, border_cols, edges, kernel, c) -> torch.Tensor:
    """Blocks (1) from the segment and border products: window row ranges minus out-of-window border columns."""
    kh, kw = kernel
    nd = 2 * kw - 1
    dev = row_products.device
    # inside[u, s]: row segment s lies within tap row u's window (windows are unions of segments)
    inside = torch.tensor([[1.0 if lo <= edges[s] and edges[s + 1] <= hi else 0.0 for s in range(len(edges) - 1)]
                           for lo, hi in rows_win], dtype=row_products.dtype, device=dev).view(kh, len(edges) - 1)
    # outside[v, i]: border column i lies outside tap column v's window
    outside = torch.tensor([[0.0 if lo_v <= b < hi_v else 1.0 for b in border_cols] for lo_v, hi_v in cols_win],
                           dtype=row_products.dtype, device=dev).view(kw, len(border_cols))
    blocks = row_products.new_zeros(kh, kw, kh, kw, c, c)  # (u, v, u', v', c, c')
    for du in range(kh):
        taps = kh - du
        rowpart = torch.einsum("us,jsxy->juxy", inside[:taps], row_products[du])  # (nd, taps, c, c)
        border = torch.einsum("us,sicjd->uicjd", inside[:taps], border_products[du])  # (taps, nb, c, nd, c)
        correction = torch.einsum("vi,uicjd->ujvcd", outside, border)  # (taps, nd, kw, c, c)
        block = rowpart.transpose(0, 1).unsqueeze(2) - correction  # (taps, nd, kw, c, c)
        for j in range(nd):
            dv = j - (kw - 1)
            if du == 0 and dv < 0:
                continue
            v = torch.arange(max(0, -dv), min(kw, kw - dv), device=dev)
            u = torch.arange(taps, device=dev)
            uu, vv = torch.meshgrid(u, v, indexing="ij")
            values = block[uu, j, vv]  # (taps, len(v), c, c)
            blocks[uu, vv, uu + du, vv + dv] = values
            if du or dv:
                blocks[uu + du, vv + dv, uu, vv] = values.transpose(-1, -2)
    d = c * kh * kw
    return blocks.permute(4, 0, 1, 5, 2, 3).reshape(d, d)
