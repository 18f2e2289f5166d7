"""Per-layer adapters: how a layer turns its input into the rows it multiplies its weight with.

PGU (docs/method.md section 2) needs, for every weight layer ``l``, the rows ``x`` such that the
layer computes ``W_l x`` with ``W_l`` its weight viewed as a ``(C_out, d)`` matrix. Each
supported layer class registers one small adapter here; lookup walks the class hierarchy
(``type(module).__mro__``), so subclasses of ``nn.Linear`` / ``nn.Conv2d`` are covered.

Row conventions (every adapter returns a ``(n_rows, d)`` tensor in the input's dtype):

* ``nn.Linear``: each input vector, ``d = in_features`` (leading dimensions flattened).
* ``nn.Conv2d``: each input patch, unfolded with the layer's own kernel size, stride,
  dilation and padding (numbers, ``'same'``, ``'valid'``, and the layer's ``padding_mode``),
  ``d = C_in * k_h * k_w`` ordered channel-major then kernel row then kernel column, which is
  the order of ``weight.reshape(C_out, -1)``. A grouped (or depthwise) convolution with ``g`` groups
  multiplies the patches of input-channel group ``j`` (``d = C_in / g * k_h * k_w``) by output
  channels ``j C_out / g`` to ``(j + 1) C_out / g`` only: its statistics are one Gram per group, a
  ``(g, d, d)`` block stack (:class:`~pgu.gram.accumulators.GroupedRowsAccumulator`), and its CGS and
  projection act group by group.
* ``nn.Embedding``: one one-hot row per token (``d = num_embeddings``); the weight is stored
  transposed (``(V, E)``, applied as ``weight.T @ onehot``), and the Gram of one-hot rows is the
  diagonal of token counts, accumulated and kept as that diagonal, a ``(V,)`` vector
  (:class:`~pgu.gram.accumulators.TokenCountAccumulator`; any vocabulary size, memory ``O(V)``): the
  embeddings of tokens the retained data use are what the CGS holds.
* Transposed-weight linear layers (GPT-2's ``Conv1D``): :func:`register_transposed_linear`.
* ``nn.MultiheadAttention`` (packed ``in_proj_weight``): the rows of ``in_proj_weight`` are its query,
  key and value inputs (each distinct tensor once; self-attention: one), and it feeds its
  ``out_proj``, which it applies without calling it, the attention output before the projection
  (:func:`_mha_feeds`). The statistics pass turns PyTorch's fused attention paths off, since
  ``nn.TransformerEncoderLayer``'s never calls its submodules.
* ``nn.Conv1d``: each input window, ``d = C_in * k`` ordered channel-major then kernel position
  (``weight.reshape(C_out, -1)``), with the layer's stride, dilation, padding (numbers,
  ``'same'``, ``'valid'``) and ``padding_mode``; grouped ones as for Conv2d, one Gram per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pgu.gram.accumulators import (
    Conv2dGramAccumulator,
    GroupedRowsAccumulator,
    RowsGramAccumulator,
    TokenCountAccumulator,
)
from pgu.gram.conv2d_geometry import UnsupportedLayerError, conv2d_explicit_padding, conv2d_padded

__all__ = [
    "LayerAdapter",
    "UnsupportedLayerError",
    "register_layer",
    "adapter_for",
    "conv2d_explicit_padding",
    "register_transposed_linear",
    "weight_matrix",
    "layer_groups",
    "layer_weight",
    "layer_bias",
]


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
        accumulator: ``accumulator(module, dtype)`` -> an object with ``add(x)`` (a batch of
            the layer's inputs) and ``result() -> (G, s, n_rows)`` (float64 Gram ``sum r r^T``
            and row sum over every batch added, products taken in ``dtype``); see
            :mod:`pgu.gram.accumulators`. Defaults to forming the rows and multiplying them
            (:class:`~pgu.gram.accumulators.RowsGramAccumulator`); an adapter may register a
            faster exact route.
        transposed: the 2-D weight is stored ``(d, C_out)`` and multiplies rows as ``weight.T``
            (``nn.Embedding``: one-hot rows; GPT-2's ``Conv1D``); the projection then acts on ``weight.T``.
        weight_name, bias_name: the module's parameters the adapter projects (``in_proj_weight`` and
            ``in_proj_bias`` for ``nn.MultiheadAttention``).
        groups: ``groups(module) -> g``: the number of independent blocks of a block-diagonal weight (a grouped
            convolution's groups; None: 1). Block ``j`` is output channels ``j C_out / g`` onwards and the
            ``j``-th ``d`` columns of every row; its statistics are one Gram per block.
        diagonal: the Gram is diagonal (one-hot rows): statistics keep its diagonal, a ``(d,)`` vector, and the
            CGS is a set of coordinate directions (a 0/1 mask over the ``d`` inputs).
        feeds: ``feeds(module, args, kwargs) -> {relative name: inputs}``, for a layer whose call the
            statistics pass must read with its keyword arguments, and which may feed a submodule the
            layer applies without calling it (``""``: the layer itself; ``"out_proj"``: that child).
            None: the first positional input feeds the layer.
    """

    kind: str
    rows: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    geometry: Callable[[nn.Module], dict]
    check: Callable[[nn.Module, str], None]
    accumulator: Callable | None = None
    transposed: bool = False
    weight_name: str = "weight"
    bias_name: str = "bias"
    feeds: Callable | None = None
    groups: Callable | None = None
    diagonal: bool = False

    def n_groups(self, module: nn.Module) -> int:
        """The number of blocks of the layer's weight (1 but for a grouped convolution)."""
        return 1 if self.groups is None else int(self.groups(module))

    def new_accumulator(self, module: nn.Module, dtype: torch.dtype):
        """A fresh accumulator of this layer's statistics, products in ``dtype``."""
        g = self.n_groups(module)
        if g > 1:
            return GroupedRowsAccumulator(lambda x: self.rows(module, x), g, dtype)
        if self.accumulator is not None:
            return self.accumulator(module, dtype)
        return RowsGramAccumulator(lambda x: self.rows(module, x), dtype)

    def batch_gram(self, module: nn.Module, x: torch.Tensor, dtype: torch.dtype):
        """``(G, s, n_rows)`` in float64 of one batch ``x`` of the layer's inputs."""
        acc = self.new_accumulator(module, dtype)
        acc.add(x)
        return acc.result()


