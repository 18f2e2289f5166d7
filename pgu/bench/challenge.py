"""The 2023 NeurIPS Machine Unlearning Challenge's per-example forgetting quality (docs/protocol.md, Metrics).

For each forget example, the logit-scaled confidence ``ln p_y - ln sum_{j != y} p_j`` over N
unlearned and N retrained models; per-example ``epsilon`` from single- and double-threshold
attacks; ``epsilon`` bucketed into points; the score ``F x (RA_u / RA_r) x (TA_u / TA_r)``.
Pure functions on arrays, with the conventions and input checks of :mod:`pgu.bench.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pgu.bench.arrays import (
    check_labels,
    check_number,
    check_numbers,
    check_numpy,
    check_percent,
    check_prob_rows,
    check_same_shape,
)

__all__ = ["logit_scaled_confidence", "per_example_epsilon", "forgetting_quality", "challenge_score"]

CONF_CLIP = 1e-12
"""Lower clip of probabilities in the logit-scaled confidence."""

BUCKET_WIDTH = 0.5
"""Width of the epsilon buckets of the challenge's forgetting quality."""


# --------------------------------------------------------------------------- per-example forgetting quality


def logit_scaled_confidence(probs: Any, labels: Any) -> np.ndarray:
    """``ln p_y - ln sum_{j != y} p_j`` per sample (docs/protocol.md, Metrics: per-example quality).

    ``probs`` is ``(n, classes)`` softmax rows (at least 2 classes), ``labels`` the ``(n,)``
    true classes. Probabilities are clipped to [1e-12, 1] first. The denominator is summed
    over the other classes directly rather than taken as ``1 - p_y`` (``log1p(-p_y)``): that
    difference cancels to 0 when ``p_y`` rounds to 1, while the direct sum keeps the small
    mass of the other classes exactly, so confident rows stay finite and ordered (log1p would
    add nothing once the sum is direct). Returns an ``(n,)`` float64 array, within about
    +/-27.6 because of the clipping.
    """
    p = check_prob_rows(probs, "probs", 2, min_classes=2)
    y = check_labels(labels, "labels", p.shape[0], p.shape[1])
    clipped = np.clip(p, CONF_CLIP, 1.0)
    rows = np.arange(p.shape[0])
    p_true = clipped[rows, y]
    others = clipped.copy()
    others[rows, y] = 0.0
    rest = np.clip(others.sum(axis=1), CONF_CLIP, None)
    return np.log(p_true) - np.log(rest)


