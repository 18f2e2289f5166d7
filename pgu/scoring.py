"""Score a model the way PROTOCOL.md does: accuracies, membership inference, agreement with a reference.

:func:`score_model` runs the model once over D_f, D_r, val and test and returns the metrics of
:mod:`pgu.metrics` in percent: ``FA``, ``RA``, ``VA``, ``TA`` (accuracy on forget, retain,
val, test), ``UA = 100 - FA``, ``MIA`` (MIA-Efficacy: members drawn from D_r, non-members the
test split), ``loss_MIA`` (D_f against the test split), and for class forgetting ``TA_kept``
(test accuracy on the classes kept). :func:`score_poisoning` adds the detoxification metrics of
the poison scenarios (METHOD.md section 8). Keys starting with ``_`` carry what a comparison needs
(D_f softmax outputs) and are not reported. :func:`score_against_reference` adds ``avg_gap``,
``activation_distance`` and ``js_divergence`` against the retrained model's scores.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch.nn.functional as F
from torch import nn

from . import metrics
from .evaluation import predict

__all__ = ["score_model", "score_against_reference", "score_poisoning", "softmax_outputs", "ENTROPY_BINS"]

ENTROPY_BINS = 20
"""Bins of the D_f prediction-entropy histograms, over [0, ln(classes)]."""


def softmax_outputs(model: nn.Module, data, batch_size: int = 512, what: str = "the data"):
    """``(probabilities, per-sample cross-entropy)`` of ``model`` on an :class:`ArrayDataset`, float64 numpy."""
    logits, y = predict(model, data.loader(batch_size), what=what)
    logits = logits.double()
    return F.softmax(logits, dim=1).numpy(), F.cross_entropy(logits, y, reduction="none").numpy()


def score_model(model: nn.Module, sets: dict, *, classes=(), seed: int = 0, batch_size: int = 512) -> dict:
    """Metrics of ``model`` on ``sets`` (``forget``, ``retain``, ``val``, ``test``: :class:`ArrayDataset`)."""
    missing = [k for k in ("forget", "retain", "val", "test") if k not in sets]
    if missing:
        raise ValueError(f"score_model needs the sets {missing}")
    out, probs, labels = {}, {}, {}
    for name, data in sets.items():
        probs[name], out[f"_{name}_losses"] = softmax_outputs(model, data, batch_size, what=f"the {name} set")
        labels[name] = data.y.numpy()
        out[{"forget": "FA", "retain": "RA", "val": "VA", "test": "TA"}[name]] = metrics.accuracy(
            probs[name].argmax(1), labels[name])
    out["UA"] = metrics.unlearning_accuracy(out["FA"])
    true_prob = {k: metrics.true_class_probability(probs[k], labels[k]) for k in ("forget", "retain", "test")}
    out["MIA"] = metrics.mia_efficacy(true_prob["retain"], true_prob["test"], true_prob["forget"], seed=seed)
    out["loss_MIA"] = metrics.loss_mia(out.pop("_forget_losses"), out["_test_losses"], seed=seed)
    for k in ("_retain_losses", "_val_losses", "_test_losses"):
        out.pop(k)
    if classes:
        kept = ~np.isin(labels["test"], list(classes))
        out["TA_kept"] = metrics.accuracy(probs["test"][kept].argmax(1), labels["test"][kept]) if kept.any() else None
    entropy = metrics.prediction_entropy(probs["forget"])
    counts, _ = np.histogram(entropy, bins=ENTROPY_BINS, range=(0.0, math.log(probs["forget"].shape[1])))
    out["forget_entropy_mean"] = float(entropy.mean())
    out["_forget_probs"] = probs["forget"]
    out["_forget_entropy_histogram"] = counts.tolist()
    return out


def score_against_reference(scores: dict, reference: dict) -> dict:
    """Avg.Gap (UA, RA, TA, MIA) and D_f agreement (activation distance, JS divergence) with the reference's scores."""
    return {
        "avg_gap": metrics.avg_gap(scores, reference),
        "activation_distance": metrics.activation_distance(scores["_forget_probs"], reference["_forget_probs"]),
        "js_divergence": metrics.js_divergence(scores["_forget_probs"], reference["_forget_probs"]),
    }


def score_poisoning(model: nn.Module, record, forget_true, test, batch_size: int = 512) -> dict:
    """Detoxification metrics (percent) of ``model`` after a poisoning ``record`` (:class:`pgu.poisoning.Poisoning`).

    ``poisoned_true_acc``: accuracy on the poisoned training samples (``forget_true``: their
    images as trained, with their true labels). For a backdoor also ``ASR``, the attack success
    rate: the share of ``test`` images of the other classes, stamped with the trigger, that the
    model predicts as the target (:func:`pgu.poisoning.attack_success_rate`), and
    ``triggered_acc``: the accuracy on those stamped images under their true labels (a model
    that never saw the trigger classifies them about as the unstamped ones; a low ASR alone
    does not say the trigger stopped mattering). The clean accuracy is the test accuracy ``TA``.
    """
    import torch

    from .poisoning import attack_success_rate, stamp_trigger

    out = {"poisoned_true_acc": metrics.accuracy(softmax_outputs(model, forget_true, batch_size)[0].argmax(1),
                                                 forget_true.y.numpy())}
    if record.kind == "backdoor":
        target = int(record.details["target"])
        others = test.subset(test.y != target)
        values = torch.tensor(record.details["trigger_values"], dtype=others.x.dtype)
        stamped = replace(others, x=stamp_trigger(others.x, values, int(record.details["size"])))
        predicted = softmax_outputs(model, stamped, batch_size, what="the triggered test images")[0].argmax(1)
        out["ASR"] = attack_success_rate(torch.from_numpy(predicted), others.y, target)
        out["triggered_acc"] = metrics.accuracy(predicted, others.y.numpy())
    return out
