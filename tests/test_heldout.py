"""pgu.heldout (the pgu-heldout variant): margins, quantile targets, the anchor term, the stop, a request end to end."""

import copy

import pytest
import torch
from conftest import batches, play
from torch import nn

from pgu import GramStats, unlearn
from pgu.heldout import (
    HeldoutMatchLoss,
    HeldoutTargetStop,
    heldout_target,
    margins,
    prepare_heldout,
    request_anchor,
    request_batching,
    split_heldout,
    standard_error,
)
from pgu.stopping import STOP_REASONS


def test_margins_match_an_explicit_loop():
    logits, y = torch.randn(30, 5), torch.randint(0, 5, (30,))
    expected = torch.tensor([float(logits[i, y[i]] - max(logits[i, c] for c in range(5) if c != y[i]))
                             for i in range(30)])
    torch.testing.assert_close(margins(logits, y), expected)
    assert ((margins(logits, y) > 0) == (logits.argmax(1) == y)).all()


def test_targets_keep_the_order_and_are_the_class_quantiles():
    val_logits, val_y = torch.randn(400, 3) * 3, torch.arange(3).repeat(134)[:400]
    loss = HeldoutMatchLoss(val_logits, val_y)
    logits, y = torch.randn(60, 3) * 5, torch.arange(3).repeat(20)
    t = loss.targets(logits, y)
    m = margins(logits, y)
    for c in range(3):
        rows = (y == c).nonzero().squeeze(1)
        order = m[rows].argsort()
        assert (t[rows][order].diff() >= 0).all()  # the lowest margin gets the lowest target
        ref = margins(val_logits[val_y == c].double(), val_y[val_y == c]).sort().values.float()
        n, k = len(rows), len(ref)
        expected = ref[((torch.arange(n) + 0.5) / n * k).long()]
        torch.testing.assert_close(t[rows][order], expected)


def test_with_the_requests_margins_the_targets_do_not_depend_on_the_batch_size():
    val_logits, val_y = torch.randn(300, 3) * 3, torch.arange(3).repeat(100)
    logits, y = torch.randn(45, 3) * 4, torch.arange(3).repeat(15)
    whole = HeldoutMatchLoss(val_logits, val_y, forget_margins=margins(logits, y), forget_targets=y)
    expected = HeldoutMatchLoss(val_logits, val_y).targets(logits, y)  # one batch: the rank within it is the rank
    torch.testing.assert_close(whole.targets(logits, y), expected)
    for size in (1, 4, 7):
        loss = HeldoutMatchLoss(val_logits, val_y, forget_margins=margins(logits, y), forget_targets=y)
        got = torch.cat([loss.targets(logits[i:i + size], y[i:i + size]) for i in range(0, 45, size)])
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="together"):
        HeldoutMatchLoss(val_logits, val_y, forget_margins=margins(logits, y))


def test_a_forget_set_that_already_behaves_as_held_out_costs_nothing_and_confident_rows_are_pushed_down():
    val_logits, val_y = torch.randn(64, 4), torch.arange(4).repeat(16)
    loss = HeldoutMatchLoss(val_logits, val_y)
    assert float(loss(val_logits, val_y)) == pytest.approx(0.0, abs=1e-6)  # the same samples: every target met
    confident = val_logits.clone()
    confident[torch.arange(64), val_y] += 10.0
    confident.requires_grad_(True)
    loss(confident, val_y).backward()
    # the gradient step (minus the gradient) lowers every true-class logit
    assert (confident.grad[torch.arange(64), val_y] > 0).all()


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_the_anchor_term_needs_binding_is_zero_at_the_original_and_counts_its_samples():
    model = small_net()
    x = torch.randn(50, 6)
    with torch.no_grad():
        original = model(x)
    y = original.argmax(1)
    loss = HeldoutMatchLoss(original, y, anchor=(x, original), anchor_weight=5.0, anchor_batch=10)
    with pytest.raises(RuntimeError, match="bind"):
        loss(original, y)
    bound = loss.bind(model)
    assert loss.model is None and bound.model is model
    plain = HeldoutMatchLoss(original, y)
    assert bound(original[:8], y[:8]).item() == pytest.approx(plain(original[:8], y[:8]).item(), abs=1e-5)
    assert loss.anchor_samples == bound.anchor_samples == 10
    with torch.no_grad():
        model[2].weight.add_(torch.randn_like(model[2].weight))
    assert bound(original[:8], y[:8]).item() > plain(original[:8], y[:8]).item() + 1e-3
    assert loss.anchor_samples == 20


