"""How many held-out samples a stopping decision needs, and which (a fixed, stratified sample of val).

The sample rule (docs/method.md section 6) compares the forget accuracy ``a_f``, measured on the
``n_f`` samples of the request, with the held-out accuracy ``a_v``. ``a_f`` is itself a share of
``n_f`` samples: its sampling standard error is ``sqrt(p (1 - p) / n_f)``. Scoring every val
sample after every epoch makes ``a_v`` far more precise than the ``a_f`` it is compared with, at
the cost of most of a small request's time. :func:`val_sample_size` takes just enough:
``n_v = ceil(n_f / VAL_SE_RATIO**2)`` samples (at least :data:`VAL_SAMPLE_FLOOR`, at most all),
so that at equal accuracy the val estimate's standard error is at most ``VAL_SE_RATIO`` (a third)
of the forget estimate's: it adds at most ``VAL_SE_RATIO**2`` (1/9) to the variance of the
crossing test ``a_f - a_v``. The held-out guard compares accuracies of one model line on the same
samples (before and after), so its differences carry much less noise than either accuracy.

:func:`stratified_order` orders val so that every prefix keeps the classes' proportions (each
class's samples in a seeded random order, interleaved by rank within class); a sample of size
``n`` is the first ``n``: the same samples for every request of that size and nested across sizes.
"""

from __future__ import annotations

import math

import torch

__all__ = ["VAL_SE_RATIO", "VAL_SAMPLE_FLOOR", "val_sample_size", "stratified_order", "accuracy_standard_error",
           "check_val_samples"]

VAL_SE_RATIO = 1.0 / 3.0
"""The val estimate's standard error as a share of the forget estimate's (at equal accuracy)."""

VAL_SAMPLE_FLOOR = 1000
"""The fewest val samples a decision is made on (standard error at most 1.6 points at 50% accuracy)."""


def check_val_samples(value) -> int | str:
    """A ``val_samples`` setting: ``"auto"`` (:func:`val_sample_size`), ``"all"``, or a whole number >= 1."""
    if value in ("auto", "all"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"val_samples must be 'auto' (enough for the request's size), 'all', or a whole number of "
                         f"samples >= 1; got {value!r}")
    return value


def val_sample_size(n_val: int, n_forget: int, setting: int | str = "auto") -> int:
    """How many of ``n_val`` val samples a request of ``n_forget`` samples scores (see the module docstring)."""
    setting = check_val_samples(setting)
    if setting == "all":
        return n_val
    if setting == "auto":
        setting = max(VAL_SAMPLE_FLOOR, math.ceil(n_forget / VAL_SE_RATIO**2))
    return min(n_val, setting)


def stratified_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A permutation of ``range(len(labels))`` whose every prefix keeps each class's share.

    Class ``c``'s ``m_c`` samples, in a random order drawn from ``seed``, get the keys ``(j + 1/2) / m_c``
    (``j`` their rank); sorting by key (ties by class, then rank) interleaves the classes in proportion. A
    prefix of ``n`` holds ``n_c`` of class ``c`` with ``|n_c - n m_c / N| <= 1/2 + K m_c / (2 N)`` (``K``
    classes, ``N`` samples): within one sample or two of its share."""
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    generator = torch.Generator().manual_seed(seed)
    keys = torch.empty(labels.numel(), dtype=torch.float64)
    for c in torch.unique(labels).tolist():
        where = torch.nonzero(labels == c).flatten()
        where = where[torch.randperm(where.numel(), generator=generator)]
        keys[where] = (torch.arange(where.numel(), dtype=torch.float64) + 0.5) / where.numel()
    # stable sort on (key, label): equal keys (classes of equal size) keep the class order
    order = torch.argsort(labels, stable=True)
    return order[torch.argsort(keys[order], stable=True)]


def accuracy_standard_error(accuracy: float, n: int, population: int | None = None) -> float:
    """Standard error in points of an accuracy (percent) measured on ``n`` samples drawn without replacement
    from ``population`` (None: an infinite one); 0 when ``n`` is the whole population."""
    if n <= 0:
        raise ValueError(f"an accuracy needs at least one sample, got n={n}")
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    correction = 1.0 if population is None or population <= 1 else max(0.0, (population - n) / (population - 1))
    return 100.0 * math.sqrt(p * (1.0 - p) / n * correction)
