"""SCRUB (Kurmanji et al. NeurIPS 2023, "Towards Unbounded Machine Unlearning").

A student (the model being unlearned) and a frozen teacher (the original). Each epoch: in the
first ``max_steps`` epochs, a max pass over D_f that pushes the student's outputs away from the
teacher's (minus the temperature-``T`` KL divergence); then a min pass over D_r that keeps
them close (``gamma CE + alpha KL``). ``KL_T(s, t) = T^2 KL(softmax(t/T) || softmax(s/T))``,
averaged over the batch, as the authors' ``DistillKL``.
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
    require_retain,
)
from pgu.bench.methods.loops import make_sgd, run_epochs

__all__ = ["distill_kl"]


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(t/T) || softmax(s/T))`` summed over classes, mean over the batch."""
    t = temperature
    log_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="sum") * t * t / student_logits.shape[0]


@register(MethodInfo("scrub", data_free=False,
                     summary="teacher-student distillation: max steps away from the teacher on D_f, min steps on D_r",
                     reference="Kurmanji et al. NeurIPS 2023, 'Towards Unbounded Machine Unlearning' (SCRUB)"))
def scrub(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    require_retain(retain_loader, "scrub")
    t, alpha, gamma = float(settings["temperature"]), float(settings["alpha"]), float(settings["gamma"])
    max_steps = int(settings["max_steps"])
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    teacher, device = copy_for_unlearning(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student, _ = copy_for_unlearning(model)
    student.train()
    budget = Budget(context.max_samples)

    def losses(epoch):  # epoch from 0: a max pass over D_f in the first max_steps epochs, then a min pass over D_r
        if epoch < max_steps:
            for x, _ in batches(forget_loader, device, "forget_loader"):
                with torch.no_grad():
                    target = teacher(x)
                yield -distill_kl(student(x), target, t), x.shape[0]
        for x, y in batches(retain_loader, device, "retain_loader"):
            with torch.no_grad():
                target = teacher(x)
            logits = student(x)
            yield gamma * F.cross_entropy(logits, y) + alpha * distill_kl(logits, target, t), x.shape[0]

    info = run_epochs(student, make_sgd(student.parameters(), settings), settings, epochs_for(settings, context),
                      budget, losses)
    student.eval()
    return MethodResult(student, budget.used, budget.hit, info)
