"""One call of Projected-Gradient Unlearning (docs/method.md sections 2 to 6).

``unlearn(model, forget_loader, stats)`` performs one deletion request:

1. the forget pass: ``G_w(D_f)`` with the model's current weights (same preprocessing as
   ``stats``), and the retain statistics ``G(D_r) = stats - G_w(D_f)`` (section 2, 7);
2. the Core Gradient Space of each layer from ``G(D_r)`` (section 3);
3. the projected epochs over D_f minimising the loss (:class:`~pgu.losses.ForgetLoss`, section 5;
   for poisoned samples, ``mode="poison"``, :class:`~pgu.losses.DepoisonLoss` of section 8) with
   SGD whose every weight change is projected orthogonal to the CGS (section 4;
   :class:`ProjectedOptimizer` keeps that true under momentum and weight decay), learning rate
   decaying per epoch as ``lr_e = lr0 (lr1/lr0)^(e/E)``, BatchNorm in eval mode throughout,
   until the stopping rule (section 6; :mod:`pgu.stopping`), the epoch cap or a compute budget
   stops them. A rule's stop may keep the previous epoch, or ask for a line search along the
   last epoch's update (:class:`~pgu.stopping.StopDecision`'s ``aim``; the authors' rules never do).

The settings are a :class:`pgu.PGUSettings` (one request runs with
:meth:`~pgu.PGUSettings.for_mode`); the stopping rule and the loss are objects, each chosen by
``mode`` unless given (:func:`pgu.stopping.default_rule`, :func:`pgu.losses.default_loss`).

Only D_f (and a held-out val set for the stopping rule) is read: no retain data. The input
model and statistics are never modified unless ``inplace=True`` and the request succeeds; a
request that fails (bad input, a loss that turns non-finite) leaves everything as it was.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from pgu import data_parallel
from pgu import distributed as ranks
from pgu.cgs_anchor import CGSAnchor
from pgu.coverage import coverage
from pgu.evaluation import accuracy, split_batch
from pgu.losses import default_loss
from pgu.modes import unlearning_mode
from pgu.outputs import check_output_selector, logits_output
from pgu.projection import GradientProjector, ProjectedOptimizer
from pgu.settings import PGUSettings, check_mode, check_schedule
from pgu.stats import GramStats
from pgu.stats_pass import model_device
from pgu.stopping import NoStop, StopDecision, StoppingRule, default_rule
from pgu.subspace import CoreGradientSpace

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
        kept_share: the share ``t`` of the kept epoch's update that ``model`` holds (1 unless a line
            search, :class:`pgu.stopping.StopDecision`'s ``aim``, stopped part-way along it).
        anchor: with ``anchor=``, the :class:`~pgu.cgs_anchor.CGSAnchor` of the next request (the forget energy
            of this one added); None otherwise.
        line_search: None, or what that search measured: ``share``, ``aim``, the ``forget_acc`` and
            ``val_acc`` kept, and every ``probes`` entry ``[t, forget_acc]`` (ends included).
        stop_reason: a key of :data:`pgu.stopping.STOP_REASONS`.
        history: one dict per evaluation: epoch, lr, loss, forget_acc, val_acc, samples.
        samples_processed: forget samples passed forward and backward.
        seconds: wall-clock seconds of ``forget_stats``, ``subspace``, ``unlearning``, ``total``, and ``val``: the
            part of ``unlearning`` spent scoring val for the stopping rule.
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
    kept_share: float = 1.0
    line_search: dict | None = None
    anchor: CGSAnchor | None = None


def lr_schedule(lr, epochs: int) -> list[float]:
    """Per-epoch learning rates: ``lr0 (lr1/lr0)^(e/E)`` for ``e = 0..E-1`` (a float: constant).

    Training epoch ``e + 1`` uses the rate of ``e``: the first epoch runs at ``lr0``, and ``lr1``
    is the rate an epoch ``E + 1`` would get (docs/method.md section 6).
    """
    lr0, lr1 = check_schedule(lr)
    return [lr0 * (lr1 / lr0) ** (e / epochs) for e in range(epochs)]


def unlearn(model: nn.Module, forget_loader, stats: GramStats, *, val_loader=None, mode: str = "sample",
            settings: PGUSettings | None = None, stop: StoppingRule | str = "auto", loss=None,
            max_samples: int | None = None, inplace: bool = False, progress: bool = False, output=None,
            distributed: bool | None = None, val_acc_start: float | None = None, anchor: CGSAnchor | None = None,
            **overrides) -> UnlearnResult:
    """Make ``model`` forget the samples ``forget_loader`` yields, with PGU.

    Args:
        model: the trained classifier. Its covered layers' weights move (:func:`pgu.coverage.coverage`
            lists every trainable parameter); a warning names those frozen because pgu cannot project them.
        forget_loader: re-iterable, yields ``(inputs, targets)`` batches of D_f with the same
            preprocessing as the statistics pass (one epoch = one pass). For ``mode="poison"``
            the targets are the (wrong) labels the samples were trained with.
        stats: statistics of the data the model currently retains (``GramStats`` of the full
            training set for a first request; ``result.retain_stats`` of the previous one after).
        val_loader: held-out ``(inputs, targets)`` for the stopping rule (never the test split).
        mode: ``"sample"`` (some samples), ``"class"`` (whole classes) or ``"poison"``
            (poisoned samples): picks the rate and threshold (:meth:`PGUSettings.for_mode`), the
            default stopping rule and the default loss.
        settings: a :class:`PGUSettings` (default: the authors'); ``overrides`` (its field
            names: ``threshold=``, ``lr=``, ``epochs=``, ...) replace values of this request.
        stop: a stopping rule (:mod:`pgu.stopping`: ``start``/``after_epoch``), ``"auto"`` (the
            rule of ``mode``, :func:`pgu.stopping.default_rule`) or ``"none"`` (every epoch).
        loss: ``loss(logits, targets)``, default :func:`pgu.losses.default_loss` of ``mode``. A loss
            with a ``bind(model)`` method gets a bound copy of itself for the working model
            (:class:`pgu.heldout.HeldoutMatchLoss`, whose anchor term runs the model).
        max_samples: compute budget in forget samples processed (forward + backward; the
            per-epoch evaluations are not counted); a batch that would exceed it is not run and
            the request stops with reason ``"budget"`` unless the stopping rule stops it first.
            For a share ``s`` of the training run's compute pass ``int(s * samples_seen)``.
        inplace: write the result into ``model`` (only when the request succeeds).
        progress: show a tqdm bar over epochs.
        output: where the logits are in the model's output (:mod:`pgu.outputs`): None reads a tensor, a
            tuple's first element, a dict's ``"logits"`` or a ``.logits`` field; a callable maps the output
            to ``[batch, classes]`` logits (a sequence model: its reduction to one prediction per input).
        distributed: under ``torchrun`` (None: when a process group of several ranks is initialised) the
            request runs data-parallel: each rank's ``forget_loader`` yields its share of every batch, the
            forget statistics and accuracies are summed over ranks, each step's gradients are summed
            (weighted by share size) before the projection, and the eigendecompositions are dealt over the
            ranks; every rank ends with the same model. ``stats``, ``val_loader`` and settings must be the same
            on every rank.
        val_acc_start: the input model's accuracy on ``val_loader`` in percent, measured as the stopping rule
            measures it (``mode="class"``: the classes of D_f left out), when the caller already has it: the
            epoch-0 val pass is then skipped (a caller that scored val for its own guard, as
            :class:`pgu.store.ModelStore` does, need not score it twice). None: measured here.
        anchor: a :class:`~pgu.cgs_anchor.CGSAnchor` describing ``stats``: the CGS of its wide layers by first-order
            update of its eigendecompositions instead of exact ``eigh`` (a fast path; ``result.anchor`` serves the
            next request). None (default): exact ``eigh`` of every layer, as the authors.
    """
    t_start = time.perf_counter()
    check_mode(mode)
    moved = sorted(set(overrides) & set(_NOT_SETTINGS))
    if moved:
        raise TypeError(f"unlearn takes {moved} through objects now: " + "; ".join(_NOT_SETTINGS[k] for k in moved))
    run = (settings or PGUSettings()).for_mode(mode, **overrides)
    rule = _stopping_rule(stop, mode)
    loss = default_loss(mode) if loss is None else loss
    _validate(rule, mode, max_samples, forget_loader, val_loader, stats, loss, val_acc_start)
    check_output_selector(output)
    parallel = ranks.active(distributed)
    if anchor is not None and (parallel or not isinstance(anchor, CGSAnchor)):
        raise ValueError("anchor must be a pgu.cgs_anchor.CGSAnchor, and is not supported under several processes "
                         "(the exact eigendecompositions are dealt over the ranks instead)")
    if parallel:
        data_parallel.check_same_request(loss, run, mode, stats, max_samples)
    stats.check_model(model)
    _warn_uncovered(model, stats, run.bias)
    work = copy.deepcopy(model)
    if callable(getattr(loss, "bind", None)):  # a loss that also runs the model (pgu.heldout's anchor term)
        loss = loss.bind(work)

    with logits_output(work, output):  # every forward of the request sees [batch, classes] logits
        forget = _forget_pass(work, forget_loader, stats, parallel, keep_rows=anchor is not None)
        t0 = time.perf_counter()
        cgs, forget_outside, next_anchor = _fit_subspace(run, forget, parallel, anchor)
        t_subspace = time.perf_counter() - t0
        t0 = time.perf_counter()
        epochs = _projected_epochs(work, cgs, forget, forget_loader, val_loader, run, rule, loss, mode, max_samples,
                                   progress, parallel, val_acc_start)
        t_unlearn = time.perf_counter() - t0

    if inplace:
        model.load_state_dict(work.state_dict())
        work = model
    return UnlearnResult(
        model=work, retain_stats=forget.retain_stats, forget_stats=forget.stats, cgs=cgs, epochs=epochs.run,
        kept_epoch=epochs.kept, stop_reason=epochs.stop_reason, history=epochs.history,
        samples_processed=epochs.processed, forget_outside_cgs=forget_outside, kept_share=epochs.share,
        line_search=epochs.line_search, anchor=next_anchor,
        seconds={"forget_stats": forget.seconds, "subspace": t_subspace, "unlearning": t_unlearn,
                 "val": epochs.val_seconds, "total": time.perf_counter() - t_start},
    )


_NOT_SETTINGS = {
    "offset": "loss=pgu.losses.ForgetLoss(offset=...) (DepoisonLoss for mode='poison')",
    "entropy_weight": "loss=pgu.losses.ForgetLoss(entropy_weight=...) (DepoisonLoss for mode='poison')",
    "max_val_drop": "stop=pgu.stopping.default_rule(mode, max_val_drop=...)",
    "class_forget_floor": "stop=pgu.stopping.ClassRemovalStop(forget_floor=...)",
    "poison_floor": "stop=pgu.stopping.PoisonRemovalStop(poison_floor=...)",
    "poison_patience": "stop=pgu.stopping.PoisonRemovalStop(patience=...)",
    "poison_min_drop": "stop=pgu.stopping.PoisonRemovalStop(min_drop=...)",
}
"""Keywords of the stopping rule and the loss, which ``unlearn`` takes as objects: how to pass each."""


def _warn_uncovered(model: nn.Module, stats: GramStats, bias: str) -> None:
    """One warning per request naming the trainable parameters pgu cannot project (they stay frozen)."""
    message = coverage(model, bias=bias, stats=stats).warning()
    if message:
        warnings.warn(message, stacklevel=3)


def _stopping_rule(stop, mode: str) -> StoppingRule:
    if isinstance(stop, str):
        if stop == "auto":
            return default_rule(mode)
        if stop == "none":
            return NoStop()
        raise ValueError(f"stop must be 'auto' (docs/method.md section 6), 'none' (run every epoch) or a stopping rule "
                         f"(pgu.stopping), got {stop!r}")
    if not (callable(getattr(stop, "start", None)) and callable(getattr(stop, "after_epoch", None))):
        raise TypeError(f"stop must be a stopping rule with start() and after_epoch() (pgu.stopping), 'auto' or "
                        f"'none'; got {type(stop).__name__}")
    return stop


def _validate(rule, mode, max_samples, forget_loader, val_loader, stats, loss, val_acc_start=None) -> None:
    if val_acc_start is not None:
        if val_loader is None:
            raise ValueError("val_acc_start is the model's accuracy on val_loader: give the val_loader it was "
                             "measured on")
        if isinstance(val_acc_start, bool) or not isinstance(val_acc_start, (int, float)) \
                or not 0.0 <= val_acc_start <= 100.0:
            raise ValueError(f"val_acc_start must be an accuracy in percent (0 to 100), got {val_acc_start!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    for name, loader in (("forget_loader", forget_loader), ("val_loader", val_loader)):
        if loader is not None and iter(loader) is loader:
            raise ValueError(f"{name} is a one-shot iterator; unlearning passes over it several times, so give a "
                             f"re-iterable loader (a DataLoader, a list of batches, pgu.data.TensorLoader)")
    if getattr(rule, "needs_val", False) and val_loader is None:
        if mode == "sample":
            raise ValueError("stop='auto' with mode='sample' stops when forget accuracy falls below held-out "
                             "accuracy, so it needs val_loader (held-out data the model never trained on); or pass "
                             "stop='none'")
        raise ValueError(f"the {type(rule).__name__} rule guards held-out accuracy while it runs, so it needs "
                         f"val_loader (clean held-out data the model never trained on); or pass stop='none'")
    if not isinstance(stats, GramStats):
        raise TypeError(f"stats must be GramStats (fit on the training set), got {type(stats).__name__}")
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(logits, targets), got {type(loss).__name__}")


@dataclass
class _ForgetPass:
    """Step 1's output: ``G_w(D_f)``, the retain statistics, D_f's targets and (when whole) predictions."""

    stats: GramStats
    retain_stats: GramStats
    targets: torch.Tensor
    predictions: torch.Tensor | None
    seconds: float
    classes: list[int]  # every label of D_f (over every rank's share)


def _forget_pass(work: nn.Module, forget_loader, stats: GramStats, parallel: bool = False, keep_rows: bool = False
                 ) -> _ForgetPass:
    """Step 1: ``G_w(D_f)`` with the current weights and ``G(D_r) = stats - G_w(D_f)`` (sections 2, 7).

    The pass runs the model over D_f: its predictions give the epoch-0 forget accuracy without
    a second pass (used when they cover D_f exactly once); the targets tell which classes go. ``keep_rows``: the
    forget rows of layers that see fewer than their width are kept too, for the CGS anchor's products.
    """
    t0 = time.perf_counter()
    targets_seen, predictions = [], []

    def forget_inputs():
        for batch in forget_loader:
            x, y = split_batch(batch, "forget_loader")
            targets_seen.append(y)
            yield x

    def keep_predictions(module, args, output):
        if isinstance(output, torch.Tensor) and output.dim() == 2:
            predictions.append(output.detach().argmax(1).cpu())

    handle = work.register_forward_hook(keep_predictions)
    try:
        # Same layers and precision as the statistics it is subtracted from.
        # under several processes, summed over every rank's share of D_f
        forget_stats = GramStats(stats.layer_names, precision=stats.precision, keep_rows=keep_rows).fit(
            work, forget_inputs(), distributed=parallel)
    finally:
        handle.remove()
    targets = torch.cat(targets_seen).cpu()
    predicted = torch.cat(predictions) if predictions else None
    if parallel or (predicted is not None and predicted.shape != targets.shape):
        predicted = None  # (several processes: each holds its share; accuracy is then summed over ranks)
    classes = data_parallel.classes_over_ranks(targets) if parallel else sorted({int(c) for c in targets.tolist()})
    return _ForgetPass(forget_stats, stats - forget_stats, targets, predicted, time.perf_counter() - t0, classes)


def _fit_subspace(run: PGUSettings, forget: _ForgetPass, parallel: bool = False, anchor: CGSAnchor | None = None
                  ) -> tuple[CoreGradientSpace, dict[str, float | None], CGSAnchor | None]:
    """Step 2: the Core Gradient Space of each layer from ``G(D_r)`` (section 3), and the share of D_f's input
    energy outside it per layer (what the projected updates can change, :meth:`CoreGradientSpace.outside_share`);
    with an anchor, its fast path and the anchor of the next request."""
    if anchor is not None:
        cgs, anchor = anchor.fit(forget.retain_stats, forget.stats, run.threshold, run.rule, run.bias)
        return cgs, cgs.outside_share(forget.stats, inside=anchor.last_inside), anchor
    cgs = CoreGradientSpace(run.threshold, run.rule, run.bias).fit(forget.retain_stats, distributed=parallel)
    return cgs, cgs.outside_share(forget.stats), None


@dataclass
class _Epochs:
    """Step 3's output."""

    run: int
    kept: int
    stop_reason: str
    history: list[dict]
    processed: int
    share: float = 1.0
    line_search: dict | None = None
    val_seconds: float = 0.0


