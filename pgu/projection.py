"""Projected updates orthogonal to the Core Gradient Space (docs/method.md section 4).

For a covered layer with weight ``W`` viewed as a ``(C_out, d)`` matrix and CGS basis ``M``
(``d x k``, orthonormal columns), an update ``g`` becomes

    g <- g - (g M) M^T                                                    (paper, Eq. 7)

so ``g M = 0``: every retained input ``x`` in the CGS sees no change of ``W x``. With a
projected bias the matrix is ``[W | b]`` and ``M`` has ``d + 1`` rows.

Two tools:

* :class:`GradientProjector` rewrites ``.grad`` in place (``project_()``) between
  ``loss.backward()`` and ``optimizer.step()``, and zeroes the gradient of every other
  trainable parameter. That is exactly the authors' step for plain SGD.
* :class:`ProjectedOptimizer` wraps ANY torch optimizer so that the weight change it makes,
  not only the gradient, is orthogonal: momentum, weight decay and Adam's per-element scaling
  all re-introduce CGS components that projecting the gradient alone lets through. After
  the inner step it projects ``W_new - W_old`` and puts every non-projected parameter back.
"""

from __future__ import annotations

import torch
from torch import nn

from pgu.gram.layers import (
    UnsupportedLayerError,
    adapter_for,
    layer_bias,
    layer_groups,
    layer_weight,
    weight_matrix,
    weight_matrix_shape,
)
from pgu.gram.lookup import check_shared_parameters, tied_pairs
from pgu.stats import NotFittedError, StatsMismatchError
from pgu.subspace import CoreGradientSpace

__all__ = ["GradientProjector", "ProjectedOptimizer", "projection_residual"]


def _project_rows_(matrix: torch.Tensor, basis: torch.Tensor) -> None:
    """In place: ``matrix <- matrix - (matrix @ basis) @ basis.T``; group by group for a ``(g, d, k)`` basis and a
    ``(g, C_out / g, d)`` matrix (a grouped convolution's blocks); for a ``(d,)`` 0/1 mask (the CGS of a diagonal
    Gram, coordinate directions) the masked columns are zeroed, which is the same formula."""
    if basis.dim() == 1:  # a 0/1 mask over the inputs (a diagonal Gram's CGS): zero the masked columns
        matrix.mul_(1.0 - basis)
        return
    if basis.shape[-1] == 0:
        return
    if basis.dim() == 2 and basis.shape[1] == basis.shape[0]:
        matrix.zero_()
        return
    matrix.sub_((matrix @ basis) @ basis.mT)