def test_the_stop_aims_at_the_target_keeps_the_closer_epoch_and_guards_val():
    assert play(HeldoutTargetStop(70, 1.5), (71.0, 68), [])[1].reason == "already_forgotten"
    e, d = play(HeldoutTargetStop(70, 1.5), (100, 68), [(90, 68), (72, 68), (70.5, 68)])
    assert (e, d.reason, d.keep_previous) == (3, "reached_target", False)
    e, d = play(HeldoutTargetStop(70, 1.0), (100, 68), [(71.5, 68), (60, 68)])  # 60 is further than 71.5
    assert (e, d.reason, d.keep_previous) == (2, "reached_target", True)
    e, d = play(HeldoutTargetStop(70, 1.0, max_val_drop=2.0), (100, 68), [(90, 67), (70, 65.5)])
    assert (e, d.reason, d.keep_previous) == (2, "val_drop", True)
    # stalls before half way: go on; stalls past half way (85): stop
    assert play(HeldoutTargetStop(70, 1.0, patience=2), (100, 68), [(95, 68), (95, 68), (94.9, 68)]) == (None, None)
    # no progress at all (a target a few samples away): stop after stall_patience epochs
    e, d = play(HeldoutTargetStop(99.4, 0.25, patience=2, stall_patience=4), (99.7, 99), [(99.8, 99)] * 6)
    assert (e, d.reason) == (4, "target_plateau")
    e, d = play(HeldoutTargetStop(70, 1.0, patience=2), (100, 68), [(80, 68), (79.8, 68), (79.7, 68)])
    assert (e, d.reason) == (3, "target_plateau")
    assert {"reached_target", "target_plateau"} <= set(STOP_REASONS)
    with pytest.raises(ValueError):
        HeldoutTargetStop(120, 1.0)


def test_the_target_is_val_accuracy_on_the_forget_class_mix():
    model = small_net()
    x = torch.randn(90, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:10] = (y[:10] + 1) % 3  # 10 wrong
    correct = torch.ones(90)
    correct[:10] = 0
    forget_y = torch.tensor([0] * 3 + [1] * 1)
    per_class = {c: float(correct[y == c].mean()) for c in (0, 1)}
    expected = 100 * (3 * per_class[0] + per_class[1]) / 4
    assert heldout_target(model, batches(x, y, 32), forget_y) == pytest.approx(expected)
    assert standard_error(50.0, 100) == pytest.approx(5.0)
    assert request_batching(1000, 128, (1.0, 0.1)) == (128, (1.0, 0.1))  # 8 steps: as given
    batch, lr = request_batching(100, 128, (1.0, 0.1))  # one step: 13 per batch, rates scaled with it
    assert batch == 13 and lr == pytest.approx((13 / 128, 0.1 * 13 / 128))  # the same step per sample
    assert request_batching(3, 128, 0.5) == (1, pytest.approx(0.5 / 128))


def test_a_small_requests_anchor_pulls_per_step_as_at_full_batch():
    assert request_anchor(128, 128, 10.0) == (10.0, None)  # full batch: unchanged, anchor batches as forget batches
    batch, lr = request_batching(100, 128, (1.0, 0.1))
    weight, anchor_batch = request_anchor(batch, 128, 10.0)
    assert anchor_batch == 128 and weight == pytest.approx(10.0 * 128 / 13)
    assert lr[0] * weight == pytest.approx(1.0 * 10.0)  # rate x weight per step: the full batch's
    with pytest.raises(ValueError, match="anchor_weight"):
        request_anchor(13, 128, -1.0)


