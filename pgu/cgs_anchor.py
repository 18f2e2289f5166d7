"""The Core Gradient Space of a request from an earlier eigendecomposition (a fast path; exact ``eigh`` is the oracle).

Section 3 of docs/method.md eigendecomposes each layer's retain Gram ``G(D_r)`` on every request:
``O(d^3)``, the largest fixed cost of a small request (LeNet's 3136-wide Linear: 4 s on 2 cores),
although 100 samples barely change a Gram of 60,000. :class:`CGSAnchor` keeps, per wide layer, an
exact eigendecomposition ``G_a = V diag(lambda) V^T`` taken once (the *anchor*: the training set's
statistics when a store is made) and, per eigenvector, the forget energy removed since,
``s_i = sum_t v_i^T G_w(D_f^(t)) v_i``. Each request adds its own share and takes, by first-order
perturbation, ``mu_i = max(lambda_i - s_i, 0)`` for the retain Gram's eigenvalues and the anchor's
eigenvectors re-ranked by ``mu`` for its eigenvectors. A direction the forget samples alone carried loses its
eigenvalue and drops down the ranking. What first order misses is the rotation among eigenvectors, largest where their
eigenvalues are nearly equal, and at the cut it moves directions across it: so the ``w`` eigenvectors ranked around
the cut are replaced by the Ritz pairs of the retain Gram compressed to their span (Rayleigh-Ritz, exact within that
span; ``w`` = :data:`RITZ_SHARE` of ``d``), and the CGS is the ``k`` leading vectors of the corrected spectrum, ``k``
by the rule of section 3. Over all ``d`` eigenvectors that would be exact ``eigh``; over a window it costs
``O(d^2 w)``. The cost per request is then ``diag(V^T G_f V)``: ``O(d^2 r)`` through the forget rows when the forget
pass kept them (``GramStats(keep_rows=True)``: a layer that saw fewer rows than its width, ``r < d``), or through a
rank-``r`` factor of ``G_f`` (a seeded randomized range finder with ``r`` = rows + 8 columns, exact for a Gram of that
rank) when its rows are very few, else ``O(d^3)`` in matrix products (float32 from :data:`FLOAT32_DIM` wide).

Exact ``eigh`` stays where it is cheap or where the anchor no longer fits: layers narrower than
``min_dim``, a Gram stack (grouped convolutions) or a diagonal one (embeddings), a projected bias
the anchor was not taken for, and once the energy removed since the anchor exceeds
``refresh_share`` of its trace, or when a request's forget energy does not fit the anchor's spectrum (more than
:data:`MISFIT_SHARE` of it lies beyond an eigenvector's remaining eigenvalue: after the model has moved, its forget
rows leave the span the anchor describes); that layer is then re-anchored on its current retain Gram. The
anchor checks that the retain Gram it is asked about is its own minus what it was told was removed
(the traces agree to 1e-6 relative), and re-anchors the layer when not. Every layer's route is in
:attr:`CGSAnchor.last_routes`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgu.stats import GramStats
from pgu.subspace import CoreGradientSpace, _leading_eigenvectors, select_rank

__all__ = ["CGSAnchor", "MIN_DIM", "REFRESH_SHARE", "FLOAT32_DIM", "MISFIT_SHARE"]

MIN_DIM = 1024
"""Layers narrower than this keep exact ``eigh`` (a 1024-wide ``eigh`` takes about 0.2 s on 2 cores)."""

REFRESH_SHARE = 0.05
"""Re-anchor a layer once the forget energy removed since its anchor exceeds this share of the anchor's trace."""

FLOAT32_DIM = 1024
"""From this width the forget energy along each eigenvector is taken in float32 products when no low-rank factor
is cheaper (``O(d^3)``; summed in float64)."""

RITZ_SHARE = 1 / 8
"""Rayleigh-Ritz at the cut: the share of a layer's eigenvectors, ranked around the cut, whose span the retain Gram is
compressed to and eigendecomposed exactly (``O(d^2 w)`` for ``w`` of them)."""

