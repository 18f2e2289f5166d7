"""``pgu-heldout``: PGU for sample requests, aimed at the model's held-out behaviour (a variant, not the authors').

What "forgotten" means for a sample drawn from the training distribution: the model treats it as
it treats data it never saw. The authors' loss (:func:`pgu.losses.forget_loss`) pushes the
true-class probability of every forget sample towards 0, and their rule stops when forget
accuracy crosses held-out accuracy; on a model that memorised its training set that took test
accuracy down with it. This variant keeps PGU's projected updates (the CGS of the retained
data, :mod:`pgu.projection`) and changes three things, all read from held-out data (val) and
D_f only, never D_r, the test split or a retrained model:

1. **The target is held-out behaviour.** :class:`HeldoutMatchLoss` moves each forget sample's
   margin ``m = z_y - max_{c != y} z_c`` to the margin the model gives unseen samples of its
   class. A forget sample of class ``c`` whose margin ranks ``i``-th of the request's ``n`` in
   that class gets the ``(i + 1/2)/n`` quantile of the original model's val margins of class
   ``c`` (a one-dimensional optimal transport, so the order among the forget samples is kept:
   the ones the model finds hardest are the ones that end misclassified, as after retraining);
   the loss is the Huber loss between margin and target. About as many forget
   samples end misclassified as val samples are, and no more.
2. **Held-out outputs are anchored.** Projection protects the inputs of the retained data, but
   unseen data (val, test) lie as much outside that space as D_f does, so on its own a
   projected update lowers held-out accuracy with the forget accuracy. The loss adds
   ``anchor_weight * KL(p_original || p)`` on batches of an anchor half of val: the update must
   change what is particular to D_f, not how the model generalises.
3. **The stop is the target.** :class:`HeldoutTargetStop` stops once forget accuracy is within
   ``tolerance`` (default one standard error of a D_f-sized sample) of the original's val
   accuracy on D_f's class mix, keeping whichever of that epoch and the previous is closer; or
   when forget accuracy has stopped falling (less than ``min_drop`` in ``patience`` epochs after
   covering half the way, or in ``stall_patience`` epochs at any point: a target a few samples
   from the start may be out of reach); or, as PGU's guard, when accuracy on the other half of val (never
   trained on) fell by more than ``max_val_drop`` points. An epoch that jumps from above the
   band ``target +- tolerance`` to below it asks :func:`pgu.unlearn` for a line search along its
   update (:class:`pgu.stopping.StopDecision`'s ``aim``): on a small request one epoch moved
   forget accuracy by 15-20 points, past a band 9 points wide (store requests of 100 images).

Conventions: accuracies in percent; val is split by position (even positions anchor, odd check).
docs/method.md section 10 describes it; docs/results/notes/cifar10-memorize-random.md lists each idea
tried on the way and what it did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pgu.evaluation import predict, split_batch
from pgu.stopping import StopDecision

__all__ = ["HeldoutRequest", "prepare_heldout", "request_batching", "request_anchor", "ANCHOR_WEIGHT",
           "MIN_STEPS_PER_EPOCH", "HELDOUT_LR", "HeldoutSplit", "split_heldout", "margins", "HeldoutMatchLoss",
           "HeldoutTargetStop", "heldout_target", "class_mix_accuracy", "standard_error"]


def margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{c != y} z_c`` per row (negative: misclassified). Needs at least two classes."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"margins need logits of shape (batch, classes >= 2), got {tuple(logits.shape)}")
    y = targets.long().view(-1, 1)
    true = logits.gather(1, y).squeeze(1)
    others = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y, True), float("-inf"))
    return true - others.max(1).values


@dataclass
class HeldoutSplit:
    """Val split in two by position: ``anchor`` (even positions: inputs, the original's logits and labels) and
    ``check`` (odd positions: a list of batches for the stopping rule); ``logits`` and ``y``: the original's
    logits on all of val, in order, and the labels."""

    anchor_x: torch.Tensor
    anchor_y: torch.Tensor
    anchor_logits: torch.Tensor
    check: list
    logits: torch.Tensor
    y: torch.Tensor

    @property
    def n_check(self) -> int:
        return sum(int(b[1].shape[0]) for b in self.check)


def split_heldout(model: nn.Module, val_loader, batch_size: int = 512, *, output=None) -> HeldoutSplit:
    """Read ``val_loader`` once, take the original model's logits on it (one pass), and split it by position."""
    xs, ys = [], []
    for batch in val_loader:
        x, y = split_batch(batch, "val_loader")
        xs.append(x.cpu())
        ys.append(y.cpu())
    if not xs or sum(len(y) for y in ys) < 4:
        raise ValueError("pgu-heldout needs at least 4 held-out samples in val_loader (half anchor, half check)")
    x, y = torch.cat(xs), torch.cat(ys)
    logits, _ = predict(model, [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)],
                        "val_loader", output=output)
    even = torch.arange(len(y)) % 2 == 0
    cx, cy = x[~even], y[~even]
    check = [(cx[i:i + batch_size], cy[i:i + batch_size]) for i in range(0, len(cy), batch_size)]
    return HeldoutSplit(x[even], y[even], logits[even], check, logits, y)


