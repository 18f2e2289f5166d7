"""SalUn (Fan et al. ICLR 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency").

A saliency mask: the absolute gradient of the forget loss (minus the cross-entropy, summed
over the D_f batches, model in eval mode), ranked over all parameters together; the top
``mask_share`` (0.5) may move. Then random-label training (:mod:`pgu.bench.methods.gradient`) with
each gradient multiplied by the mask and, after every step, the masked-out weights put back
to their original values and their momentum cleared, so they stay exactly fixed whatever the
momentum and weight decay (the authors' later ``_restore_masked_params``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from pgu.bench.methods.base import (
    Budget,
    MethodContext,
    MethodInfo,
    MethodResult,
    batches,
    copy_for_unlearning,
    gradient_sums,
    register,
    require_retain,
)
from pgu.bench.methods.gradient import relabel_training

__all__ = ["saliency_mask"]


def saliency_mask(model, forget_loader, device, share: float, budget: Budget) -> list[torch.Tensor] | None:
    """Boolean masks (one per parameter) of the top ``share`` of ``|grad of -CE over D_f|``, ranked globally."""
    if not 0 < share <= 1:
        raise ValueError(f"mask_share must lie in (0, 1], got {share}")
    model.eval()
    grads, _, complete = gradient_sums(model, batches(forget_loader, device, "forget_loader"), budget,
                                       lambda out, y: -F.cross_entropy(out, y), square=False)
    if not complete:
        return None
    flat = torch.cat([g.abs().flatten() for g in grads])
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.topk(flat, int(round(share * flat.numel()))).indices] = True  # exactly the share, ties broken by topk
    return [m.view_as(g) for m, g in zip(torch.split(chosen, [g.numel() for g in grads]), grads)]


@register(MethodInfo("salun", data_free=False,
                     summary="random-label training restricted to the weights most salient to the forget loss",
                     reference="Fan et al. ICLR 2024, 'SalUn: Empowering Machine Unlearning via Gradient-based "
                               "Weight Saliency'"))
def salun(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "salun")
    work, device = copy_for_unlearning(model)
    mask_budget = Budget(context.max_samples)
    masks = saliency_mask(work, forget_loader, device, float(settings["mask_share"]), mask_budget)
    if masks is None:
        work.eval()
        return MethodResult(work, mask_budget.used, True, {"note": "budget hit while computing the saliency mask"})
    params = list(work.parameters())
    originals = [p.detach().clone() for p in params]
    hooks = [p.register_hook(lambda g, m=m: g * m) for p, m in zip(params, masks)]
    optimizers = []

    @torch.no_grad()
    def restore_masked():
        for p, m, p0 in zip(params, masks, originals):
            p.copy_(torch.where(m, p, p0))
        for opt in optimizers:
            for p, m in zip(params, masks):
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(m)

    remaining = None if context.max_samples is None else context.max_samples - mask_budget.used
    try:
        result = relabel_training(model, forget_loader, retain_loader, settings,
                                  replace(context, max_samples=remaining), after_step=restore_masked, work=work,
                                  on_optimizer=optimizers.append)
    finally:
        for h in hooks:
            h.remove()
    moved = sum(int(m.sum()) for m in masks)
    result.samples_processed += mask_budget.used
    result.details.update({"mask_share": float(settings["mask_share"]), "weights_free": moved,
                           "weights_total": sum(p.numel() for p in params)})
    return result
