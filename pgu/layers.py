"""Per-layer adapters: how a layer turns its input into the rows it multiplies its weight with.

PGU (METHOD.md section 2) needs, for every weight layer ``l``, the rows ``x`` such that the
layer computes ``W_l x`` with ``W_l`` its weight viewed as a ``(C_out, d)`` matrix. Each
supported layer class registers one small adapter here; lookup walks the class hierarchy
(``type(module).__mro__``), so subclasses of ``nn.Linear`` / ``nn.Conv2d`` are covered.

Row conventions (every adapter returns a ``(n_rows, d)`` tensor in the input's dtype):

* ``nn.Linear``: each input vector, ``d = in_features`` (leading dimensions flattened).
* ``nn.Conv2d``: each input patch, unfolded with the layer's own kernel size, stride,
  dilation and padding (numbers, ``'same'``, ``'valid'``, and the layer's ``padding_mode``),
  ``d = C_in * k_h * k_w`` ordered channel-major then kernel row then kernel column, which is
  the order of ``weight.reshape(C_out, -1)``. Grouped convolutions are refused with a clear
  error (their weight is block-diagonal; leave such layers out with ``layers=[...]``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .conv_gram import offset_buffer_elements, offset_patch_gram, offset_products
from .conv_gram_rows import row_offset_patch_gram, row_offset_products
from .triangle import upper_blocks_gram

__all__ = [
    "LayerAdapter",
    "UnsupportedLayerError",
    "register_layer",
    "adapter_for",
    "find_layers",
    "conv2d_explicit_padding",
]


class UnsupportedLayerError(ValueError):
    """A layer PGU cannot take statistics of (or a name that is not such a layer)."""


@dataclass(frozen=True)
class LayerAdapter:
    """How one layer class exposes its weight as a matrix and its input as rows.

    Attributes:
        kind: short name written into statistics files (``"Linear"``, ``"Conv2d"``).
        rows: ``rows(module, x) -> (n_rows, d)``: the rows the weight multiplies.
        geometry: ``geometry(module) -> dict`` of JSON-able settings that change the rows
            (recorded with statistics, compared when statistics meet a model).
        check: ``check(module, name)`` raises :class:`UnsupportedLayerError` for a
            configuration the adapter cannot handle.
        gram: ``gram(module, x, dtype) -> (G, s, n_rows)``: the Gram ``sum x x^T`` and row sum
            of this batch's rows, products taken in ``dtype`` and returned in ``dtype`` or
            float64 (the statistics add them into float64). Defaults to forming the rows and
            multiplying them; an adapter may register a faster exact route.
    """

    kind: str
    rows: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    geometry: Callable[[nn.Module], dict]
    check: Callable[[nn.Module, str], None]
    gram: Callable | None = None

    def batch_gram(self, module: nn.Module, x: torch.Tensor, dtype: torch.dtype):
        """``(G, s, n_rows)`` of one batch, in ``dtype`` or float64 (see ``gram``)."""
        if self.gram is not None:
            return self.gram(module, x, dtype)
        return rows_gram(self.rows(module, x), dtype)


_REGISTRY: dict[type, LayerAdapter] = {}


def rows_gram(rows: torch.Tensor, dtype: torch.dtype):
    """``(rows^T rows, rows.sum(0), n_rows)`` of one batch, products and the batch's sums in ``dtype``.

    The product is taken as an upper triangle of blocks (:mod:`pgu.triangle`). The caller adds
    the results into float64 accumulators (in place: no float64 copy of a large Gram per batch).
    """
    r = rows.to(dtype)
    return upper_blocks_gram(r), r.sum(0), int(r.shape[0])


def register_layer(cls: type, kind: str, *, geometry=None, check=None, gram=None):
    """Decorator registering ``rows`` as the row extractor of layer class ``cls``."""

    def decorate(rows_fn):
        _REGISTRY[cls] = LayerAdapter(
            kind=kind,
            rows=rows_fn,
            geometry=geometry or (lambda module: {}),
            check=check or (lambda module, name: None),
            gram=gram,
        )
        return rows_fn

    return decorate


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter of the nearest registered class in ``module``'s class hierarchy, or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def weight_matrix_shape(module: nn.Module) -> tuple[int, int]:
    """``(C_out, d)``: the shape of the weight viewed as the matrix that multiplies rows."""
    w = module.weight
    return int(w.shape[0]), int(w[0].numel())


# --- Linear ---------------------------------------------------------------------------


@register_layer(nn.Linear, "Linear")
def linear_rows(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] != module.in_features:
        raise ValueError(f"expected inputs with last dimension {module.in_features}, got shape {tuple(x.shape)}")
    return x.reshape(-1, module.in_features)


# --- Conv2d ---------------------------------------------------------------------------


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


def _conv2d_geometry(module: nn.Conv2d) -> dict:
    return {
        "kernel_size": list(module.kernel_size),
        "stride": list(module.stride),
        "dilation": list(module.dilation),
        "padding": list(conv2d_explicit_padding(module)),
        "padding_mode": module.padding_mode,
    }


def _conv2d_check(module: nn.Conv2d, name: str) -> None:
    if module.groups != 1:
        raise UnsupportedLayerError(
            f"Conv2d {name!r} has groups={module.groups}; PGU statistics support groups=1 only. "
            f"Leave it out with GramStats(layers=[...]) (its weights then stay frozen during unlearning)."
        )


def _conv2d_input(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input as an (N, C, H, W) batch (an unbatched (C, H, W) input gets N = 1), or a clear error."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != module.in_channels:
        raise ValueError(f"expected inputs of shape (N, {module.in_channels}, H, W), got {tuple(x.shape)}")
    return x


def _conv2d_output_size(padded_hw, kernel, stride, dilation) -> tuple[int, int]:
    """``(Ho, Wo)`` of a conv over an already padded ``(Hp, Wp)`` map."""
    return tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation))


def _conv2d_padded(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    x = _conv2d_input(module, x)
    pads = conv2d_explicit_padding(module)
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads, mode=mode)
    return x


OFFSET_BUFFER_LIMIT = 1 << 25
"""Most float64 numbers (256 MiB) the tap-offset route may keep for one layer; beyond, another route."""


def conv2d_gram_route(channels: int, kernel, stride, dilation, in_hw, padding) -> str:
    """The cheapest exact route to a Conv2d batch's patch Gram: ``"offsets"``, ``"rows"`` or ``"unfold"``.

    Estimated multiply-adds per image: the tap-offset route (:mod:`pgu.conv_gram`,
    stride 1, at least 16 channels so its channel-by-channel products run fast), the kernel-row-offset
    route (:mod:`pgu.conv_gram_rows`, any stride), and unfolded rows multiplied in an upper
    triangle of blocks (:mod:`pgu.triangle`, about 0.6 of ``Ho Wo d^2``; 1x1 convs always,
    their rows being the input itself). ``padding`` is ``(left, right, top, bottom)``. The
    tap-offset route is skipped when its per-row buffers would pass :data:`OFFSET_BUFFER_LIMIT`
    (hundreds of channels on a tall map).
    """
    (kh, kw), (h, w) = kernel, in_hw
    pl, pr, pt, pb = padding
    hp, wp = h + pt + pb, w + pl + pr
    ho, wo = _conv2d_output_size((hp, wp), kernel, stride, dilation)
    if kh * kw == 1 or ho < 1 or wo < 1:
        return "unfold"
    costs = {"unfold": 0.6 * ho * wo * (channels * kh * kw) ** 2,
             "rows": row_offset_products(channels, kernel, (hp, wp), (ho, wo))}
    if (tuple(stride) == (1, 1) and channels >= 16
            and offset_buffer_elements(channels, kernel, dilation, in_hw, padding) <= OFFSET_BUFFER_LIMIT):
        costs["offsets"] = offset_products(channels, kernel, dilation, in_hw, padding)
    return min(costs, key=costs.get)


def _conv2d_gram(module: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype):
    """Exact patch Gram of a batch by the cheapest route (see :func:`conv2d_gram_route`)."""
    x = _conv2d_input(module, x)
    pads = conv2d_explicit_padding(module)
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    zero_padding = module.padding_mode == "zeros" or not any(pads)
    # the map the taps read: the input with its zero padding implicit, or the input padded once
    xm = x if zero_padding else _conv2d_padded(module, x)
    route_pads = pads if zero_padding else (0, 0, 0, 0)
    route = conv2d_gram_route(module.in_channels, kernel, stride, dilation, tuple(xm.shape[2:]), route_pads)
    if route == "unfold":
        return _tap_major_unfold_gram(xm, route_pads, kernel, stride, dilation, dtype)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    if route == "offsets":
        gram = offset_patch_gram(xm, kernel, dilation, route_pads, dtype)
    else:
        xp = F.pad(xm, route_pads) if any(route_pads) else xm
        gram = row_offset_patch_gram(xp, kernel, stride, dilation, dtype)
    # row sums: each tap's window sum of the batch total (summed over the batch in ``dtype``,
    # like the products; zero padding added to the small total, not to the batch)
    total = F.pad(_batch_total(xm.to(dtype)), route_pads).to(torch.float64)
    ho, wo = _conv2d_output_size(total.shape[1:], kernel, stride, dilation)
    row_sum = torch.stack([
        total[:, u * dh : u * dh + (ho - 1) * sh + 1 : sh, v * dw : v * dw + (wo - 1) * sw + 1 : sw].sum((1, 2))
        for u in range(kh) for v in range(kw)
    ], dim=1).reshape(-1)
    return gram, row_sum, int(x.shape[0]) * ho * wo


def _batch_total(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` for an (N, C, H, W) batch, reduced along its memory layout (a plain ``sum(0)``
    of a channels-last batch is a strided reduction, measured 30x slower)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).sum(0).permute(2, 0, 1)
    return x.sum(0)


def _tap_major_unfold_gram(xm: torch.Tensor, pads, kernel, stride, dilation, dtype: torch.dtype):
    """Unfold-then-multiply, with rows built tap-major ``(u, v, c)`` in one copy from a channels-last map.

    ``xm`` is the map the taps read and ``pads`` the zero padding still to add around it.

    Channels-last makes each tap's ``C`` values contiguous, so the rows are gathered in runs of
    ``C`` rather than element by element; the Gram and row sum are then permuted back to the
    ``(c, u, v)`` order of ``weight.reshape(C_out, -1)`` (a ``d x d`` permutation, cheap).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    xcl = _channels_last_zero_padded(xm, pads, dtype)
    n, hp, wp, c = xcl.shape
    ho, wo = _conv2d_output_size((hp, wp), kernel, stride, dilation)
    taps = xcl.as_strided((n, ho, wo, kh, kw, c),
                          (hp * wp * c, sh * wp * c, sw * c, dh * wp * c, dw * c, 1))
    rows = taps.reshape(n * ho * wo, kh * kw * c)
    gram, row_sum, n_rows = rows_gram(rows, dtype)
    d = c * kh * kw
    gram = gram.view(kh, kw, c, kh, kw, c).permute(2, 0, 1, 5, 3, 4).reshape(d, d)
    return gram, row_sum.view(kh, kw, c).permute(2, 0, 1).reshape(d), n_rows


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


