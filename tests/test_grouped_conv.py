"""Grouped and depthwise convolutions (issue 22, item 2): one Gram per group, exact against the per-patch
loop; a CGS and a projection per group; a depthwise-separable net's request stays outside every group's CGS."""

import pytest
import torch
from torch import nn

import pgu
from pgu.projection import GradientProjector, projection_residual
from pgu.subspace import CoreGradientSpace, select_rank
from pgu.testing import explicit_gram

CONV2D_CASES = [
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, groups=4, padding=1),  # depthwise, multiplier 2
    dict(in_channels=6, out_channels=6, kernel_size=3, groups=6, stride=2, padding=1, padding_mode="reflect"),
    dict(in_channels=6, out_channels=3, kernel_size=(3, 2), groups=3, dilation=2, padding="same", bias=False),
]


@pytest.mark.parametrize("case", CONV2D_CASES, ids=str)
def test_grouped_conv2d_gram_is_one_explicit_gram_per_group(case):
    torch.manual_seed(0)
    layer = nn.Conv2d(**case).double()
    x = torch.randn(3, case["in_channels"], 7, 6, dtype=torch.float64)
    stats = pgu.GramStats(precision="float64").fit(nn.Sequential(layer), [x])
    oracle = explicit_gram(layer, x)
    g = case["groups"]
    d = case["in_channels"] // g * layer.kernel_size[0] * layer.kernel_size[1]
    assert stats.gram_["0"].shape == oracle.shape == (g, d, d)
    assert torch.allclose(stats.gram_["0"], oracle, rtol=1e-10, atol=1e-10)
    assert stats.row_sum_["0"].shape == (g, d)
    assert stats.layer_info_["0"]["groups"] == g


def test_grouped_conv1d_gram_is_one_explicit_gram_per_group():
    torch.manual_seed(0)
    layer = nn.Conv1d(6, 4, 3, groups=2, padding=1, stride=2).double()
    x = torch.randn(4, 6, 11, dtype=torch.float64)
    stats = pgu.GramStats(precision="float64").fit(nn.Sequential(layer), [x])
    assert torch.allclose(stats.gram_["0"], explicit_gram(layer, x), rtol=1e-10, atol=1e-10)


def test_grouped_statistics_add_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(36, 2))
    a, b = torch.randn(5, 4, 5, 5), torch.randn(3, 4, 5, 5)
    sa, sb = pgu.GramStats().fit(model, [a]), pgu.GramStats().fit(model, [b])
    both = pgu.GramStats().fit(model, [torch.cat([a, b])])
    assert torch.allclose((sa + sb).gram_["0"], both.gram_["0"], rtol=1e-5, atol=1e-4)
    both.save(tmp_path / "s.safetensors")
    loaded = pgu.GramStats.load(tmp_path / "s.safetensors")
    assert torch.equal(loaded.gram_["0"], both.gram_["0"]) and loaded.layer_info_ == both.layer_info_
    aug = loaded.augmented_gram("0")
    assert aug.shape == (4, 10, 10) and torch.equal(aug[:, :9, :9], loaded.gram_["0"])
    assert torch.equal(aug[:, 9, :9], loaded.row_sum_["0"]) and float(aug[0, 9, 9]) == loaded.n_rows_["0"]
    loaded.check_model(model)
    with pytest.raises(pgu.StatsMismatchError, match="groups=4"):
        loaded.check_model(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(36, 2)))


@pytest.mark.parametrize("bias", ["frozen", "projected"])
def test_each_group_gets_its_own_cgs_and_projection(bias):
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 6, 3, groups=3, padding=1)
    model = nn.Sequential(layer)
    x = torch.randn(4, 6, 6, 6)
    x[:, 3] = x[:, 2]  # group 1 sees one channel twice: a lower rank than the others
    stats = pgu.GramStats(precision="float64").fit(model, [x])
    cgs = CoreGradientSpace(threshold=0.8, bias=bias).fit(stats)
    gram = stats.augmented_gram("0") if bias == "projected" else stats.gram_["0"]
    basis = cgs.basis_["0"]
    ranks = []
    for j in range(3):
        lam = torch.linalg.eigvalsh(gram[j]).flip(0).clamp_min(0)
        ranks.append(select_rank(lam, 0.8))
        m = basis[j, :, : ranks[j]]
        assert torch.allclose(m.T @ m, torch.eye(ranks[j], dtype=torch.float64), atol=1e-10)
        assert torch.equal(basis[j, :, ranks[j]:], torch.zeros_like(basis[j, :, ranks[j]:]))
        # the columns span group j's leading eigenvectors: the Gram is (nearly) block-diagonal in them
        inside = float(torch.trace(m.T @ gram[j] @ m))
        assert inside >= float(lam[: ranks[j]].sum()) * (1 - 1e-9)
    assert cgs.rank_["0"] == sum(ranks) and cgs.dim_["0"] == 3 * gram.shape[-1]
    assert len(set(ranks)) > 1
    # the projected gradient, group by group, against an explicit (I - M_j M_j^T) per block
    layer.weight.grad = torch.randn_like(layer.weight)
    layer.bias.grad = torch.randn_like(layer.bias)
    g_w, g_b = layer.weight.grad.clone(), layer.bias.grad.clone()
    GradientProjector(model, cgs).project_()
    for j in range(3):
        rows = slice(2 * j, 2 * j + 2)
        block = g_w[rows].reshape(2, -1).double()
        if bias == "projected":
            block = torch.cat([block, g_b[rows].double()[:, None]], 1)
        m = basis[j]
        expected = block - block @ m @ m.T
        assert torch.allclose(layer.weight.grad[rows].reshape(2, -1).double(), expected[:, :18], atol=1e-6)
        if bias == "projected":
            assert torch.allclose(layer.bias.grad[rows].double(), expected[:, 18], atol=1e-6)
    if bias == "frozen":
        assert torch.equal(layer.bias.grad, torch.zeros_like(layer.bias.grad))


class DepthwiseSeparable(nn.Module):
    """A MobileNet-style block: depthwise 3x3 (groups = channels), pointwise 1x1, a Linear head."""

    def __init__(self, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.pointwise(torch.relu(self.bn(self.depthwise(h)))))
        return self.head(h.mean((2, 3)))


def test_a_depthwise_separable_net_is_covered_and_its_request_stays_outside_every_cgs():
    torch.manual_seed(0)
    model = DepthwiseSeparable().eval().double()  # float64: float32 weights round a small change by ~1e-3 of itself
    x, y = torch.randn(96, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (96,))
    cov = pgu.coverage(model)
    assert not cov.unexpected and "8 groups" in {e.name: e for e in cov}["depthwise.weight"].reason
    stats = pgu.GramStats().fit(model, [(x, y)])
    result = pgu.unlearn(model, [(x[y == 0], y[y == 0])], stats, mode="class", stop="none", epochs=3, lr=0.05)
    moved = {n for n in ("stem", "depthwise", "pointwise", "head")
             if not torch.equal(getattr(model, n).weight, getattr(result.model, n).weight)}
    assert moved == {"stem", "depthwise", "pointwise", "head"}
    leak = projection_residual(model, result.model, result.cgs)
    assert max(leak.values()) <= 1e-4, leak
