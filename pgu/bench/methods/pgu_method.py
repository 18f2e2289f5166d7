"""PGU behind the common interface: ``pgu`` (the authors' k rule), ``pgu-energy`` (the GPM rule) and
``pgu-heldout`` (sample requests aimed at held-out behaviour, :mod:`pgu.heldout`; other requests run as ``pgu``).

All call :func:`pgu.unlearn` with the request's statistics (``context.stats``), its val
loader for the stopping rule and its mode; data-free. ``settings`` is a
:class:`pgu.PGUSettings` as a dict (:meth:`~pgu.PGUSettings.to_dict`); the rate and
threshold of the request's mode come from :meth:`pgu.PGUSettings.for_mode`, so poisoned
samples (docs/method.md section 8) run at the authors' depoisoning values. ``extras["retain_stats"]``
holds the statistics of what the model retains afterwards, for the next request.
"""

from __future__ import annotations

from pgu.bench.methods.base import MethodContext, MethodInfo, MethodResult, register
from pgu.data import TensorLoader
from pgu.heldout import ANCHOR_WEIGHT, prepare_heldout, request_anchor, request_batching
from pgu.settings import PGUSettings
from pgu.unlearn import unlearn

__all__ = ["run_pgu", "run_pgu_heldout", "PGU_VARIANTS", "VARIANT_EXTRAS"]

PGU_VARIANTS = ("pgu", "pgu-energy", "pgu-heldout")
"""The methods whose settings are a :class:`pgu.PGUSettings` (``settings.toml`` holds what a variant changes)."""

VARIANT_EXTRAS = {"pgu-heldout": {"anchor_weight": ANCHOR_WEIGHT}}
"""Settings of a variant beyond :class:`pgu.PGUSettings`'s fields, with their defaults."""


def run_pgu(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    return _run(model, forget_loader, PGUSettings.from_dict(settings), context, val_loader=context.val_loader)


def run_pgu_heldout(model, forget_loader, retain_loader, settings: dict, context: MethodContext) -> MethodResult:
    """``pgu-heldout`` (:mod:`pgu.heldout`) on a sample request; any other request runs as ``pgu``."""
    settings = dict(settings)
    extras = {k: settings.pop(k, v) for k, v in VARIANT_EXTRAS["pgu-heldout"].items()}
    pgu_settings = PGUSettings.from_dict(settings)
    if context.forget_mode != "sample":
        return _run(model, forget_loader, pgu_settings, context, val_loader=context.val_loader)
    if context.val_loader is None:
        raise ValueError("pgu-heldout aims at held-out behaviour: it needs the val loader (context.val_loader)")
    weight, anchor_batch = extras["anchor_weight"], None
    if isinstance(forget_loader, TensorLoader):  # a small request: smaller batches, rates and anchor scaled with them
        batch, lr = request_batching(forget_loader.n_samples, forget_loader.batch_size, pgu_settings.lr)
        weight, anchor_batch = request_anchor(batch, forget_loader.batch_size, weight)
        if batch != forget_loader.batch_size:
            forget_loader = TensorLoader(forget_loader.x, forget_loader.y, batch, shuffle=forget_loader.shuffle,
                                         seed=forget_loader.seed)
            pgu_settings = pgu_settings.replace(lr=lr)
    request = prepare_heldout(model, forget_loader, context.val_loader, anchor_weight=weight,
                              anchor_batch=anchor_batch, seed=context.seed, reference=context.reference)
    result = _run(model, forget_loader, pgu_settings, context, val_loader=request.val_loader, loss=request.loss,
                  stop=request.stop)
    result.details.update({"target_FA": round(request.target, 4), "tolerance": round(request.tolerance, 4),
                           "anchor_samples": request.loss.anchor_samples})
    result.samples_processed += request.loss.anchor_samples
    return result


def _run(model, forget_loader, settings: PGUSettings, context: MethodContext, *, val_loader, loss=None,
         stop="auto") -> MethodResult:
    if context.stats is None:
        raise ValueError("pgu needs the Gram statistics of the data the model retains (context.stats): take them "
                         "once with GramStats().fit(model, train_loader)")
    result = unlearn(model, forget_loader, context.stats, val_loader=val_loader, mode=context.forget_mode,
                     settings=settings, stop=stop, loss=loss, max_samples=context.max_samples,
                     progress=context.progress)
    details = {"stop_reason": result.stop_reason, "epochs": result.epochs, "kept_epoch": result.kept_epoch,
               "kept_share": result.kept_share, "line_search": result.line_search,
               "samples_processed": result.samples_processed, "hit_budget": result.stop_reason == "budget",
               "seconds": {k: round(v, 4) for k, v in result.seconds.items()}, "history": result.history,
               "ranks": result.cgs.summary(),
               "forget_outside_cgs": {k: None if v is None else round(v, 6)
                                      for k, v in result.forget_outside_cgs.items()}}
    return MethodResult(result.model, result.samples_processed, result.stop_reason == "budget", details,
                        extras={"retain_stats": result.retain_stats})


register(MethodInfo("pgu", data_free=True,
                    summary="projected-gradient unlearning: forget-set updates orthogonal to the retained inputs' "
                            "space",
                    reference="Hoang et al. WACV 2024, 'Learn to Unlearn for Deep Neural Networks: Minimizing "
                              "Unlearning Interference with Gradient Projection'"))(run_pgu)
register(MethodInfo("pgu-energy", data_free=True,
                    summary="PGU with the GPM energy rule for the subspace size",
                    reference="Hoang et al. WACV 2024; the k rule of GPM, Saha et al. ICLR 2021 (Eq. 5)"))(run_pgu)
register(MethodInfo("pgu-heldout", data_free=True,
                    summary="PGU for sample requests: forget margins moved to held-out ones, held-out outputs "
                            "anchored, stopped at the held-out target (pgu.heldout)",
                    reference="this project, a variant of Hoang et al. WACV 2024"))(run_pgu_heldout)
