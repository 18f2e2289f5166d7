"""Which trainable parameters a request moves, and why the others stay frozen.

PGU moves a weight only where it can keep the change orthogonal to the retained inputs
(docs/method.md section 4): the weight of a layer with a registered adapter
(:mod:`pgu.gram.layers`: ``nn.Linear``, ``nn.Conv2d``, ``nn.Conv1d``, ``nn.Embedding``,
``nn.MultiheadAttention``'s ``in_proj_weight``, their subclasses, and transposed-weight linears
registered with ``register_transposed_linear``). Every other
trainable parameter is frozen: its gradient is zeroed (:class:`pgu.GradientProjector`).
:func:`coverage` lists each trainable parameter with its status and the reason, so nothing is
frozen without a word.

Policy, for parameters that have no input Gram to project against:

* a covered layer's bias: frozen as in the authors' method (``bias="frozen"``), or projected
  together with the weight (``bias="projected"``: the Gram of the inputs augmented with 1);
* normalisation scales and shifts (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm):
  frozen. They act per channel on the output, not on inputs, so the CGS says nothing about them;
* free tensors registered outside a layer (class tokens, position embeddings): frozen, for the
  same reason;
* layers that PGU has no adapter for, or a configuration the adapter refuses (attention with
  separate q/k/v weights): frozen, *not* by choice. :func:`pgu.unlearn` warns once per request about these.

A parameter shared by a covered layer and another module (weight tying) is refused, by
:func:`coverage` as by the statistics pass (:func:`pgu.gram.lookup.check_shared_parameters`), except
the tied pair of language models: an ``nn.Embedding`` and a Linear head sharing one matrix, both
covered, whose weight is projected on both sides (listed once, with both layers named).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from pgu.gram.layers import UnsupportedLayerError, adapter_for
from pgu.gram.lookup import NoSupportedLayerError, find_layers, tied_pairs

__all__ = ["ParameterCoverage", "Coverage", "coverage", "NORM_LAYERS"]

NORM_LAYERS: tuple[type, ...] = tuple(
    cls for cls in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None))
    if cls is not None
)
"""Normalisation layers (and their subclasses) whose affine parameters are frozen by policy."""

PROJECTED, FROZEN = "projected", "frozen"


@dataclass(frozen=True)
class ParameterCoverage:
    """One trainable parameter: ``status`` is ``"projected"`` or ``"frozen"``; ``chosen`` is False only
    for a parameter frozen because PGU cannot project it (no adapter, an unsupported configuration)."""

    name: str
    shape: tuple[int, ...]
    module: str
    module_type: str
    status: str
    reason: str
    chosen: bool = True


class Coverage:
    """The coverage of a model: one :class:`ParameterCoverage` per trainable parameter, in model order."""

    def __init__(self, entries: list[ParameterCoverage]):
        self.entries = list(entries)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def projected(self) -> list[ParameterCoverage]:
        return [e for e in self.entries if e.status == PROJECTED]

    @property
    def frozen(self) -> list[ParameterCoverage]:
        return [e for e in self.entries if e.status == FROZEN]

    @property
    def unexpected(self) -> list[ParameterCoverage]:
        """Parameters frozen because PGU cannot project them, not by policy or the user's choice."""
        return [e for e in self.entries if not e.chosen]

    def numel(self, status: str) -> int:
        """Number of scalars with ``status``."""
        return sum(math.prod(e.shape) for e in self.entries if e.status == status)

    def summary(self) -> str:
        """One line: how many parameters (and scalars) are projected and frozen."""
        p, f = self.numel(PROJECTED), self.numel(FROZEN)
        share = 100.0 * p / max(p + f, 1)
        return (f"{len(self.projected)} parameters projected ({p:,} values, {share:.1f}%), "
                f"{len(self.frozen)} frozen ({f:,} values), {len(self.unexpected)} of them not by choice")

    def table(self) -> str:
        """A plain-text table, one row per trainable parameter, then :meth:`summary`."""
        rows = [("parameter", "shape", "module", "status", "reason")]
        for e in self.entries:
            mark = "" if e.chosen else " (!)"
            rows.append((e.name, "x".join(map(str, e.shape)) or "scalar", e.module_type, e.status + mark, e.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
        return "\n".join(lines + ["", self.summary()])

    def __str__(self) -> str:
        return self.table()

    def warning(self) -> str | None:
        """The text of the warning about :attr:`unexpected` parameters (None when there are none)."""
        by_module: dict[str, list[ParameterCoverage]] = {}
        for e in self.unexpected:
            by_module.setdefault(e.module or "(model)", []).append(e)
        if not by_module:
            return None
        parts = [f"{m} ({es[0].module_type}: {es[0].reason})" for m, es in by_module.items()]
        n = sum(len(es) for es in by_module.values())
        return (f"{n} trainable parameter(s) stay frozen because PGU cannot project them: " + "; ".join(parts)
                + ". print(pgu.coverage(model)) lists every parameter; freeze them yourself "
                  "(requires_grad=False) to silence this warning.")


def coverage(model: nn.Module, layers: Iterable[str] | None = None, *, bias: str = "frozen",
             stats=None) -> Coverage:
    """Every trainable parameter of ``model``: projected or frozen, and why (module docstring).

    Args:
        model: the network.
        layers: the layers the statistics cover (``GramStats.layer_names``), or None for the
            default choice of :func:`pgu.gram.lookup.find_layers` (every supported layer).
        bias: ``"frozen"`` (the authors) or ``"projected"``, as in :class:`pgu.PGUSettings`.
        stats: fitted :class:`pgu.GramStats` of the model (``layers`` then defaults to theirs): a layer
            they hold no rows of was never called during their pass (``nn.MultiheadAttention`` applies its
            ``out_proj`` weight without calling the module) and stays frozen, which the table then says.
    """
    if bias not in ("frozen", "projected"):
        raise ValueError(f"bias must be 'frozen' or 'projected', got {bias!r}")
    if stats is not None and layers is None:
        layers = stats.layer_names
    never_called = set() if stats is None else {n for n, rows in stats.n_rows_.items() if rows == 0}
    chosen_layers = layers is not None
    covered = set(find_layers_silently(model, layers))  # find_layers refuses weight sharing (check_shared_parameters)
    partner = {}
    for a, b in tied_pairs(model, covered):
        partner[a], partner[b] = b, a
    entries, seen = [], set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if mod_name in never_called:
                status, reason, chosen = FROZEN, "never called during the statistics pass (no rows to protect)", False
            else:
                status, reason, chosen = _classify(module, mod_name, p_name, covered, chosen_layers, bias,
                                                   partner.get(mod_name))
            entries.append(ParameterCoverage(name, tuple(p.shape), mod_name, type(module).__name__, status, reason,
                                             chosen))
    return Coverage(entries)


def find_layers_silently(model: nn.Module, layers) -> list[str]:
    """The covered layer names (:func:`find_layers`) without its warning about layers left out; none for a
    model without a supported layer (then every parameter is frozen)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(find_layers(model, layers))
        except NoSupportedLayerError:
            return []


def _classify(module, mod_name, p_name, covered, chosen_layers, bias, tied_with=None) -> tuple[str, str, bool]:
    adapter = adapter_for(module)
    if mod_name in covered and adapter is not None:
        if p_name == adapter.weight_name and tied_with is not None:
            return PROJECTED, f"tied with {tied_with}'s weight: every update orthogonal to both CGSs", True
        if p_name == adapter.weight_name:
            groups = adapter.n_groups(module)
            if groups > 1:
                return (PROJECTED, f"{adapter.kind} weight, {groups} groups: each group's update orthogonal to its "
                                   f"CGS", True)
            return PROJECTED, f"{adapter.kind} weight: every update orthogonal to its CGS", True
        if p_name == adapter.bias_name:
            if bias == "projected":
                return PROJECTED, "bias, projected with the weight (bias='projected')", True
            return FROZEN, "bias: frozen, as in the authors' method (bias='projected' moves it)", True
        return FROZEN, "a tensor of the layer other than its weight and bias (no input Gram): frozen by policy", True
    if adapter is not None:
        try:
            adapter.check(module, mod_name)
        except UnsupportedLayerError as exc:
            return FROZEN, f"not supported: {str(exc).split(';')[0]}", False
        weight = getattr(module, adapter.weight_name, None)
        if isinstance(weight, torch.Tensor) and not weight.requires_grad:
            return FROZEN, "its layer's weight is not trainable, so the layer is not covered", True
        if chosen_layers:
            return FROZEN, "left out of the statistics (layers=[...])", True
        return FROZEN, "its layer is not covered", False
    if isinstance(module, NORM_LAYERS):
        return FROZEN, "normalisation scale/shift: frozen by policy (acts per channel; no input Gram)", True
    if p_name in ("weight", "bias") or _looks_like_layer(module):
        return FROZEN, f"no PGU adapter for {type(module).__name__} (pgu.register_layer adds one)", False
    return FROZEN, "free tensor (not a layer's weight; no input Gram): frozen by policy", True


def _looks_like_layer(module: nn.Module) -> bool:
    """A module that multiplies its inputs by a parameter of its own under another name
    (``nn.MultiheadAttention.in_proj_weight``, ``nn.Bilinear``, RNN weights)."""
    return isinstance(module, (nn.MultiheadAttention, nn.RNNBase, nn.Bilinear))
