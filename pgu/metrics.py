"""Unlearning metrics as pure functions (docs/PROTOCOL.md, section "Metrics").

Every function takes quantities a model has already produced (predicted labels, softmax
probabilities, per-sample losses, accuracies) as numpy arrays, torch tensors or nested lists,
and returns Python floats or numpy arrays. Nothing here runs a model or touches a file.

Conventions (as in PROTOCOL.md):

* Accuracies, UA, MIA-Efficacy, loss-MIA accuracy and Avg.Gap are in **percent** (0 to 100).
* Logarithms are **natural** (entropy in nats, Jensen-Shannon divergence in [0, ln 2],
  per-example epsilon in nats).
* ``probs`` arguments are softmax outputs of shape ``(n_samples, n_classes)``: every entry
  in [0, 1] (a float rounding slack of 1e-6 is tolerated and clipped) and every row summing
  to 1 within 1e-4. ``labels`` are integer class indices in ``[0, n_classes)``.
* ``0 log 0 = 0`` wherever an entropy or a divergence meets a zero probability.

Every function checks its input and raises ``ValueError`` with a message that says what to fix.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import SVC

__all__ = [
    "accuracy",
    "unlearning_accuracy",
    "true_class_probability",
    "mia_efficacy",
    "loss_mia",
    "avg_gap",
    "gap_closed",
    "forget_progress",
    "activation_distance",
    "js_divergence",
    "prediction_entropy",
    "logit_scaled_confidence",
    "per_example_epsilon",
    "forgetting_quality",
    "challenge_score",
]

ROW_SUM_TOL = 1e-4
"""How far a row of probabilities may sum from 1."""

PROB_SLACK = 1e-6
"""Rounding slack tolerated outside [0, 1] (then clipped)."""

CONF_CLIP = 1e-12
"""Lower clip of probabilities in the logit-scaled confidence."""

BUCKET_WIDTH = 0.5
"""Width of the epsilon buckets of the challenge's forgetting quality."""


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if x is None:
        raise ValueError(f"{name} is None; pass an array, a tensor or a list of numbers")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ValueError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
    return arr


def _numbers(x: Any, name: str, ndim: int) -> np.ndarray:
    """A finite float64 array with ``ndim`` dimensions and at least one element."""
    arr = _to_numpy(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite numbers")
    return arr


def _probabilities(x: Any, name: str, ndim: int) -> np.ndarray:
    """Finite values in [0, 1] (slack ``PROB_SLACK``, then clipped)."""
    arr = _numbers(x, name, ndim)
    low, high = float(arr.min()), float(arr.max())
    if low < -PROB_SLACK or high > 1 + PROB_SLACK:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in [{low:.6g}, {high:.6g}]; "
            "apply softmax to logits first"
        )
    return np.clip(arr, 0.0, 1.0)


def _prob_rows(x: Any, name: str, ndim: int = 2, min_classes: int = 1) -> np.ndarray:
    """Softmax rows (classes on the last axis): entries in [0, 1], rows summing to 1 within 1e-4."""
    arr = _probabilities(x, name, ndim)
    if arr.shape[-1] < min_classes:
        raise ValueError(f"{name} must have at least {min_classes} classes (last axis), got shape {arr.shape}")
    deviation = np.abs(arr.sum(axis=-1) - 1.0)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(deviation)), deviation.shape))
    if deviation[worst] > ROW_SUM_TOL:
        where = worst[0] if len(worst) == 1 else worst
        raise ValueError(
            f"rows of {name} must sum to 1 within {ROW_SUM_TOL:g} (softmax outputs); row {where} sums to "
            f"{arr[worst].sum():.6g}"
        )
    return arr


def _labels(x: Any, name: str, n: int, n_classes: int | None) -> np.ndarray:
    """``(n,)`` integer labels, >= 0 and below ``n_classes`` when it is given."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n} samples; pass one label per sample")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one sample")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer class indices, got non-integer values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {arr.min()}")
    if n_classes is not None and arr.max() >= n_classes:
        raise ValueError(
            f"{name} must lie in [0, {n_classes}) (the number of classes), got values up to {arr.max()}"
        )
    return arr


def _number(x: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number, optionally within ``[low, high]``."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {type(x).__name__}")
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def _percent(x: Any, name: str) -> float:
    return _number(x, name, 0.0, 100.0)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape (same samples, same classes), got {a.shape} and {b.shape}")


def _xlogx_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p log(p / q)`` with ``0 log 0 = 0`` (``q > 0`` wherever ``p > 0``)."""
    safe_p = np.where(p > 0, p, 1.0)
    safe_q = np.where(p > 0, q, 1.0)
    return np.where(p > 0, p * np.log(safe_p / safe_q), 0.0)