def _conv2d_unfold(module: nn.Conv2d, xp: torch.Tensor) -> torch.Tensor:
    patches = F.unfold(xp, module.kernel_size, dilation=module.dilation, padding=0, stride=module.stride)
    # (N, d, L) -> (N * L, d); d is channel-major, then kernel row, then kernel column.
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


@register_layer(nn.Conv2d, "Conv2d", geometry=_conv2d_geometry, check=_conv2d_check, gram=_conv2d_gram)
def conv2d_rows(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return _conv2d_unfold(module, _conv2d_padded(module, x))


# --- lookup ---------------------------------------------------------------------------


def find_layers(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, tuple[nn.Module, LayerAdapter]]:
    """The layers PGU covers, as ``{qualified name: (module, adapter)}`` in model order.

    ``layers=None`` takes every module of a registered class (or subclass) whose weight is
    trainable; a layer its adapter cannot handle (a grouped convolution) is left out with a
    warning, so it stays frozen during unlearning. Named layers must exist and be supported.
    A weight shared by two layers (weight tying) is refused: projecting it for each layer in
    turn would not keep it orthogonal to both spaces. Raises :class:`UnsupportedLayerError`
    with the reason and the fix.
    """
    modules = dict(model.named_modules())
    if layers is None:
        found, skipped = {}, []
        for name, module in modules.items():
            adapter = adapter_for(module)
            weight = getattr(module, "weight", None)
            if adapter is None or not isinstance(weight, torch.Tensor) or not weight.requires_grad:
                continue
            try:
                adapter.check(module, name)
            except UnsupportedLayerError as exc:
                skipped.append(str(exc).split(";")[0])
                continue
            found[name] = (module, adapter)
        if skipped:
            warnings.warn(f"left out, so frozen during unlearning: {'; '.join(skipped)}", stacklevel=3)
        if not found:
            kinds = ", ".join(sorted({a.kind for a in _REGISTRY.values()}))
            raise UnsupportedLayerError(
                f"{type(model).__name__} has no layer PGU supports ({kinds}, or subclasses) with a trainable "
                f"weight; PGU projects the updates of such layers, so the model needs at least one."
            )
    else:
        names = list(layers)
        if not names:
            raise UnsupportedLayerError("layers=[] names no layer; pass None to cover every supported layer")
        if len(set(names)) != len(names):
            raise UnsupportedLayerError(f"layers names a layer twice: {names}")
        found = {}
        for name in names:
            if name not in modules:
                known = [n for n, m in modules.items() if adapter_for(m) is not None]
                raise UnsupportedLayerError(f"the model has no module named {name!r}; supported layers are {known}")
            module = modules[name]
            adapter = adapter_for(module)
            if adapter is None:
                raise UnsupportedLayerError(
                    f"module {name!r} is a {type(module).__name__}, which PGU does not support "
                    f"(supported: {sorted(a.kind for a in _REGISTRY.values())} and their subclasses)"
                )
            adapter.check(module, name)
            found[name] = (module, adapter)
        order = {n: i for i, n in enumerate(modules)}
        found = dict(sorted(found.items(), key=lambda item: order[item[0]]))
    _refuse_tied_weights(modules, found)
    return found


def _refuse_tied_weights(modules: dict[str, nn.Module], found: dict) -> None:
    owners: dict[int, list[str]] = {}
    for name, module in modules.items():
        weight = getattr(module, "weight", None)
        if adapter_for(module) is not None and isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    for name, (module, _) in found.items():
        shared = owners.get(id(module.weight), [])
        if len(shared) > 1:
            raise UnsupportedLayerError(
                f"layers {shared} share one weight tensor (weight tying); PGU cannot keep a shared weight's "
                f"change orthogonal to each layer's retained inputs. Untie the weights to unlearn this model."
            )
