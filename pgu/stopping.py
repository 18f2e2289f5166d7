"""When projected unlearning stops (docs/method.md section 6).

Accuracies are percentages. Each rule sees the forget accuracy ``a_f`` and held-out
accuracy ``a_v`` before the first step (``start``) and after every epoch (``after_epoch``)
and answers with a :class:`StopDecision` (why, and whether to keep the previous epoch's
weights) or None to go on. No rule looks at a retrained model or at test data.

* :class:`SampleRemovalStop` (``mode="sample"``): a retrained model is about as accurate on
  D_f as on unseen data. Stop at the first epoch where ``a_f < a_v``, keeping whichever of
  that epoch and the previous one has the smaller ``|a_v - a_f|``. If ``a_f <= a_v`` before
  any step there is nothing to do. Beyond the authors' rule, the class rule's guard: stop once
  held-out accuracy has fallen by more than ``max_val_drop`` points from the start, keeping
  the previous epoch (checked first). Without it, forgetting a random subset of the training
  distribution lowered forget and held-out accuracy together until they crossed at the bottom:
  LeNet on MNIST, 10% random, 99.6 / 99.4 -> 17.4 / 17.5 in 11 epochs.
* :class:`ClassRemovalStop` (``mode="class"``): stop once the forget classes are no longer
  predicted (``a_f <= forget_floor``), or once held-out accuracy on the remaining classes has
  fallen by more than ``max_val_drop`` points from the start (then the previous epoch, the last
  within the allowance, is kept; this check comes first when both happen in one epoch).
  ``forget_floor`` defaults to 1%: "~0" that tolerates one or two stubborn images.
* :class:`PoisonRemovalStop` (``mode="poison"``, docs/method.md section 8): ``a_f`` is the accuracy
  on the poisoned samples under their poisoned labels. A model trained without them rarely
  predicts those labels, so stop once ``a_f <= poison_floor`` (default 1%, as the class rule's
  floor: "~0" that tolerates a few stubborn images), or, once ``a_f`` is at most half its
  starting value, when it has fallen by less than ``min_drop`` points (0.5) over the last
  ``patience`` epochs (5; reason ``poison_plateau``, keeping the current epoch), or once
  held-out accuracy has fallen by more than ``max_val_drop`` points from the start (the
  authors' guard, 5 points of test accuracy; here val), keeping the previous epoch (checked
  first). The authors have no floor and no plateau: they run every epoch the guard allows.
  The plateau exists because a clean model is not at 0 either: trained without the poisoned
  samples, All-CNN on CIFAR-10 still gives 2.5% of backdoored training images the target
  label, so a 1% floor alone ran PGU to its budget (89 epochs) to take ``a_f`` from 4.2% at
  epoch 10 to 2.1%. The plateau waits for the first halving because the share is coarse: on a
  few samples it can sit at 100% for epochs while their logits move, then fall at once.
* :class:`NoStop`: run every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pgu.settings import check_mode

__all__ = ["StopDecision", "StoppingRule", "SampleRemovalStop", "ClassRemovalStop", "PoisonRemovalStop", "NoStop",
           "STOP_REASONS", "default_rule"]

STOP_REASONS = {
    "already_forgotten": "forget accuracy was already at or below held-out accuracy; nothing to do",
    "crossed": "forget accuracy fell below held-out accuracy",
    "class_forgotten": "the forget classes are no longer predicted",
    "poison_removed": "no more poisoned samples than the floor are predicted with their poisoned labels",
    "poison_plateau": "the share of poisoned samples predicted with their poisoned labels stopped falling",
    "reached_target": "forget accuracy reached its held-out target (pgu.heldout)",
    "target_plateau": "forget accuracy stopped falling, past half the way to its held-out target (pgu.heldout)",
    "val_drop": "held-out accuracy (on the remaining classes) fell by more than the allowance",
    "max_epochs": "ran every epoch allowed",
    "budget": "the compute budget (forget samples processed) would have been exceeded",
}


@dataclass(frozen=True)
class StopDecision:
    """Why a request stops (a key of :data:`STOP_REASONS`) and which weights it keeps.

    ``keep_previous``: the previous epoch's weights instead of this one's. ``aim``: a forget accuracy
    (percent) to look for along the last epoch's update before stopping: :func:`pgu.unlearn`
    then keeps ``w_prev + t (w_last - w_prev)`` for the ``t`` in [0, 1] of a short bisection whose
    forget accuracy is nearest ``aim`` (both ends included, so it is never further from ``aim``
    than ``keep_previous`` would be; that flag is then not read). Every point of that segment
    differs from the request's start by projected updates only, so it too leaves the CGS alone.
    The authors' rules never set it (``pgu`` stops on whole epochs); :class:`pgu.heldout.HeldoutTargetStop`
    does when one epoch jumps across its target band."""

    reason: str
    keep_previous: bool = False
    aim: float | None = None


class StoppingRule(Protocol):
    """What :func:`pgu.unlearn` asks of a rule: ``needs_val`` (it reads held-out accuracy), and
    ``start`` / ``after_epoch`` answering a :class:`StopDecision` or None to go on."""

    needs_val: bool

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None: ...

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None: ...


def default_rule(mode: str, max_val_drop: float | None = 5.0) -> StoppingRule:
    """The rule of a request of ``mode`` with every other setting at its default.

    ``max_val_drop``: points of held-out accuracy the rule lets go (``None``: the authors' sample
    rule alone; the class and poison rules need a number)."""
    check_mode(mode)
    if mode == "sample":
        return SampleRemovalStop(max_val_drop)
    if max_val_drop is None:
        raise ValueError(f"the {mode}-removal rule needs max_val_drop (points of held-out accuracy it may lose)")
    if mode == "class":
        return ClassRemovalStop(max_val_drop=max_val_drop)
    return PoisonRemovalStop(max_val_drop=max_val_drop)


class SampleRemovalStop:
    """Stop when forget accuracy crosses below held-out accuracy (sample removal), or held-out accuracy fell too far."""

    needs_val = True

    def __init__(self, max_val_drop: float | None = 5.0):
        if max_val_drop is not None and not max_val_drop >= 0:
            raise ValueError("max_val_drop must be >= 0 (percentage points), or None for the authors' rule alone")
        self.max_val_drop = max_val_drop

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        self._previous_gap = None if val_acc is None else abs(val_acc - forget_acc)
        self._val_start = val_acc
        if forget_acc <= val_acc:
            return StopDecision("already_forgotten")
        return None

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        gap = abs(val_acc - forget_acc)
        previous, self._previous_gap = self._previous_gap, gap
        if self.max_val_drop is not None and self._val_start - val_acc > self.max_val_drop:
            return StopDecision("val_drop", keep_previous=True)
        if forget_acc < val_acc:
            return StopDecision("crossed", keep_previous=previous is not None and previous < gap)
        return None


class ClassRemovalStop:
    """Stop when the forget classes are gone, or held-out accuracy on the others fell too far."""

    needs_val = False
    floor_reason = "class_forgotten"

    def __init__(self, forget_floor: float = 1.0, max_val_drop: float = 5.0):
        if forget_floor < 0 or max_val_drop is None or max_val_drop < 0:
            raise ValueError("the floor and max_val_drop must be >= 0 (percentage points)")
        self.forget_floor = forget_floor
        self.max_val_drop = max_val_drop

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        self._val_start = val_acc
        if forget_acc <= self.forget_floor:
            return StopDecision("already_forgotten")
        return None

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        if self._val_start is not None and val_acc is not None and self._val_start - val_acc > self.max_val_drop:
            return StopDecision("val_drop", keep_previous=True)
        if forget_acc <= self.forget_floor:
            return StopDecision(self.floor_reason)
        return None


class PoisonRemovalStop(ClassRemovalStop):
    """The class rule on poisoned samples (``a_f`` under the poisoned labels; val required), plus a plateau.

    The plateau applies once ``a_f`` is at most half its value before the first step;
    ``patience=None`` turns it off (the floor and the guard alone).
    """

    needs_val = True
    floor_reason = "poison_removed"

    def __init__(self, poison_floor: float = 1.0, max_val_drop: float = 5.0, patience: int | None = 5,
                 min_drop: float = 0.5):
        super().__init__(poison_floor, max_val_drop)
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be a whole number of epochs >= 1, or None for no plateau rule; "
                             f"got {patience!r}")
        if not min_drop >= 0:
            raise ValueError(f"min_drop must be >= 0 percentage points, got {min_drop}")
        self.patience = patience
        self.min_drop = min_drop

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        self._trace = [forget_acc]
        return super().start(forget_acc, val_acc)

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        self._trace.append(forget_acc)
        decision = super().after_epoch(forget_acc, val_acc)
        if decision is not None or self.patience is None or len(self._trace) <= self.patience:
            return decision
        if forget_acc > self._trace[0] / 2:  # most of the poison is still there: keep going
            return None
        if self._trace[-1 - self.patience] - forget_acc < self.min_drop:
            return StopDecision("poison_plateau")
        return None


class NoStop:
    """Never stop early."""

    needs_val = False

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        return None

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        return None