# --------------------------------------------------------------------------- accuracy


def accuracy(predictions: Any, labels: Any) -> float:
    """Top-1 accuracy in percent (PROTOCOL.md, Metrics: FA, RA, TA).

    Args:
        predictions: ``(n,)`` predicted class indices, or ``(n, classes)`` scores
            (logits or probabilities), whose argmax over classes is the prediction.
        labels: ``(n,)`` true class indices.
    """
    arr = _to_numpy(predictions, "predictions")
    if arr.ndim == 2:
        scores = _numbers(arr, "predictions", 2)
        predicted, n_classes = scores.argmax(axis=1), scores.shape[1]
    elif arr.ndim == 1:
        predicted, n_classes = _labels(arr, "predictions", arr.shape[0], None), None
    else:
        raise ValueError(f"predictions must be (n,) class indices or (n, classes) scores, got shape {arr.shape}")
    truth = _labels(labels, "labels", predicted.shape[0], n_classes)
    return 100.0 * float(np.mean(predicted == truth))


def unlearning_accuracy(forget_accuracy: float) -> float:
    """UA = 100 - FA, in percent (PROTOCOL.md, Metrics); ``forget_accuracy`` is FA in percent."""
    return 100.0 - _percent(forget_accuracy, "forget_accuracy (percent)")


def true_class_probability(probs: Any, labels: Any) -> np.ndarray:
    """``p_{y_i}`` for each sample: the MIA-Efficacy feature (PROTOCOL.md, Metrics).

    Args:
        probs: ``(n, classes)`` softmax rows.
        labels: ``(n,)`` true class indices.

    Returns:
        ``(n,)`` float64 array of the probability each row gives its true label.
    """
    p = _prob_rows(probs, "probs")
    y = _labels(labels, "labels", p.shape[0], p.shape[1])
    return p[np.arange(p.shape[0]), y]


# --------------------------------------------------------------------------- membership inference


def mia_efficacy(retain_true_prob: Any, heldout_true_prob: Any, forget_true_prob: Any, *, seed: int = 0) -> float:
    """MIA-Efficacy in percent, the SalUn / l1-sparse convention (PROTOCOL.md, Metrics).

    Each argument is the ``(n,)`` true-class softmax probability (see
    :func:`true_class_probability`) of the model under test on D_r, the held-out set and D_f.
    Members (label 1) are a random subset of the retain values, drawn without replacement with
    ``numpy.random.default_rng(seed)``, of the size of the held-out set; non-members (label 0)
    are the held-out values. An RBF ``SVC(C=3, gamma='auto')`` is fitted on that single
    feature, and the result is 100 x the fraction of D_f predicted non-member (0). Higher
    means D_f looks less like training data.

    When the retain set is smaller than the held-out set, all retain values are used and an
    equal-size random subset of the held-out values (same generator) is drawn instead, so the
    two classes stay balanced.
    """
    retain = _probabilities(retain_true_prob, "retain_true_prob", 1)
    heldout = _probabilities(heldout_true_prob, "heldout_true_prob", 1)
    forget = _probabilities(forget_true_prob, "forget_true_prob", 1)
    rng = np.random.default_rng(seed)
    n = min(retain.shape[0], heldout.shape[0])
    members = retain[rng.choice(retain.shape[0], size=n, replace=False)]
    non_members = heldout if heldout.shape[0] == n else heldout[rng.choice(heldout.shape[0], size=n, replace=False)]
    features = np.concatenate([members, non_members]).reshape(-1, 1)
    targets = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    predicted = attack.predict(forget.reshape(-1, 1))
    return 100.0 * float(np.mean(predicted == 0))