class _Layer:
    """One projected layer: its weight, optional projected bias, and basis in the weight's dtype."""

    def __init__(self, name: str, module: nn.Module, basis: torch.Tensor, augmented: bool):
        self.name = name
        self.weight = layer_weight(module)
        self.bias = layer_bias(module) if augmented else None
        self.basis = basis.to(device=self.weight.device, dtype=self.weight.dtype)
        self.c_out = weight_matrix_shape(module)[0]
        adapter = adapter_for(module)
        self.transposed = adapter is not None and adapter.transposed
        self.groups = basis.shape[0] if basis.dim() == 3 else 1

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def project_(self, weight_part: torch.Tensor, bias_part: torch.Tensor | None) -> None:
        """Project an update of this layer (gradient or weight change) in place.

        Rows are ``weight.reshape(C_out, -1)`` in logical order, whatever the memory layout: a
        channels-last update is projected on a contiguous copy and written back.
        """
        if self.transposed:  # stored (d, C_out): the matrix that multiplies rows is the transpose, a view
            contiguous, w = True, weight_part.t()
        else:
            contiguous = weight_part.is_contiguous()
            w = weight_part.view(self.c_out, -1) if contiguous else weight_part.contiguous().view(self.c_out, -1)
        if bias_part is None:
            _project_rows_(self._blocks(w), self.basis)
        else:
            joined = torch.cat([w, bias_part.view(self.c_out, 1)], dim=1)
            _project_rows_(self._blocks(joined), self.basis)
            w.copy_(joined[:, :-1])
            bias_part.view(self.c_out).copy_(joined[:, -1])
        if not contiguous:
            weight_part.copy_(w.view(weight_part.shape))

    def _blocks(self, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix`` ``(C_out, d)``, or a view ``(g, C_out / g, d)`` of a grouped layer's blocks."""
        return matrix if self.groups == 1 else matrix.view(self.groups, self.c_out // self.groups, matrix.shape[1])


class _TiedPair:
    """Two covered layers sharing one weight ``W`` (``(V, E)``): a transposed one (an embedding, matrix
    ``W^T`` on token rows, basis ``M_t`` over ``V``) and a plain one (a head, matrix ``W`` on hidden rows,
    basis ``M_h`` over ``E``, ``+ 1`` with its projected bias). An update becomes

        [dW | db] <- (I - M_t M_t^T) [dW | db] (I - M_h M_h^T)

    (:mod:`pgu.gram.lookup`): the two factors commute, so the result is orthogonal to both CGSs. The
    bias, the head's alone, takes the left factor too; that keeps the factors commuting (the
    embedding's guarantee concerns ``W`` only)."""

    def __init__(self, transposed: _Layer, plain: _Layer):
        if transposed.bias is not None:
            raise UnsupportedLayerError(
                f"{transposed.name!r} shares its weight with {plain.name!r} and has a projected bias; PGU projects "
                f"a tied pair only when the transposed layer's bias is frozen (bias='frozen')")
        self.name = f"{transposed.name}+{plain.name}"
        self.transposed, self.plain = transposed, plain
        self.weight, self.bias = plain.weight, plain.bias

    @property
    def params(self) -> list[torch.Tensor]:
        return self.plain.params

    def project_(self, weight_part: torch.Tensor, bias_part: torch.Tensor | None) -> None:
        self.plain.project_(weight_part, bias_part)
        # the left factor on [W | b] is the right factor on its transpose, whose columns are the tokens
        for part in (weight_part,) if bias_part is None else (weight_part, bias_part.view(-1, 1)):
            _project_rows_(part.t(), self.transposed.basis)


class GradientProjector:
    """Project the gradients of a model's covered layers orthogonal to their CGS.

    Args:
        model: the model being unlearned; its layers must match the statistics the CGS came from.
        cgs: a fitted :class:`~pgu.subspace.CoreGradientSpace`.

    Every trainable parameter that is not a projected weight (or projected bias) is *frozen*:
    ``project_()`` zeroes its gradient, as in the authors' code (biases, BatchNorm affine
    parameters, layers left out of the statistics).
    """

    def __init__(self, model: nn.Module, cgs: CoreGradientSpace):
        if not hasattr(cgs, "basis_"):
            raise NotFittedError("the CoreGradientSpace is not fitted; call cgs.fit(retain_stats) first")
        modules = dict(model.named_modules())
        self.layers: list[_Layer] = []
        for name, basis in cgs.basis_.items():
            module = modules.get(name)
            if module is None or not isinstance(layer_weight(module), torch.Tensor):
                raise StatsMismatchError(f"the CGS has layer {name!r}, which the model lacks")
            if layer_weight(module).dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"layer {name!r} has {layer_weight(module).dtype} weights; rounding in low precision breaks the "
                    f"orthogonality of the projected change. Unlearn a float32 copy (model.float())."
                )
            d = weight_matrix_shape(module)[1]
            augmented = cgs.augmented_[name]
            groups = basis.shape[0] if basis.dim() == 3 else 1
            if groups != layer_groups(module):
                raise StatsMismatchError(f"layer {name!r}: the CGS has {groups} group(s) but the layer "
                                         f"{layer_groups(module)}")
            if augmented and layer_bias(module) is None:
                raise StatsMismatchError(f"the CGS of layer {name!r} includes a bias, which the model's layer lacks")
            rows = basis.shape[0] if basis.dim() == 1 else basis.shape[-2]
            if rows != d + int(augmented):
                raise StatsMismatchError(
                    f"layer {name!r}: the CGS basis has {rows} rows but the weight takes {d} inputs"
                    f"{' plus the bias' if augmented else ''}"
                )
            self.layers.append(_Layer(name, module, basis, augmented))
        self.layers = _join_tied_pairs(model, self.layers)
        projected = {id(p) for layer in self.layers for p in layer.params}
        self.projected_params = [p for layer in self.layers for p in layer.params]
        self.frozen_params = [p for p in model.parameters() if p.requires_grad and id(p) not in projected]

    @torch.no_grad()
    def project_(self) -> None:
        """Rewrite ``.grad`` in place: ``g <- g - (g M) M^T`` for projected weights, 0 for the rest."""
        for layer in self.layers:
            if layer.weight.grad is None:
                continue
            bias_grad = None
            if layer.bias is not None:
                if layer.bias.grad is None:
                    layer.bias.grad = torch.zeros_like(layer.bias)
                bias_grad = layer.bias.grad
            layer.project_(layer.weight.grad, bias_grad)
        for p in self.frozen_params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def snapshot(self, frozen: list[torch.Tensor] | None = None):
        """Copies of the projected parameters and of ``frozen`` (default: all frozen ones)."""
        frozen = self.frozen_params if frozen is None else frozen
        return [p.detach().clone() for p in self.projected_params], [(p, p.detach().clone()) for p in frozen]

    @torch.no_grad()
    def project_change_(self, before) -> None:
        """Make the change since ``before`` (a :meth:`snapshot`) orthogonal; restore frozen parameters."""
        projected, frozen = before
        it = iter(projected)
        for layer in self.layers:
            w0 = next(it)
            b0 = next(it) if layer.bias is not None else None
            dw = layer.weight - w0
            db = None if b0 is None else layer.bias - b0
            layer.project_(dw, db)
            layer.weight.copy_(w0 + dw)
            if db is not None:
                layer.bias.copy_(b0 + db)
        for p, old in frozen:
            p.copy_(old)


def _join_tied_pairs(model: nn.Module, layers: list[_Layer]) -> list:
    """``layers`` with each tied pair (two layers sharing a weight, :mod:`pgu.gram.lookup`) made one
    :class:`_TiedPair` where the plain layer stood; any other sharing is refused."""
    check_shared_parameters(model, [layer.name for layer in layers])
    pairs = dict(tied_pairs(model, [layer.name for layer in layers]))
    if not pairs:
        return layers
    by_name = {layer.name: layer for layer in layers}
    plain_of = {plain: t for t, plain in pairs.items()}
    out = []
    for layer in layers:
        if layer.name in pairs:
            continue
        out.append(_TiedPair(by_name[plain_of[layer.name]], layer) if layer.name in plain_of else layer)
    return out


class ProjectedOptimizer:
    """Wrap any torch optimizer so each step's weight change is orthogonal to the CGS.

    ``step()`` = project gradients, remember the parameters, run the inner optimizer, then
    project the realised change and restore frozen parameters. For plain SGD (no momentum,
    no weight decay: the authors' step) the change is the projected gradient times the
    learning rate, so the last two are skipped: on LeNet the second projection of its
    3136-wide layer cost as much as the forward and backward pass. ``param_groups``, ``state``,
    ``defaults``, ``zero_grad`` and ``state_dict`` are the inner optimizer's, so learning-rate
    schedulers and checkpoints work as usual.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, projector: GradientProjector):
        self.optimizer = optimizer
        self.projector = projector
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        # Only frozen parameters the inner optimizer can move need restoring after a step.
        self._frozen = [p for p in projector.frozen_params if id(p) in in_optimizer]

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        else:
            loss = None
        self.projector.project_()
        if self._plain_sgd():
            # the change is -lr times the projected gradient (frozen gradients are zero): already
            # orthogonal, the authors' step exactly; no snapshot, no second projection
            self.optimizer.step()
            return loss
        before = self.projector.snapshot(self._frozen)
        self.optimizer.step()
        self.projector.project_change_(before)
        return loss

    def _plain_sgd(self) -> bool:
        """Plain SGD (no momentum, no weight decay in any group): its change is the step of the gradient alone."""
        return type(self.optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0 for g in self.optimizer.param_groups)


@torch.no_grad()
def projection_residual(before: nn.Module, after: nn.Module, cgs: CoreGradientSpace) -> dict[str, float]:
    """``{layer: ||dW M|| / max(||dW||, tiny)}``: how far a weight change leaks into the CGS.

    0 means the change is exactly orthogonal (the invariant of docs/method.md section 4).
    """
    b, a = dict(before.named_modules()), dict(after.named_modules())
    out = {}
    for name, basis in cgs.basis_.items():
        w0, w1 = layer_weight(b[name]).detach().double(), layer_weight(a[name]).detach().double()
        dw = weight_matrix(b[name], w1 - w0)
        if cgs.augmented_[name]:
            b0, b1 = layer_bias(b[name]).detach().double(), layer_bias(a[name]).detach().double()
            dw = torch.cat([dw, (b1 - b0)[:, None]], 1)
        if basis.dim() == 3:  # a grouped layer: each group's block against its own CGS
            dw = dw.reshape(basis.shape[0], -1, dw.shape[1])
        basis = basis.to(dw.device)
        inside = dw * basis if basis.dim() == 1 else dw @ basis  # a (d,) mask: the masked columns are dW M
        norm = float(dw.norm())
        out[name] = float(inside.norm()) / max(norm, 1e-300) if norm > 0 else 0.0
    return out