RITZ_MIN = 64
"""The fewest eigenvectors Rayleigh-Ritz at the cut takes (all of a narrower layer)."""

MISFIT_SHARE = 1e-3
"""Re-anchor a layer when more than this share of a request's forget energy lies beyond the anchor's remaining
eigenvalue along its eigenvectors (``s_i > lambda_i - S_i``): the forget rows do not fit the anchor's spectrum, as
after the model has moved (forget passes use the current weights, docs/method.md section 7)."""

_TRACE_TOLERANCE = 1e-6
_FORMAT = "pgu-cgs-anchor-2"  # eigenvectors as rows ("{i}.rows"); format 1 kept them as columns ("{i}.vectors")
_FORMATS = ("pgu-cgs-anchor-1", _FORMAT)


@dataclass
class _LayerAnchor:
    values: torch.Tensor  # (d,) eigenvalues of G_a, descending, clamped >= 0
    rows: torch.Tensor  # (d, d) the eigenvectors, as rows, in that order (a CGS basis gathers rows: fast)
    shift: torch.Tensor  # (d,) forget energy removed since, along each eigenvector
    trace: float  # tr(G_a) (unclamped)
    augmented: bool  # taken for the Gram with a bias column
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this eigendecomposition (files pair on it)
    rows32: torch.Tensor | None = field(default=None, repr=False)  # float32 copy of ``rows``, made when first needed

    def fast_rows(self) -> torch.Tensor:
        """``rows`` in the precision of this width's products: float32 from :data:`FLOAT32_DIM` (kept), else itself."""
        if self.rows.shape[0] < FLOAT32_DIM:
            return self.rows
        if self.rows32 is None:
            self.rows32 = self.rows.to(torch.float32)
        return self.rows32