def loss_mia(forget_losses: Any, heldout_losses: Any, *, seed: int = 0, folds: int = 5) -> float:
    """Loss-based membership attack accuracy in percent (PROTOCOL.md, Metrics: Loss MIA).

    Args:
        forget_losses: ``(n_f,)`` per-sample cross-entropy (natural log, >= 0) on D_f.
        heldout_losses: ``(n_h,)`` per-sample cross-entropy on held-out samples.
        seed: seeds the subsampling (``numpy.random.default_rng``) and the fold shuffle.
        folds: number of stratified folds.

    The larger set is subsampled at random, without replacement, to the size ``n`` of the
    smaller, so the two classes (D_f = 1, held-out = 0) are balanced. A logistic regression on
    the single loss feature is scored by shuffled, seeded stratified ``folds``-fold
    cross-validation; the mean accuracy is returned. 50 means the attacker cannot tell D_f
    from unseen data. ``n`` must be at least ``folds``.
    """
    forget = _numbers(forget_losses, "forget_losses", 1)
    heldout = _numbers(heldout_losses, "heldout_losses", 1)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    for arr, name in ((forget, "forget_losses"), (heldout, "heldout_losses")):
        if arr.min() < 0:
            raise ValueError(f"{name} must be per-sample cross-entropy losses (>= 0), got a minimum of {arr.min():.6g}")
    n = min(forget.shape[0], heldout.shape[0])
    if n < folds:
        raise ValueError(
            f"loss_mia needs at least folds={folds} samples on each side, got {forget.shape[0]} forget and "
            f"{heldout.shape[0]} held-out losses; pass more samples or fewer folds"
        )
    rng = np.random.default_rng(seed)
    forget = forget if forget.shape[0] == n else forget[rng.choice(forget.shape[0], size=n, replace=False)]
    heldout = heldout if heldout.shape[0] == n else heldout[rng.choice(heldout.shape[0], size=n, replace=False)]
    features = np.concatenate([forget, heldout]).reshape(-1, 1)
    targets = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), features, targets, cv=splitter, scoring="accuracy")
    return 100.0 * float(np.mean(scores))


# --------------------------------------------------------------------------- gaps


def avg_gap(
    metrics: Mapping[str, float], reference: Mapping[str, float], keys: Sequence[str] = ("UA", "RA", "TA", "MIA")
) -> float:
    """Avg.Gap: mean over ``keys`` of ``|metrics[k] - reference[k]|`` (PROTOCOL.md, Metrics).

    ``metrics`` are a method's numbers and ``reference`` the retrained model's, both in
    percent (by default UA, RA, TA and MIA-Efficacy). 0 is perfect.
    """
    if isinstance(keys, str) or len(keys) == 0:
        raise ValueError(f"keys must be a non-empty sequence of metric names, got {keys!r}")
    gaps = []
    for key in keys:
        for table, name in ((metrics, "metrics"), (reference, "reference")):
            if key not in table:
                raise ValueError(f"{name} has no {key!r} entry (it has {sorted(table)}); add it or change keys")
        gaps.append(abs(_number(metrics[key], f"metrics[{key!r}]") - _number(reference[key], f"reference[{key!r}]")))
    return float(np.mean(gaps))


def gap_closed(gap_method: float, gap_original: float) -> float | None:
    """Gap closed = 1 - gap(method) / gap(original) (PROTOCOL.md, Metrics: Avg.Gap).

    Both gaps are Avg.Gap values (percent points, >= 0). 1 means the method reached the
    retrained model, 0 that it did no better than doing nothing. Returns None when
    ``gap_original`` is 0 (the original already matches the retrained model: nothing to close).
    """
    method = _number(gap_method, "gap_method", 0.0)
    original = _number(gap_original, "gap_original", 0.0)
    if original == 0.0:
        return None
    return 1.0 - method / original


def forget_progress(fa_method: float, fa_original: float, fa_reference: float) -> float | None:
    """How far forget accuracy moved from the original's toward the retrained model's.

    ``(FA_original - FA_method) / (FA_original - FA_reference)``, accuracies in percent: 1 means
    the method reached the retrained model's forget accuracy, 0 that it left it where it was,
    above 1 that it overshot, below 0 that it moved away. Returns None when the original already
    has the reference's forget accuracy (nothing to move).
    """
    method = _percent(fa_method, "fa_method")
    original = _percent(fa_original, "fa_original")
    reference = _percent(fa_reference, "fa_reference")
    if original == reference:
        return None
    return (original - method) / (original - reference)


# --------------------------------------------------------------------------- agreement with the retrained model


