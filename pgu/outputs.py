"""Where a model's logits are: PGU works on ``[batch, classes]`` logits, whatever the model returns.

Real models return more than a tensor: a tuple ``(logits, loss)`` (nanoGPT), a dict, or an
object with a ``.logits`` field (Hugging Face's ``ModelOutput``). :func:`logits_of` reads the
logits from such an output; a caller that knows better passes ``output=``, a callable from the
model's output to the logits (for a sequence model, its reduction to one prediction per input,
e.g. ``output=lambda out: out.logits[:, -1]``).

Default reading, in order: a tensor is the logits; a mapping's ``"logits"`` entry; an object's
``.logits`` attribute; a tuple or list's first element. Whatever is read must be a 2-D tensor
``[batch, classes]`` with at least 2 classes; anything else is refused with the shape seen and
the fix.

:class:`logits_output` makes every forward of a model return its logits for the length of a
``with`` block (a forward hook, removed on exit), so the whole request, its evaluations and its
loss see logits without a wrapper module (a wrapper would rename every layer the statistics were
taken under).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn

__all__ = ["OutputError", "logits_of", "logits_output", "check_output_selector"]

HOW = ("Classifiers: reduce to [batch, classes] logits by passing output=..., a function from the model's "
       "output to its logits, e.g. output=lambda out: out.logits[:, -1] (a sequence model's last position) or "
       "output=lambda out: out[0].mean(1) (the mean over positions)")


class OutputError(ValueError):
    """A model's output holds no ``[batch, classes]`` logits that pgu can find."""


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {list(value)[:6]}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(_describe(v) for v in value[:3])
    return f"a {type(value).__name__}"


def check_output_selector(output) -> None:
    """Refuse an ``output=`` that is neither None nor callable."""
    if output is not None and not callable(output):
        raise TypeError(f"output must be a callable from the model's output to its logits, or None; "
                        f"got {type(output).__name__}")


def logits_of(output, select: Callable | None = None) -> torch.Tensor:
    """The ``[batch, classes]`` logits in a model's ``output`` (module docstring), by ``select`` if given."""
    if select is not None:
        try:
            found = select(output)
        except Exception as exc:
            raise OutputError(f"output= failed on the model's output ({_describe(output)}): "
                              f"{type(exc).__name__}: {exc}") from exc
        where = "output= returned"
    else:
        found, where = _default_logits(output), "the model returned"
    if not isinstance(found, torch.Tensor):
        raise OutputError(f"{where} {_describe(found if select is not None else output)}, not a logits tensor. {HOW}")
    if found.dim() != 2 or found.shape[1] < 2:
        raise OutputError(f"{where} logits of shape {list(found.shape)}; pgu needs [batch, classes >= 2]. {HOW}")
    return found


def _default_logits(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output.get("logits")
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


class logits_output:
    """``with logits_output(model, output):`` every call of ``model`` returns :func:`logits_of` its output.

    A forward hook on ``model``, registered on entry and removed on exit (also on error). Hooks registered
    later on ``model`` see the logits.
    """

    def __init__(self, model: nn.Module, output: Callable | None = None):
        check_output_selector(output)
        self.model, self.output, self.handle = model, output, None

    def __enter__(self) -> nn.Module:
        select = self.output
        self.handle = self.model.register_forward_hook(lambda module, args, out: logits_of(out, select))
        return self.model

    def __exit__(self, *exc) -> bool:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        return False
