"""The Core Gradient Space: the input directions the retained data relies on (docs/method.md section 3).

For each layer the retain Gram is eigendecomposed, ``G_l(D_r) = U diag(lambda) U^T`` (``eigh``
in float64, eigenvalues sorted descending, rounding negatives clamped to 0), and the first
``k`` eigenvectors ``M_l = U[:, :k]`` span the CGS. ``sigma_i = sqrt(lambda_i)`` are the
singular values of the row matrix ``R_l(D_r)``. Two named rules choose ``k`` from a
threshold ``gamma`` in [0, 1]:

* ``"pgu"`` (the authors' code, default): ``k = #{i : (sigma_1+...+sigma_i) / (sigma_1+...+sigma_d) <= gamma}``,
  a ratio of singular values, not of their squares.
* ``"energy"`` (GPM, Saha et al. ICLR 2021, Eq. 5): the smallest ``k`` with
  ``lambda_1+...+lambda_k >= gamma (lambda_1+...+lambda_d)``.

``gamma = 1`` protects the whole input space (``k = d``: the layer cannot change) and
``gamma = 0`` protects nothing. A layer with no retained rows at all (never called during the
statistics pass, e.g. a Linear whose weight a parent module uses directly) is fully protected:
nothing is known about the inputs it serves, so it must not move. Comparisons carry a relative slack of 1e-12 so that a
ratio equal to the threshold in exact arithmetic is not lost to rounding. A layer whose retain
Gram is zero has nothing to protect (``k = 0``) unless ``gamma = 1``.
"""

from __future__ import annotations

from typing import Mapping

import torch

from pgu import distributed as ranks
from pgu.settings import RULES, check_threshold
from pgu.stats import GramStats, NotFittedError

__all__ = ["CoreGradientSpace", "select_rank", "RULES"]

_SLACK = 1e-12


