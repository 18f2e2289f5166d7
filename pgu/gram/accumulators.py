"""Per-layer Gram accumulators: the statistics of many batches, summed in float64, assembled once.

A statistics pass (:mod:`pgu.stats`) feeds each layer's inputs, batch after batch, to one
accumulator per layer: ``add(x)`` takes a batch's products, ``result()`` returns
``(G, s, n_rows)``: the uncentred Gram ``sum_rows r r^T`` (docs/method.md section 2), the row sum and the
row count, float64, rows and columns ordered as ``weight.reshape(C_out, -1)``. Products are
taken in the batch's ``dtype`` (float32 for a float32 model); sums across products are float64.

Why accumulators and not one Gram per batch: whatever a route keeps per call (a ``d x d``
float64 addition for a Linear layer, the offset route's assembly) is paid once per pass, not
once per batch, so the pass can feed small, cache-friendly batches.

* :class:`RowsGramAccumulator` (Linear, and any layer registered by its rows): copies rows
  into a buffer and multiplies once it holds ``flush_rows`` rows (or ``flush_bytes``), as an
  upper triangle of blocks (:mod:`pgu.gram.triangle`). A 3136-wide Linear fed 512 rows at a time
  spent as long adding its float64 Gram as multiplying.
* :class:`Conv2dGramAccumulator`: per input map size, the cheapest exact route
  (:func:`conv2d_gram_route`): tap offsets (:mod:`pgu.gram.conv_gram`), kernel-row offsets
  (:mod:`pgu.gram.conv_gram_rows`) or unfolded rows; row sums from the batches' float64 total.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pgu.gram.conv2d_geometry import conv2d_explicit_padding, conv2d_input, conv2d_output_size, conv2d_padded
from pgu.gram.conv_gram import OffsetGramAccumulator, offset_buffer_elements, offset_products
from pgu.gram.conv_gram_rows import row_offset_patch_gram, row_offset_products
from pgu.gram.triangle import upper_blocks_gram

__all__ = ["RowsGramAccumulator", "GroupedRowsAccumulator", "Conv2dGramAccumulator", "TokenCountAccumulator",
           "conv2d_gram_route", "piece_elements", "OFFSET_BUFFER_LIMIT", "GPU_OFFSET_MIN_CHANNELS"]


class TokenCountAccumulator:
    """``(G, s, n_rows)`` of an ``nn.Embedding``'s one-hot rows, from token counts: ``G = diag(counts)``, kept as
    its diagonal ``counts`` (a ``(V,)`` vector: any vocabulary fits), ``s = counts``, ``n_rows`` = tokens seen
    (the one-hot rows are never formed)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        self.size = int(module.num_embeddings)
        self.counts, self.n_rows = None, 0

    def add(self, x: torch.Tensor) -> None:
        if x.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"an Embedding takes integer token ids, got {x.dtype}")
        ids = x.reshape(-1).long()
        counts = torch.bincount(ids, minlength=self.size).to(torch.float64)
        self.counts = counts if self.counts is None else self.counts + counts
        self.n_rows += int(ids.numel())

    def result(self):
        if self.counts is None:
            return None
        return self.counts, self.counts.clone(), self.n_rows


