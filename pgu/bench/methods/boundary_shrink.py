"""Boundary shrinking (Chen et al. CVPR 2023, "Boundary Unlearning"): data-free.

Each forget sample ``x`` is pushed across the nearest decision boundary of a frozen copy of
the original model by one FGSM step of ``bound`` in pixel units (0..1), clamped to valid
pixels; the class the frozen copy predicts for the perturbed image becomes the sample's new
label, and the model is fine-tuned on the clean ``x`` with that label. The labels are
computed once, before any update (a forward and backward of the frozen copy per sample,
counted in the budget).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pgu.bench.methods.base import (
    Budget,
    MethodContext,
    MethodInfo,
    MethodResult,
    batches,
    copy_for_unlearning,
    epochs_for,
    register,
)
from pgu.bench.methods.loops import make_sgd, run_epochs

__all__ = ["fgsm_neighbour_labels"]


def fgsm_neighbour_labels(frozen, x: torch.Tensor, y: torch.Tensor, bound: float, mean: torch.Tensor,
                          std: torch.Tensor) -> torch.Tensor:
    """Labels ``frozen`` gives ``x`` moved by ``bound`` pixels along the sign of its loss gradient (FGSM)."""
    mean, std = mean.to(x.device), std.to(x.device)
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(frozen(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        pixels = x * std + mean
        moved = (pixels + bound * grad.sign()).clamp(0.0, 1.0)
        return frozen((moved - mean) / std).argmax(1)


@register(MethodInfo("boundary-shrink", data_free=True,
                     summary="fine-tune each forget sample toward the class of its FGSM neighbour",
                     reference="Chen et al. CVPR 2023, 'Boundary Unlearning: Rapid Forgetting of Deep Networks via "
                               "Shifting the Decision Space'"))
def boundary_shrink(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    bound = float(settings["bound"])
    if not 0 < bound <= 1:
        raise ValueError(f"bound must lie in (0, 1] pixel units, got {bound}")
    frozen, device = copy_for_unlearning(model)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    budget = Budget(context.max_samples)
    relabelled = []
    for x, y in batches(forget_loader, device, "forget_loader"):
        if not budget.take(x.shape[0]):
            break
        mean, std = context.pixel_scale(x.shape[1]) if x.dim() == 4 else (torch.zeros(()), torch.ones(()))
        relabelled.append((x, fgsm_neighbour_labels(frozen, x, y, bound, mean, std), y))
    del frozen
    work, _ = copy_for_unlearning(model)
    work.train()
    changed = sum(int((new != y).sum()) for _, new, y in relabelled)
    optimizer = make_sgd(work.parameters(), settings)

    def losses(epoch):
        for x, new, _ in relabelled:
            yield F.cross_entropy(work(x), new), x.shape[0]

    info = run_epochs(work, optimizer, settings, epochs_for(settings, context), budget, losses) if relabelled else {}
    work.eval()
    total = sum(int(y.numel()) for _, _, y in relabelled)
    info["labels_changed"] = changed
    info["labels_total"] = total
    return MethodResult(work, budget.used, budget.hit, info)