def _projected_epochs(work, cgs, forget: _ForgetPass, forget_loader, val_loader, run: PGUSettings, rule, loss,
                      mode: str, max_samples, progress: bool, parallel: bool = False,
                      val_acc_start: float | None = None) -> _Epochs:
    """Step 3: epochs of projected SGD over D_f until the rule, the epoch cap or the budget stops them."""
    device = model_device(work)
    learning_rates = lr_schedule(run.lr, run.epochs)
    projector = GradientProjector(work, cgs)
    sgd = torch.optim.SGD(projector.projected_params, lr=learning_rates[0], momentum=run.momentum,
                          weight_decay=run.weight_decay)
    optimizer = ProjectedOptimizer(sgd, projector)
    exclude = forget.classes if mode == "class" else ()
    val_seconds = [0.0]

    def val_accuracy():
        if val_loader is None:
            return None
        t0 = time.perf_counter()
        value = accuracy(work, val_loader, exclude_classes=exclude, what="val_loader")
        val_seconds[0] += time.perf_counter() - t0
        return value

    def forget_accuracy():
        return data_parallel.forget_accuracy(work, forget_loader, parallel)

    if forget.predictions is not None:
        a_f = 100.0 * float((forget.predictions == forget.targets).double().mean())
    else:
        a_f = forget_accuracy()
    a_v = val_accuracy() if val_acc_start is None else float(val_acc_start)
    if getattr(rule, "needs_val", False) and a_v is None:
        raise ValueError(f"val_loader yielded no samples; the {mode}-removal stopping rule needs held-out data")
    history = [{"epoch": 0, "lr": None, "loss": None, "forget_acc": a_f, "val_acc": a_v, "samples": 0}]
    decision: StopDecision | None = rule.start(a_f, a_v)
    keeps_previous = not isinstance(rule, NoStop)  # only a stopping rule may ask for the previous epoch back
    processed, epochs_run, kept_epoch, share, line_search = 0, 0, 0, 1.0, None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.epochs, desc="PGU unlearning", leave=False)
    try:
        with unlearning_mode(work):
            for epoch, lr_e in enumerate(learning_rates, start=1):
                if decision is not None:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_e
                previous = [p.detach().clone() for p in projector.projected_params] if keeps_previous else None
                loss_sum, seen, budget_hit = 0.0, 0, False
                for x, y, n_step in data_parallel.steps(forget_loader, parallel):
                    if n_step == 0:
                        continue
                    if max_samples is not None and processed + n_step > max_samples:
                        budget_hit = True
                        break
                    optimizer.zero_grad()
                    step_loss = 0.0
                    if x is not None and x.shape[0]:
                        value = loss(work(x.to(device)), y.to(device))
                        step_loss = value.item() * x.shape[0]
                        if math.isfinite(step_loss):
                            value.backward()
                    if parallel:  # the whole step's loss, and its gradient: the shares' sum
                        step_loss = data_parallel.sum_over_ranks(step_loss)
                        data_parallel.sum_gradients(projector.projected_params, 0 if x is None else x.shape[0], n_step)
                    if not math.isfinite(step_loss):
                        raise FloatingPointError(
                            f"the forget loss became {step_loss / n_step} in epoch {epoch}; the model was left "
                            f"unchanged. Lower the learning rate (lr={run.lr!r})."
                        )
                    optimizer.step()
                    loss_sum += step_loss
                    seen += n_step
                    processed += n_step
                if seen == 0:
                    if not budget_hit:
                        raise ValueError(f"forget_loader yielded no samples in epoch {epoch}; it must yield the "
                                         f"forget set on every pass")
                    decision = StopDecision("budget")
                    break
                epochs_run, kept_epoch = epoch, epoch
                if not all(torch.isfinite(p).all() for p in projector.projected_params):
                    raise FloatingPointError(
                        f"weights became non-finite in epoch {epoch}; the model was left unchanged. "
                        f"Lower the learning rate."
                    )
                a_f = forget_accuracy()
                a_v = val_accuracy()
                history.append({"epoch": epoch, "lr": lr_e, "loss": loss_sum / seen, "forget_acc": a_f,
                                "val_acc": a_v, "samples": processed})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(forget=f"{a_f:.1f}", val="-" if a_v is None else f"{a_v:.1f}")
                decision = rule.after_epoch(a_f, a_v)
                if decision is None and budget_hit:
                    decision = StopDecision("budget")
                if decision is not None and decision.aim is not None and previous is not None:
                    searched = _line_search(work, projector.projected_params, previous, forget_accuracy,
                                            decision.aim, history[-2]["forget_acc"], a_f, forget.stats.n_samples_)
                    t, line_search = searched["share"], searched
                    if t == 0.0:
                        kept_epoch, searched["val_acc"] = epoch - 1, history[-2]["val_acc"]
                    elif t == 1.0:
                        searched["val_acc"] = a_v
                    else:
                        share, searched["val_acc"] = t, val_accuracy()
                elif decision is not None and decision.keep_previous and previous is not None:
                    with torch.no_grad():
                        for p, old in zip(projector.projected_params, previous):
                            p.copy_(old)
                    kept_epoch = epoch - 1
    finally:
        if bar is not None:
            bar.close()
    stop_reason = decision.reason if decision is not None else "max_epochs"
    return _Epochs(epochs_run, kept_epoch, stop_reason, history, processed, share, line_search, val_seconds[0])