@dataclass
class CGSAnchor:
    """Per wide layer, an exact eigendecomposition and the forget energy removed since (see the module docstring).

    Build one with :meth:`build` from the statistics the next request starts from; :meth:`fit` serves a
    request and returns the CGS and the anchor of the request after it; :meth:`save` / :meth:`load` keep it
    (safetensors)."""

    layers: dict[str, _LayerAnchor] = field(default_factory=dict)
    min_dim: int = MIN_DIM
    refresh_share: float = REFRESH_SHARE
    last_routes: dict[str, str] = field(default_factory=dict)
    last_inside: dict[str, float] = field(default_factory=dict)  # tr(M^T G_f M) of the anchored layers' last CGS
    last_seconds: dict[str, float] = field(default_factory=dict)  # per layer, the last fit's seconds
    last_misfit: dict[str, float] = field(default_factory=dict)  # the last request's forget energy beyond, a share

    @classmethod
    def build(cls, stats: GramStats, *, bias: str = "frozen", min_dim: int | None = None,
              refresh_share: float = REFRESH_SHARE) -> "CGSAnchor":
        """Exact eigendecompositions of every layer of ``stats`` at least ``min_dim`` (default :data:`MIN_DIM`) wide
        with one dense Gram."""
        min_dim = MIN_DIM if min_dim is None else min_dim
        if not 0.0 < refresh_share < 1.0:
            raise ValueError(f"refresh_share must lie in (0, 1), got {refresh_share!r}")
        anchor = cls(min_dim=int(min_dim), refresh_share=float(refresh_share))
        for name in stats.layer_names:
            augmented = bias == "projected" and stats.layer_info_[name]["has_bias"]
            gram = stats.augmented_gram(name) if augmented else stats.gram_[name]
            if gram.dim() == 2 and gram.shape[-1] >= anchor.min_dim and stats.n_rows_[name] > 0:
                anchor.layers[name] = _anchor_of(gram, augmented)
        return anchor

    def fit(self, retain: GramStats, forget: GramStats, threshold, rule: str = "pgu", bias: str = "frozen"
            ) -> tuple[CoreGradientSpace, "CGSAnchor"]:
        """The CGS of ``retain`` (= the statistics this anchor describes minus ``forget``) and the next anchor.

        Layers the anchor holds get the first-order CGS; the others (and any the anchor cannot serve) exact
        ``eigh``. Neither ``self`` nor the statistics are modified."""
        nxt = CGSAnchor(dict(self.layers), self.min_dim, self.refresh_share)
        routes: dict[str, str] = {}

        def solver(name):
            def solve(gram, threshold_, rule_, seen):
                start = time.perf_counter()
                basis, lam, k, route = nxt._solve(name, gram, retain, forget, threshold_, rule_, seen, bias)
                routes[name], nxt.last_seconds[name] = route, time.perf_counter() - start
                return basis, lam, k
            return solve

        cgs = CoreGradientSpace(threshold, rule, bias).fit(retain, solvers={n: solver(n) for n in retain.layer_names})
        nxt.last_routes = routes
        return cgs, nxt

    def _solve(self, name, gram, retain, forget, threshold, rule, seen, bias):
        layer = self.layers.get(name)
        augmented = bias == "projected" and retain.layer_info_[name]["has_bias"]
        if gram.dim() != 2 or not seen or gram.shape[-1] < self.min_dim:
            self.layers.pop(name, None)
            return (*_leading_eigenvectors(gram, threshold, rule, seen), "exact")
        if layer is None or layer.augmented != augmented or layer.rows.shape[0] != gram.shape[-1]:
            return self._reanchor(name, gram, augmented, threshold, rule, "exact (anchored now)")
        f_gram = (forget.augmented_gram(name) if augmented else forget.gram_[name]).to(torch.float64)
        factor = getattr(forget, "rows_", {}).get(name)  # the forget rows themselves, when the pass kept them
        if factor is not None and augmented:
            factor = torch.cat([factor, torch.ones(factor.shape[0], 1, dtype=factor.dtype)], 1)
        removed, along = _removed_along(layer, f_gram, forget.n_rows_[name], name, factor)
        shift = layer.shift + removed
        expected = layer.trace - float(shift.sum())
        actual = float(gram.to(torch.float64).diagonal().sum())
        if abs(actual - expected) > _TRACE_TOLERANCE * max(abs(layer.trace), 1e-300):
            return self._reanchor(name, gram, augmented, threshold, rule, "exact (the anchor did not match)")
        if float(shift.sum()) > self.refresh_share * layer.trace:
            return self._reanchor(name, gram, augmented, threshold, rule, "exact (re-anchored)")
        # forget energy beyond what the anchor's spectrum still holds along an eigenvector: first order cannot place
        # it (the model moved since the statistics were taken, and its forget rows leave the anchor's span)
        beyond = float((removed - (layer.values - layer.shift).clamp_min(0.0)).clamp_min(0.0).sum())
        self.last_misfit[name] = beyond / max(float(removed.sum()), 1e-300)
        if self.last_misfit[name] > MISFIT_SHARE:
            return self._reanchor(name, gram, augmented, threshold, rule, "exact (forget rows off the anchor)")
        mu = (layer.values - shift).clamp_min(0.0)
        self.layers[name] = _LayerAnchor(layer.values, layer.rows, shift, layer.trace, layer.augmented, layer.key,
                                         layer.rows32)
        basis, spectrum, k, inside = _ritz_at_cut(layer, mu, removed, gram, f_gram, along, threshold, rule)
        self.last_inside[name] = inside  # the forget energy inside this CGS
        return basis, spectrum, k, "anchored"

    def _reanchor(self, name, gram, augmented, threshold, rule, route):
        self.layers[name] = anchored = _anchor_of(gram, augmented)
        k = select_rank(anchored.values, threshold, rule)
        return anchored.rows[:k].T, anchored.values, k, route

    def removed_share(self) -> dict[str, float]:
        """Per anchored layer, the forget energy removed since its anchor as a share of the anchor's trace."""
        return {n: float(a.shift.sum()) / a.trace if a.trace > 0 else 0.0 for n, a in self.layers.items()}

    # -- files ----------------------------------------------------------------------------------

    def save(self, path, *, parts: tuple[str, ...] = ("eigen", "shifts")) -> None:
        """Write to a safetensors file (float64). ``parts``: the eigendecompositions (``"eigen"``: ``d^2`` per layer,
        most of it) and/or the removed energy (``"shifts"``: ``d`` per layer), so a caller that serves requests
        rewrites the small part per request and the large one only when a layer is anchored again."""
        from safetensors.torch import save_file

        layers = {n: {"trace": repr(a.trace), "augmented": a.augmented, "key": a.key} for n, a in self.layers.items()}
        header = {"format": _FORMAT, "min_dim": str(self.min_dim), "refresh_share": repr(self.refresh_share),
                  "layers": json.dumps(layers), "order": json.dumps(list(self.layers)), "parts": json.dumps(parts)}
        tensors = {}
        for i, a in enumerate(self.layers.values()):
            if "eigen" in parts:
                tensors[f"{i}.values"], tensors[f"{i}.rows"] = a.values, a.rows
            if "shifts" in parts:
                tensors[f"{i}.shift"] = a.shift
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=header)
        tmp.replace(path)

    @classmethod
    def load(cls, path, shifts=None) -> "CGSAnchor":
        """Read a file written by :meth:`save` (safetensors: nothing is unpickled); ``shifts``: a second file with the
        removed energy (``parts=("shifts",)``) of the same eigendecompositions, replacing the first file's."""
        header, tensors = _read(path)
        if "eigen" not in json.loads(header.get("parts", '["eigen", "shifts"]')):
            raise ValueError(f"{path} holds no eigendecompositions (only the removed energy); give the anchor's file")
        info, order = json.loads(header["layers"]), json.loads(header["order"])
        shift_of = {name: tensors.get(f"{i}.shift") for i, name in enumerate(order)}
        if shifts is not None:
            s_header, s_tensors = _read(shifts)
            s_info, s_order = json.loads(s_header["layers"]), json.loads(s_header["order"])
            if {n: s_info[n]["key"] for n in s_order} != {n: info[n]["key"] for n in order}:
                raise ValueError(f"{shifts} is the removed energy of other eigendecompositions than {path}'s")
            shift_of = {name: s_tensors[f"{i}.shift"] for i, name in enumerate(s_order)}
        layers = {}
        for i, name in enumerate(order):
            values, shift = tensors[f"{i}.values"], shift_of[name]
            rows = tensors[f"{i}.rows"] if f"{i}.rows" in tensors else tensors[f"{i}.vectors"].T.contiguous()
            layers[name] = _LayerAnchor(values, rows,
                                        torch.zeros_like(values) if shift is None else shift,
                                        float(info[name]["trace"]), bool(info[name]["augmented"]), info[name]["key"])
        return cls(layers, int(header["min_dim"]), float(header["refresh_share"]))

    def keys(self) -> dict[str, str]:
        """``{layer: key}`` of each eigendecomposition (a new key each time a layer is anchored)."""
        return {n: a.key for n, a in self.layers.items()}


