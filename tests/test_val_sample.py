"""The stopping rule's val sample (pgu.val_sample): its size, its stratification, its standard error."""

import math

import pytest
import torch

from pgu.val_sample import (
    VAL_SAMPLE_FLOOR,
    VAL_SE_RATIO,
    accuracy_standard_error,
    check_val_samples,
    stratified_order,
    val_sample_size,
)


def test_every_prefix_of_the_stratified_order_keeps_each_class_share():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 37, 1203, 260, 1])])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    order = stratified_order(labels, seed=0)
    assert torch.equal(order.sort().values, torch.arange(len(labels)))
    counts = torch.bincount(labels).double()
    shares = counts / counts.sum()
    taken = torch.zeros_like(counts)
    bound = 0.5 + shares * len(counts) / 2  # the docstring's bound
    for n, i in enumerate(order.tolist(), start=1):
        taken[labels[i]] += 1
        assert bool(((taken - n * shares).abs() <= bound + 1e-9).all()), n
    assert torch.equal(stratified_order(labels, seed=0), order)
    assert not torch.equal(stratified_order(labels, seed=1), order)


def test_the_auto_size_makes_val_a_third_as_noisy_as_the_forget_set_within_the_floor_and_the_set():
    assert VAL_SE_RATIO == pytest.approx(1 / 3)
    assert val_sample_size(5000, 100) == VAL_SAMPLE_FLOOR  # 9 x 100 = 900 < the floor
    assert val_sample_size(5000, 300) == 2700
    assert val_sample_size(5000, 1000) == 5000 and val_sample_size(500, 10) == 500
    n_f = 300
    n_v = val_sample_size(100_000, n_f)
    # at equal accuracy the val estimate's standard error is at most a third of the forget estimate's
    assert accuracy_standard_error(80.0, n_v) <= VAL_SE_RATIO * accuracy_standard_error(80.0, n_f) + 1e-12
    assert val_sample_size(5000, 100, "all") == 5000 and val_sample_size(5000, 100, 64) == 64
    for bad in (0, -3, 2.5, True, "most", None):
        with pytest.raises(ValueError, match="val_samples"):
            check_val_samples(bad)


def test_the_standard_error_matches_repeated_sampling_without_replacement():
    population = torch.zeros(2000)
    population[:1400] = 1.0  # 70% accuracy
    g = torch.Generator().manual_seed(0)
    for n in (100, 1000, 1900):
        means = torch.stack([population[torch.randperm(2000, generator=g)[:n]].mean() for _ in range(3000)])
        measured = 100 * float(means.std())
        assert measured == pytest.approx(accuracy_standard_error(70.0, n, 2000), rel=0.08), n
    assert accuracy_standard_error(70.0, 2000, 2000) == 0.0
    assert accuracy_standard_error(70.0, 100) == pytest.approx(100 * math.sqrt(0.21 / 100))
    with pytest.raises(ValueError, match="at least one"):
        accuracy_standard_error(50.0, 0)