class RowsGramAccumulator:
    """``(G, s, n_rows)`` of the rows ``rows_fn(x)`` of every batch added, multiplied in buffered blocks.

    Rows are copied (in ``dtype``) into a buffer of at most ``flush_rows`` rows and
    ``flush_bytes`` bytes; a full buffer is multiplied (:func:`~pgu.gram.triangle.upper_blocks_gram`)
    and added into the float64 total. A batch with at least a buffer's worth of rows is
    multiplied in place, no copy.
    """

    def __init__(self, rows_fn: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                 flush_rows: int = 4096, flush_bytes: int = 32 << 20):
        self.rows_fn, self.dtype = rows_fn, dtype
        self.flush_rows, self.flush_bytes = flush_rows, flush_bytes
        self.gram = self.row_sum = self._buffer = None
        self.n_rows, self._filled = 0, 0

    def add(self, x: torch.Tensor) -> None:
        rows = self.rows_fn(x)
        if rows.dim() != 2:
            raise ValueError(f"a layer's rows must be a (n_rows, d) matrix, got shape {tuple(rows.shape)}")
        n, d = rows.shape
        if self.gram is None:
            self.gram = torch.zeros(d, d, dtype=torch.float64, device=rows.device)
            self.row_sum = torch.zeros(d, dtype=torch.float64, device=rows.device)
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            capacity = max(1, min(self.flush_rows, self.flush_bytes // max(1, d * itemsize)))
            self._buffer = torch.empty(capacity, d, dtype=self.dtype, device=rows.device)
        elif d != self.gram.shape[0]:
            raise ValueError(f"rows of width {d} after rows of width {self.gram.shape[0]}")
        capacity, start = self._buffer.shape[0], 0
        while start < n:
            if self._filled == 0 and n - start >= capacity:
                self._multiply(rows[start:].to(self.dtype))
                return
            take = min(capacity - self._filled, n - start)
            self._buffer[self._filled : self._filled + take] = rows[start : start + take]
            self._filled += take
            start += take
            if self._filled == capacity:
                self._flush()

    def _flush(self) -> None:
        if self._filled:
            self._multiply(self._buffer[: self._filled])
            self._filled = 0

    def _multiply(self, rows: torch.Tensor) -> None:
        self.gram += upper_blocks_gram(rows)  # in place into float64, whatever the rows' dtype
        self.row_sum += rows.sum(0)
        self.n_rows += int(rows.shape[0])

    def result(self):
        """``(G, s, n_rows)`` in float64 of all rows added (``None`` before any batch)."""
        if self.gram is None:
            return None
        self._flush()
        return self.gram, self.row_sum, self.n_rows


class GroupedRowsAccumulator:
    """``(G, s, n_rows)`` of a grouped layer, one Gram per group: ``G`` is ``(g, d, d)``, ``s`` is ``(g, d)``.

    ``rows_fn(x)`` gives the layer's full rows ``(n_rows, g * d)`` ordered group-major (a grouped
    convolution's patches are channel-major, and group ``j`` owns input channels ``j C_in / g`` onwards);
    group ``j``'s rows are columns ``j d`` to ``(j + 1) d``. ``n_rows`` counts rows per group (every
    patch is a row of each group). Products in ``dtype`` over blocks of at most ``block_rows`` rows, sums
    in float64.
    """

    def __init__(self, rows_fn: Callable[[torch.Tensor], torch.Tensor], groups: int, dtype: torch.dtype,
                 block_rows: int = 8192):
        self.rows_fn, self.groups, self.dtype, self.block_rows = rows_fn, int(groups), dtype, block_rows
        self.gram = self.row_sum = None
        self.n_rows = 0

    def add(self, x: torch.Tensor) -> None:
        rows = self.rows_fn(x)
        n, width = rows.shape
        if width % self.groups:
            raise ValueError(f"rows of width {width} do not split into {self.groups} groups")
        d = width // self.groups
        if self.gram is None:
            self.gram = torch.zeros(self.groups, d, d, dtype=torch.float64, device=rows.device)
            self.row_sum = torch.zeros(self.groups, d, dtype=torch.float64, device=rows.device)
        for start in range(0, n, self.block_rows):
            block = rows[start : start + self.block_rows].to(self.dtype).reshape(-1, self.groups, d).transpose(0, 1)
            self.gram += torch.bmm(block.transpose(1, 2), block)  # (g, d, r) @ (g, r, d), added into float64
            self.row_sum += block.sum(1)
        self.n_rows += int(n)

    def result(self):
        """``(G, s, n_rows)`` in float64 (``None`` before any batch)."""
        if self.gram is None:
            return None
        return self.gram, self.row_sum, self.n_rows


OFFSET_BUFFER_LIMIT = 1 << 25
"""Most float64 numbers (256 MiB) the tap-offset route may keep for one layer; beyond, another route."""


GPU_OFFSET_MIN_CHANNELS = 96
"""Input channels from which a GPU takes the CPU's cheapest route (:func:`conv2d_gram_route`)."""


def conv2d_gram_route(channels: int, kernel, stride, dilation, in_hw, padding, device="cpu") -> str:
    """The cheapest exact route to a Conv2d batch's patch Gram: ``"offsets"``, ``"rows"`` or ``"unfold"``.

    On a GPU, ``"unfold"`` below :data:`GPU_OFFSET_MIN_CHANNELS` input channels: one large product
    per piece keeps a GPU busy, where the other routes' channel-by-channel products are too small
    to. Measured on an H100 over the training set in batches of 4096, float32 products: All-CNN
    at width 1/3 (32 and 64 channels) took 1.08 s unfolded against 2.07 s by the CPU's routes,
    LeNet 0.42 s against 1.64 s; All-CNN at full width (96 and 192 channels) took 3.4 s by the
    CPU's routes against 4.8 s unfolded, Small VGG (128 and 256) 1.46 s against 1.96 s.

    On a CPU, or a GPU from that width on: the route with the fewest estimated multiply-adds per
    image, among the tap-offset route (:mod:`pgu.gram.conv_gram`, stride 1, at least 16 channels so
    its channel-by-channel products run fast), the kernel-row-offset route
    (:mod:`pgu.gram.conv_gram_rows`, any stride), and unfolded rows multiplied in an upper triangle of
    blocks (:mod:`pgu.gram.triangle`, about 0.6 of ``Ho Wo d^2``; 1x1 convs always, their rows being
    the input itself). ``padding`` is ``(left, right, top, bottom)``. The tap-offset route is
    skipped when its per-row buffers would pass :data:`OFFSET_BUFFER_LIMIT` (hundreds of
    channels on a tall map).
    """
    if torch.device(device).type != "cpu" and channels < GPU_OFFSET_MIN_CHANNELS:
        return "unfold"
    (kh, kw), (h, w) = kernel, in_hw
    pl, pr, pt, pb = padding
    hp, wp = h + pt + pb, w + pl + pr
    ho, wo = conv2d_output_size((hp, wp), kernel, stride, dilation)
    if kh * kw == 1 or ho < 1 or wo < 1:
        return "unfold"
    costs = {"unfold": 0.6 * ho * wo * (channels * kh * kw) ** 2,
             "rows": row_offset_products(channels, kernel, (hp, wp), (ho, wo))}
    if (tuple(stride) == (1, 1) and channels >= 16
            and offset_buffer_elements(channels, kernel, dilation, in_hw, padding) <= OFFSET_BUFFER_LIMIT):
        costs["offsets"] = offset_products(channels, kernel, dilation, in_hw, padding)
    return min(costs, key=costs.get)


class Conv2dGramAccumulator:
    """Exact patch Gram of a Conv2d's batches, by the cheapest route per input map size.

    The taps read the input with its zero padding implicit, or (reflect, replicate, circular
    padding) the input padded once. Batches of different map sizes (a fully convolutional
    model) each get their own route and are summed at the end.
    """

    def __init__(self, module: nn.Conv2d, dtype: torch.dtype):
        self.module, self.dtype = module, dtype
        self._parts: dict[tuple[int, int], _Conv2dMapGram] = {}

    def add(self, x: torch.Tensor) -> None:
        module = self.module
        x = conv2d_input(module, x)
        pads = conv2d_explicit_padding(module)
        zero_padding = module.padding_mode == "zeros" or not any(pads)
        xm = x if zero_padding else conv2d_padded(module, x)
        route_pads = pads if zero_padding else (0, 0, 0, 0)
        key = tuple(xm.shape[2:])
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Conv2dMapGram(module, key, route_pads, self.dtype, xm.device)
        part.add(xm)

    def result(self):
        """``(G, s, n_rows)`` in float64 over every batch added (``None`` before any batch)."""
        results = [part.result() for part in self._parts.values()]
        if not results:
            return None
        gram, row_sum, n_rows = results[0]
        for g, s, n in results[1:]:
            gram, row_sum, n_rows = gram + g, row_sum + s, n_rows + n
        return gram, row_sum, n_rows


UNFOLD_ELEMENTS = 1 << 22
"""Numbers per unfolded piece of the unfold route on a CPU (16 MiB in float32): All-CNN's 32-channel
stride-2 conv took 10% less time in pieces of 64 images than of 128."""

OFFSET_CHUNK_ELEMENTS = 1 << 21
"""Numbers per chunk of the tap-offset route's zero-gapped copy on a CPU (cache-sized)."""

GPU_PIECE_ELEMENTS = 1 << 27
"""Numbers per unfolded piece or tap-offset chunk on a GPU (512 MiB in float32). Cache-sized
pieces leave a GPU waiting on the launch of thousands of small products: on an H100 the pass
over CIFAR-10 with All-CNN took 7x a training epoch in CPU-sized pieces."""


def piece_elements(device: torch.device, route: str) -> int:
    """How many numbers one unfolded piece (``route="unfold"``) or tap-offset chunk (``"offsets"``) may hold."""
    if torch.device(device).type != "cpu":
        return GPU_PIECE_ELEMENTS
    return UNFOLD_ELEMENTS if route == "unfold" else OFFSET_CHUNK_ELEMENTS


class _Conv2dMapGram:
    """The Gram of one Conv2d over batches of one map size ``in_hw`` (zero padding ``pads`` implicit)."""

    def __init__(self, module: nn.Conv2d, in_hw, pads, dtype: torch.dtype, device):
        self.kernel, self.stride, self.dilation = module.kernel_size, module.stride, module.dilation
        self.pads, self.dtype = pads, dtype
        c = module.in_channels
        d = c * self.kernel[0] * self.kernel[1]
        self.route = conv2d_gram_route(c, self.kernel, self.stride, self.dilation, in_hw, pads, device)
        if self.route == "offsets":
            chunk = piece_elements(device, "offsets")
            self._offsets = OffsetGramAccumulator(c, in_hw, self.kernel, self.dilation, pads, dtype, device,
                                                  chunk_elements=chunk, border_images=max(256, chunk // (1 << 13)))
        else:
            self._gram = torch.zeros(d, d, dtype=torch.float64, device=device)
        self._total = torch.zeros(c, *in_hw, dtype=torch.float64, device=device)
        self.n_images = 0

    def add(self, xm: torch.Tensor) -> None:
        if self.route == "offsets":
            self._offsets.add(xm)
        elif self.route == "unfold":
            # unfolded in pieces of about piece_elements() numbers, each multiplied while it is warm
            ho, wo = conv2d_output_size((xm.shape[2] + self.pads[2] + self.pads[3],
                                         xm.shape[3] + self.pads[0] + self.pads[1]),
                                        self.kernel, self.stride, self.dilation)
            step = max(1, piece_elements(xm.device, "unfold") // max(1, ho * wo * self._gram.shape[0]))
            for start in range(0, xm.shape[0], step):
                self._gram += _tap_major_unfold_products(xm[start : start + step], self.pads, self.kernel, self.stride,
                                                         self.dilation, self.dtype)
        else:
            xp = F.pad(xm, self.pads) if any(self.pads) else xm
            self._gram += row_offset_patch_gram(xp, self.kernel, self.stride, self.dilation, self.dtype)
        # the batch total, summed in ``dtype`` like the products, then float64 across batches
        self._total += _batch_total(xm.to(self.dtype))
        self.n_images += int(xm.shape[0])

    def result(self):
        gram = self._offsets.result() if self.route == "offsets" else self._gram
        # row sums: each tap's window sum of the total (zero padding added to the small total)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        total = F.pad(self._total, self.pads)
        ho, wo = conv2d_output_size(total.shape[1:], self.kernel, self.stride, self.dilation)
        row_sum = torch.stack([
            total[:, u * dh : u * dh + (ho - 1) * sh + 1 : sh, v * dw : v * dw + (wo - 1) * sw + 1 : sw].sum((1, 2))
            for u in range(kh) for v in range(kw)
        ], dim=1).reshape(-1)
        return gram.clone(), row_sum, self.n_images * ho * wo


def _batch_total(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` for an (N, C, H, W) batch, reduced along its memory layout (a plain ``sum(0)``
    of a channels-last batch is a strided reduction, measured 30x slower)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).sum(0).permute(2, 0, 1)
    return x.sum(0)


def _tap_major_unfold_products(xm: torch.Tensor, pads, kernel, stride, dilation, dtype: torch.dtype) -> torch.Tensor:
    """Unfold-then-multiply, with rows built tap-major ``(u, v, c)`` in one copy from a channels-last map.

    ``xm`` is the map the taps read and ``pads`` the zero padding still to add around it.
    Channels-last makes each tap's ``C`` values contiguous, so the rows are gathered in runs of
    ``C`` rather than element by element; the Gram (in ``dtype``) is then permuted back to the
    ``(c, u, v)`` order of ``weight.reshape(C_out, -1)`` (a ``d x d`` permutation, cheap).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    xcl = _channels_last_zero_padded(xm, pads, dtype)
    n, hp, wp, c = xcl.shape
    ho, wo = conv2d_output_size((hp, wp), kernel, stride, dilation)
    taps = xcl.as_strided((n, ho, wo, kh, kw, c),
                          (hp * wp * c, sh * wp * c, sw * c, dh * wp * c, dw * c, 1))
    gram = upper_blocks_gram(taps.reshape(n * ho * wo, kh * kw * c))
    d = c * kh * kw
    return gram.view(kh, kw, c, kh, kw, c).permute(2, 0, 1, 5, 3, 4).reshape(d, d)


def _channels_last_zero_padded(x: torch.Tensor, pads, dtype: torch.dtype) -> torch.Tensor:
    """``x`` zero-padded by ``pads`` (left, right, top, bottom) as a contiguous ``(N, Hp, Wp, C)`` tensor, one copy."""
    left, right, top, bottom = pads
    n, c, h, w = x.shape
    out = x.new_empty((n, h + top + bottom, w + left + right, c), dtype=dtype)
    out[:, :top].zero_()
    out[:, top + h :].zero_()
    out[:, top : top + h, :left].zero_()
    out[:, top : top + h, left + w :].zero_()
    out[:, top : top + h, left : left + w] = x.permute(0, 2, 3, 1)
    return out