def class_mix_accuracy(correct, labels, forget_labels) -> float:
    """Held-out accuracy (percent) on D_f's class mix: per-class accuracy of ``correct`` (one bool per held-out
    sample, labelled ``labels``) weighted by the class counts of ``forget_labels``; a class the held-out set lacks
    counts at its overall accuracy. What a model that never saw D_f would score on it (``pgu select``'s target too).
    """
    correct = torch.as_tensor(correct).double().cpu()
    labels, forget_labels = torch.as_tensor(labels).cpu(), torch.as_tensor(forget_labels).cpu()
    if correct.numel() == 0 or forget_labels.numel() == 0:
        raise ValueError("the held-out target needs a non-empty val set and forget set")
    classes, counts = forget_labels.unique(return_counts=True)
    per_class = [float(correct[labels == c].mean()) if bool((labels == c).any()) else float(correct.mean())
                 for c in classes]
    return 100.0 * float(sum(a * int(n) for a, n in zip(per_class, counts)) / int(counts.sum()))


def heldout_target(model: nn.Module, val_batches, forget_targets: torch.Tensor, *, output=None) -> float:
    """:func:`class_mix_accuracy` of ``model`` on ``val_batches``: its held-out target for D_f."""
    logits, y = predict(model, val_batches, "val", output=output)
    return class_mix_accuracy(logits.argmax(1) == y, y, forget_targets)


ANCHOR_WEIGHT = 10.0
"""``beta``, the anchor term's weight (module docstring, 2): the default everywhere ``pgu-heldout`` runs."""

HELDOUT_LR = (1.0, 0.1)
"""``pgu-heldout``'s rate (``lr0 -> lr1``, before :func:`request_batching`): the bench's (its ``settings.toml``) and a
model store's default ``heldout_lr``. Read off val on cifar10-memorize seed 0's request of 1,000 images
(docs/results/notes/cifar10-memorize-random.md)."""

MIN_STEPS_PER_EPOCH = 4
"""Fewer steps per epoch than this, and a ``pgu-heldout`` request gets smaller batches (:func:`request_batching`)."""