def activation_distance(p: Any, q: Any) -> float:
    """Mean over samples of ``||p_i - q_i||_2`` (PROTOCOL.md, Metrics: agreement on D_f).

    ``p`` and ``q`` are ``(n, classes)`` softmax outputs of two models (e.g. unlearned and
    retrained) on the same samples, in the same order. In [0, sqrt(2)].
    """
    a, b = _prob_rows(p, "p"), _prob_rows(q, "q")
    _same_shape(a, b, "p and q")
    return float(np.mean(np.linalg.norm(a - b, axis=1)))


def js_divergence(p: Any, q: Any) -> float:
    """Mean over samples of the Jensen-Shannon divergence between rows (PROTOCOL.md, Metrics).

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, natural log, so
    each term lies in [0, ln 2]; ``0 log 0 = 0``. ``p`` and ``q`` are ``(n, classes)``
    softmax outputs of two models on the same samples.
    """
    a, b = _prob_rows(p, "p"), _prob_rows(q, "q")
    _same_shape(a, b, "p and q")
    m = 0.5 * (a + b)
    per_sample = 0.5 * _xlogx_ratio(a, m).sum(axis=1) + 0.5 * _xlogx_ratio(b, m).sum(axis=1)
    return float(np.mean(np.clip(per_sample, 0.0, math.log(2.0))))


def prediction_entropy(p: Any) -> np.ndarray:
    """Per-sample entropy ``-sum_c p_c ln p_c`` in nats, ``0 log 0 = 0`` (PROTOCOL.md, Metrics).

    ``p`` is ``(n, classes)`` softmax rows; returns an ``(n,)`` array in [0, ln classes], the
    values behind the prediction-entropy histograms on D_f.
    """
    a = _prob_rows(p, "p")
    safe = np.where(a > 0, a, 1.0)
    return np.clip(-(a * np.log(safe)).sum(axis=1), 0.0, None)


# --------------------------------------------------------------------------- per-example forgetting quality


def logit_scaled_confidence(probs: Any, labels: Any) -> np.ndarray:
    """``ln p_y - ln sum_{j != y} p_j`` per sample (PROTOCOL.md, Metrics: per-example quality).

    ``probs`` is ``(n, classes)`` softmax rows (at least 2 classes), ``labels`` the ``(n,)``
    true classes. Probabilities are clipped to [1e-12, 1] first. The denominator is summed
    over the other classes directly rather than taken as ``1 - p_y`` (``log1p(-p_y)``): that
    difference cancels to 0 when ``p_y`` rounds to 1, while the direct sum keeps the small
    mass of the other classes exactly, so confident rows stay finite and ordered (log1p would
    add nothing once the sum is direct). Returns an ``(n,)`` float64 array, within about
    +/-27.6 because of the clipping.
    """
    p = _prob_rows(probs, "probs", 2, min_classes=2)
    y = _labels(labels, "labels", p.shape[0], p.shape[1])
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
    """Per-example epsilon of the 2023 NeurIPS unlearning challenge (PROTOCOL.md, Metrics).

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
            than evidence. ``"infinite"``: PROTOCOL.md's formula read literally, a zero rate in
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
    u = _numbers(unlearned_conf, "unlearned_conf", 1)
    r = _numbers(retrained_conf, "retrained_conf", 1)
    delta = _number(delta, "delta")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    cap = _number(cap, "cap")
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
    """Forgetting quality F of the challenge (PROTOCOL.md, Metrics: per-example quality).

    Each per-example epsilon (nats, >= 0) falls in bucket ``k = floor(eps / 0.5)`` worth
    ``2**-k`` points (1, 1/2, 1/4, ...); an epsilon ``>= ceil(ln(n_models - 1))`` scores 0.
    F is the mean of the points over examples, in [0, 1]. ``n_models`` is N, the number of
    models of each kind (at least 2; with N = 2 the bar is 0 and every example scores 0).
    """
    eps = _to_numpy(epsilons, "epsilons")
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
    """The 2023 NeurIPS challenge score (PROTOCOL.md, Metrics: per-example quality).

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
    u = _prob_rows(unlearned_probs, "unlearned_probs", 3, min_classes=2)
    r = _prob_rows(retrained_probs, "retrained_probs", 3, min_classes=2)
    _same_shape(u, r, "unlearned_probs and retrained_probs")
    n_models, n_forget, n_classes = u.shape
    y = _labels(labels, "labels", n_forget, n_classes)
    accs = {
        name: _percent(value, f"{name} (percent)")
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
