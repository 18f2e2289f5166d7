"""The unlearning losses on forget samples: PGU's (docs/method.md section 5; paper Eq. 9) and its depoisoning variant
(section 8).

With ``p = softmax(f_w(x_j))`` and a batch of ``B`` forget samples:

    L = (1/B) sum_j -log(1 - p_{y_j} + delta)  -  lambda (1/B) sum_j H(p_j),
    H(p) = -sum_c p_c log p_c

The first term pushes the true-class probability down (``delta``, the offset, keeps the
logarithm finite when ``p_y -> 1``); the second keeps the prediction spread rather than
confidently wrong. Vectorised over the batch (the authors loop per sample).

:func:`depoison_loss` removes poisoned samples (docs/method.md section 8): with ``y~`` the poisoned
label a sample was trained with and ``q`` the softmax over the logits of the other classes,

    L = (1/B) sum_j -log(1 - p_{y~_j} + delta)  +  lambda (1/B) sum_j H(q_j)

The first term is the same push-down, on the poisoned label (authors: ``delta = 0.1``); the
entropy term now *adds*: with ``lambda = 0.2`` it makes the prediction settle confidently on one
class other than the poisoned one (the true class, once the poison's pull is gone) instead of
spreading it. Source: the authors' ``depoisoning.py`` (loss1 + 0.2 loss2, offset 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["forget_loss", "depoison_loss", "ForgetLoss", "DepoisonLoss", "default_loss"]


def forget_loss(logits: torch.Tensor, targets: torch.Tensor, offset: float = 0.05,
                entropy_weight: float = 0.2) -> torch.Tensor:
    """PGU's forget loss, the mean over the batch.

    Args:
        logits: ``(B, C)`` raw model outputs.
        targets: ``(B,)`` integer labels of the forget samples.
        offset: ``delta`` > 0 in ``-log(1 - p_y + delta)``.
        entropy_weight: ``lambda`` >= 0, the weight of the entropy bonus.
    """
    _check(logits, targets, offset, entropy_weight)
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    p_true = p.gather(1, targets.long().view(-1, 1)).squeeze(1)
    push_down = -torch.log1p(offset - p_true)
    entropy = -(p * log_p).sum(1)
    return push_down.mean() - entropy_weight * entropy.mean()


def depoison_loss(logits: torch.Tensor, poisoned: torch.Tensor, offset: float = 0.1, entropy_weight: float = 0.2
                  ) -> torch.Tensor:
    """The depoisoning loss (module docstring), the mean over the batch.

    Args:
        logits: ``(B, C)`` raw model outputs, ``C >= 2``.
        poisoned: ``(B,)`` the labels the samples were (wrongly) trained with.
        offset: ``delta`` > 0. entropy_weight: ``lambda`` >= 0, the weight of the entropy over
            the classes other than the poisoned one (added: it is minimised).
    """
    _check(logits, poisoned, offset, entropy_weight)
    if logits.shape[1] < 2:
        raise ValueError("the depoisoning loss needs at least two classes (the entropy is over the others)")
    poisoned = poisoned.long().view(-1, 1)
    p_poisoned = F.softmax(logits, dim=1).gather(1, poisoned).squeeze(1)
    push_down = -torch.log1p(offset - p_poisoned)
    is_poisoned = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, poisoned, True)
    others = logits.masked_fill(is_poisoned, float("-inf"))
    log_q = F.log_softmax(others, dim=1).masked_fill(is_poisoned, 0.0)  # the poisoned class: q = 0, 0 log 0 = 0
    q = log_q.exp().masked_fill(is_poisoned, 0.0)
    entropy = -(q * log_q).sum(1)
    return push_down.mean() + entropy_weight * entropy.mean()


def _check(logits, targets, offset, entropy_weight) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
    if not offset > 0:
        raise ValueError(f"offset must be > 0 (it keeps -log(1 - p_y + offset) finite), got {offset}")
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")


@dataclass(frozen=True)
class ForgetLoss:
    """:func:`forget_loss` with its ``delta`` (``offset``, authors' configs 0.05) and ``lambda`` fixed.

    Called as ``loss(logits, targets)``, as :func:`pgu.unlearn` calls any loss it is given.
    """

    offset: float = 0.05
    entropy_weight: float = 0.2

    def __post_init__(self):
        _check(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), self.offset, self.entropy_weight)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return forget_loss(logits, targets, self.offset, self.entropy_weight)


@dataclass(frozen=True)
class DepoisonLoss:
    """:func:`depoison_loss` with its ``delta`` (``offset``, the authors' 0.1) and ``lambda`` fixed."""

    offset: float = 0.1
    entropy_weight: float = 0.2

    def __post_init__(self):
        _check(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), self.offset, self.entropy_weight)

    def __call__(self, logits: torch.Tensor, poisoned: torch.Tensor) -> torch.Tensor:
        return depoison_loss(logits, poisoned, self.offset, self.entropy_weight)


def default_loss(mode: str):
    """The loss of a request of ``mode``: :class:`DepoisonLoss` for ``"poison"``, else :class:`ForgetLoss`."""
    return DepoisonLoss() if mode == "poison" else ForgetLoss()