def _read(path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") not in _FORMATS:
            raise ValueError(f"{path} is not a pgu CGS anchor (format {header.get('format')!r}, expected {_FORMAT!r})")
        return header, {k: f.get_tensor(k) for k in f.keys()}


def _anchor_of(gram: torch.Tensor, augmented: bool) -> _LayerAnchor:
    gram = gram.to(torch.float64)
    lam, vectors = torch.linalg.eigh(gram)
    return _LayerAnchor(lam.flip(-1).clamp_min(0.0), vectors.flip(-1).T.contiguous(),
                        torch.zeros(gram.shape[-1], dtype=torch.float64), float(gram.diagonal().sum()), augmented)


def _removed_along(layer: _LayerAnchor, f_gram: torch.Tensor, rows: int, name: str, factor=None):
    """``(diag(V^T G_f V), V^T F)``: the forget energy along each eigenvector, and the eigenvectors' products with the
    forget rows ``F`` (``G_f = F F^T``, ``(d, r)``) when there is such a factor, else None.

    Three routes: the forget pass's own rows (``factor``, ``(r, d)``, exact) when fewer than ``d``; a factor from a
    seeded randomized range finder of ``G_f`` with ``rows + 8`` columns (exact for a Gram of that rank) when its rows
    are very few; else ``diag(V^T G_f V)`` directly. Products in float32 from :data:`FLOAT32_DIM` wide (the error,
    ~1e-7 of the forget energy, is far below what first order leaves), summed in float64."""
    d = f_gram.shape[-1]
    vectors = layer.fast_rows()
    if factor is not None and factor.shape[0] < d:
        along = vectors @ factor.to(vectors.dtype).T  # (d, r): v_i^T f_j
        return along.square().sum(1, dtype=torch.float64), along
    rank = rows + 8
    if rank < d // 8:  # (about 12 d^2 r + 8 d r^2 float64 operations against 2 d^3 in float32)
        seed = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
        probe = torch.randn(d, rank, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        q, _ = torch.linalg.qr(f_gram @ probe)
        w, u = torch.linalg.eigh(q.T @ f_gram @ q)
        along = layer.rows @ (q @ (u * w.clamp_min(0.0).sqrt()))  # G_f = F F^T (its rank is at most `rows`)
        return along.square().sum(1), along
    along = vectors @ f_gram.to(vectors.dtype)  # row i: v_i^T G_f
    return along.mul_(vectors).sum(1, dtype=torch.float64), None


def _ritz_window(d: int) -> int:
    return min(d, max(RITZ_MIN, round(d * RITZ_SHARE)))


def _ritz_at_cut(layer: _LayerAnchor, mu, removed, gram, f_gram, along, threshold, rule):
    """The CGS from first order, corrected by Rayleigh-Ritz where first order errs most: at the cut.

    First order ranks the anchor's eigenvectors by ``mu`` and cuts at ``k``; eigenvectors whose eigenvalues are nearly
    equal mix under the request's perturbation, and those at the cut mix across it. The ``w`` eigenvectors ranked
    around the cut (:data:`RITZ_SHARE` of ``d``, at least :data:`RITZ_MIN`) span ``W``; the retain Gram compressed to
    it, ``W^T G_r W`` (``w x w``, ``O(d^2 w)``), is eigendecomposed exactly and its Ritz pairs replace them. The rank
    rule then runs on the whole spectrum again (first-order values outside the window, Ritz values inside); the CGS
    is the leading eigenvectors of it. ``along``: ``V^T F`` for a factor ``G_f = F F^T`` (or None). Returns
    ``(basis (d, k), spectrum (d,) descending, k, tr(M^T G_f M))``."""
    d = mu.numel()
    order = torch.argsort(mu, descending=True, stable=True)
    k = select_rank(mu[order], threshold, rule)
    w = _ritz_window(d)
    lo = min(max(k - w // 2, 0), d - w)
    window = order[lo:lo + w]
    span = layer.rows[window]  # (w, d)
    fast = layer.fast_rows()[window] if d >= FLOAT32_DIM else span
    b = (fast @ (gram.to(fast.dtype) @ fast.T)).to(torch.float64)  # W^T G_r W
    if along is not None:  # W^T G_f W = (W^T F)(F^T W)
        c = along[window].to(torch.float64)
        c = c @ c.T
    else:
        c = (fast @ (f_gram.to(fast.dtype) @ fast.T)).to(torch.float64)
    b, c = (b + b.T) / 2, (c + c.T) / 2
    theta, q = torch.linalg.eigh(b)
    theta, q = theta.flip(-1).clamp_min(0.0), q.flip(-1)
    values = torch.cat([mu[order[:lo]], theta, mu[order[lo + w:]]])
    ranked = torch.argsort(values, descending=True, stable=True)
    k = select_rank(values[ranked], threshold, rule)
    chosen = ranked[:k]
    in_window = (chosen >= lo) & (chosen < lo + w)
    outside, ritz = order[chosen[~in_window]], q[:, chosen[in_window] - lo]
    basis = torch.cat([layer.rows[outside], ritz.T @ span])  # (k, d): rows of the CGS basis
    inside = float(removed[outside].sum()) + float(((c @ ritz) * ritz).sum())
    return basis.T, values[ranked], k, inside
