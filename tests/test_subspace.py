"""Rank rules on hand-made spectra, and the fitted Core Gradient Space."""

import pytest
import torch
from torch import nn

from pgu import CoreGradientSpace, GramStats, NotFittedError, select_rank

# sigma = 3, 2, 1, 0 -> cumulative sigma ratio 0.5, 0.8333, 1, 1
# lambda = 9, 4, 1, 0 -> cumulative energy 0.6429, 0.9286, 1, 1
SPECTRUM = torch.tensor([9.0, 4.0, 1.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "threshold, pgu_k, energy_k",
    [(0.3, 0, 1), (0.5, 1, 1), (0.6, 1, 1), (0.64, 1, 1), (0.65, 1, 2), (0.84, 2, 2), (0.9, 2, 2),
     (13 / 14, 2, 2), (0.95, 2, 3), (0.999, 2, 3), (1.0, 4, 4), (0.0, 0, 0)],
)
def test_rank_rules_on_a_hand_made_spectrum(threshold, pgu_k, energy_k):
    assert select_rank(SPECTRUM, threshold, "pgu") == pgu_k
    assert select_rank(SPECTRUM, threshold, "energy") == energy_k


def test_rank_rules_edge_cases():
    zeros = torch.zeros(5, dtype=torch.float64)
    assert select_rank(zeros, 0.9, "pgu") == 0 and select_rank(zeros, 0.9, "energy") == 0
    assert select_rank(zeros, 1.0, "pgu") == 5  # gamma = 1 protects the whole space
    flat = torch.ones(10, dtype=torch.float64)
    assert select_rank(flat, 0.5, "pgu") == 5 and select_rank(flat, 0.5, "energy") == 5
    with pytest.raises(ValueError, match="unknown rank rule"):
        select_rank(flat, 0.5, "svd")


def fitted_stats(rank=3, d=8, n=50):
    layer = nn.Linear(d, 2)
    x = torch.randn(n, rank) @ torch.randn(rank, d)  # rows span a rank-3 subspace
    # float64 products: the null directions then carry ~1e-16 of the energy, not float32's ~1e-7
    return layer, GramStats(precision="float64").fit(layer, [x]), x


def test_basis_is_orthonormal_and_spans_the_leading_eigenvectors():
    _, stats, x = fitted_stats()
    cgs = CoreGradientSpace(0.97, rule="energy").fit(stats)
    m = cgs.basis_[""]
    k = cgs.rank_[""]
    assert m.shape == (8, k) and m.dtype == torch.float64
    torch.testing.assert_close(m.T @ m, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    g = stats.gram_[""]
    lam = cgs.eigenvalues_[""]
    assert torch.all(lam[:-1] >= lam[1:]) and torch.all(lam >= 0)
    torch.testing.assert_close(g @ m, m * lam[:k], atol=1e-8, rtol=1e-8)


def test_threshold_near_one_captures_the_whole_retained_subspace():
    _, stats, x = fitted_stats(rank=3)
    cgs = CoreGradientSpace(1 - 1e-9, rule="energy").fit(stats)
    assert cgs.rank_[""] == 3
    m = cgs.basis_[""]
    residual = x.double() - (x.double() @ m) @ m.T
    assert residual.norm() < 1e-6 * x.norm()
    assert CoreGradientSpace(1.0).fit(stats).rank_[""] == 8


def test_per_layer_thresholds_and_their_errors():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    stats = GramStats().fit(model, [torch.randn(40, 6)])
    cgs = CoreGradientSpace({"0": 1.0, "2": 0.0}).fit(stats)
    assert cgs.rank_ == {"0": 6, "2": 0}
    with pytest.raises(ValueError, match="missing"):
        CoreGradientSpace({"0": 0.9}).fit(stats)
    assert CoreGradientSpace({"0": 1.0, "default": 0.0}).fit(stats).rank_ == {"0": 6, "2": 0}
    import numpy as np

    assert CoreGradientSpace(np.float32(1.0)).fit(stats).rank_ == {"0": 6, "2": 5}
    with pytest.raises(ValueError, match="do not have"):
        CoreGradientSpace({"0": 0.9, "2": 0.9, "9": 0.9}).fit(stats)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CoreGradientSpace(1.5).fit(stats)
    with pytest.raises(ValueError, match="rule"):
        CoreGradientSpace(0.9, rule="nope").fit(stats)
    with pytest.raises(NotFittedError):
        CoreGradientSpace().summary()


def test_projected_bias_basis_has_one_more_row():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    stats = GramStats().fit(model, [torch.randn(30, 4)])
    cgs = CoreGradientSpace(1 - 1e-9, rule="energy", bias="projected").fit(stats)
    assert cgs.dim_ == {"0": 5, "1": 3} and cgs.augmented_ == {"0": True, "1": False}


def test_a_layer_never_called_is_fully_protected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.bypassed = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):  # uses the weight of `bypassed` without calling it
            return nn.functional.linear(self.used(x), self.bypassed.weight)

    with pytest.warns(UserWarning, match="never called"):
        stats = GramStats().fit(Net(), [torch.randn(10, 4)])
    cgs = CoreGradientSpace(0.5).fit(stats)
    assert cgs.rank_["bypassed"] == 4 and cgs.rank_["used"] < 4


def test_outside_share_is_the_energy_of_the_rows_off_the_basis():
    model, stats, x = fitted_stats()
    cgs = CoreGradientSpace(0.8, rule="energy").fit(stats)
    other = torch.randn(40, 8, dtype=torch.float64)
    other_stats = GramStats(precision="float64").fit(model, [other.float()])
    rows = other.float().double()
    m = cgs.basis_[""]
    explicit = float((rows - rows @ m @ m.T).norm() ** 2 / rows.norm() ** 2)  # the slow oracle, row by row
    assert cgs.outside_share(other_stats)[""] == pytest.approx(explicit, rel=1e-9)
    assert CoreGradientSpace(1.0).fit(stats).outside_share(other_stats)[""] == pytest.approx(0.0, abs=1e-12)
    assert CoreGradientSpace(0.0).fit(stats).outside_share(other_stats)[""] == pytest.approx(1.0)
    # the retained rows themselves, at a threshold covering their whole span: nothing outside
    span = CoreGradientSpace(1 - 1e-9, rule="energy").fit(stats)
    assert span.outside_share(stats)[""] == pytest.approx(0.0, abs=1e-9)