_REGISTRY: dict[type, LayerAdapter] = {}


def register_layer(cls: type, kind: str, *, geometry=None, check=None, accumulator=None, transposed: bool = False,
                   weight_name: str = "weight", bias_name: str = "bias", feeds=None, groups=None, diagonal=False):
    """Decorator registering ``rows`` as the row extractor of layer class ``cls`` (the other fields: see
    :class:`LayerAdapter`)."""

    def decorate(rows_fn):
        _REGISTRY[cls] = LayerAdapter(
            kind=kind,
            rows=rows_fn,
            geometry=geometry or (lambda module: {}),
            check=check or (lambda module, name: None),
            accumulator=accumulator,
            transposed=transposed,
            weight_name=weight_name,
            bias_name=bias_name,
            feeds=feeds,
            groups=groups,
            diagonal=diagonal,
        )
        return rows_fn

    return decorate


def register_transposed_linear(cls: type, kind: str | None = None) -> type:
    """Cover ``cls``, a linear layer whose ``weight`` is stored ``(in_features, out_features)`` and applied as
    ``x @ weight (+ bias)`` (GPT-2's ``Conv1D``): rows are the input vectors, the projection acts on
    ``weight.T``. Returns ``cls``, so it can decorate a class."""

    def rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        d = module.weight.shape[0]
        if x.shape[-1] != d:
            raise ValueError(f"expected inputs with last dimension {d}, got shape {tuple(x.shape)}")
        return x.reshape(-1, d)

    register_layer(cls, kind or cls.__name__, transposed=True)(rows)
    return cls


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter of the nearest registered class in ``module``'s class hierarchy, or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def layer_weight(module: nn.Module):
    """The parameter a covered layer's adapter projects (``module.weight`` for most), or None."""
    adapter = adapter_for(module)
    return getattr(module, "weight" if adapter is None else adapter.weight_name, None)


