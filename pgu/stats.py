"""Additive layer-input statistics: the uncentred Gram matrices PGU caches once per model.

For every covered layer ``l`` and a set of samples ``S`` (docs/method.md section 2):

    G_l(S) = R_l(S) R_l(S)^T = sum over rows x of x x^T          (d x d, uncentred)

where the rows are those of :mod:`pgu.gram.layers` (Linear: input vectors; Conv2d: patches in the
order of ``weight.reshape(C_out, -1)``). Each batch's products are taken in the input's dtype
(``precision="auto"``; float64 with ``precision="float64"``) and accumulated across batches in
float64 (:mod:`pgu.gram.accumulators`; rows are kept only in a bounded buffer per Linear layer). A layer
called several times in one forward pass (weight tying) contributes the rows of every call, since its
weight multiplies all of them. Beside ``G`` the object keeps, per layer, the row count and the
row sum ``s = sum x`` (so the Gram of inputs augmented with a constant 1, which a projected
bias needs, is ``[[G, s], [s^T, n_rows]]``), and the number of samples seen.

Statistics add: ``G(A u B) = G(A) + G(B)`` when taken with the same weights and
preprocessing, hence ``G(D_r) = G(D) - G(D_f)`` (docs/method.md section 2 and 7). ``a + b`` and
``a - b`` implement exactly that and refuse statistics of different layers or shapes. The
pass puts the model in eval mode (BatchNorm running statistics, dropout off) and restores
every module's mode afterwards; hooks are removed even when the pass fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from pgu.distributed import active as reduce_over_ranks
from pgu.stats_pass import StatsPass, describe_layer, find_layers_quiet, gram_shape, layer_info, row_sum_shape

__all__ = ["GramStats", "StatsMismatchError", "NotFittedError", "batch_inputs", "stats_batch_size", "STATS_BATCH_SIZE"]

FORMAT = "pgu.GramStats"
FORMAT_VERSION = "1"


STATS_BATCH_SIZE = {"cpu": 512, "gpu": 4096}
"""Images per batch of a statistics pass by device type. The Gram does not depend on the batching
(it is a sum over rows), so a GPU takes larger batches than training does: its pass is otherwise
bound by the launch of each batch's many products, not by the products."""


def stats_batch_size(device) -> int:
    """The default batch size of a statistics pass on ``device`` (:data:`STATS_BATCH_SIZE`)."""
    return STATS_BATCH_SIZE["cpu" if torch.device(device).type == "cpu" else "gpu"]


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit``."""


class StatsMismatchError(ValueError):
    """Statistics do not belong to this model (or to each other)."""


def batch_inputs(batch):
    """The model inputs of a loader batch: ``(inputs, targets, ...)`` or bare ``inputs``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(
        f"a loader batch must be an inputs tensor or a tuple/list (inputs, targets, ...); got {type(batch).__name__}"
    )


