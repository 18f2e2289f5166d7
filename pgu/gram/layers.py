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

from pgu.gram.accumulators import Conv2dGramAccumulator, RowsGramAccumulator
from pgu.gram.conv2d_geometry import UnsupportedLayerError, conv2d_explicit_padding, conv2d_padded

__all__ = [
    "LayerAdapter",
    "UnsupportedLayerError",
    "register_layer",
    "adapter_for",
    "find_layers",
    "conv2d_explicit_padding",
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
    """

    kind: str
    rows: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    geometry: Callable[[nn.Module], dict]
    check: Callable[[nn.Module, str], None]
    accumulator: Callable | None = None

    def new_accumulator(self, module: nn.Module, dtype: torch.dtype):
        """A fresh accumulator of this layer's statistics, products in ``dtype``."""
        if self.accumulator is not None:
            return self.accumulator(module, dtype)
        return RowsGramAccumulator(lambda x: self.rows(module, x), dtype)

    def batch_gram(self, module: nn.Module, x: torch.Tensor, dtype: torch.dtype):
        """``(G, s, n_rows)`` in float64 of one batch ``x`` of the layer's inputs."""
        acc = self.new_accumulator(module, dtype)
        acc.add(x)
        return acc.result()


_REGISTRY: dict[type, LayerAdapter] = {}


def register_layer(cls: type, kind: str, *, geometry=None, check=None, accumulator=None):
    """Decorator registering ``rows`` as the row extractor of layer class ``cls``."""

    def decorate(rows_fn):
        _REGISTRY[cls] = LayerAdapter(
            kind=kind,
            rows=rows_fn,
            geometry=geometry or (lambda module: {}),
            check=check or (lambda module, name: None),
            accumulator=accumulator,
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


def _conv2d_unfold(module: nn.Conv2d, xp: torch.Tensor) -> torch.Tensor:
    patches = F.unfold(xp, module.kernel_size, dilation=module.dilation, padding=0, stride=module.stride)
    # (N, d, L) -> (N * L, d); d is channel-major, then kernel row, then kernel column.
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


@register_layer(nn.Conv2d, "Conv2d", geometry=_conv2d_geometry, check=_conv2d_check,
                accumulator=Conv2dGramAccumulator)
def conv2d_rows(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return _conv2d_unfold(module, conv2d_padded(module, x))


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