LINE_SEARCH_PROBES = 5
"""Bisection steps of a line search (:class:`pgu.stopping.StopDecision`'s ``aim``): ``t`` to 1/32 of the epoch."""


@torch.no_grad()
def _line_search(work, params, previous, forget_accuracy, aim: float, acc_previous: float, acc_last: float,
                 n_forget: int, probes: int = LINE_SEARCH_PROBES) -> dict:
    """Leave ``params`` at ``previous + t (last - previous)`` for the ``t`` in [0, 1] whose forget accuracy is nearest
    ``aim``, found by bisection from the ends (``acc_previous`` above ``aim``, ``acc_last`` below; forget accuracy
    taken to fall along the segment; the best point measured is kept whether or not it does). Stops early within
    half a sample of ``aim``. Returns ``share`` (t), ``aim``, ``forget_acc`` and ``probes`` ([t, accuracy] each)."""
    last = [p.detach().clone() for p in params]
    measured = [[0.0, float(acc_previous)], [1.0, float(acc_last)]]

    def move_to(t: float) -> None:
        for p, old, new in zip(params, previous, last):
            p.copy_(old + t * (new - old))

    low, high = 0.0, 1.0
    for _ in range(probes if acc_previous > aim > acc_last else 0):
        t = (low + high) / 2
        move_to(t)
        a = forget_accuracy()
        measured.append([t, a])
        if abs(a - aim) <= 50.0 / max(n_forget, 1):
            break
        low, high = (t, high) if a > aim else (low, t)
    t, a = min(measured, key=lambda m: (abs(m[1] - aim), m[0]))
    for p, old, new in zip(params, previous, last):  # the ends exactly, not through the arithmetic
        p.copy_(old if t == 0.0 else new if t == 1.0 else old + t * (new - old))
    return {"share": t, "aim": float(aim), "forget_acc": a, "probes": measured}