def test_split_heldout_partitions_val_by_position():
    model = small_net()
    x, y = torch.randn(41, 6), torch.randint(0, 3, (41,))
    split = split_heldout(model, batches(x, y, 8))
    torch.testing.assert_close(split.anchor_x, x[0::2])
    assert split.n_check == 20
    torch.testing.assert_close(torch.cat([b[0] for b in split.check]), x[1::2])
    with torch.no_grad():
        torch.testing.assert_close(split.anchor_logits, model(x[0::2]))


def test_a_request_end_to_end_leaves_the_input_alone_keeps_the_projection_and_moves_forget_toward_val():
    torch.manual_seed(0)
    d, classes = 8, 3
    centers = torch.randn(classes, d) * 1.2
    def draw(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(classes).repeat(n // classes)
        return centers[y] + torch.randn(len(y), d, generator=g) * 1.5, y
    x_train, y_train = draw(90, 1)
    x_val, y_val = draw(600, 2)
    model = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(800):  # memorise 90 noisy samples
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        assert (model(x_train).argmax(1) == y_train).float().mean() == 1.0
    forget, retain = slice(0, 30), slice(30, 90)
    stats = GramStats(precision="float64").fit(model, batches(x_train, size=30))
    weights = copy.deepcopy(model.state_dict())
    forget_loader = batches(x_train[forget], y_train[forget], 10)
    request = prepare_heldout(model, forget_loader, batches(x_val, y_val, 100), anchor_weight=1.0)
    result = unlearn(model, forget_loader, stats, val_loader=request.val_loader, loss=request.loss,
                     stop=request.stop, lr=(0.5, 0.05), epochs=60)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert result.stop_reason in STOP_REASONS and request.loss.anchor_samples > 0
    fa = [h["forget_acc"] for h in result.history]
    assert fa[0] == 100.0 and min(fa) < 100.0  # it moved toward the target (val accuracy on the mix)
    assert request.target < 100.0
    # still projected: each layer's weight change is orthogonal to its CGS (the retained inputs' space)
    for name, layer in (("0", 0), ("2", 2)):
        basis = result.cgs.basis_[name].float()
        delta = result.model[layer].weight.detach() - model[layer].weight.detach()
        assert (delta @ basis).abs().max() < 1e-4 * max(delta.abs().max(), 1e-12) + 1e-6
    with torch.no_grad():  # and so the retained samples' outputs barely move
        change = (result.model(x_train[retain]) - model(x_train[retain])).abs().max()
    assert change < 0.05 * model(x_train[retain]).abs().max()


def test_a_reference_model_sets_the_target_and_the_anchor_while_ranks_stay_the_models():
    torch.manual_seed(3)
    model, reference = nn.Linear(6, 3), nn.Linear(6, 3)
    x_val, y_val = torch.randn(80, 6), torch.randint(0, 3, (80,))
    x_f, y_f = torch.randn(12, 6), torch.randint(0, 3, (12,))
    own = prepare_heldout(model, batches(x_f, y_f, 4), batches(x_val, y_val, 40))
    ref = prepare_heldout(model, batches(x_f, y_f, 4), batches(x_val, y_val, 40), reference=reference)
    with torch.no_grad():
        assert ref.target == pytest.approx(heldout_target(reference, batches(x_val, y_val, 40), y_f))
        assert own.target == pytest.approx(heldout_target(model, batches(x_val, y_val, 40), y_f))
        torch.testing.assert_close(ref.loss.anchor[1], reference(x_val[0::2]))
        torch.testing.assert_close(own.loss.anchor[1], model(x_val[0::2]))
        for c, record in ref.loss.record.items():  # the request's ranks: the model's margins, not the reference's
            torch.testing.assert_close(record, margins(model(x_f), y_f).double()[y_f == c])
    assert not torch.equal(ref.loss.anchor[1], own.loss.anchor[1])


def test_the_bench_and_a_store_run_pgu_heldout_at_one_rate():
    from pathlib import Path

    import tomllib

    import pgu.bench.methods
    from pgu.heldout import HELDOUT_LR
    from pgu.store.settings import check_sample_method

    published = tomllib.loads((Path(pgu.bench.methods.__file__).parent / "settings.toml").read_text())
    assert tuple(published["pgu-heldout"]["lr"]) == HELDOUT_LR
    assert check_sample_method({})["heldout_lr"] == list(HELDOUT_LR)
