"""pgu.unlearn end to end: retained outputs preserved, forget outputs moved, stopping, budget, errors."""

import copy

import pytest
import torch
from conftest import batches
from torch import nn

from pgu import ForgetLoss, GramStats, SampleRemovalStop, StatsMismatchError, unlearn
from pgu.stopping import default_rule


def low_rank_problem(d=20, rank=5, n_retain=200, n_forget=40):
    """Two Linear layers; retain inputs span a 5-dim subspace of R^20, forget inputs are generic."""
    basis = torch.linalg.qr(torch.randn(d, rank))[0]
    x_retain = torch.randn(n_retain, rank) @ basis.T
    x_forget = torch.randn(n_forget, d)
    model = nn.Sequential(nn.Linear(d, 16), nn.Linear(16, 4))
    with torch.no_grad():
        y_forget = model(x_forget).argmax(1)
    # float64 products, so that the directions no retain input uses carry no energy at all
    stats = GramStats(precision="float64").fit(model, batches(torch.cat([x_retain, x_forget]), size=32))
    return model, stats, x_retain, x_forget, y_forget


@pytest.mark.parametrize("bias", ["frozen", "projected"])
def test_retain_outputs_unchanged_forget_outputs_moved_under_momentum_and_weight_decay(bias):
    model, stats, x_retain, x_forget, y_forget = low_rank_problem()
    result = unlearn(model, batches(x_forget, y_forget, size=16), stats, threshold=1 - 1e-9, rule="energy",
                     epochs=30, lr=(0.1, 0.01), momentum=0.9, weight_decay=5e-4, stop="none", bias=bias)
    # layer 0 sees a 5-dim subspace; layer 1 its affine image (6-dim span); a projected bias adds the constant 1
    assert result.cgs.rank_ == ({"0": 5, "1": 6} if bias == "frozen" else {"0": 6, "1": 6})
    # Layer 0's retain inputs span a subspace through 0, so [0; 1] is in its CGS and its bias cannot move;
    # layer 1's affine inputs leave the bias a direction to move in (compensated by the weight).
    assert torch.equal(result.model[0].bias, model[0].bias)
    assert torch.equal(result.model[1].bias, model[1].bias) == (bias == "frozen")
    new = result.model
    with torch.no_grad():
        before_r, after_r = model(x_retain), new(x_retain)
        before_f, after_f = model(x_forget), new(x_forget)
    assert (after_r - before_r).abs().max() < 1e-4 * before_r.abs().max()
    assert (after_f - before_f).abs().max() > 0.5 * before_f.abs().max()
    assert (after_f.argmax(1) == y_forget).float().mean() < 0.5
    assert result.stop_reason == "max_epochs" and result.epochs == 30 and result.samples_processed == 30 * 40


def test_input_model_and_statistics_are_untouched_and_retain_stats_are_the_difference():
    model, stats, x_retain, x_forget, y_forget = low_rank_problem()
    weights = copy.deepcopy(model.state_dict())
    gram = {n: g.clone() for n, g in stats.gram_.items()}
    forget = batches(x_forget, y_forget, size=16)
    result = unlearn(model, forget, stats, epochs=3, stop="none")
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(stats.gram_[n], gram[n]) for n in gram)
    assert result.forget_stats.precision == stats.precision == "float64"
    expected = stats - GramStats(precision="float64").fit(model, forget)
    retain_only = GramStats(precision="float64").fit(model, batches(x_retain, size=50))
    for n in gram:
        torch.testing.assert_close(result.retain_stats.gram_[n], expected.gram_[n])
        torch.testing.assert_close(result.retain_stats.gram_[n], retain_only.gram_[n], rtol=1e-9, atol=1e-6)
    assert result.retain_stats.n_samples_ == 200


def test_inplace_writes_the_result_into_the_model():
    model, stats, _, x_forget, y_forget = low_rank_problem()
    original = copy.deepcopy(model)
    result = unlearn(model, batches(x_forget, y_forget), stats, epochs=2, stop="none", inplace=True)
    assert result.model is model
    assert not torch.equal(model[0].weight, original[0].weight)


def blobs(n_per_class=60, classes=4, d=10, seed=0):
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(0)) * 3  # shared by every split
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[y] + torch.randn(len(y), d, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


def trained_classifier():
    x, y = blobs()
    xv, yv = blobs(seed=1)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(30):
        for xb, yb in batches(x, y, size=32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb, label_smoothing=0.1).backward()
            opt.step()
    stats = GramStats().fit(model, batches(x, size=64))
    return model, stats, (x, y), (xv, yv)


def test_class_removal_stops_when_the_class_is_gone():
    model, stats, (x, y), (xv, yv) = trained_classifier()
    forget = batches(x[y == 0], y[y == 0], size=32)
    result = unlearn(model, forget, stats, val_loader=batches(xv, yv, size=64), mode="class", epochs=100,
                     lr=(0.1, 0.01))
    assert result.history[0]["forget_acc"] > 90
    assert result.stop_reason in ("class_forgotten", "val_drop")
    assert result.history[-1]["val_acc"] is not None
    with torch.no_grad():
        assert ((result.model(x[y == 0]).argmax(1) == 0).float().mean()
                < (model(x[y == 0]).argmax(1) == 0).float().mean())
    assert len(result.history) == result.epochs + 1 and result.seconds["total"] > 0


def test_sample_mode_with_nothing_to_forget_does_nothing():
    model, stats, (x, y), _ = trained_classifier()
    # "held-out" data the model fits as well as its forget set: already at or below val accuracy
    forget = batches(x[:20], y[:20])
    result = unlearn(model, forget, stats, val_loader=batches(x[20:60], y[20:60]), mode="sample")
    assert result.stop_reason == "already_forgotten" and result.epochs == 0
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), model.parameters()))