def select_rank(eigenvalues: torch.Tensor, threshold: float, rule: str = "pgu") -> int:
    """Number ``k`` of leading eigenvectors kept for ``threshold`` under ``rule``.

    ``eigenvalues`` must be sorted in descending order and be non-negative (clamp first).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rank rule {rule!r}; choose one of {RULES}")
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    d = lam.numel()
    if threshold >= 1.0:
        return d
    if threshold <= 0.0:
        return 0
    values = lam.clamp_min(0).sqrt() if rule == "pgu" else lam.clamp_min(0)
    total = float(values.sum())
    if total <= 0.0:
        return 0
    cumulative = torch.cumsum(values, 0) / total
    if rule == "pgu":
        return int((cumulative <= threshold + _SLACK).sum())
    return min(d, int((cumulative < threshold - _SLACK).sum()) + 1)


def _leading_eigenvectors(gram: torch.Tensor, threshold: float, rule: str, seen: bool):
    """``(basis, eigenvalues, k)`` of one layer's Gram, ``(d, d)`` or a stack ``(g, d, d)`` of per-group Grams.

    Eigenvalues descending, clamped >= 0. A stack's basis is ``(g, d, k_max)``: group ``j``'s ``k_j`` leading
    eigenvectors, then zero columns (which project nothing); ``k`` is the total ``sum k_j``. A diagonal Gram
    ``(d,)`` (one-hot rows) gives a ``(d,)`` 0/1 mask of its ``k`` largest coordinates (ties: the lower index
    first), the CGS ``span{e_i : mask_i = 1}``. A layer never seen (``seen=False``) is fully protected.
    """
    d = gram.shape[-1]
    if gram.dim() == 1:  # a diagonal Gram: its eigenvectors are the coordinate directions, by count
        order = torch.argsort(gram.to(torch.float64), descending=True, stable=True)
        lam = gram.to(torch.float64)[order].clamp_min(0.0)
        k = select_rank(lam, threshold, rule) if seen else d
        mask = torch.zeros(d, dtype=torch.float64)
        mask[order[:k]] = 1.0
        return mask, lam, k
    lam, vectors = torch.linalg.eigh(gram.to(torch.float64))
    lam, vectors = lam.flip(-1).clamp_min(0.0), vectors.flip(-1)
    if gram.dim() == 2:
        k = select_rank(lam, threshold, rule) if seen else d
        return vectors[:, :k].contiguous(), lam, k
    ranks_ = [select_rank(group, threshold, rule) if seen else d for group in lam]
    basis = vectors[..., : max(ranks_, default=0)].contiguous().clone()
    for j, k_j in enumerate(ranks_):
        basis[j, :, k_j:] = 0.0
    return basis, lam, sum(ranks_)


def _check_threshold(value, name: str) -> float:
    return check_threshold(value, f"threshold for {name}")


class CoreGradientSpace:
    """Per-layer orthonormal bases of the retained input space.

    Args:
        threshold: ``gamma``, a float in [0, 1] for every layer, or ``{layer name: float}``;
            a ``"default"`` entry covers the layers the dict does not name, otherwise it must
            name every layer of the statistics.
        rule: ``"pgu"`` (authors' code) or ``"energy"`` (GPM); see the module docstring.
        bias: ``"frozen"`` (default, as the authors: biases never change) or ``"projected"``:
            a layer with a bias is treated as the weight ``[W | b]`` acting on inputs with a
            constant 1 appended, so its basis lives in ``d + 1`` dimensions.

    Fitted attributes:
        basis_: ``{name: (d, k) float64 tensor with orthonormal columns}`` (``d + 1`` rows for
            a projected bias).
        rank_: ``{name: k}``; eigenvalues_: ``{name: (d,) descending, clamped >= 0}``;
        dim_: ``{name: d}``; augmented_: ``{name: bool}`` (basis includes the bias column).
        A grouped convolution's layer has one CGS per group: ``basis_`` is ``(g, d, k_max)`` (each group's
        columns, then zero columns), ``eigenvalues_`` ``(g, d)``, ``rank_`` and ``dim_`` totals over groups.
        A layer with a diagonal Gram (an embedding) has a ``(d,)`` 0/1 mask for ``basis_``: the one-hot
        directions (tokens) the CGS holds.
    """

    def __init__(self, threshold: float | Mapping[str, float] = 0.9, rule: str = "pgu", bias: str = "frozen"):
        self.threshold = threshold
        self.rule = rule
        self.bias = bias

    def _thresholds(self, names: list[str]) -> dict[str, float]:
        if isinstance(self.threshold, Mapping):
            table = dict(self.threshold)
            default = table.pop("default", None) if "default" not in names else None
            unknown = sorted(set(table) - set(names))
            missing = [n for n in names if n not in table]
            if unknown:
                raise ValueError(f"threshold names layers the statistics do not have: {unknown}; layers are {names}")
            if missing and default is None:
                raise ValueError(f"threshold dict must name every layer or give a 'default'; missing {missing}")
            return {n: _check_threshold(table.get(n, default), repr(n)) for n in names}
        value = _check_threshold(self.threshold, "every layer")
        return {n: value for n in names}

    def fit(self, stats: GramStats, *, distributed: bool | None = None, solvers: Mapping | None = None
            ) -> "CoreGradientSpace":
        """Eigendecompose each layer's retain Gram once and keep the leading eigenvectors.

        Under ``torchrun`` (``distributed=None`` and a process group of several ranks; every rank holding the
        same statistics) the layers are dealt round-robin over the ranks, each eigendecomposes its own, and
        every basis is broadcast from the rank that computed it.

        ``solvers``: ``{layer name: solve(gram, threshold, rule, seen) -> (basis, eigenvalues, k)}`` in place
        of the exact eigendecomposition for those layers (:class:`pgu.cgs_anchor.CGSAnchor`'s fast path).
        """
        if self.rule not in RULES:
            raise ValueError(f"unknown rank rule {self.rule!r}; choose one of {RULES}")
        if self.bias not in ("frozen", "projected"):
            raise ValueError(f"bias must be 'frozen' or 'projected', got {self.bias!r}")
        if not isinstance(stats, GramStats):
            raise TypeError(f"fit expects GramStats, got {type(stats).__name__}")
        names = stats.layer_names
        thresholds = self._thresholds(names)
        parallel = ranks.active(distributed)
        world, me = (ranks.world_size(), ranks.rank()) if parallel else (1, 0)
        basis, rank, eigenvalues, dims, augmented = {}, {}, {}, {}, {}
        for i, name in enumerate(names):
            aug = self.bias == "projected" and stats.layer_info_[name]["has_bias"]
            gram = stats.augmented_gram(name) if aug else stats.gram_[name]
            d, blocks = gram.shape[-1], gram.shape[:-2].numel()  # a grouped layer: one Gram per group
            owner = i % world
            if owner == me:
                solve = (solvers or {}).get(name, _leading_eigenvectors)
                basis[name], lam, k = solve(gram, thresholds[name], self.rule, stats.n_rows_[name] > 0)
                width = basis[name].shape[-1]
            else:
                spectrum = gram.shape if gram.dim() == 1 else gram.shape[:-1]  # a diagonal Gram's is its own shape
                lam, k, width = torch.empty(spectrum, dtype=torch.float64), 0, 0
            if parallel:  # every rank gets the owner's rank, eigenvalues and basis
                sizes = ranks.broadcast_(torch.tensor([k, width], dtype=torch.int64), owner)
                k, width = int(sizes[0]), int(sizes[1])
                ranks.broadcast_(lam, owner)
                if owner != me:
                    shape = gram.shape if gram.dim() == 1 else (*gram.shape[:-1], width)
                    basis[name] = torch.zeros(shape, dtype=torch.float64)
                if width:
                    ranks.broadcast_(basis[name], owner)
            d = d * blocks
            rank[name], eigenvalues[name], dims[name], augmented[name] = k, lam, d, aug
        self.basis_, self.rank_, self.eigenvalues_ = basis, rank, eigenvalues
        self.dim_, self.augmented_ = dims, augmented
        self.layer_info_ = {n: dict(stats.layer_info_[n]) for n in names}
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "basis_"):
            raise NotFittedError("this CoreGradientSpace is not fitted; call .fit(stats)")

    def outside_share(self, stats: GramStats, inside: Mapping[str, float] | None = None) -> dict[str, float | None]:
        """``{name: share}``: the part of ``stats``' input energy that lies outside each layer's CGS.

        ``share = 1 - tr(M^T G M) / tr(G) = ||R - R M M^T||_F^2 / ||R||_F^2`` for the rows ``R``
        behind ``G`` (``None`` for a layer whose rows carry no energy). Taken with the forget
        statistics it says how much of D_f a projected update can reach at all: the gradient of
        a layer's weight is a sum of outer products with its input rows, so the part of D_f's
        rows inside the CGS gives the update nothing to work with (0: PGU cannot change how the
        layer responds to D_f; 1: nothing of D_f is protected).

        ``inside``: ``{name: tr(M^T G M)}`` already known (:class:`pgu.cgs_anchor.CGSAnchor` has it per
        eigenvector), sparing that layer's ``O(d^2 k)`` product.
        """
        self._require_fitted()
        out = {}
        for name, basis in self.basis_.items():
            gram = stats.augmented_gram(name) if self.augmented_[name] else stats.gram_[name]
            gram = gram.to(torch.float64)  # (d, d), or (g, d, d) per group: traces summed over the groups
            if gram.dim() == 1:  # a diagonal Gram and its 0/1 mask
                total, held = float(gram.sum()), float((gram * basis).sum())
            else:
                total = float(gram.diagonal(dim1=-2, dim2=-1).sum())
                if inside is not None and name in inside:
                    held = float(inside[name])
                else:  # tr(M^T G M), per group and summed: the diagonal only
                    held = float(((gram @ basis) * basis).sum()) if basis.shape[-1] else 0.0
            if total <= 0.0:
                out[name] = None
                continue
            out[name] = min(1.0, max(0.0, 1.0 - held / total))
        return out

    def summary(self) -> dict[str, str]:
        """``{name: "k/d"}``: how much of each layer's input space is protected."""
        self._require_fitted()
        return {n: f"{self.rank_[n]}/{self.dim_[n]}" for n in self.basis_}

    def __repr__(self) -> str:
        if not hasattr(self, "basis_"):
            return f"CoreGradientSpace(threshold={self.threshold!r}, rule={self.rule!r}, bias={self.bias!r}) [unfitted]"
        return f"CoreGradientSpace({self.summary()})"