def layer_bias(module: nn.Module):
    """The bias that goes with :func:`layer_weight` (None when the layer has none)."""
    adapter = adapter_for(module)
    return getattr(module, "bias" if adapter is None else adapter.bias_name, None)


def weight_matrix_shape(module: nn.Module) -> tuple[int, int]:
    """``(C_out, d)``: the shape of the weight viewed as the matrix that multiplies rows."""
    w = layer_weight(module)
    adapter = adapter_for(module)
    if adapter is not None and adapter.transposed:
        return int(w.shape[1]), int(w.shape[0])
    return int(w.shape[0]), int(w[0].numel())


def layer_groups(module: nn.Module) -> int:
    """The number of independent blocks of a covered layer's weight (a grouped convolution's groups; else 1)."""
    adapter = adapter_for(module)
    return 1 if adapter is None else adapter.n_groups(module)


def weight_matrix(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` (default the module's; or a same-shaped update of it) as the ``(C_out, d)`` matrix that
    multiplies rows: a view where the layout allows (a transposed weight's ``.T``), else a copy."""
    w = layer_weight(module) if weight is None else weight
    adapter = adapter_for(module)
    if adapter is not None and adapter.transposed:
        return w.t()
    return w.reshape(w.shape[0], -1)


# --- Linear ---------------------------------------------------------------------------


@register_layer(nn.Linear, "Linear")
def linear_rows(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] != module.in_features:
        raise ValueError(f"expected inputs with last dimension {module.in_features}, got shape {tuple(x.shape)}")
    return x.reshape(-1, module.in_features)


# --- Conv2d ---------------------------------------------------------------------------


def _conv_geometry(explicit_padding):
    """The geometry recorder of a conv kind: everything that changes its rows, padding made explicit."""

    def geometry(module: nn.Module) -> dict:
        return {
            "kernel_size": list(module.kernel_size),
            "stride": list(module.stride),
            "dilation": list(module.dilation),
            "padding": list(explicit_padding(module)),
            "padding_mode": module.padding_mode,
        }

    return geometry


def _conv2d_unfold(module: nn.Conv2d, xp: torch.Tensor) -> torch.Tensor:
    patches = F.unfold(xp, module.kernel_size, dilation=module.dilation, padding=0, stride=module.stride)
    # (N, d, L) -> (N * L, d); d is channel-major, then kernel row, then kernel column.
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _conv_groups(module: nn.Module) -> int:
    return int(module.groups)


@register_layer(nn.Conv2d, "Conv2d", geometry=_conv_geometry(conv2d_explicit_padding), groups=_conv_groups,
                accumulator=Conv2dGramAccumulator)
def conv2d_rows(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return _conv2d_unfold(module, conv2d_padded(module, x))


# --- Conv1d ---------------------------------------------------------------------------


def conv1d_explicit_padding(module: nn.Conv1d) -> tuple[int, int]:
    """``(left, right)`` padding of a Conv1d, ``'same'`` resolved as PyTorch does (the smaller half first)."""
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0)
        if pad == "same":
            total = module.dilation[0] * (module.kernel_size[0] - 1)
            return (total // 2, total - total // 2)
        raise UnsupportedLayerError(f"unknown Conv1d padding {pad!r}")
    return (pad[0], pad[0])


@register_layer(nn.Conv1d, "Conv1d", geometry=_conv_geometry(conv1d_explicit_padding), groups=_conv_groups)
def conv1d_rows(module: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[1] != module.in_channels:
        raise ValueError(f"expected inputs of shape (N, {module.in_channels}, L), got {tuple(x.shape)}")
    pads = conv1d_explicit_padding(module)
    if any(pads):
        x = F.pad(x, pads, mode="constant" if module.padding_mode == "zeros" else module.padding_mode)
    (k,), (stride,), (dilation,) = module.kernel_size, module.stride, module.dilation
    span = dilation * (k - 1) + 1
    windows = x.unfold(2, span, stride)[..., ::dilation]  # (N, C, L_out, k)
    return windows.permute(0, 2, 1, 3).reshape(-1, x.shape[1] * k)  # channel-major, then kernel position


# --- Embedding ------------------------------------------------------------------------

def _embedding_check(module: nn.Embedding, name: str) -> None:
    if module.max_norm is not None or module.sparse:
        raise UnsupportedLayerError(
            f"Embedding {name!r} has max_norm or sparse gradients; PGU supports plain embeddings only. Leave it "
            f"out with GramStats(layers=[...]) (it then stays frozen)."
        )


@register_layer(nn.Embedding, "Embedding", check=_embedding_check, accumulator=TokenCountAccumulator, transposed=True,
                diagonal=True)
def embedding_rows(module: nn.Embedding, x: torch.Tensor) -> torch.Tensor:
    """One one-hot row per token: ``weight.T @ onehot(t)`` is the token's embedding."""
    if x.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"an Embedding takes integer token ids, got {x.dtype}")
    return F.one_hot(x.reshape(-1).long(), module.num_embeddings).to(torch.float64)


# --- MultiheadAttention --------------------------------------------------------------


def _mha_check(module: nn.MultiheadAttention, name: str) -> None:
    if not module._qkv_same_embed_dim:
        raise UnsupportedLayerError(
            f"MultiheadAttention {name!r} has kdim/vdim other than embed_dim (separate q/k/v weights); PGU supports "
            f"the packed in_proj_weight only. Leave it out with GramStats(layers=[...]) (it then stays frozen)."
        )


def _mha_feeds(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The rows of ``in_proj_weight``, and of ``out_proj``, which the module applies without calling it.

    ``in_proj_weight`` multiplies the query, key and value inputs (its q, k and v blocks); its rows are all
    three, each distinct input once (self-attention: the one input), so a change orthogonal to their span
    leaves every block's retained products alone. ``out_proj`` multiplies the attention output before the
    projection: read by running the module once more with ``out_proj`` replaced by the identity
    (``torch.func.functional_call``; the module is not changed).
    """
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs[names[i]] for i in range(3))
    e = module.embed_dim
    distinct: list[torch.Tensor] = []
    for t in (q, k, v):
        if all(t is not u for u in distinct):
            distinct.append(t)
    inputs = torch.cat([t.reshape(-1, e) for t in distinct])
    if len(args) > 4:
        args = args[:4] + (False,) + args[5:]
    else:
        kwargs = {**kwargs, "need_weights": False}
    w = module.out_proj.weight
    identity = {"out_proj.weight": torch.eye(e, dtype=w.dtype, device=w.device),
                "out_proj.bias": torch.zeros(e, dtype=w.dtype, device=w.device)}
    before, _ = torch.func.functional_call(module, identity, args, kwargs)
    return {"": inputs, "out_proj": before.reshape(-1, e)}


@register_layer(nn.MultiheadAttention, "MultiheadAttention", check=_mha_check, weight_name="in_proj_weight",
                bias_name="in_proj_bias", feeds=_mha_feeds, geometry=lambda m: {"embed_dim": m.embed_dim})
def mha_rows(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, module.embed_dim)


def registered_kinds() -> list[str]:
    """The kinds of every registered adapter, sorted (for error messages)."""
    return sorted({a.kind for a in _REGISTRY.values()})