def test_compute_budget_ends_the_run_with_its_own_reason():
    model, stats, (x, y), _ = trained_classifier()
    forget = batches(x[:40], y[:40], size=16)  # batches of 16, 16, 8
    result = unlearn(model, forget, stats, stop="none", epochs=50, max_samples=100)
    assert result.stop_reason == "budget"
    assert result.samples_processed == 96  # 40 + 40 + 16: the next batch would exceed 100
    assert result.epochs == 3


def test_bad_inputs_raise_clear_errors_and_change_nothing():
    model, stats, (x, y), (xv, yv) = trained_classifier()
    weights = copy.deepcopy(model.state_dict())
    gram = {n: g.clone() for n, g in stats.gram_.items()}
    model.train()
    forget = batches(x[:20], y[:20])
    with pytest.raises(ValueError, match="needs val_loader"):
        unlearn(model, forget, stats)
    with pytest.raises(ValueError, match="val_loader yielded no samples"):
        unlearn(model, forget, stats, val_loader=[])
    with pytest.raises(ValueError, match="no samples"):
        unlearn(model, [], stats, stop="none")
    with pytest.raises(ValueError, match=r"\(inputs, targets\)"):
        unlearn(model, batches(x[:20]), stats, stop="none")
    with pytest.raises(ValueError, match="failed on a batch"):
        unlearn(model, [(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))], stats, stop="none")
    other = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(StatsMismatchError, match="another architecture"):
        unlearn(other, forget, stats, stop="none")
    with pytest.raises(StatsMismatchError, match="ReLU, not a Linear"):
        unlearn(nn.Sequential(nn.ReLU()), forget, stats, stop="none")
    with pytest.raises(ValueError, match="part of the set"):
        unlearn(model, batches(torch.cat([x] * 2), torch.cat([y] * 2)), stats, stop="none")
    for kwargs in [dict(epochs=0), dict(lr=-1), dict(lr=(0.1,)), dict(momentum=1.0), dict(mode="rows"),
                   dict(stop="never"), dict(max_samples=0), dict(threshold=2.0)]:
        with pytest.raises(ValueError):
            unlearn(model, forget, stats, stop=kwargs.pop("stop", "none"), **kwargs)
    with pytest.raises(ValueError):
        unlearn(model, forget, stats, stop="none", loss=ForgetLoss(offset=0))
    with pytest.raises(TypeError, match="loss=pgu.losses.ForgetLoss"):  # the loss's settings travel in the loss
        unlearn(model, forget, stats, stop="none", offset=0.1)
    with pytest.raises(FloatingPointError, match="left unchanged"):
        unlearn(model, forget, stats, stop="none", lr=1e30, inplace=True)
    with pytest.raises(ValueError, match="one-shot iterator"):
        unlearn(model, iter(forget), stats, stop="none")
    with pytest.raises(ValueError, match="float32 copy"):
        unlearn(copy.deepcopy(model).bfloat16(), [(xb.bfloat16(), yb) for xb, yb in forget], stats, stop="none")
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(stats.gram_[n], gram[n]) for n in gram) and stats.n_samples_ == len(x)
    assert all(m.training for m in model.modules())


def test_empty_batches_are_skipped():
    model, stats, (x, y), _ = trained_classifier()
    forget = batches(x[:20], y[:20]) + [(x[:0], y[:0])]
    result = unlearn(model, forget, stats, stop="none", epochs=2)
    assert result.samples_processed == 40 and result.stop_reason == "max_epochs"


def overshooting_request():
    """A big constant step: forget accuracy falls far below val accuracy in the first epoch."""
    model, stats, (x, y), (xv, yv) = trained_classifier()
    yv = yv.clone()
    yv[: len(yv) // 10] = (yv[: len(yv) // 10] + 1) % 4  # held-out accuracy about 90%: something to forget
    forget = batches(x[y == 0][:40], y[y == 0][:40], size=8)
    return model, stats, forget, batches(xv, yv, size=64)


def test_sample_rule_restores_the_previous_epoch_when_it_was_closer():
    model, stats, forget, val = overshooting_request()
    # the authors' crossing rule alone (this overshoot also costs more than the held-out guard allows)
    result = unlearn(model, forget, stats, val_loader=val, lr=(3.0, 3.0), threshold=0.5,
                     stop=SampleRemovalStop(max_val_drop=None))
    first = result.history[1]
    assert result.stop_reason == "crossed" and result.epochs == 1 and first["forget_acc"] < first["val_acc"]
    start_gap = abs(result.history[0]["val_acc"] - result.history[0]["forget_acc"])
    assert start_gap < abs(first["val_acc"] - first["forget_acc"])
    assert result.kept_epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), model.parameters()))


