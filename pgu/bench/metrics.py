"""Unlearning metrics as pure functions (docs/protocol.md, section "Metrics").

Every function takes quantities a model has already produced (predicted labels, softmax
probabilities, per-sample losses, accuracies) as numpy arrays, torch tensors or nested lists,
and returns Python floats or numpy arrays. Nothing here runs a model or touches a file.

Conventions (as in docs/protocol.md):

* Accuracies, UA, MIA-Efficacy, loss-MIA accuracy and Avg.Gap are in **percent** (0 to 100).
* Logarithms are **natural** (entropy in nats, Jensen-Shannon divergence in [0, ln 2],
  per-example epsilon in nats).
* ``probs`` arguments are softmax outputs of shape ``(n_samples, n_classes)``: every entry
  in [0, 1] (a float rounding slack of 1e-6 is tolerated and clipped) and every row summing
  to 1 within 1e-4. ``labels`` are integer class indices in ``[0, n_classes)``.
* ``0 log 0 = 0`` wherever an entropy or a divergence meets a zero probability.

Every function checks its input and raises ``ValueError`` with a message that says what to fix.
The per-example forgetting quality of the 2023 NeurIPS challenge lives in :mod:`pgu.bench.challenge`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import SVC

from pgu.bench.arrays import (
    check_labels,
    check_number,
    check_numbers,
    check_numpy,
    check_percent,
    check_prob_rows,
    check_probabilities,
    check_same_shape,
    xlogx_ratio,
)

__all__ = [
    "top1_accuracy",
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
]

# --------------------------------------------------------------------------- accuracy


def top1_accuracy(predictions: Any, labels: Any) -> float:
    """Top-1 accuracy in percent (docs/protocol.md, Metrics: FA, RA, TA).

    Args:
        predictions: ``(n,)`` predicted class indices, or ``(n, classes)`` scores
            (logits or probabilities), whose argmax over classes is the prediction.
        labels: ``(n,)`` true class indices.
    """
    arr = check_numpy(predictions, "predictions")
    if arr.ndim == 2:
        scores = check_numbers(arr, "predictions", 2)
        predicted, n_classes = scores.argmax(axis=1), scores.shape[1]
    elif arr.ndim == 1:
        predicted, n_classes = check_labels(arr, "predictions", arr.shape[0], None), None
    else:
        raise ValueError(f"predictions must be (n,) class indices or (n, classes) scores, got shape {arr.shape}")
    truth = check_labels(labels, "labels", predicted.shape[0], n_classes)
    return 100.0 * float(np.mean(predicted == truth))


def unlearning_accuracy(forget_accuracy: float) -> float:
    """UA = 100 - FA, in percent (docs/protocol.md, Metrics); ``forget_accuracy`` is FA in percent."""
    return 100.0 - check_percent(forget_accuracy, "forget_accuracy (percent)")


def true_class_probability(probs: Any, labels: Any) -> np.ndarray:
    """``p_{y_i}`` for each sample: the MIA-Efficacy feature (docs/protocol.md, Metrics).

    Args:
        probs: ``(n, classes)`` softmax rows.
        labels: ``(n,)`` true class indices.

    Returns:
        ``(n,)`` float64 array of the probability each row gives its true label.
    """
    p = check_prob_rows(probs, "probs")
    y = check_labels(labels, "labels", p.shape[0], p.shape[1])
    return p[np.arange(p.shape[0]), y]


# --------------------------------------------------------------------------- membership inference


def mia_efficacy(retain_true_prob: Any, heldout_true_prob: Any, forget_true_prob: Any, *, seed: int = 0) -> float:
    """MIA-Efficacy in percent, the SalUn / l1-sparse convention (docs/protocol.md, Metrics).

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
    retain = check_probabilities(retain_true_prob, "retain_true_prob", 1)
    heldout = check_probabilities(heldout_true_prob, "heldout_true_prob", 1)
    forget = check_probabilities(forget_true_prob, "forget_true_prob", 1)
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
    """Loss-based membership attack accuracy in percent (docs/protocol.md, Metrics: Loss MIA).

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
    forget = check_numbers(forget_losses, "forget_losses", 1)
    heldout = check_numbers(heldout_losses, "heldout_losses", 1)
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
    """Avg.Gap: mean over ``keys`` of ``|metrics[k] - reference[k]|`` (docs/protocol.md, Metrics).

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
        gaps.append(abs(check_number(metrics[key], f"metrics[{key!r}]")
                        - check_number(reference[key], f"reference[{key!r}]")))
    return float(np.mean(gaps))


def gap_closed(gap_method: float, gap_original: float) -> float | None:
    """Gap closed = 1 - gap(method) / gap(original) (docs/protocol.md, Metrics: Avg.Gap).

    Both gaps are Avg.Gap values (percent points, >= 0). 1 means the method reached the
    retrained model, 0 that it did no better than doing nothing. Returns None when
    ``gap_original`` is 0 (the original already matches the retrained model: nothing to close).
    """
    method = check_number(gap_method, "gap_method", 0.0)
    original = check_number(gap_original, "gap_original", 0.0)
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
    method = check_percent(fa_method, "fa_method")
    original = check_percent(fa_original, "fa_original")
    reference = check_percent(fa_reference, "fa_reference")
    if original == reference:
        return None
    return (original - method) / (original - reference)


# --------------------------------------------------------------------------- agreement with the retrained model


def activation_distance(p: Any, q: Any) -> float:
    """Mean over samples of ``||p_i - q_i||_2`` (docs/protocol.md, Metrics: agreement on D_f).

    ``p`` and ``q`` are ``(n, classes)`` softmax outputs of two models (e.g. unlearned and
    retrained) on the same samples, in the same order. In [0, sqrt(2)].
    """
    a, b = check_prob_rows(p, "p"), check_prob_rows(q, "q")
    check_same_shape(a, b, "p and q")
    return float(np.mean(np.linalg.norm(a - b, axis=1)))


def js_divergence(p: Any, q: Any) -> float:
    """Mean over samples of the Jensen-Shannon divergence between rows (docs/protocol.md, Metrics).

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, natural log, so
    each term lies in [0, ln 2]; ``0 log 0 = 0``. ``p`` and ``q`` are ``(n, classes)``
    softmax outputs of two models on the same samples.
    """
    a, b = check_prob_rows(p, "p"), check_prob_rows(q, "q")
    check_same_shape(a, b, "p and q")
    m = 0.5 * (a + b)
    per_sample = 0.5 * xlogx_ratio(a, m).sum(axis=1) + 0.5 * xlogx_ratio(b, m).sum(axis=1)
    return float(np.mean(np.clip(per_sample, 0.0, math.log(2.0))))


def prediction_entropy(p: Any) -> np.ndarray:
    """Per-sample entropy ``-sum_c p_c ln p_c`` in nats, ``0 log 0 = 0`` (docs/protocol.md, Metrics).

    ``p`` is ``(n, classes)`` softmax rows; returns an ``(n,)`` array in [0, ln classes], the
    values behind the prediction-entropy histograms on D_f.
    """
    a = check_prob_rows(p, "p")
    safe = np.where(a > 0, a, 1.0)
    return np.clip(-(a * np.log(safe)).sum(axis=1), 0.0, None)
