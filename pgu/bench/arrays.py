"""Input checks of the metric functions (:mod:`pgu.bench.metrics`, :mod:`pgu.bench.challenge`).

Each takes what a caller passed (numpy array, torch tensor, nested list) and returns a float64
numpy array or a float, or raises ``ValueError`` with a message that says what to fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ROW_SUM_TOL", "PROB_SLACK", "check_numpy", "check_numbers", "check_probabilities", "check_prob_rows",
           "check_labels", "check_number", "check_percent", "check_same_shape", "xlogx_ratio"]

ROW_SUM_TOL = 1e-4
"""How far a row of probabilities may sum from 1."""

PROB_SLACK = 1e-6
"""Rounding slack tolerated outside [0, 1] (then clipped)."""


def check_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if x is None:
        raise ValueError(f"{name} is None; pass an array, a tensor or a list of numbers")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ValueError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
    return arr


def check_numbers(x: Any, name: str, ndim: int) -> np.ndarray:
    """A finite float64 array with ``ndim`` dimensions and at least one element."""
    arr = check_numpy(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite numbers")
    return arr


def check_probabilities(x: Any, name: str, ndim: int) -> np.ndarray:
    """Finite values in [0, 1] (slack ``PROB_SLACK``, then clipped)."""
    arr = check_numbers(x, name, ndim)
    low, high = float(arr.min()), float(arr.max())
    if low < -PROB_SLACK or high > 1 + PROB_SLACK:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in [{low:.6g}, {high:.6g}]; "
            "apply softmax to logits first"
        )
    return np.clip(arr, 0.0, 1.0)


def check_prob_rows(x: Any, name: str, ndim: int = 2, min_classes: int = 1) -> np.ndarray:
    """Softmax rows (classes on the last axis): entries in [0, 1], rows summing to 1 within 1e-4."""
    arr = check_probabilities(x, name, ndim)
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


def check_labels(x: Any, name: str, n: int, n_classes: int | None) -> np.ndarray:
    """``(n,)`` integer labels, >= 0 and below ``n_classes`` when it is given."""
    arr = check_numpy(x, name)
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


def check_number(x: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number, optionally within ``[low, high]``."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {type(x).__name__}")
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def check_percent(x: Any, name: str) -> float:
    return check_number(x, name, 0.0, 100.0)


def check_same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape (same samples, same classes), got {a.shape} and {b.shape}")


def xlogx_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p log(p / q)`` with ``0 log 0 = 0`` (``q > 0`` wherever ``p > 0``)."""
    safe_p = np.where(p > 0, p, 1.0)
    safe_q = np.where(p > 0, q, 1.0)
    return np.where(p > 0, p * np.log(safe_p / safe_q), 0.0)