def test_the_stopping_rule_takes_precedence_over_the_budget_in_a_partial_epoch():
    model, stats, forget, val = overshooting_request()
    result = unlearn(model, forget, stats, val_loader=val, lr=(3.0, 3.0), threshold=0.5, max_samples=30,
                     stop=SampleRemovalStop(max_val_drop=None))
    assert result.samples_processed == 24 and result.epochs == 1
    assert result.stop_reason == "crossed"
    guarded = unlearn(model, forget, stats, val_loader=val, lr=(3.0, 3.0), threshold=0.5, max_samples=30)
    assert guarded.stop_reason == "val_drop" and guarded.kept_epoch == 0  # the guard, too, beats the budget


def test_batchnorm_statistics_stay_frozen():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model(torch.randn(64, 6))
    model.eval()
    x = torch.randn(40, 6)
    y = model(x).argmax(1).detach()
    stats = GramStats().fit(model, [x])
    result = unlearn(model, batches(x[:16], y[:16], size=8), stats, stop="none", epochs=3, momentum=0.9)
    for name in ("running_mean", "running_var", "num_batches_tracked", "weight", "bias"):
        assert torch.equal(getattr(result.model[1], name), getattr(model[1], name))
    assert not torch.equal(result.model[0].weight, model[0].weight)


def test_epoch_zero_forget_accuracy_comes_from_the_forget_pass_and_matches_a_separate_evaluation():
    from pgu.evaluation import accuracy

    model, stats, x_retain, x_forget, y_forget = low_rank_problem()
    forget = batches(x_forget, y_forget, size=16)

    class Counted:
        passes = 0

        def __iter__(self):  # counts passes that read batches (not the re-iterability check)
            def read():
                Counted.passes += 1
                yield from forget

            return read()

    result = unlearn(model, Counted(), stats, epochs=1, stop="none")
    assert result.history[0]["forget_acc"] == pytest.approx(accuracy(model, forget))
    assert Counted.passes == 3  # forget statistics (with the epoch-0 accuracy), the epoch, its evaluation


def test_held_out_guard_settings_are_checked_before_any_work():
    model, stats, (x, y), (xv, yv) = trained_classifier()
    forget = batches(x[y == 0], y[y == 0], size=32)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="class-removal rule needs max_val_drop"):
        unlearn(model, forget, stats, val_loader=batches(xv, yv, size=64), mode="class",
                stop=default_rule("class", max_val_drop=None))
    with pytest.raises(ValueError, match="max_val_drop must be >= 0"):
        unlearn(model, forget, stats, val_loader=batches(xv, yv, size=64), stop=SampleRemovalStop(max_val_drop=-1.0))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # the authors' sample rule alone is still available
    result = unlearn(model, forget, stats, val_loader=batches(xv, yv, size=64), epochs=2,
                     stop=SampleRemovalStop(max_val_drop=None))
    assert result.stop_reason in ("crossed", "already_forgotten", "max_epochs")


def test_a_given_starting_val_accuracy_replaces_the_epoch_zero_pass_and_changes_nothing_else(monkeypatch):
    import importlib

    from pgu.evaluation import accuracy

    unlearn_module = importlib.import_module("pgu.unlearn")
    model, stats, forget, val = overshooting_request()
    start = accuracy(model, val)
    passes = []
    monkeypatch.setattr(unlearn_module, "accuracy", lambda *a, **kw: passes.append(1) or accuracy(*a, **kw))
    plain = unlearn(model, forget, stats, val_loader=val, lr=(0.3, 0.03), threshold=0.5)
    n_plain = len(passes)
    given = unlearn(model, forget, stats, val_loader=val, lr=(0.3, 0.03), threshold=0.5, val_acc_start=start)
    assert len(passes) - n_plain == n_plain - 1  # one val pass fewer, the rest as before
    assert given.history == plain.history and given.history[0]["val_acc"] == start
    assert given.stop_reason == plain.stop_reason and given.kept_epoch == plain.kept_epoch
    assert all(torch.equal(a, b) for a, b in zip(given.model.parameters(), plain.model.parameters()))
    for bad in (-1.0, 100.5, True, "90", float("nan")):
        with pytest.raises(ValueError, match="val_acc_start"):
            unlearn(model, forget, stats, val_loader=val, val_acc_start=bad)
    with pytest.raises(ValueError, match="val_loader it was"):
        unlearn(model, forget, stats, stop="none", val_acc_start=90.0)
