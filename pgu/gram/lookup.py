"""Which layers of a model PGU covers, and the one form of weight sharing it projects exactly.

:func:`find_layers` walks a model for modules with a registered adapter (:mod:`pgu.gram.layers`, looked
up along the class hierarchy). :func:`check_shared_parameters` refuses a covered parameter that another
module also owns, except a *tied pair*: one 2-D tensor used as the weight of a transposed layer (an
``nn.Embedding``, whose matrix is ``W^T``, multiplying one-hot token rows) and of a plain one (an
``nn.Linear`` output head, whose matrix is ``W``, multiplying hidden vectors), the weight tying of GPT-style
language models. The two projections then act on different sides of ``W``:

    dW <- (I - P_tokens) dW (I - P_hidden)

with ``P_tokens = M_e M_e^T`` the embedding's CGS (token space, rows of ``W``) and ``P_hidden = M_h M_h^T``
the head's (hidden space, columns of ``W``). Left and right multiplications commute, so the product is the
orthogonal projection onto the updates orthogonal to both CGSs: retained tokens keep their embeddings and
retained hidden states keep their logits (:class:`pgu.projection.GradientProjector` applies it).
"""

from __future__ import annotations

import warnings
from typing import Iterable

import torch
from torch import nn

from pgu.gram.layers import LayerAdapter, UnsupportedLayerError, adapter_for, layer_weight, registered_kinds

__all__ = ["find_layers", "check_shared_parameters", "tied_pairs", "NoSupportedLayerError"]


class NoSupportedLayerError(UnsupportedLayerError):
    """The model has no layer PGU supports."""


def find_layers(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, tuple[nn.Module, LayerAdapter]]:
    """The layers PGU covers, as ``{qualified name: (module, adapter)}`` in model order.

    ``layers=None`` takes every module of a registered class (or subclass) whose weight is
    trainable; a layer its adapter cannot handle is left out with a warning, so it stays frozen
    during unlearning. Named layers must exist and be supported. A parameter a covered layer
    shares with another module is refused unless the two form a tied pair
    (:func:`check_shared_parameters`). Raises :class:`UnsupportedLayerError` with the reason and the fix.
    """
    modules = dict(model.named_modules())
    if layers is None:
        found, skipped = {}, []
        for name, module in modules.items():
            adapter = adapter_for(module)
            weight = layer_weight(module)
            if adapter is None or not isinstance(weight, torch.Tensor) or not weight.requires_grad:
                continue
            try:
                adapter.check(module, name)
            except UnsupportedLayerError as exc:
                skipped.append(str(exc).split(";")[0])
                continue
            found[name] = (module, adapter)
        if skipped:
            warnings.warn(f"left out, so frozen during unlearning: {'; '.join(skipped)}", stacklevel=4)
        if not found:
            raise NoSupportedLayerError(
                f"{type(model).__name__} has no layer PGU supports ({', '.join(registered_kinds())}, or subclasses) "
                f"with a trainable weight; PGU projects the updates of such layers, so the model needs at least one."
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
                    f"(supported: {registered_kinds()} and their subclasses)"
                )
            adapter.check(module, name)
            found[name] = (module, adapter)
        order = {n: i for i, n in enumerate(modules)}
        found = dict(sorted(found.items(), key=lambda item: order[item[0]]))
    check_shared_parameters(model, found)
    return found


def _owners(model: nn.Module) -> dict[int, list[tuple[str, str, nn.Module]]]:
    """``{id(parameter): [(module name, parameter name, module), ...]}``, every module that owns each tensor."""
    owners: dict[int, list[tuple[str, str, nn.Module]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            entry = (mod_name, p_name, module)
            if all(m is not module for _, _, m in owners.get(id(p), [])):
                owners.setdefault(id(p), []).append(entry)
    return owners


def _is_tied_pair(p: torch.Tensor, owners: list[tuple[str, str, nn.Module]], covered: set[str]) -> bool:
    """Whether ``p``'s owners are two covered layers using it as the weight, one transposed and one not."""
    if len(owners) != 2 or p.dim() != 2:
        return False
    adapters = [adapter_for(m) for _, _, m in owners]
    if any(a is None for a in adapters):
        return False
    return (all(n in covered and pn == a.weight_name for (n, pn, _), a in zip(owners, adapters))
            and adapters[0].transposed != adapters[1].transposed)


def tied_pairs(model: nn.Module, layers: Iterable[str]) -> list[tuple[str, str]]:
    """``[(transposed layer, plain layer), ...]``: the covered layers that share one weight as a tied pair
    (module docstring), e.g. ``("wte", "lm_head")``."""
    covered = set(layers)
    modules = dict(model.named_modules())
    owners = _owners(model)
    pairs = []
    for name in covered:
        p = layer_weight(modules[name])
        group = owners.get(id(p), [])
        if adapter_for(modules[name]).transposed and _is_tied_pair(p, group, covered):
            other = next(n for n, _, m in group if m is not modules[name])
            pairs.append((name, other))
    order = {n: i for i, n in enumerate(modules)}
    return sorted(pairs, key=lambda pair: order[pair[0]])


def check_shared_parameters(model: nn.Module, layers: Iterable[str]) -> None:
    """Refuse a covered layer's parameter that another module also owns, unless the two are a tied pair.

    PGU keeps a weight's change orthogonal to the retained inputs of the layer it projects for; a
    tensor shared with another module would move that module unchecked. A tied pair (an embedding and
    an output head sharing one matrix, both covered) is projected on both sides (module docstring).
    The same module registered under two names (and so called twice) is fine: its statistics take the
    rows of every call. Raises :class:`UnsupportedLayerError` naming both owners and the fix.
    """
    covered = set(layers)
    owners = _owners(model)
    modules = dict(model.named_modules())
    for name in covered:
        module = modules[name]
        for p_name, p in module.named_parameters(recurse=False):
            group = owners.get(id(p), [])
            others = [(n, pn, m) for n, pn, m in group if m is not module]
            if not others or _is_tied_pair(p, group, covered):
                continue
            other_mod, other_p, other = others[0]
            other_name = f"{other_mod}.{other_p}" if other_mod else other_p
            raise UnsupportedLayerError(
                f"{name}.{p_name} ({type(module).__name__}) is the same tensor as {other_name} "
                f"({type(other).__name__}): weight tying across modules, which PGU cannot project this way (it keeps "
                f"the change orthogonal to the retained inputs of {name!r} only, so {other_name} would move "
                f"unchecked). PGU projects one kind of tying exactly: an embedding (or other transposed layer) and a "
                f"Linear head sharing their weight, both covered. Otherwise untie them, e.g. "
                f"{other_name} = nn.Parameter({other_name}.detach().clone()) on the model, or leave {name!r} out "
                f"with GramStats(layers=[...])."
            )
