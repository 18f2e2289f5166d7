"""The unlearning loss on forget samples (METHOD.md section 5; paper Eq. 9).

With ``p = softmax(f_w(x_j))`` and a batch of ``B`` forget samples:

    L = (1/B) sum_j -log(1 - p_{y_j} + delta)  -  lambda (1/B) sum_j H(p_j),
    H(p) = -sum_c p_c log p_c

The first term pushes the true-class probability down (``delta``, the offset, keeps the
logarithm finite when ``p_y -> 1``); the second keeps the prediction spread rather than
confidently wrong. Vectorised over the batch (the authors loop per sample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["forget_loss"]


def forget_loss(logits: torch.Tensor, targets: torch.Tensor, offset: float = 0.05, entropy_weight: float = 0.2) -> torch.Tensor:
    """PGU's forget loss, the mean over the batch.

    Args:
        logits: ``(B, C)`` raw model outputs.
        targets: ``(B,)`` integer labels of the forget samples.
        offset: ``delta`` > 0 in ``-log(1 - p_y + delta)``.
        entropy_weight: ``lambda`` >= 0, the weight of the entropy bonus.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
    if not offset > 0:
        raise ValueError(f"offset must be > 0 (it keeps -log(1 - p_y + offset) finite), got {offset}")
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    p_true = p.gather(1, targets.long().view(-1, 1)).squeeze(1)
    push_down = -torch.log1p(offset - p_true)
    entropy = -(p * log_p).sum(1)
    return push_down.mean() - entropy_weight * entropy.mean()
