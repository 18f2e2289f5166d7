"""Score a model the way PROTOCOL.md does: accuracies, membership inference, agreement with a reference.

:func:`score_model` runs the model once over D_f, D_r, val and test and returns the metrics of
:mod:`pgu.metrics` in percent: ``FA``, ``RA``, ``VA``, ``TA`` (accuracy on forget, retain,
val, test), ``UA = 100 - FA``, ``MIA`` (MIA-Efficacy: members drawn from D_r, non-members the
test split), ``loss_MIA`` (D_f against the test split), and for class forgetting ``TA_kept``
(test accuracy on the classes kept). Keys starting with ``_`` carry what a comparison needs
(D_f softmax outputs) and are not reported. :func:`score_against_reference` adds ``avg_gap``,
``activation_distance`` and ``js_divergence`` against the retrained model's scores.
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F
from torch import nn

from . import metrics
from .evaluation import predict

__all__ = ["score_model", "score_against_reference", "softmax_outputs", "ENTROPY_BINS"]

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