def _attack_rates(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(FPR, FNR)`` of every single- and double-threshold attack, flattened.

    Thresholds are the sorted unique pooled values and +/- inf. "Decided unlearned" sets:
    ``conf >= t``, ``t1 <= conf <= t2`` (``t1 <= t2``), and the complement of each. FPR is the
    share of retrained values decided unlearned, FNR the share of unlearned values decided
    retrained.
    """
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([unlearned, retrained])), [np.inf]])
    u, r = np.sort(unlearned), np.sort(retrained)

    def share_at_least(x: np.ndarray) -> np.ndarray:  # share of x >= t, for each t
        return 1.0 - np.searchsorted(x, thresholds, side="left") / x.shape[0]

    def share_between(x: np.ndarray) -> np.ndarray:  # share of t1 <= x <= t2, for t1 <= t2
        below_t1 = np.searchsorted(x, thresholds, side="left")
        up_to_t2 = np.searchsorted(x, thresholds, side="right")
        counts = up_to_t2[None, :] - below_t1[:, None]
        return counts[np.triu_indices(thresholds.shape[0])] / x.shape[0]

    hit_u = np.concatenate([share_at_least(u), share_between(u)])  # unlearned decided unlearned
    hit_r = np.concatenate([share_at_least(r), share_between(r)])  # retrained decided unlearned
    fpr = np.concatenate([hit_r, 1.0 - hit_r])  # the complements decide the other way round
    fnr = np.concatenate([1.0 - hit_u, hit_u])
    return fpr, fnr


def _epsilon_terms(first: np.ndarray, rate: np.ndarray, delta: float) -> np.ndarray:
    """``log(1 - delta - first) - log(rate)``; -inf where the first argument is <= 0, +inf where rate is 0."""
    argument = 1.0 - delta - first
    valid = argument > 0
    out = np.full(first.shape, -np.inf)
    with np.errstate(divide="ignore"):
        out[valid] = np.log(argument[valid]) - np.log(rate[valid])
    return out


ZERO_RATE_RULES = ("infinite", "discard")
"""How :func:`per_example_epsilon` treats an attack with exactly one zero error rate."""


def per_example_epsilon(
    unlearned_conf: Any,
    retrained_conf: Any,
    delta: float = 1e-5,
    cap: float = 50.0,
    *,
    zero_rates: str = "discard",
) -> float:
    """Per-example epsilon of the 2023 NeurIPS unlearning challenge (docs/protocol.md, Metrics).

    Args:
        unlearned_conf: ``(N_u,)`` logit-scaled confidences (:func:`logit_scaled_confidence`)
            of ONE forget example under each of the unlearned models.
        retrained_conf: ``(N_r,)`` the same example under each retrained model (PROTOCOL
            uses N of each; the two counts may differ, rates are shares).
        delta: the delta of (epsilon, delta), in (0, 1).
        cap: the largest epsilon reported (> 0).
        zero_rates: ``"discard"`` (default): an attack with exactly one of FPR, FNR equal to 0
            is left out (both 0, perfect separation, still gives +inf), as the challenge
            organisers' evaluation code does, reading a lone zero rate as too few models rather
            than evidence. ``"infinite"``: docs/protocol.md's formula read literally, a zero rate in
            the subtracted log makes that term +inf; then confidences that are all distinct
            (continuous outputs) always reach the cap, since the attack that isolates the single
            largest value has one zero rate, and every example scores 0.

    Attacks decide "unlearned" when ``conf >= t`` (single threshold) or ``t1 <= conf <= t2``
    (double threshold), or on the complement of either set, with thresholds at the unique
    pooled values and +/- inf (which covers every distinct split of the values). For each,
    FPR = share of retrained decided unlearned, FNR = share of unlearned decided retrained, and
    ``eps = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``; a term whose
    first log has a non-positive argument is skipped. Returns ``min(cap, max over attacks)``,
    floored at 0, in nats.
    """
    u = check_numbers(unlearned_conf, "unlearned_conf", 1)
    r = check_numbers(retrained_conf, "retrained_conf", 1)
    delta = check_number(delta, "delta")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    cap = check_number(cap, "cap")
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if zero_rates not in ZERO_RATE_RULES:
        raise ValueError(f"zero_rates must be one of {ZERO_RATE_RULES}, got {zero_rates!r}")
    fpr, fnr = _attack_rates(u, r)
    if zero_rates == "discard":
        keep = (fpr > 0) == (fnr > 0)
        fpr, fnr = fpr[keep], fnr[keep]
    if fpr.size == 0:
        return 0.0
    eps = max(float(np.max(_epsilon_terms(fpr, fnr, delta))), float(np.max(_epsilon_terms(fnr, fpr, delta))))
    return float(min(cap, max(0.0, eps)))


def forgetting_quality(epsilons: Any, n_models: int) -> float:
    """Forgetting quality F of the challenge (docs/protocol.md, Metrics: per-example quality).

    Each per-example epsilon (nats, >= 0) falls in bucket ``k = floor(eps / 0.5)`` worth
    ``2**-k`` points (1, 1/2, 1/4, ...); an epsilon ``>= ceil(ln(n_models - 1))`` scores 0.
    F is the mean of the points over examples, in [0, 1]. ``n_models`` is N, the number of
    models of each kind (at least 2; with N = 2 the bar is 0 and every example scores 0).
    """
    eps = check_numpy(epsilons, "epsilons")
    if eps.ndim != 1 or eps.size == 0:
        raise ValueError(f"epsilons must be a non-empty 1-D array (one per forget example), got shape {eps.shape}")
    eps = eps.astype(np.float64)
    if np.any(np.isnan(eps)) or np.any(eps < 0):
        raise ValueError("epsilons must be >= 0 and not NaN (see per_example_epsilon)")
    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)) or n_models < 2:
        raise ValueError(f"n_models must be an integer >= 2 (models of each kind), got {n_models!r}")
    bar = math.ceil(math.log(n_models - 1))
    finite = np.where(np.isfinite(eps), eps, 0.0)
    points = np.power(2.0, -np.floor(finite / BUCKET_WIDTH))
    points = np.where(eps >= bar, 0.0, points)
    return float(np.mean(points))


def challenge_score(
    unlearned_probs: Any,
    retrained_probs: Any,
    labels: Any,
    ra_unlearned: float,
    ra_retrained: float,
    ta_unlearned: float,
    ta_retrained: float,
    *,
    zero_rates: str = "discard",
) -> dict[str, Any]:
    """The 2023 NeurIPS challenge score (docs/protocol.md, Metrics: per-example quality).

    Args:
        unlearned_probs: ``(N, n_forget, classes)`` softmax outputs of N unlearned models on D_f.
        retrained_probs: the same shape, from N retrained models.
        labels: ``(n_forget,)`` true classes of D_f.
        ra_unlearned, ra_retrained, ta_unlearned, ta_retrained: mean retain and test accuracies
            of the two groups, in percent (only their ratios matter).
        zero_rates: passed to :func:`per_example_epsilon`.

    Returns:
        ``{"forgetting_quality": F, "score": F * (RA_u / RA_r) * (TA_u / TA_r), "epsilons": [...]}``
        with one epsilon per forget example (see :func:`per_example_epsilon`).
    """
    u = check_prob_rows(unlearned_probs, "unlearned_probs", 3, min_classes=2)
    r = check_prob_rows(retrained_probs, "retrained_probs", 3, min_classes=2)
    check_same_shape(u, r, "unlearned_probs and retrained_probs")
    n_models, n_forget, n_classes = u.shape
    y = check_labels(labels, "labels", n_forget, n_classes)
    accs = {
        name: check_percent(value, f"{name} (percent)")
        for name, value in (
            ("ra_unlearned", ra_unlearned),
            ("ra_retrained", ra_retrained),
            ("ta_unlearned", ta_unlearned),
            ("ta_retrained", ta_retrained),
        )
    }
    for name in ("ra_retrained", "ta_retrained"):
        if accs[name] == 0:
            raise ValueError(f"{name} is 0; the score divides by it, so pass the retrained models' accuracy")
    conf_u = np.stack([logit_scaled_confidence(u[m], y) for m in range(n_models)])  # (N, n_forget)
    conf_r = np.stack([logit_scaled_confidence(r[m], y) for m in range(n_models)])
    epsilons = [per_example_epsilon(conf_u[:, j], conf_r[:, j], zero_rates=zero_rates) for j in range(n_forget)]
    quality = forgetting_quality(epsilons, n_models)
    ratio = (accs["ra_unlearned"] / accs["ra_retrained"]) * (accs["ta_unlearned"] / accs["ta_retrained"])
    return {"forgetting_quality": quality, "score": quality * ratio, "epsilons": epsilons}
