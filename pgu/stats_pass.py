"""One statistics pass over a model (docs/method.md section 2), and its sum over processes.

:class:`StatsPass` installs a forward pre-hook on every covered layer for the length of a ``with``
block (removed on exit, also on error), feeds each layer's inputs to an accumulator of
:mod:`pgu.gram.accumulators` and collects their float64 ``(G, s, n_rows)``. Under ``torchrun``
:meth:`StatsPass.reduce_over_ranks` sums those over processes (:mod:`pgu.distributed`), so ranks that
each read a shard end with the statistics of the union. :class:`pgu.GramStats` is the public face.
"""

from __future__ import annotations

import json
import warnings

import torch
from torch import nn

from pgu import distributed
from pgu.fast_forward import FastForward
from pgu.gram.layers import UnsupportedLayerError, adapter_for, layer_bias, layer_groups, weight_matrix_shape
from pgu.gram.lookup import find_layers
from pgu.modes import eval_mode
from pgu.outputs import OutputError

__all__ = ["StatsPass", "model_device", "layer_info", "gram_shape", "row_sum_shape", "describe_layer",
           "find_layers_quiet"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _fastpath_off() -> bool | None:
    """Turn PyTorch's fused attention paths off (they skip the submodule calls the pass reads); the old value."""
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        return None
    old = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    return old


def find_layers_quiet(model: nn.Module) -> list[str]:
    """Names of the layers ``GramStats()`` would cover by default, without warnings or errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(find_layers(model))
        except UnsupportedLayerError:
            return []


def layer_info(module: nn.Module, name: str) -> dict | None:
    adapter = adapter_for(module)
    if adapter is None:
        return None
    info = {
        "kind": adapter.kind,
        "weight_shape": list(weight_matrix_shape(module)),
        "has_bias": layer_bias(module) is not None,
        "geometry": adapter.geometry(module),
    }
    if adapter.diagonal:  # one-hot rows: the Gram is kept as its diagonal
        info["gram"] = "diagonal"
    groups = layer_groups(module)
    if groups > 1:  # one Gram per group; absent for the others, so statistics written before it still match
        info["groups"] = groups
    return info


def gram_shape(info: dict) -> tuple[int, ...]:
    """The shape of a layer's Gram from its :func:`layer_info`: ``(d, d)``, ``(g, d, d)`` for ``g`` groups, or
    ``(d,)`` for a diagonal Gram (an embedding's token counts)."""
    d = int(info["weight_shape"][1])
    if info.get("gram") == "diagonal":
        return (d,)
    g = int(info.get("groups", 1))
    return (d, d) if g == 1 else (g, d, d)


def row_sum_shape(info: dict) -> tuple[int, ...]:
    """The shape of a layer's row sum: the Gram's without its last axis (``(d,)`` for a diagonal Gram too)."""
    shape = gram_shape(info)
    return shape if len(shape) == 1 else shape[:-1]


def describe_layer(info: dict) -> str:
    c_out, d = info["weight_shape"]
    geo = "".join(f", {k}={v}" for k, v in info["geometry"].items())
    if info.get("groups", 1) > 1:
        geo += f", groups={info['groups']}"
    return f"{info['kind']}({c_out}x{d}{', bias' if info['has_bias'] else ''}{geo})"


class StatsPass:
    """One statistics pass: installs forward pre-hooks on entry, removes them on exit.

    Each covered layer feeds its inputs to an accumulator of :mod:`pgu.gram.accumulators`
    (one per input dtype); :meth:`finalize` collects their float64 results. Batches are
    forwarded through :class:`~pgu.fast_forward.FastForward` (on a CPU: channels-last, in
    chunks; same statistics, less time).
    """

    def __init__(self, model: nn.Module, layers, precision: str = "auto", keep_rows: bool = False):
        self.model = model
        self.precision = precision
        self.keep_rows = keep_rows
        self.rows: dict[str, list[torch.Tensor] | None] = {}  # per layer: its rows so far, None once too many
        self.found = find_layers(model, layers)
        self.layer_info = {n: layer_info(m, n) for n, (m, _) in self.found.items()}
        self.device = model_device(model)
        self.accumulators: dict[tuple[str, torch.dtype], object] = {}
        self.n_samples = 0
        self.finalized = False

    def __enter__(self):
        self.handles = []
        self.modes = eval_mode(self.model)
        self.modes.__enter__()
        self.forward = FastForward(self.model, self.device, on_fallback=self._restart)
        try:
            self.forward.__enter__()
            self.fastpath = _fastpath_off()  # fused attention kernels never call the modules whose inputs we read
            for name, (module, adapter) in self.found.items():
                if adapter.feeds is not None:
                    self.handles.append(module.register_forward_pre_hook(self._feeding_hook(name, adapter),
                                                                         with_kwargs=True))
                else:
                    self.handles.append(module.register_forward_pre_hook(self._hook(name, adapter)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        if getattr(self, "fastpath", None) is not None:
            torch.backends.mha.set_fastpath_enabled(self.fastpath)
            self.fastpath = None
        self.forward.__exit__(None, None, None)
        self.modes.__exit__(None, None, None)
        return False

    def _restart(self) -> None:
        self.accumulators.clear()
        self.rows.clear()

    def _keep(self, name: str, module: nn.Module, adapter, x: torch.Tensor) -> None:
        """Keep the layer's rows while they stay fewer than its width ``d`` (a dense layer's Gram only)."""
        kept = self.rows.setdefault(name, [])
        if kept is None or adapter.diagonal or adapter.n_groups(module) > 1 or x.dim() == 0 or not x.shape[0]:
            self.rows[name] = None
            return
        d = weight_matrix_shape(module)[1]
        per_sample = adapter.rows(module, x[:1]).shape[0]
        if sum(r.shape[0] for r in kept) + per_sample * x.shape[0] >= d:
            self.rows[name] = None  # a factor this tall is no cheaper than the Gram
            return
        kept.append(adapter.rows(module, x).detach().cpu())

    def _add(self, name: str, module: nn.Module, adapter, x: torch.Tensor) -> None:
        x = x.detach()
        if self.keep_rows:
            self._keep(name, module, adapter, x)
        dtype = x.dtype if self.precision == "auto" and x.dtype in (torch.float32, torch.float64) else torch.float64
        key = (name, dtype)
        acc = self.accumulators.get(key)
        if acc is None:
            acc = self.accumulators[key] = adapter.new_accumulator(module, dtype)
        acc.add(x)

    def _hook(self, name, adapter):
        def hook(module, args):
            if not args or not isinstance(args[0], torch.Tensor):
                raise UnsupportedLayerError(f"layer {name!r} was called without a positional input tensor")
            self._add(name, module, adapter, args[0])

        return hook

    def _feeding_hook(self, name, adapter):
        """A layer read with its keyword arguments, which may also feed a child it applies without calling it."""
        busy = []  # the adapter may run the module again to read a child's inputs: not a second call

        def hook(module, args, kwargs):
            if busy:
                return None
            busy.append(True)
            try:
                with torch.no_grad():
                    inputs = adapter.feeds(module, args, kwargs)
            finally:
                busy.clear()
            for child, x in inputs.items():
                target = name if not child else f"{name}.{child}" if name else child
                if target in self.found:
                    sub, sub_adapter = self.found[target]
                    self._add(target, sub, sub_adapter, x)
            return None

        return hook

    def add(self, inputs: torch.Tensor) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise ValueError(f"model inputs must be a tensor, got {type(inputs).__name__}")
        if inputs.dim() == 0 or inputs.shape[0] == 0:
            return
        inputs = inputs.to(self.device)
        try:
            with torch.no_grad():
                self.forward(inputs)
        except (UnsupportedLayerError, OutputError):
            raise
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"the model failed on a batch of inputs of shape {tuple(inputs.shape)} from the loader: {exc}. "
                f"Check that the loader yields what the model expects."
            ) from exc
        self.n_samples += int(inputs.shape[0])

    def finalize(self) -> None:
        """Collect every layer's float64 ``(G, s, n_rows)`` (zeros for a layer never called), on the CPU."""
        if self.finalized:
            return
        self.gram, self.row_sum, self.n_rows = {}, {}, {}
        for name, (module, _) in self.found.items():
            results = [acc.result() for (layer, _), acc in self.accumulators.items() if layer == name]
            results = [(g.cpu(), s.cpu(), n) for g, s, n in (r for r in results if r is not None)]
            if not results:
                shape = gram_shape(self.layer_info[name])
                results = [(torch.zeros(shape, dtype=torch.float64),
                            torch.zeros(row_sum_shape(self.layer_info[name]), dtype=torch.float64), 0)]
            gram, row_sum, n_rows = results[0]
            for g, s, n in results[1:]:  # a layer fed inputs of two dtypes
                gram, row_sum, n_rows = gram + g, row_sum + s, n_rows + n
            self.gram[name], self.row_sum[name], self.n_rows[name] = gram, row_sum, n_rows
        self.kept_rows = {n: torch.cat(r) for n, r in self.rows.items() if r and n in self.found}
        self.accumulators.clear()
        self.finalized = True

    def reduce_over_ranks(self) -> None:
        """Sum every layer's ``(G, s, n_rows)`` and the sample count over the processes of the group.

        Every rank must cover the same layers (checked first, on every rank, so none is left waiting).
        """
        self.finalize()
        self.kept_rows = {}  # each rank's own rows: no factor of the sum
        signature = json.dumps({"layers": self.layer_info, "precision": self.precision}, sort_keys=True)
        distributed.check_same_everywhere(signature, "the layers the statistics cover")
        for name in self.found:
            distributed.all_reduce_sum_(self.gram[name])
            distributed.all_reduce_sum_(self.row_sum[name])
        counts = torch.tensor([self.n_rows[n] for n in self.found] + [self.n_samples], dtype=torch.int64)
        distributed.all_reduce_sum_(counts)
        for i, name in enumerate(self.found):
            self.n_rows[name] = int(counts[i])
        self.n_samples = int(counts[-1])

    def warn_unused(self) -> None:
        self.finalize()
        unused = [n for n, c in self.n_rows.items() if c == 0]
        if unused:
            warnings.warn(
                f"layers {unused} were never called during the statistics pass (nothing is known about their "
                f"inputs), so unlearning will keep them frozen", stacklevel=3,
            )
