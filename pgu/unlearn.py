"""One call of Projected-Gradient Unlearning (METHOD.md sections 2 to 6).

``unlearn(model, forget_loader, stats)`` performs one deletion request:

1. the forget pass: ``G_w(D_f)`` with the model's current weights (same preprocessing as
   ``stats``), and the retain statistics ``G(D_r) = stats - G_w(D_f)`` (section 2, 7);
2. the Core Gradient Space of each layer from ``G(D_r)`` (section 3);
3. epochs over D_f minimising :func:`~pgu.losses.forget_loss` (section 5; for poisoned samples,
   ``mode="poison"``, :func:`~pgu.losses.depoison_loss` of section 8) with SGD whose every
   weight change is projected orthogonal to the CGS (section 4; :class:`ProjectedOptimizer`
   keeps that true under momentum and weight decay), learning rate decaying per epoch as
   ``lr_e = lr0 (lr1/lr0)^(e/E)``, BatchNorm in eval mode throughout;
4. stopping by the rule of section 6, an epoch cap, or a compute budget.

Only D_f (and a held-out val set for the stopping rule) is read: no retain data. The input
model and statistics are never modified unless ``inplace=True`` and the request succeeds; a
request that fails (bad input, a loss that turns non-finite) leaves everything as it was.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .evaluation import accuracy, split_batch
from .losses import depoison_loss, forget_loss
from .modes import unlearning_mode
from .projection import GradientProjector, ProjectedOptimizer
from .stats import GramStats, _model_device
from .stopping import ClassRemovalStop, NoStop, PoisonRemovalStop, SampleRemovalStop, StopDecision
from .subspace import CoreGradientSpace

__all__ = ["unlearn", "UnlearnResult", "lr_schedule"]


@dataclass
class UnlearnResult:
    """What one request produced.

    Attributes:
        model: the unlearned model (a new copy unless ``inplace=True``).
        retain_stats: statistics of the data the model still retains, for the next request.
        forget_stats: ``G_w(D_f)`` taken with the weights before this request.
        cgs: the fitted :class:`CoreGradientSpace` (ranks per layer in ``cgs.rank_``).
        forget_outside_cgs: per layer, the share of D_f's input energy outside the CGS
            (:meth:`CoreGradientSpace.outside_share`): near 0, the projected updates can barely
            change how that layer responds to D_f.
        epochs: epochs of updates run (a partial epoch cut by the budget counts).
        kept_epoch: the epoch whose weights ``model`` holds (0 = the input weights).
        stop_reason: a key of :data:`pgu.stopping.STOP_REASONS`.
        history: one dict per evaluation: epoch, lr, loss, forget_acc, val_acc, samples.
        samples_processed: forget samples passed forward and backward.
        seconds: wall-clock seconds of ``forget_stats``, ``subspace``, ``unlearning``, ``total``.
    """

    model: nn.Module
    retain_stats: GramStats
    forget_stats: GramStats
    cgs: CoreGradientSpace
    epochs: int
    kept_epoch: int
    stop_reason: str
    history: list[dict] = field(default_factory=list)
    samples_processed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    forget_outside_cgs: dict[str, float | None] = field(default_factory=dict)


def lr_schedule(lr, epochs: int) -> list[float]:
    """Per-epoch learning rates: ``lr0 (lr1/lr0)^(e/E)`` for ``e = 0..E-1`` (a float: constant).

    Training epoch ``e + 1`` uses the rate of ``e``: the first epoch runs at ``lr0``, and ``lr1``
    is the rate an epoch ``E + 1`` would get (METHOD.md section 6).
    """
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        lr0 = lr1 = float(lr)
    else:
        try:
            lr0, lr1 = (float(v) for v in lr)
        except (TypeError, ValueError):
            raise ValueError(f"lr must be a positive number or a pair (lr0, lr1), got {lr!r}") from None
    if not (lr0 > 0 and lr1 > 0 and math.isfinite(lr0) and math.isfinite(lr1)):
        raise ValueError(f"learning rates must be positive and finite, got {lr!r}")
    return [lr0 * (lr1 / lr0) ** (e / epochs) for e in range(epochs)]


def _validate(epochs, momentum, weight_decay, stop, mode, max_samples, forget_loader, val_loader):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if stop not in ("auto", "none"):
        raise ValueError(f"stop must be 'auto' (METHOD.md section 6) or 'none' (run every epoch), got {stop!r}")
    if mode not in ("sample", "class", "poison"):
        raise ValueError(f"mode must be 'sample' (some samples), 'class' (whole classes) or 'poison' (poisoned samples, "
                         f"with the labels they were trained with), got {mode!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    for name, loader in (("forget_loader", forget_loader), ("val_loader", val_loader)):
        if loader is not None and iter(loader) is loader:
            raise ValueError(f"{name} is a one-shot iterator; unlearning passes over it several times, so give a "
                             f"re-iterable loader (a DataLoader, a list of batches, pgu.data.TensorLoader)")
    if stop == "auto" and mode == "sample" and val_loader is None:
        raise ValueError(
            "stop='auto' with mode='sample' stops when forget accuracy falls below held-out accuracy, "
            "so it needs val_loader (held-out data the model never trained on); or pass stop='none'"
        )
    if stop == "auto" and mode == "poison" and val_loader is None:
        raise ValueError("stop='auto' with mode='poison' guards held-out accuracy while it removes the poison, so it "
                         "needs val_loader (clean held-out data the model never trained on); or pass stop='none'")


def unlearn(
    model: nn.Module,
    forget_loader,
    stats: GramStats,
    *,
    val_loader=None,
    threshold=0.9,
    rule: str = "pgu",
    epochs: int = 100,
    lr=(0.1, 0.01),
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    offset: float | None = None,
    entropy_weight: float = 0.2,
    stop: str = "auto",
    mode: str = "sample",
    max_samples: int | None = None,
    bias: str = "frozen",
    class_forget_floor: float = 1.0,
    poison_floor: float = 1.0,
    poison_patience: int | None = 5,
    poison_min_drop: float = 0.5,
    max_val_drop: float | None = 5.0,
    inplace: bool = False,
    progress: bool = False,
) -> UnlearnResult:
    """Make ``model`` forget the samples ``forget_loader`` yields, with PGU.

    Args:
        model: the trained classifier (any net whose trainable weights sit in Conv2d/Linear).
        forget_loader: re-iterable, yields ``(inputs, targets)`` batches of D_f with the same
            preprocessing as the statistics pass (one epoch = one pass).
        stats: statistics of the data the model currently retains (``GramStats`` of the full
            training set for a first request; ``result.retain_stats`` of the previous one after).
        val_loader: held-out ``(inputs, targets)`` for the stopping rule (never the test split).
        threshold, rule, bias: the CGS (see :class:`CoreGradientSpace`).
        epochs: cap on epochs over D_f. lr: ``(lr0, lr1)`` exponential per-epoch decay, or a float.
        momentum, weight_decay: SGD settings; the weight change stays orthogonal for any value.
        offset, entropy_weight: ``delta`` and ``lambda`` of the loss (``offset`` default: the
            authors' 0.05, and 0.1 for ``mode="poison"``).
        stop: ``"auto"`` (section 6 rule for ``mode``) or ``"none"`` (run every epoch).
        mode: ``"sample"`` (needs ``val_loader`` under ``stop="auto"``), ``"class"``, or
            ``"poison"``: the forget set is poisoned training samples with the (wrong) labels they
            were trained with; the depoisoning loss and :class:`~pgu.stopping.PoisonRemovalStop`
            (needs ``val_loader``, clean held-out data) replace the forget loss and the sample rule.
        max_samples: compute budget in forget samples processed (forward + backward; the
            per-epoch evaluations are not counted); a batch that would exceed it is not run and
            the request stops with reason ``"budget"`` unless the stopping rule stops it first.
            For a share ``s`` of the training run's compute pass ``int(s * samples_seen)``.
        class_forget_floor: the class-removal rule's floor (percent). poison_floor: the poison rule's
            floor (percent of poisoned samples still predicted with their poisoned label).
            poison_patience, poison_min_drop: its plateau (once that share is at most half its
            start, stop when it fell by less than ``poison_min_drop`` points over the last
            ``poison_patience`` epochs; ``poison_patience=None``: no plateau).
            max_val_drop: points of held-out accuracy either rule lets go before it stops and
            keeps the previous epoch (``None``: the authors' sample rule alone; the class and
            poison rules need a number).
        inplace: write the result into ``model`` (only when the request succeeds).
        progress: show a tqdm bar over epochs.
    """
    t_start = time.perf_counter()
    _validate(epochs, momentum, weight_decay, stop, mode, max_samples, forget_loader, val_loader)
    if max_val_drop is None and mode in ("class", "poison") and stop == "auto":
        raise ValueError(f"the {mode}-removal rule needs max_val_drop (points of held-out accuracy it may lose)")
    if max_val_drop is not None and not max_val_drop >= 0:
        raise ValueError(f"max_val_drop must be >= 0 points, got {max_val_drop}")
    learning_rates = lr_schedule(lr, epochs)
    # The stopping rule validates its settings before any work is done.
    if stop == "none":
        rule_ = NoStop()
    elif mode == "sample":
        rule_ = SampleRemovalStop(max_val_drop)
    elif mode == "poison":
        rule_ = PoisonRemovalStop(poison_floor, max_val_drop, poison_patience, poison_min_drop)
    else:
        rule_ = ClassRemovalStop(class_forget_floor, max_val_drop)
    if not isinstance(stats, GramStats):
        raise TypeError(f"stats must be GramStats (fit on the training set), got {type(stats).__name__}")
    stats.check_model(model)
    loss_fn = depoison_loss if mode == "poison" else forget_loss
    if offset is None:
        offset = 0.1 if mode == "poison" else 0.05
    loss_fn(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), offset, entropy_weight)  # validates both

    work = copy.deepcopy(model)
    device = _model_device(work)

    # 1. Forget pass with the current weights; the targets tell which classes are forgotten.
    targets_seen = []

    def forget_inputs():
        for batch in forget_loader:
            x, y = split_batch(batch, "forget_loader")
            targets_seen.append(y)
            yield x

    # The forget pass runs the model over D_f with the current weights: its predictions give the
    # epoch-0 forget accuracy without a second pass (used when they cover D_f exactly once).
    predictions = []

    def keep_predictions(module, args, output):
        if isinstance(output, torch.Tensor) and output.dim() == 2:
            predictions.append(output.detach().argmax(1).cpu())

    t0 = time.perf_counter()
    handle = work.register_forward_hook(keep_predictions)
    try:
        # Same layers and precision as the statistics it is subtracted from.
        forget_stats = GramStats(stats.layer_names, precision=stats.precision).fit(work, forget_inputs())
    finally:
        handle.remove()
    retain_stats = stats - forget_stats
    forget_classes = sorted({int(c) for c in torch.cat(targets_seen).tolist()})
    t_forget = time.perf_counter() - t0

    # 2. Core Gradient Space.
    t0 = time.perf_counter()
    cgs = CoreGradientSpace(threshold, rule, bias).fit(retain_stats)
    forget_outside = cgs.outside_share(forget_stats)
    t_subspace = time.perf_counter() - t0

    # 3-4. Projected epochs over D_f.
    t0 = time.perf_counter()
    projector = GradientProjector(work, cgs)
    sgd = torch.optim.SGD(projector.projected_params, lr=learning_rates[0], momentum=momentum, weight_decay=weight_decay)
    optimizer = ProjectedOptimizer(sgd, projector)
    exclude = forget_classes if mode == "class" else ()

    def evaluate():
        a_f = accuracy(work, forget_loader, what="forget_loader")
        a_v = None if val_loader is None else accuracy(work, val_loader, exclude_classes=exclude, what="val_loader")
        return a_f, a_v

    targets = torch.cat(targets_seen).cpu()
    predicted = torch.cat(predictions) if predictions else None
    if predicted is not None and predicted.shape == targets.shape:
        a_f = 100.0 * float((predicted == targets).double().mean())
        a_v = None if val_loader is None else accuracy(work, val_loader, exclude_classes=exclude, what="val_loader")
    else:
        a_f, a_v = evaluate()
    if isinstance(rule_, (SampleRemovalStop, PoisonRemovalStop)) and a_v is None:
        raise ValueError(f"val_loader yielded no samples; the {mode}-removal stopping rule needs held-out data")
    history = [{"epoch": 0, "lr": None, "loss": None, "forget_acc": a_f, "val_acc": a_v, "samples": 0}]
    decision: StopDecision | None = rule_.start(a_f, a_v)
    processed, epochs_run, kept_epoch = 0, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="PGU unlearning", leave=False)
    try:
        with unlearning_mode(work):
            for epoch, lr_e in enumerate(learning_rates, start=1):
                if decision is not None:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_e
                # Only the stopping rules may ask for the previous epoch's weights back.
                previous = None if stop == "none" else [p.detach().clone() for p in projector.projected_params]
                loss_sum, seen, budget_hit = 0.0, 0, False
                for batch in forget_loader:
                    x, y = split_batch(batch, "forget_loader")
                    if x.shape[0] == 0:
                        continue
                    if max_samples is not None and processed + x.shape[0] > max_samples:
                        budget_hit = True
                        break
                    x, y = x.to(device), y.to(device)
                    loss = loss_fn(work(x), y, offset, entropy_weight)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"the forget loss became {loss.item()} in epoch {epoch}; the model was left unchanged. "
                            f"Lower the learning rate (lr={lr!r})."
                        )
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item() * x.shape[0]
                    seen += x.shape[0]
                    processed += x.shape[0]
                if seen == 0:
                    if not budget_hit:
                        raise ValueError(f"forget_loader yielded no samples in epoch {epoch}; it must yield the "
                                         f"forget set on every pass")
                    decision = StopDecision("budget")
                    break
                epochs_run, kept_epoch = epoch, epoch
                if not all(torch.isfinite(p).all() for p in projector.projected_params):
                    raise FloatingPointError(
                        f"weights became non-finite in epoch {epoch}; the model was left unchanged. Lower the learning rate."
                    )
                a_f, a_v = evaluate()
                history.append({"epoch": epoch, "lr": lr_e, "loss": loss_sum / seen, "forget_acc": a_f,
                                "val_acc": a_v, "samples": processed})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(forget=f"{a_f:.1f}", val="-" if a_v is None else f"{a_v:.1f}")
                decision = rule_.after_epoch(a_f, a_v)
                if decision is None and budget_hit:
                    decision = StopDecision("budget")
                if decision is not None and decision.keep_previous and previous is not None:
                    with torch.no_grad():
                        for p, old in zip(projector.projected_params, previous):
                            p.copy_(old)
                    kept_epoch = epoch - 1
    finally:
        if bar is not None:
            bar.close()
    stop_reason = decision.reason if decision is not None else "max_epochs"
    t_unlearn = time.perf_counter() - t0

    if inplace:
        model.load_state_dict(work.state_dict())
        work = model
    return UnlearnResult(
        model=work,
        retain_stats=retain_stats,
        forget_stats=forget_stats,
        cgs=cgs,
        epochs=epochs_run,
        kept_epoch=kept_epoch,
        stop_reason=stop_reason,
        history=history,
        samples_processed=processed,
        forget_outside_cgs=forget_outside,
        seconds={"forget_stats": t_forget, "subspace": t_subspace, "unlearning": t_unlearn,
                 "total": time.perf_counter() - t_start},
    )
