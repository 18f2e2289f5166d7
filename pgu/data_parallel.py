"""One deletion request over several processes (``torchrun``): the steps :func:`pgu.unlearn` takes in common.

Each rank's ``forget_loader`` yields its share of every batch of D_f. Every rank steps together: a
step's sample count, loss and gradient are sums over the ranks' shares (a gradient weighted by its
share's size, so the step is the one a single process takes on the whole batch, for a loss that is a
mean over its batch), and the projection then runs on identical gradients on every rank. A rank whose
loader is spent before the others' takes part with an empty share. In a single process every function
here reduces to the plain computation.
"""

from __future__ import annotations

import json

import torch

from pgu import distributed as ranks
from pgu.evaluation import accuracy, predict, split_batch

__all__ = ["steps", "sum_over_ranks", "sum_gradients", "forget_accuracy", "classes_over_ranks", "check_same_request"]


def steps(loader, parallel: bool):
    """``(x, y, n_step)`` per step: this rank's share (``None`` once its loader is spent) and the whole step's size."""
    it = iter(loader)
    while True:
        batch = next(it, None)
        x, y = (None, None) if batch is None else split_batch(batch, "forget_loader")
        n = 0 if x is None else int(x.shape[0])
        if not parallel:
            if batch is None:
                return
            yield x, y, n
            continue
        counts = torch.tensor([n, int(batch is not None)], dtype=torch.int64)
        ranks.all_reduce_sum_(counts)
        if int(counts[1]) == 0:
            return
        yield x, y, int(counts[0])


def sum_over_ranks(value: float) -> float:
    """``value`` summed over ranks (NaN and inf carried, so every rank sees a non-finite loss)."""
    return float(ranks.all_reduce_sum_(torch.tensor([value], dtype=torch.float64)))


@torch.no_grad()
def sum_gradients(params, n_share: int, n_step: int) -> None:
    """Every gradient becomes the step's: the sum over ranks of ``grad * n_share / n_step`` (zero for no share)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.mul_(n_share / n_step)
        ranks.all_reduce_sum_(p.grad)


def forget_accuracy(model, loader, parallel: bool) -> float | None:
    """Top-1 accuracy in percent on D_f: over this rank's loader, or over every rank's share."""
    if not parallel:
        return accuracy(model, loader, what="forget_loader")
    logits, targets = predict(model, loader, "forget_loader")
    counts = torch.tensor([float((logits.argmax(1) == targets).sum()) if targets.numel() else 0.0,
                           float(targets.numel())], dtype=torch.float64)
    ranks.all_reduce_sum_(counts)
    return None if counts[1] == 0 else 100.0 * float(counts[0]) / float(counts[1])


def classes_over_ranks(targets: torch.Tensor) -> list[int]:
    """The labels present in any rank's share of D_f."""
    top = torch.tensor([-(int(targets.max()) if targets.numel() else -1)], dtype=torch.int64)
    ranks.all_reduce_min_(top)
    present = torch.zeros(-int(top) + 1, dtype=torch.int64)
    if targets.numel():
        present[targets.long().unique()] = 1
    ranks.all_reduce_sum_(present)
    return [int(c) for c in torch.nonzero(present).flatten()]


def check_same_request(loss, settings, mode: str, stats, max_samples) -> None:
    """Refuse, on every rank, a request whose ranks disagree, or whose loss runs the model itself."""
    if callable(getattr(loss, "bind", None)):
        raise ValueError("a loss that runs the model itself (pgu-heldout's anchored loss) runs in one process; "
                         "serve this request without torchrun (or pass distributed=False)")
    signature = json.dumps({"settings": settings.to_dict(), "mode": mode, "max_samples": max_samples,
                            "n_samples": stats.n_samples_, "layers": stats.layer_names}, sort_keys=True, default=str)
    ranks.check_same_everywhere(signature, "the request (settings, mode, budget or statistics)")