def request_batching(n_forget: int, batch_size: int, lr, min_steps: int = MIN_STEPS_PER_EPOCH):
    """``(batch size, lr)`` of a ``pgu-heldout`` request of ``n_forget`` samples at ``batch_size`` and ``lr``.

    A request that would take fewer than ``min_steps`` steps per epoch (100 images at 128 take
    one, and the stopping rule, which reads val after every epoch, stalled on it) runs with
    batches of ``ceil(n_forget / (2 min_steps))`` instead, and its rates scaled by the batch's
    share of ``batch_size`` (linear scaling: the same step per sample). Measured at
    :data:`HELDOUT_LR` on cifar10-memorize's 100-image requests: at the full rate a digits request
    of 120 images in batches of 15 lost half its val accuracy in one epoch; scaled by the square
    root of the share, forget accuracy fell from 81% to 44% in one epoch, past its target's band;
    scaled linearly, four or five epochs landed within it.
    """
    if n_forget < 1 or batch_size < 1 or min_steps < 1:
        raise ValueError(f"n_forget, batch_size and min_steps must be >= 1, got {n_forget}, {batch_size}, {min_steps}")
    if -(-n_forget // batch_size) >= min_steps:
        return batch_size, lr
    batch = max(1, -(-n_forget // (2 * min_steps)))
    scale = batch / batch_size
    return batch, (tuple(float(v) * scale for v in lr) if isinstance(lr, (tuple, list)) else float(lr) * scale)


def request_anchor(batch: int, batch_size: int, anchor_weight: float) -> tuple[float, int | None]:
    """``(anchor_weight, anchor_batch)`` of a request that :func:`request_batching` runs at ``batch`` instead of
    ``batch_size``: ``(anchor_weight, None)`` (anchor batches as large as the forget batches) when it runs at
    ``batch_size``.

    Linear scaling shrinks a small request's rate by the batch share, and the anchor's pull per
    step with it, though the anchor term does not depend on the forget batch. So a small request's
    anchor weight is divided by that share (``lr * anchor_weight`` per step is what it is at full
    batch), and its anchor batches stay ``batch_size``: each step reads as much of val as at full
    batch. Measured on cifar10-memorize's 100-image requests (docs/results/notes/cifar10-memorize-random.md):
    with the anchor at the forget batch's size and weight, val fell about as fast as without it.
    """
    if batch < 1 or batch_size < 1 or not anchor_weight >= 0:
        raise ValueError(f"batch and batch_size must be >= 1 and anchor_weight >= 0, got {batch}, {batch_size}, "
                         f"{anchor_weight}")
    if batch >= batch_size:
        return float(anchor_weight), None
    return float(anchor_weight) * batch_size / batch, batch_size


def standard_error(accuracy: float, n: int) -> float:
    """One standard error (percentage points) of an accuracy measured on ``n`` samples."""
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(n, 1))


class HeldoutMatchLoss:
    """Forget margins to held-out margin quantiles, per class (module docstring, 1), plus the anchor term (2).

    Args:
        val_logits, val_targets: the original model's logits on held-out data and its labels
            (the quantiles' source).
        forget_margins, forget_targets: the margins of the whole forget set and its labels (from
            the original model; :func:`prepare_heldout` takes them). With them, a sample's rank is
            its rank in the whole request's class, read off a record of the request's margins
            kept up to date from the batches as they pass, so the targets do not depend on the
            batch size. Without them, the rank is within the batch.
        anchor: ``(inputs, original logits)`` of the anchor half, or None for no anchor term.
        anchor_weight: ``beta`` of ``beta * KL(p_original || p)`` on anchor batches.
        anchor_batch: anchor samples per step (default: the forget batch's size).
        huber: the Huber loss's ``delta`` on the margin difference.
        seed: the order anchor batches are drawn in.

    The anchor term needs the model being unlearned: :func:`pgu.unlearn` calls :meth:`bind`
    with its working copy before the first step (a bound copy; this object is unchanged).
    """

    def __init__(self, val_logits: torch.Tensor, val_targets: torch.Tensor, *, forget_margins=None,
                 forget_targets=None, anchor=None, anchor_weight: float = ANCHOR_WEIGHT,
                 anchor_batch: int | None = None, huber: float = 1.0, seed: int = 0):
        if not anchor_weight >= 0 or not huber > 0:
            raise ValueError(f"anchor_weight must be >= 0 and huber > 0, got {anchor_weight} and {huber}")
        if anchor_batch is not None and anchor_batch < 1:
            raise ValueError(f"anchor_batch must be >= 1, got {anchor_batch}")
        if (forget_margins is None) != (forget_targets is None):
            raise ValueError("give forget_margins and forget_targets together (or neither)")
        m = margins(val_logits.double(), val_targets)
        self.quantiles = {int(c): m[val_targets == c].sort().values for c in val_targets.unique()}
        self.overall = m.sort().values
        self.record = None  # per class: the request's latest margins (a ring, written as batches pass)
        if forget_margins is not None:
            forget_margins, forget_targets = forget_margins.double().cpu(), forget_targets.long().cpu()
            self.record = {int(c): forget_margins[forget_targets == c].clone() for c in forget_targets.unique()}
        self._cursor = dict.fromkeys(self.record or {}, 0)
        self.anchor, self.anchor_weight, self.anchor_batch = anchor, float(anchor_weight), anchor_batch
        self.huber, self.seed = float(huber), seed
        self.model = None
        self._passes = [0]  # anchor samples passed, shared with bound copies

    def bind(self, model: nn.Module) -> "HeldoutMatchLoss":
        """A copy of this loss whose anchor term runs through ``model`` (the copy :func:`pgu.unlearn` updates)."""
        bound = HeldoutMatchLoss.__new__(HeldoutMatchLoss)
        bound.__dict__.update(self.__dict__)
        bound.model = model
        bound.record = None if self.record is None else {c: r.clone() for c, r in self.record.items()}
        bound._cursor = dict(self._cursor)
        bound._generator = torch.Generator().manual_seed(self.seed)
        bound._order, bound._next = None, 0
        return bound

    @property
    def anchor_samples(self) -> int:
        """Anchor samples passed forward and backward so far, by this loss and every copy bound from it."""
        return self._passes[0]

    def targets(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The target margin of each row: its class's held-out quantile at the row's rank in its class."""
        current = margins(logits.detach(), targets).double().cpu()
        targets = targets.cpu()
        out = torch.empty(len(targets), dtype=torch.float64)
        for c in targets.unique().tolist():
            rows = (targets == c).nonzero().squeeze(1)
            ref = self.quantiles.get(int(c), self.overall)
            record = None if self.record is None else self.record.get(int(c))
            if record is None:  # rank within the batch
                share = torch.empty(len(rows), dtype=torch.float64)
                share[current[rows].argsort()] = (torch.arange(len(rows), dtype=torch.float64) + 0.5) / len(rows)
            else:  # rank within the request: the mid-rank among its latest margins
                known = record.sort().values
                below = torch.searchsorted(known, current[rows], right=False)
                upto = torch.searchsorted(known, current[rows], right=True)
                share = ((below + upto).double() / 2).clamp(0.5, len(known) - 0.5) / len(known)
                self._remember(int(c), current[rows])
            out[rows] = ref[(share * len(ref)).long().clamp(max=len(ref) - 1)]
        return out.to(device=logits.device, dtype=logits.dtype)

    def _remember(self, c: int, values: torch.Tensor) -> None:
        """Write a batch's margins of class ``c`` into the request's record (a ring over the class's samples)."""
        record = self.record[c]
        values = values[: len(record)]
        record[(self._cursor[c] + torch.arange(len(values))) % len(record)] = values
        self._cursor[c] = (self._cursor[c] + len(values)) % len(record)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long()
        value = F.huber_loss(margins(logits, targets), self.targets(logits, targets), delta=self.huber)
        if self.anchor is not None and self.anchor_weight > 0:
            if self.model is None:
                raise RuntimeError("HeldoutMatchLoss's anchor term needs the model: call bind(model) first "
                                   "(pgu.unlearn does)")
            value = value + self.anchor_weight * self._anchor_term(self.anchor_batch or len(targets), logits.device)
        return value

    def _anchor_term(self, size: int, device) -> torch.Tensor:
        x, original = self.anchor
        if self._order is None or self._next + size > len(x):
            self._order, self._next = torch.randperm(len(x), generator=self._generator), 0
        rows = self._order[self._next:self._next + size]
        self._next += size
        self._passes[0] += len(rows)
        log_p = F.log_softmax(self.model(x[rows].to(device)), dim=1)
        log_q = F.log_softmax(original[rows].to(device=device, dtype=log_p.dtype), dim=1)
        return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


class HeldoutTargetStop:
    """Stop at the held-out target (module docstring, 3). ``target`` and ``tolerance`` in percent."""

    needs_val = True

    def __init__(self, target: float, tolerance: float, max_val_drop: float | None = 5.0, patience: int = 3,
                 min_drop: float = 0.5, stall_patience: int = 10, line_search: bool = True):
        if not 0 <= target <= 100 or not tolerance >= 0:
            raise ValueError(f"target must lie in [0, 100] and tolerance be >= 0, got {target} and {tolerance}")
        if max_val_drop is not None and not max_val_drop >= 0:
            raise ValueError(f"max_val_drop must be >= 0 points, or None; got {max_val_drop}")
        for name, value in (("patience", patience), ("stall_patience", stall_patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of epochs >= 1, got {value!r}")
        if not min_drop >= 0:
            raise ValueError(f"min_drop must be >= 0 points, got {min_drop}")
        self.target, self.tolerance, self.max_val_drop = float(target), float(tolerance), max_val_drop
        self.patience, self.min_drop, self.stall_patience = patience, float(min_drop), stall_patience
        self.line_search = bool(line_search)

    def start(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        self._val_start, self._trace = val_acc, [forget_acc]
        if forget_acc <= self.target + self.tolerance:
            return StopDecision("already_forgotten")
        return None

    def after_epoch(self, forget_acc: float, val_acc: float | None) -> StopDecision | None:
        previous_gap = abs(self._trace[-1] - self.target)
        self._trace.append(forget_acc)
        if self.max_val_drop is not None and self._val_start - val_acc > self.max_val_drop:
            return StopDecision("val_drop", keep_previous=True)
        if forget_acc <= self.target + self.tolerance:
            jumped = self.line_search and forget_acc < self.target - self.tolerance  # across the band in one epoch
            return StopDecision("reached_target", keep_previous=previous_gap < abs(forget_acc - self.target),
                                aim=self.target if jumped else None)
        def stalled(epochs: int) -> bool:
            return len(self._trace) > epochs and self._trace[-1 - epochs] - forget_acc < self.min_drop

        halfway = forget_acc <= (self._trace[0] + self.target) / 2
        if (halfway and stalled(self.patience)) or stalled(max(self.stall_patience, self.patience)):
            return StopDecision("target_plateau")
        return None


@dataclass
class HeldoutRequest:
    """What :func:`prepare_heldout` gives :func:`pgu.unlearn`: ``loss``, ``stop`` and ``val_loader`` (the check
    half), with the ``target`` and ``tolerance`` (percent) the stop aims at."""

    loss: HeldoutMatchLoss
    stop: HeldoutTargetStop
    val_loader: list
    target: float
    tolerance: float


def prepare_heldout(model: nn.Module, forget_loader, val_loader, *, anchor_weight: float = ANCHOR_WEIGHT,
                    tolerance: float | None = None, max_val_drop: float | None = 5.0, seed: int = 0,
                    reference: nn.Module | None = None, anchor_batch: int | None = None,
                    split: HeldoutSplit | None = None, output=None) -> HeldoutRequest:
    """The loss, stopping rule and check loader of one ``pgu-heldout`` request (module docstring).

    Reads ``val_loader`` once and D_f's labels; ``tolerance`` defaults to one standard error of
    the target on a sample of D_f's size. Pass the result as
    ``unlearn(..., val_loader=r.val_loader, loss=r.loss, stop=r.stop)``.

    ``reference``: the model whose held-out behaviour the request aims at and anchors to: the
    quantiles, the target and the anchor's logits come from it (default ``model``). A model store
    passes the trained model (its version 0), so that requests in a row pull val back to where
    the user's model had it instead of each starting from the drift the earlier ones left (which
    compounded: every request's target fell with val). The forget samples' ranks are always
    ``model``'s. ``anchor_batch``: anchor samples per step (default: the forget batch's size;
    :func:`request_anchor` gives a small request's). ``split``: :func:`split_heldout` of ``reference`` (else
    ``model``) on ``val_loader``, where the caller has it already (it is then not recomputed). ``output``:
    where the logits are in the model's output (:mod:`pgu.outputs`); pass the same to :func:`pgu.unlearn`.
    """
    if split is None:
        split = split_heldout(model if reference is None else reference, val_loader, output=output)
    forget_logits, forget_targets = predict(model, forget_loader, "forget_loader", output=output)
    if forget_targets.numel() == 0:
        raise ValueError("forget_loader yielded no samples")
    target = class_mix_accuracy(split.logits.argmax(1) == split.y, split.y, forget_targets)
    if tolerance is None:
        tolerance = standard_error(target, forget_targets.numel())
    loss = HeldoutMatchLoss(split.anchor_logits, split.anchor_y, forget_margins=margins(forget_logits, forget_targets),
                            forget_targets=forget_targets, anchor=(split.anchor_x, split.anchor_logits),
                            anchor_weight=anchor_weight, anchor_batch=anchor_batch, seed=seed)
    stop = HeldoutTargetStop(target, tolerance, max_val_drop)
    return HeldoutRequest(loss, stop, split.check, target, tolerance)
