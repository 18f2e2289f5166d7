"""PGU behind the common interface: ``pgu`` (the authors' k rule) and ``pgu-energy`` (the GPM rule).

Both call :func:`pgu.unlearn.unlearn` with the request's statistics (``context.stats``), its
val loader for the stopping rule and its mode; data-free. For poisoned samples
(``forget_mode="poison"``, METHOD.md section 8) the depoisoning loss and rule run with the
settings' ``poison_lr`` and (``pgu``) ``poison_threshold``, the authors' depoisoning values. ``extras["retain_stats"]`` holds the
statistics of what the model retains afterwards, for the next request.
"""

from __future__ import annotations

from ..unlearn import unlearn
from .base import MethodContext, MethodInfo, MethodResult, register

__all__ = ["run_pgu"]


def run_pgu(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    if context.stats is None:
        raise ValueError("pgu needs the Gram statistics of the data the model retains (context.stats): take them "
                         "once with GramStats().fit(model, train_loader)")
    lr = settings["class_lr"] if context.forget_mode == "class" and settings.get("class_lr") else settings["lr"]
    threshold = settings["threshold"]
    if context.forget_mode == "poison":
        lr = settings.get("poison_lr", lr)
        threshold = settings.get("poison_threshold", threshold)
    result = unlearn(model, forget_loader, context.stats, val_loader=context.val_loader,
                     threshold=float(threshold), rule=settings["rule"], lr=tuple(lr),
                     epochs=int(settings["epochs"]), mode=context.forget_mode, max_samples=context.max_samples,
                     progress=context.progress)
    details = {"stop_reason": result.stop_reason, "epochs": result.epochs, "kept_epoch": result.kept_epoch,
               "samples_processed": result.samples_processed, "hit_budget": result.stop_reason == "budget",
               "seconds": {k: round(v, 4) for k, v in result.seconds.items()}, "history": result.history,
               "ranks": result.cgs.summary(),
               "forget_outside_cgs": {k: None if v is None else round(v, 6) for k, v in result.forget_outside_cgs.items()}}
    return MethodResult(result.model, result.samples_processed, result.stop_reason == "budget", details,
                        extras={"retain_stats": result.retain_stats})


register(MethodInfo("pgu", data_free=True,
                    summary="projected-gradient unlearning: forget-set updates orthogonal to the retained inputs' space",
                    reference="Hoang et al. WACV 2024, 'Learn to Unlearn for Deep Neural Networks: Minimizing "
                              "Unlearning Interference with Gradient Projection'"))(run_pgu)
register(MethodInfo("pgu-energy", data_free=True,
                    summary="PGU with the GPM energy rule for the subspace size",
                    reference="Hoang et al. WACV 2024; the k rule of GPM, Saha et al. ICLR 2021 (Eq. 5)"))(run_pgu)
