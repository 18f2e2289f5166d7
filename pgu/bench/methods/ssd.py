"""Selective Synaptic Dampening (Foster et al. AAAI 2024): one shot, no training.

Importances are diagonal Fisher estimates as the authors compute them: the mean over batches
of the squared gradient of the batch's mean cross-entropy, for every parameter, model in eval
mode; ``I_f`` over D_f, ``I_D`` over all the training data, in batches mixed as a shuffled
loader of D gives them (:class:`mixed_batches`).
Where ``I_f > alpha I_D`` a parameter is multiplied by ``beta = min(lambda I_D / I_f, 1)``;
elsewhere it is left alone. Needs D_r (for ``I_D``).
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
    gradient_sums,
    register,
    require_retain,
)

__all__ = ["batch_fisher", "dampen_", "mixed_batches"]


def batch_fisher(model, batch_iter, budget: Budget) -> tuple[list[torch.Tensor], int, bool]:
    """Mean over the batches of each parameter's squared batch gradient, the batch count, and whether all were read."""
    sums, count, complete = gradient_sums(model, batch_iter, budget, F.cross_entropy, square=True)
    return [t / max(count, 1) for t in sums], count, complete


class mixed_batches:
    """Batches of all of D as a shuffled loader of D would give them: each retain batch joined by its
    share of forget samples (``round(b N_f / N_r)``, cycling through D_f in a seeded order).

    The share matters: with whole forget batches beside retain ones, ``I_D`` would hold at least
    ``N_f / N`` of ``I_f`` and, with 10% of D forgotten, ``I_f > 10 I_D`` could never hold.
    """

    def __init__(self, retain_loader, forget_loader, device, seed: int):
        self.retain_loader, self.forget_loader, self.device, self.seed = retain_loader, forget_loader, device, seed

    def __iter__(self):
        forget = list(batches(self.forget_loader, self.device, "forget_loader"))
        n_retain = getattr(self.retain_loader, "n_samples", None)
        if n_retain is None:
            n_retain = sum(int(b[0].shape[0]) for b in self.retain_loader)
        if not forget or not n_retain:
            yield from batches(self.retain_loader, self.device, "retain_loader")
            return
        xf, yf = torch.cat([b[0] for b in forget]), torch.cat([b[1] for b in forget])
        order = torch.randperm(len(yf), generator=torch.Generator().manual_seed(self.seed)).to(yf.device)
        cursor, share = 0, len(yf) / n_retain
        for xr, yr in batches(self.retain_loader, self.device, "retain_loader"):
            k = int(round(len(yr) * share))
            idx = order[(cursor + torch.arange(k, device=yf.device)) % len(yf)]
            cursor += k
            yield torch.cat([xr, xf[idx]]), torch.cat([yr, yf[idx]])


@torch.no_grad()
def dampen_(params, forget_importance, data_importance, alpha: float, lam: float) -> int:
    """Multiply each selected parameter (``I_f > alpha I_D``) by ``min(lam I_D / I_f, 1)``; returns how many."""
    selected = 0
    for p, i_f, i_d in zip(params, forget_importance, data_importance):
        mask = i_f > alpha * i_d
        beta = (lam * i_d / i_f.clamp_min(torch.finfo(i_f.dtype).tiny)).clamp(max=1.0)
        p.mul_(torch.where(mask, beta, torch.ones_like(beta)))
        selected += int(mask.sum())
    return selected


@register(MethodInfo("ssd", data_free=False,
                     summary="dampen the weights far more important to D_f than to D (diagonal Fisher), one shot",
                     reference="Foster et al. AAAI 2024, 'Fast Machine Unlearning Without Retraining Through "
                               "Selective Synaptic Dampening'"))
def ssd(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "ssd")
    alpha, lam = float(settings["alpha"]), float(settings["lambda"])
    if alpha <= 0 or lam <= 0:
        raise ValueError(f"ssd needs alpha > 0 and lambda > 0, got {alpha} and {lam}")
    work, device = copy_for_unlearning(model)
    work.eval()
    budget = Budget(context.max_samples)
    i_f, n_f, _ = batch_fisher(work, batches(forget_loader, device, "forget_loader"), budget)
    i_d, n_d, _ = batch_fisher(work, mixed_batches(retain_loader, forget_loader, device, context.seed), budget)
    if budget.hit:  # importances over part of the data would dampen the wrong weights: leave the model alone
        return MethodResult(work, budget.used, True, {"selected": 0, "note": "budget hit before the importances"})
    params = list(work.parameters())
    selected = dampen_(params, i_f, i_d, alpha, lam)
    total = sum(p.numel() for p in params)
    return MethodResult(work, budget.used, False, {"selected": selected, "parameters": total,
                                                   "forget_batches": n_f, "data_batches": n_d})
