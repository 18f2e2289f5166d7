"""The forget loss against its formula, and the stopping rules on scripted accuracy histories."""

import math

import pytest
import torch
from conftest import play

from pgu import forget_loss
from pgu.stopping import ClassRemovalStop, NoStop, SampleRemovalStop, StopDecision


@pytest.mark.parametrize("offset, weight", [(0.05, 0.2), (0.1, 0.0), (0.5, 1.0)])
def test_forget_loss_matches_the_formula_sample_by_sample(offset, weight):
    logits = torch.randn(7, 4, dtype=torch.float64) * 3
    targets = torch.randint(0, 4, (7,))
    total = 0.0
    for z, y in zip(logits, targets):
        p = [math.exp(v) for v in z.tolist()]
        s = sum(p)
        p = [v / s for v in p]
        entropy = -sum(v * math.log(v) for v in p)
        total += -math.log(1 - p[int(y)] + offset) - weight * entropy
    assert forget_loss(logits, targets, offset, weight).item() == pytest.approx(total / 7, rel=1e-10)


def test_forget_loss_descent_lowers_the_true_class_probability():
    logits = torch.tensor([[4.0, 0.0, -1.0]], requires_grad=True)
    target = torch.tensor([0])
    forget_loss(logits, target).backward()
    new = (logits - 0.5 * logits.grad).softmax(1)[0, 0]
    assert new < logits.softmax(1)[0, 0]


def test_forget_loss_is_finite_when_confident_and_checks_inputs():
    logits = torch.tensor([[100.0, -100.0]])
    assert torch.isfinite(forget_loss(logits, torch.tensor([0])))
    with pytest.raises(ValueError, match="offset"):
        forget_loss(logits, torch.tensor([0]), offset=0.0)
    with pytest.raises(ValueError, match="targets"):
        forget_loss(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="entropy_weight"):
        forget_loss(logits, torch.tensor([0]), entropy_weight=-1)


def test_sample_rule_stops_at_the_crossing_and_keeps_the_closer_epoch():
    # forget 99 -> 95 -> 91 -> 88 (val ~90): crossing at epoch 3; |90-88|=2 > |90.5-91|=0.5: keep epoch 2
    assert play(SampleRemovalStop(), (99, 90), [(95, 90), (91, 90.5), (88, 90)]) == (3, StopDecision("crossed", True))
    # crossing closer than the previous epoch: keep the crossing epoch
    assert play(SampleRemovalStop(), (99, 90), [(95, 90), (93, 90), (89.5, 90)]) == (3, StopDecision("crossed", False))
    # equal accuracy is not a crossing (strictly below)
    assert play(SampleRemovalStop(), (99, 90), [(90, 90), (92, 91)]) == (None, None)


def test_sample_rule_with_nothing_to_do_and_first_epoch_crossing():
    assert play(SampleRemovalStop(), (90, 90), [(50, 90)]) == (0, StopDecision("already_forgotten"))
    # the first epoch overshoots far below val: the original weights (epoch 0) are closer
    assert play(SampleRemovalStop(), (92, 90), [(70, 90)]) == (1, StopDecision("crossed", True))


def test_sample_rule_guards_held_out_accuracy():
    # forget and val fall together (a random subset of the training distribution): MNIST's measured run
    collapse = [(99.6, 99.4), (99.3, 99.1), (91.2, 90.9), (42.0, 40.5), (17.4, 17.5)]
    assert play(SampleRemovalStop(), (99.6, 99.4), collapse) == (3, StopDecision("val_drop", True))
    # the authors' rule alone runs to the bottom and keeps it (|17.5 - 17.4| < |40.5 - 42.0|)
    assert play(SampleRemovalStop(max_val_drop=None), (99.6, 99.4), collapse) == (5, StopDecision("crossed", False))
    # a drop within the allowance does not stop; the guard is checked before the crossing
    assert play(SampleRemovalStop(max_val_drop=2.0), (99, 95), [(97, 93.5), (92, 92.9)]) == (
        2, StopDecision("val_drop", True))
    assert play(SampleRemovalStop(max_val_drop=2.0), (99, 95), [(97, 93.5), (93, 93.4)]) == (
        2, StopDecision("crossed", False))
    with pytest.raises(ValueError, match="max_val_drop"):
        SampleRemovalStop(max_val_drop=-1)


def test_class_rule():
    rule = ClassRemovalStop(forget_floor=0.0, max_val_drop=5.0)
    assert play(rule, (100, 95), [(60, 94), (10, 93), (0, 92)]) == (3, StopDecision("class_forgotten"))
    rule = ClassRemovalStop(forget_floor=0.0, max_val_drop=5.0)
    assert play(rule, (100, 95), [(60, 94), (10, 89.5)]) == (2, StopDecision("val_drop", True))
    rule = ClassRemovalStop(forget_floor=1.0)
    assert play(rule, (100, None), [(50, None), (0.8, None)]) == (2, StopDecision("class_forgotten"))
    assert play(ClassRemovalStop(), (0, 95), []) == (0, StopDecision("already_forgotten"))
    with pytest.raises(ValueError):
        ClassRemovalStop(max_val_drop=-1)


def test_no_stop_never_stops():
    assert play(NoStop(), (100, 0), [(0, 100)] * 5) == (None, None)


def test_default_rule_by_mode_and_an_unknown_mode_named_as_such():
    from pgu.stopping import ClassRemovalStop, PoisonRemovalStop, SampleRemovalStop, default_rule

    sample, klass, poison = default_rule("sample", None), default_rule("class"), default_rule("poison", 3.0)
    assert isinstance(sample, SampleRemovalStop) and sample.max_val_drop is None
    assert isinstance(klass, ClassRemovalStop) and not isinstance(klass, PoisonRemovalStop)
    assert isinstance(poison, PoisonRemovalStop) and poison.max_val_drop == 3.0
    for max_val_drop in (None, 5.0):
        with pytest.raises(ValueError, match="mode must be"):
            default_rule("rows", max_val_drop)
