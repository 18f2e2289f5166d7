"""Gradient baselines: fine-tuning on D_r, gradient ascent on D_f, and training on random labels.

* ``finetune`` (Golatkar et al. CVPR 2020; SalUn's FT): cross-entropy on D_r only.
* ``l1-sparse`` (Jia et al. NeurIPS 2023): ``finetune`` plus ``alpha_t ||w||_1`` with
  ``alpha_t`` decaying linearly from ``l1_alpha`` to 0 over the run.
* ``neggrad`` (gradient ascent, GA): minus the cross-entropy on D_f; data-free.
* ``neggrad+`` (Kurmanji et al. NeurIPS 2023): ``alpha CE(D_r) - (1 - alpha) CE(D_f)`` on a
  retain batch and a forget batch per step (the forget loader cycles when shorter).
* ``random-label`` (Graves et al. AAAI 2021; SalUn's RL): each epoch a pass over D_f
  relabelled with a uniformly drawn wrong class per sample (redrawn every epoch), then a pass
  over D_r with its own labels, as SalUn's code runs RL on CIFAR-10.

Weights of every parameter move; BatchNorm runs in training mode, as the authors' code does.
"""

from __future__ import annotations

import itertools

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
    require_retain,
)
from pgu.bench.methods.loops import make_sgd, run_epochs

__all__ = ["random_wrong_labels"]


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label ``!= y`` for each sample, uniform over the other ``num_classes - 1`` classes."""
    if num_classes < 2:
        raise ValueError("random wrong labels need at least two classes")
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


def _train(model, settings: dict, context: MethodContext, batch_losses, *, work=None, after_step=None,
           on_optimizer=None) -> MethodResult:
    """The shared run: a trainable copy (or ``work``), SGD from ``settings``, ``batch_losses(work, device, epoch,
    epochs)`` yielding ``(loss, samples)`` per step, the budget; the model comes back in eval mode."""
    if work is None:
        work, device = copy_for_unlearning(model)
    else:
        device = next(work.parameters()).device
    work.train()
    budget, optimizer = Budget(context.max_samples), make_sgd(work.parameters(), settings)
    if on_optimizer is not None:
        on_optimizer(optimizer)
    epochs = epochs_for(settings, context)
    info = run_epochs(work, optimizer, settings, epochs, budget,
                      lambda epoch: batch_losses(work, device, epoch, epochs), after_step=after_step)
    work.eval()
    return MethodResult(work, budget.used, budget.hit, info)


@register(MethodInfo("finetune", data_free=False, summary="fine-tune on the retain set only",
                     reference="Golatkar et al. CVPR 2020; SalUn (Fan et al. ICLR 2024) FT"))
def finetune(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "finetune")
    return _retain_training(model, retain_loader, settings, context, l1_alpha=0.0)


@register(MethodInfo("l1-sparse", data_free=False,
                     summary="fine-tune on the retain set with an l1 penalty decaying linearly to 0",
                     reference="Jia et al. NeurIPS 2023, 'Model Sparsity Can Simplify Machine Unlearning'"))
def l1_sparse(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "l1-sparse")
    alpha = float(settings["l1_alpha"])
    if not alpha >= 0:
        raise ValueError(f"l1_alpha must be >= 0, got {alpha}")
    return _retain_training(model, retain_loader, settings, context, l1_alpha=alpha)


def _retain_training(model, retain_loader, settings, context, l1_alpha: float) -> MethodResult:
    def losses(work, device, epoch, epochs):
        alpha_t = l1_alpha * (1 - epoch / epochs)  # linear decay over the run (Jia et al.)
        weights = [p for p in work.parameters() if p.dim() > 1]
        for x, y in batches(retain_loader, device, "retain_loader"):
            loss = F.cross_entropy(work(x), y)
            if alpha_t:
                loss = loss + alpha_t * sum(w.abs().sum() for w in weights)
            yield loss, x.shape[0]

    return _train(model, settings, context, losses)


@register(MethodInfo("neggrad", data_free=True, summary="gradient ascent on the forget set (GA)",
                     reference="Golatkar et al. CVPR 2020; Thudi et al. 2022; SalUn (Fan et al. ICLR 2024) GA"))
def neggrad(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    def losses(work, device, epoch, epochs):
        for x, y in batches(forget_loader, device, "forget_loader"):
            yield -F.cross_entropy(work(x), y), x.shape[0]

    return _train(model, settings, context, losses)


def _paired(retain_loader, forget_loader, device):
    """One epoch over the retain loader, each retain batch paired with the next forget batch (cycling D_f)."""
    forget = itertools.cycle(list(batches(forget_loader, device, "forget_loader")))
    for xr, yr in batches(retain_loader, device, "retain_loader"):
        xf, yf = next(forget)
        yield xr, yr, xf, yf


@register(MethodInfo("neggrad+", data_free=False,
                     summary="descent on the retain set with ascent on the forget set, weighted by alpha",
                     reference="Kurmanji et al. NeurIPS 2023, 'Towards Unbounded Machine Unlearning' (NegGrad+)"))
def neggrad_plus(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "neggrad+")
    alpha = float(settings["alpha"])
    if not 0 <= alpha <= 1:
        raise ValueError(f"neggrad+ alpha must lie in [0, 1], got {alpha}")
    def losses(work, device, epoch, epochs):
        for xr, yr, xf, yf in _paired(retain_loader, forget_loader, device):
            loss = alpha * F.cross_entropy(work(xr), yr) - (1 - alpha) * F.cross_entropy(work(xf), yf)
            yield loss, xr.shape[0] + xf.shape[0]

    return _train(model, settings, context, losses)


@register(MethodInfo("random-label", data_free=False,
                     summary="train on the forget set relabelled with random wrong classes, with the retain set",
                     reference="Graves et al. AAAI 2021 (amnesiac unlearning); SalUn (Fan et al. ICLR 2024) RL"))
def random_label(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "random-label")
    return relabel_training(model, forget_loader, retain_loader, settings, context)


def relabel_training(model, forget_loader, retain_loader, settings: dict, context: MethodContext,
                     after_step=None, work=None, on_optimizer=None) -> MethodResult:
    """Random-label training as SalUn's RL runs it: each epoch one pass over D_f with fresh random wrong
    labels, then one pass over D_r with its labels. SalUn passes its masked copy as ``work``, its
    restore as ``after_step`` and ``on_optimizer`` to reach the optimizer's momentum."""
    generator = torch.Generator().manual_seed(context.seed)

    def losses(work, device, epoch, epochs):
        for x, y in batches(forget_loader, device, "forget_loader"):
            yield F.cross_entropy(work(x), random_wrong_labels(y, context.num_classes, generator)), x.shape[0]
        for x, y in batches(retain_loader, device, "retain_loader"):
            yield F.cross_entropy(work(x), y), x.shape[0]

    return _train(model, settings, context, losses, work=work, after_step=after_step, on_optimizer=on_optimizer)
