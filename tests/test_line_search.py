"""A stop that asks for a line search along the last epoch's update (pgu.stopping.StopDecision.aim)."""

import torch
from conftest import batches, play
from torch import nn

from pgu import GramStats, unlearn
from pgu.evaluation import accuracy
from pgu.heldout import HeldoutTargetStop
from pgu.stopping import SampleRemovalStop, StopDecision


def test_the_heldout_stop_asks_for_a_line_search_only_when_an_epoch_jumps_across_its_band():
    e, d = play(HeldoutTargetStop(70, 2.0), (100, 68), [(90, 68), (60, 68)])  # 90 -> 60 skips 68-72
    assert (e, d.reason, d.aim) == (2, "reached_target", 70.0)
    e, d = play(HeldoutTargetStop(70, 2.0), (100, 68), [(90, 68), (69, 68)])  # landed inside: nothing to search
    assert (e, d.reason, d.aim) == (2, "reached_target", None)
    e, d = play(HeldoutTargetStop(70, 2.0, line_search=False), (100, 68), [(75, 68), (60, 68)])
    assert (e, d.reason, d.aim, d.keep_previous) == (2, "reached_target", None, True)
    e, d = play(HeldoutTargetStop(70, 2.0, max_val_drop=1.0), (100, 68), [(90, 68), (60, 66)])
    assert (e, d.reason, d.aim) == (2, "val_drop", None)  # the guard keeps the previous epoch, no search
    # the authors' rule stops on whole epochs
    e, d = play(SampleRemovalStop(), (100, 68), [(90, 68), (40, 68)])
    assert d.reason == "crossed" and d.aim is None


class _StopAfterFirstEpoch:
    """Stops after epoch 1 and asks for forget accuracy ``aim`` (or keeps epoch 1 when ``aim`` is None)."""

    needs_val = False

    def __init__(self, aim):
        self.aim = aim

    def start(self, forget_acc, val_acc):
        return None

    def after_epoch(self, forget_acc, val_acc):
        return StopDecision("reached_target", aim=self.aim)


def _memorised():
    torch.manual_seed(0)
    d, classes = 8, 3
    centers = torch.randn(classes, d) * 1.2
    y = torch.arange(classes).repeat(40)
    x = centers[y] + torch.randn(len(y), d) * 1.5
    model = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(800):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    stats = GramStats(precision="float64").fit(model, batches(x, size=40))
    return model, x, y, stats


def test_the_line_search_keeps_the_point_of_the_last_update_nearest_its_aim_and_stays_projected():
    model, x, y, stats = _memorised()
    forget = batches(x[:60], y[:60], 10)
    settings = dict(lr=(5.0, 5.0), epochs=1, threshold=0.9)
    whole = unlearn(model, forget, stats, stop=_StopAfterFirstEpoch(None), **settings)
    a_start, a_last = whole.history[0]["forget_acc"], whole.history[1]["forget_acc"]
    assert a_start == 100.0 and a_last < 60.0, "the setting must make one epoch jump far"
    aim = (a_start + a_last) / 2
    result = unlearn(model, forget, stats, stop=_StopAfterFirstEpoch(aim), **settings)
    search = result.line_search
    t = search["share"]
    assert 0.0 < t < 1.0 and result.kept_share == t and result.kept_epoch == 1
    # the weights lie on the segment from the input to the whole epoch's weights (the same epoch: deterministic)
    for name, p in result.model.state_dict().items():
        start, end = model.state_dict()[name], whole.model.state_dict()[name]
        torch.testing.assert_close(p, start + t * (end - start), atol=1e-5, rtol=1e-5)
    # what it reports is what the model does, and it is nearer the aim than either end
    assert accuracy(result.model, forget) == search["forget_acc"]
    assert abs(search["forget_acc"] - aim) <= min(abs(a_start - aim), abs(a_last - aim))
    assert [0.0, a_start] in search["probes"] and [1.0, a_last] in search["probes"]
    assert 3 <= len(search["probes"]) <= 2 + 5
    # still projected: each layer's change is orthogonal to its CGS
    for name, layer in (("0", 0), ("2", 2)):
        basis = result.cgs.basis_[name].float()
        delta = result.model[layer].weight.detach() - model[layer].weight.detach()
        assert (delta @ basis).abs().max() < 1e-4 * max(delta.abs().max(), 1e-12) + 1e-6


def test_a_line_search_whose_best_point_is_an_end_keeps_that_end_exactly():
    model, x, y, stats = _memorised()
    forget = batches(x[:60], y[:60], 10)
    settings = dict(lr=(5.0, 5.0), epochs=1, threshold=0.9)
    whole = unlearn(model, forget, stats, stop=_StopAfterFirstEpoch(None), **settings)
    # an aim at or above the start: the input weights are nearest (epoch 0 kept, bit for bit)
    kept_input = unlearn(model, forget, stats, stop=_StopAfterFirstEpoch(100.0), **settings)
    assert kept_input.kept_epoch == 0 and kept_input.kept_share == 1.0 and kept_input.line_search["share"] == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept_input.model.state_dict().items())
    # an aim at or below the end: the whole epoch is kept, bit for bit
    kept_end = unlearn(model, forget, stats, stop=_StopAfterFirstEpoch(0.0), **settings)
    assert kept_end.kept_epoch == 1 and kept_end.line_search["share"] == 1.0
    assert all(torch.equal(v, whole.model.state_dict()[k]) for k, v in kept_end.model.state_dict().items())
