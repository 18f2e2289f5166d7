"""Projection: orthogonal and idempotent; the realised weight change stays orthogonal for any optimizer."""

import copy

import pytest
import torch
from torch import nn

from pgu import CoreGradientSpace, GradientProjector, GramStats, ProjectedOptimizer, projection_residual


def setup(bias="frozen", threshold=0.9):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(32, 2, 6, 6)
    stats = GramStats().fit(model, [x])
    cgs = CoreGradientSpace(threshold, bias=bias).fit(stats)
    return model, cgs, x


def backward(model, x):
    model.zero_grad()
    model(x).pow(2).mean().backward()


def test_projected_gradient_is_orthogonal_and_idempotent():
    model, cgs, x = setup()
    assert all(0 < k < cgs.dim_[n] for n, k in cgs.rank_.items())
    projector = GradientProjector(model, cgs)
    backward(model, x)
    raw = model[0].weight.grad.clone().reshape(4, -1).double()
    projector.project_()
    g = model[0].weight.grad.reshape(4, -1).double()
    m = cgs.basis_["0"]
    assert (g @ m).norm() < 1e-5 * raw.norm()
    torch.testing.assert_close(g, raw - raw @ m @ m.T, atol=1e-5, rtol=1e-5)  # the formula itself
    once = model[0].weight.grad.clone()
    projector.project_()
    torch.testing.assert_close(model[0].weight.grad, once, atol=1e-6, rtol=1e-5)
    # Biases and BatchNorm affine parameters are frozen (gradient zeroed), as the authors do.
    for p in (model[0].bias, model[1].weight, model[1].bias, model[4].bias):
        assert torch.count_nonzero(p.grad) == 0


def run_steps(model, opt, x, steps=25):
    for _ in range(steps):
        backward(model, x[:8])
        opt.step()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
    ],
    ids=["sgd-momentum-wd", "nesterov", "adam", "adamw"],
)
def test_weight_change_stays_orthogonal_for_any_optimizer(make_opt):
    model, cgs, x = setup()
    before = copy.deepcopy(model)
    opt = ProjectedOptimizer(make_opt(model.parameters()), GradientProjector(model, cgs))
    run_steps(model, opt, x)
    residual = projection_residual(before, model, cgs)
    assert all(r < 1e-4 for r in residual.values()), residual
    assert (model[0].weight - before[0].weight).abs().max() > 1e-3  # it did move
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):  # frozen exactly, weight decay included
        assert torch.equal(model.state_dict()[name], before.state_dict()[name])


def test_projecting_only_the_gradient_leaks_under_momentum_and_weight_decay():
    """Why ProjectedOptimizer exists: torch's SGD adds weight decay after the gradient projection."""
    model, cgs, x = setup()
    before = copy.deepcopy(model)
    projector = GradientProjector(model, cgs)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-2)
    for _ in range(25):
        backward(model, x[:8])
        projector.project_()
        opt.step()
    assert max(projection_residual(before, model, cgs).values()) > 1e-2


def test_projected_bias_mode_moves_bias_orthogonally():
    model, cgs, x = setup(bias="projected")
    before = copy.deepcopy(model)
    opt = ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), GradientProjector(model, cgs))
    run_steps(model, opt, x)
    assert not torch.equal(model[0].bias, before[0].bias)
    assert all(r < 1e-4 for r in projection_residual(before, model, cgs).values())


def test_threshold_one_freezes_the_layer():
    model, cgs, x = setup(threshold=1.0)
    before = copy.deepcopy(model)
    opt = ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), GradientProjector(model, cgs))
    run_steps(model, opt, x, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters()))


def test_projector_refuses_a_model_of_another_shape():
    _, cgs, _ = setup()
    other = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    with pytest.raises(ValueError, match="basis has"):
        GradientProjector(other, cgs)


def test_projector_refuses_a_projected_bias_the_model_lacks():
    _, cgs, _ = setup(bias="projected")
    other = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    with pytest.raises(ValueError, match="includes a bias"):
        GradientProjector(other, cgs)


def test_plain_sgd_skips_the_change_projection_and_moves_the_same():
    """No momentum, no weight decay: the projected gradient step is already orthogonal (the authors' step)."""
    model, cgs, x = setup()
    twin, before = copy.deepcopy(model), copy.deepcopy(model)
    fast = ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.05), GradientProjector(model, cgs))
    assert fast._plain_sgd()
    projector = GradientProjector(twin, cgs)
    reference = torch.optim.SGD(twin.parameters(), lr=0.05)
    for _ in range(10):  # the full path by hand: project gradients, step, project the change
        backward(model, x[:8])
        fast.step()
        backward(twin, x[:8])
        projector.project_()
        snap = projector.snapshot()
        reference.step()
        projector.project_change_(snap)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(r < 1e-5 for r in projection_residual(before, model, cgs).values())
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert torch.equal(model.state_dict()[name], before.state_dict()[name])
    assert not ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5),
                                  GradientProjector(model, cgs))._plain_sgd()


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.05),
                                      lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4)],
                         ids=["plain", "momentum-wd"])
def test_channels_last_model_is_projected_in_logical_row_order(make_opt):
    """A model kept channels-last (as the cifar10-cpu recipe trains) gets the same orthogonal steps."""
    model, cgs, x = setup()
    twin = copy.deepcopy(model)
    model.to(memory_format=torch.channels_last)
    before = copy.deepcopy(model)
    opt = ProjectedOptimizer(make_opt(model.parameters()), GradientProjector(model, cgs))
    ref = ProjectedOptimizer(make_opt(twin.parameters()), GradientProjector(twin, cgs))
    run_steps(model, opt, x.contiguous(memory_format=torch.channels_last), steps=5)
    run_steps(twin, ref, x, steps=5)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert all(r < 1e-4 for r in projection_residual(before, model, cgs).values())