class GramStats:
    """Uncentred float64 Gram statistics of every covered layer's input rows.

    Args:
        layers: qualified module names to cover (as ``model.named_modules()`` gives them), or
            None for every Conv2d/Linear (or subclass) with a trainable weight.
        precision: ``"auto"``: each batch's products in the input's dtype (float32 for a
            float32 model: about 1e-6 relative error, twice as fast), summed across batches in
            float64; ``"float64"``: products in float64 too.
        keep_rows: also keep each layer's input rows, while they are fewer than its width ``d`` (``rows_``). A
            request's forget pass does: the CGS anchor then takes its products through them (``O(d^2 r)`` for
            ``r`` rows, not ``O(d^3)``). Rows are not saved, and sums or differences of statistics have none.

    Fitted attributes:
        gram_: ``{name: (d, d) float64 tensor}``, the sum of ``x x^T`` over all rows (``(g, d, d)``, one per
            group, for a grouped convolution; ``row_sum_`` then ``(g, d)``; ``(d,)``, the diagonal, for an embedding's
            one-hot rows, whose Gram is diagonal).
        row_sum_: ``{name: (d,) float64 tensor}``, the sum of the rows.
        n_rows_: ``{name: int}``, rows seen (samples times output positions for a conv).
        n_samples_: samples seen (the leading dimension of every batch).
        rows_: ``{name: (r, d) tensor}``, with ``keep_rows``: the rows behind ``gram_`` (``R^T R``, up to rounding),
            in the inputs' dtype, for each dense layer that saw fewer than ``d`` of them (on one process).
        layer_info_: ``{name: {"kind", "weight_shape", "has_bias", "geometry"}}``, used to
            recognise statistics of another architecture.

    Example:
        >>> stats = GramStats().fit(model, train_loader)            # doctest: +SKIP
        >>> retain = stats - GramStats().fit(model, forget_loader)  # doctest: +SKIP
    """

    def __init__(self, layers: Iterable[str] | None = None, *, precision: str = "auto", keep_rows: bool = False):
        if precision not in ("auto", "float64"):
            raise ValueError(f"precision must be 'auto' (products in the input's dtype, float32 for a float32 "
                             f"model, summed in float64) or 'float64', got {precision!r}")
        self.layers = None if layers is None else list(layers)
        self.precision = precision
        self.keep_rows = bool(keep_rows)
        self.rows_: dict[str, torch.Tensor] = {}

    # -- fitting -------------------------------------------------------------------------

    def fit(self, model: nn.Module, loader, *, progress: bool = False, desc: str = "Gram statistics",
            distributed: bool | None = None) -> "GramStats":
        """Take the statistics of every batch ``loader`` yields; returns ``self``.

        The object is only changed when the whole pass succeeds. Under ``torchrun`` (a process group
        of several ranks is initialised; ``distributed=None``) each rank passes its own shard of the
        data and the statistics are summed over ranks (:mod:`pgu.distributed`): every rank ends with
        those of the union, sample count included. ``distributed=False`` keeps them per process.
        """
        fitted = StatsPass(model, self.layers, self.precision, self.keep_rows)
        iterator = loader
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(loader, desc=desc, leave=False)
        with fitted:
            for batch in iterator:
                fitted.add(batch_inputs(batch))
        if reduce_over_ranks(distributed):
            fitted.reduce_over_ranks()  # a rank with an empty shard still takes part
        if fitted.n_samples == 0:
            raise ValueError("the loader yielded no samples; statistics of an empty set are not defined")
        fitted.warn_unused()
        self._set_from(fitted)
        return self

    def partial_fit(self, model: nn.Module, inputs: torch.Tensor) -> "GramStats":
        """Add one batch of model inputs to the statistics (starting them if unfitted)."""
        acc = StatsPass(model, self.layers, self.precision)
        with acc:
            acc.add(inputs)
        batch_stats = GramStats(self.layers, precision=self.precision)
        batch_stats._set_from(acc)
        if not self.is_fitted:
            self._copy_from(batch_stats)
        else:
            self._copy_from(self + batch_stats)
        return self

    def _set_from(self, acc: "StatsPass") -> None:
        acc.finalize()
        self.gram_ = acc.gram
        self.row_sum_ = acc.row_sum
        self.n_rows_ = acc.n_rows
        self.n_samples_ = acc.n_samples
        self.layer_info_ = acc.layer_info
        self.rows_ = acc.kept_rows

    def _copy_from(self, other: "GramStats") -> None:
        self.gram_, self.row_sum_, self.n_rows_ = other.gram_, other.row_sum_, other.n_rows_
        self.n_samples_, self.layer_info_ = other.n_samples_, other.layer_info_

    # -- inspection ----------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "gram_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("these GramStats are not fitted; call .fit(model, loader) or GramStats.load(path)")

    @property
    def layer_names(self) -> list[str]:
        self._require_fitted()
        return list(self.gram_)

    def augmented_gram(self, name: str) -> torch.Tensor:
        """``[[G, s], [s^T, n_rows]]``: the Gram of the rows with a constant 1 appended (per group for a
        grouped layer: ``(g, d + 1, d + 1)``)."""
        self._require_fitted()
        g, s = self.gram_[name], self.row_sum_[name]
        if g.dim() == 1:
            raise ValueError(f"layer {name!r} keeps a diagonal Gram (one-hot rows) and has no bias to augment it with")
        d = g.shape[-1]
        out = torch.empty(*g.shape[:-2], d + 1, d + 1, dtype=torch.float64)
        out[..., :d, :d] = g
        out[..., :d, d] = s
        out[..., d, :d] = s
        out[..., d, d] = float(self.n_rows_[name])
        return out

    @property
    def nbytes(self) -> dict[str, int]:
        """Bytes held in memory per layer (float64 Gram and row sum: ``8 (d^2 + d)``)."""
        self._require_fitted()
        return {n: self.gram_[n].nbytes + self.row_sum_[n].nbytes for n in self.gram_}

    def memory_report(self) -> list[dict]:
        """Per layer: name, kind, ``d``, bytes in memory (float64) and stored as float32; largest first."""
        self._require_fitted()
        rows = [{"layer": n, "kind": self.layer_info_[n]["kind"], "d": int(self.gram_[n].shape[-1]),
                 "bytes": b, "bytes_float32": b // 2} for n, b in self.nbytes.items()]
        return sorted(rows, key=lambda r: -r["bytes"])

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`StatsMismatchError` unless these statistics describe ``model``'s layers."""
        self._require_fitted()
        modules = dict(model.named_modules())
        problems = []
        for name, info in self.layer_info_.items():
            module = modules.get(name)
            if module is None:
                problems.append(f"layer {name!r} is missing from the model")
                continue
            current = layer_info(module, name)
            if current is None:
                problems.append(f"layer {name!r} is a {type(module).__name__}, not a {info['kind']}")
            elif current != info:
                problems.append(f"layer {name!r} is {describe_layer(current)} in the model but {describe_layer(info)} "
                                f"in the statistics")
        if not problems:
            extra = [n for n in find_layers_quiet(model) if n not in self.layer_info_]
            if extra:
                warnings.warn(f"the model has layers the statistics do not cover, which unlearning keeps frozen: "
                              f"{extra}", stacklevel=2)
        if problems:
            raise StatsMismatchError(
                "these statistics were taken on another architecture: " + "; ".join(problems[:5])
                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                + ". Take them on this model with GramStats().fit(model, train_loader)."
            )

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"GramStats(layers={self.layers!r}) [unfitted]"
        mb = sum(self.nbytes.values()) / 2**20
        return f"GramStats({len(self.gram_)} layers, n_samples={self.n_samples_}, {mb:.1f} MiB)"

    # -- algebra -------------------------------------------------------------------------

    def _check_same_layers(self, other: "GramStats", op: str) -> None:
        if not isinstance(other, GramStats):
            raise TypeError(f"cannot {op} GramStats and {type(other).__name__}")
        self._require_fitted()
        other._require_fitted()
        if list(self.layer_info_) != list(other.layer_info_):
            raise StatsMismatchError(
                f"cannot {op} statistics of different layers: {list(self.layer_info_)} vs {list(other.layer_info_)}"
            )
        for name, info in self.layer_info_.items():
            if info != other.layer_info_[name]:
                raise StatsMismatchError(
                    f"cannot {op} statistics: layer {name!r} is {describe_layer(info)} in one and "
                    f"{describe_layer(other.layer_info_[name])} in the other"
                )

    def _combine(self, other: "GramStats", sign: int) -> "GramStats":
        out = GramStats(self.layers, precision=self.precision)
        out.gram_ = {n: self.gram_[n] + sign * other.gram_[n] for n in self.gram_}
        out.row_sum_ = {n: self.row_sum_[n] + sign * other.row_sum_[n] for n in self.gram_}
        out.n_rows_ = {n: self.n_rows_[n] + sign * other.n_rows_[n] for n in self.gram_}
        out.n_samples_ = self.n_samples_ + sign * other.n_samples_
        out.layer_info_ = {n: dict(i) for n, i in self.layer_info_.items()}
        return out

    def __add__(self, other: "GramStats") -> "GramStats":
        self._check_same_layers(other, "add")
        return self._combine(other, +1)

    def __sub__(self, other: "GramStats") -> "GramStats":
        """``G(A) - G(B)`` for ``B`` a subset of ``A`` (e.g. ``G(D) - G(D_f) = G(D_r)``)."""
        self._check_same_layers(other, "subtract")
        if other.n_samples_ > self.n_samples_:
            raise ValueError(
                f"cannot subtract statistics of {other.n_samples_} samples from statistics of "
                f"{self.n_samples_}: the subtracted set must be part of the set the statistics cover"
            )
        for name in self.gram_:
            if other.n_rows_[name] > self.n_rows_[name]:
                raise ValueError(
                    f"layer {name!r}: cannot subtract {other.n_rows_[name]} rows from {self.n_rows_[name]}; "
                    f"the subtracted set must be part of the set the statistics cover"
                )
        return self._combine(other, -1)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path, metadata: dict[str, str] | None = None, *, storage: str = "float64") -> None:
        """Write the statistics to a safetensors file (atomically: a temporary file, then rename).

        ``metadata`` adds user string entries (e.g. the model's hash) to the file's header.
        ``storage="float32"`` halves the file (rounding each entry to about 1e-7 relative);
        :meth:`load` returns float64 either way. Subtracting a forget set's statistics from
        float32-stored ones carries that rounding of the large total into the retain Gram.
        """
        if storage not in ("float64", "float32"):
            raise ValueError(f"storage must be 'float64' or 'float32', got {storage!r}")
        dtype = torch.float64 if storage == "float64" else torch.float32
        from safetensors.torch import save_file

        self._require_fitted()
        tensors = {}
        for name in self.gram_:
            tensors[f"gram/{name}"] = self.gram_[name].to(dtype).contiguous()
            tensors[f"row_sum/{name}"] = self.row_sum_[name].to(dtype).contiguous()
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n_samples": str(int(self.n_samples_)),
            "n_rows": json.dumps({n: int(v) for n, v in self.n_rows_.items()}),
            "layers": json.dumps(self.layer_info_),
            "precision": self.precision,
            "user": json.dumps(dict(metadata or {})),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=header)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path) -> "GramStats":
        """Read statistics written by :meth:`save` (no pickle: safetensors only)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no statistics file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if header.get("format") != FORMAT:
                    raise ValueError(f"{path} is a safetensors file but not pgu statistics "
                                     f"(format {header.get('format')!r})")
                if header.get("format_version") != FORMAT_VERSION:
                    raise ValueError(f"{path} has statistics format version {header.get('format_version')!r}; "
                                     f"this pgu reads {FORMAT_VERSION}")
                layer_info = json.loads(header["layers"])
                n_rows = json.loads(header["n_rows"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except ValueError:
            raise
        except Exception as exc:  # safetensors raises its own error types on damaged files
            raise ValueError(f"{path} is not a readable pgu statistics file ({exc})") from exc
        precision = header.get("precision", "auto")
        out = cls(list(layer_info), precision=precision if precision in ("auto", "float64") else "auto")
        out.gram_, out.row_sum_ = {}, {}
        for name, info in layer_info.items():
            shape = gram_shape(info)
            g, s = tensors.get(f"gram/{name}"), tensors.get(f"row_sum/{name}")
            if (g is None or s is None or tuple(g.shape) != shape or tuple(s.shape) != row_sum_shape(info)
                    or g.dtype not in (torch.float64, torch.float32)):
                raise ValueError(f"{path} is damaged: the statistics of layer {name!r} are missing or misshapen")
            out.gram_[name], out.row_sum_[name] = g.to(torch.float64), s.to(torch.float64)
        out.n_rows_ = {n: int(n_rows[n]) for n in layer_info}
        out.n_samples_ = int(header["n_samples"])
        out.layer_info_ = layer_info
        out.metadata_ = json.loads(header.get("user", "{}"))
        return out
