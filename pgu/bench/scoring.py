"""Score a model the way docs/protocol.md does: accuracies, membership inference, agreement with a reference.

:func:`score_model` runs the model once over D_f, D_r, val and test and returns the metrics of
:mod:`pgu.bench.metrics` in percent: ``FA``, ``RA``, ``VA``, ``TA`` (accuracy on forget, retain,
val, test), ``UA = 100 - FA``, ``MIA`` (MIA-Efficacy: members drawn from D_r, non-members the
test split), ``loss_MIA`` (D_f against the test split), and for class forgetting ``TA_kept``
(test accuracy on the classes kept). :func:`score_poisoning` adds the detoxification metrics of
the poison scenarios (docs/method.md section 8). Keys starting with ``_`` carry what a comparison needs
(D_f softmax outputs) and are not reported. :func:`score_against_reference` adds ``avg_gap``,
``activation_distance`` and ``js_divergence`` against the retrained model's scores.

:func:`evaluate_against_reference` (``pgu evaluate``) scores one model against a reference run
made by ``pgu train --exclude FORGET_SPEC``: its excluded ids are D_f, the ids it trained on are
D_r, and its dataset and split seed give val and test. The model scored is a run folder or a
``model.safetensors`` file of the same architecture family and classes. A reference made with
``--poison SPEC --exclude poisoned`` (trained on the clean samples only) poisons the training set
again from its record, so D_f is the poisoned samples as they were trained, and both models also
get the detoxification metrics (:func:`score_poisoning`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgu.bench import metrics
from pgu.data import load_dataset
from pgu.data.poisoning import attack_success_rate, poison, stamp_trigger, under_true_labels
from pgu.evaluation import predict
from pgu.zoo.runs import load_model, load_run
from pgu.zoo.training import resolve_device

__all__ = ["score_model", "score_against_reference", "score_poisoning", "softmax_outputs", "evaluate_against_reference",
           "ENTROPY_BINS"]

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
        out[{"forget": "FA", "retain": "RA", "val": "VA", "test": "TA"}[name]] = metrics.top1_accuracy(
            probs[name].argmax(1), labels[name])
    out["UA"] = metrics.unlearning_accuracy(out["FA"])
    true_prob = {k: metrics.true_class_probability(probs[k], labels[k]) for k in ("forget", "retain", "test")}
    out["MIA"] = metrics.mia_efficacy(true_prob["retain"], true_prob["test"], true_prob["forget"], seed=seed)
    out["loss_MIA"] = metrics.loss_mia(out.pop("_forget_losses"), out["_test_losses"], seed=seed)
    for k in ("_retain_losses", "_val_losses", "_test_losses"):
        out.pop(k)
    if classes:
        kept = ~np.isin(labels["test"], list(classes))
        out["TA_kept"] = (metrics.top1_accuracy(probs["test"][kept].argmax(1), labels["test"][kept])
                          if kept.any() else None)
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
    """Detoxification metrics (percent) of ``model`` after a poisoning ``record``
    (:class:`pgu.data.poisoning.Poisoning`).

    ``poisoned_true_acc``: accuracy on the poisoned training samples (``forget_true``: their
    images as trained, with their true labels). For a backdoor also ``ASR``, the attack success
    rate: the share of ``test`` images of the other classes, stamped with the trigger, that the
    model predicts as the target (:func:`pgu.data.poisoning.attack_success_rate`), and
    ``triggered_acc``: the accuracy on those stamped images under their true labels (a model
    that never saw the trigger classifies them about as the unstamped ones; a low ASR alone
    does not say the trigger stopped mattering). The clean accuracy is the test accuracy ``TA``.
    """
    out = {"poisoned_true_acc": metrics.top1_accuracy(softmax_outputs(model, forget_true, batch_size)[0].argmax(1),
                                                 forget_true.y.numpy())}
    if record.kind == "backdoor":
        target = int(record.details["target"])
        others = test.subset(test.y != target)
        values = torch.tensor(record.details["trigger_values"], dtype=others.x.dtype)
        stamped = replace(others, x=stamp_trigger(others.x, values, int(record.details["size"])))
        predicted = softmax_outputs(model, stamped, batch_size, what="the triggered test images")[0].argmax(1)
        out["ASR"] = attack_success_rate(torch.from_numpy(predicted), others.y, target)
        out["triggered_acc"] = metrics.top1_accuracy(predicted, others.y.numpy())
    return out


def evaluate_against_reference(model_path, reference_path, *, data_dir=None, device="auto", seed: int = 0) -> dict:
    """``{"model": metrics, "reference": metrics, ...}``: both scored on the reference's D_f, D_r, val and test."""
    device = resolve_device(device)
    reference = load_run(reference_path, device=device)
    if reference.excluded_ids.numel() == 0:
        raise ValueError(f"{reference_path} excluded no samples, so it defines no forget set; make the reference "
                         f"with `pgu train --exclude FORGET_SPEC`")
    model_path = Path(model_path)
    if model_path.is_file():
        model, spec = load_model(model_path, device)
    else:
        run = load_run(model_path, device=device)
        model, spec = run.model, run.spec
    if (spec.num_classes, spec.in_channels, spec.input_size) != (
            reference.spec.num_classes, reference.spec.in_channels, reference.spec.input_size):
        raise ValueError(f"{model_path} is a model of {spec.num_classes} classes on "
                         f"{spec.in_channels}x{spec.input_size}"
                         f" inputs, the reference one of {reference.spec.num_classes} classes on "
                         f"{reference.spec.in_channels}x{reference.spec.input_size}: not the same task")
    recipe, info = reference.config.get("recipe", {}), reference.config.get("dataset", {})
    if "dataset" not in recipe:
        raise ValueError(f"{reference_path}/config.json names no dataset; the run folder is damaged")
    splits = load_dataset(recipe["dataset"], data_dir=data_dir, split_seed=info.get("split_seed", 0))
    record = None
    poisoning = reference.config.get("poisoning")
    if poisoning:  # the same draw as the run's: its spec and training seed
        poisoned, record = poison(splits.train, poisoning["spec"], seed=int(recipe.get("train", {}).get("seed", 0)))
        splits = replace(splits, train=poisoned)
    mask = splits.train.mask_of(reference.excluded_ids)
    exclude = reference.config.get("exclude") or ""
    forget = splits.train.subset(mask)
    classes = tuple(sorted(set(forget.y.tolist()))) if exclude.startswith("class:") else ()
    sets = {"forget": forget, "retain": splits.train.subset(~mask), "val": splits.val, "test": splits.test}
    ref_scores = score_model(reference.model, sets, classes=classes, seed=seed)
    scores = score_model(model, sets, classes=classes, seed=seed)
    if record is not None:
        forget_true = under_true_labels(splits.train, record)
        ref_scores.update(score_poisoning(reference.model, record, forget_true, splits.test))
        scores.update(score_poisoning(model, record, forget_true, splits.test))

    def public(s):
        return {k: v for k, v in s.items() if not k.startswith("_")}

    return {"forget_spec": exclude, "n_forget": len(forget), "model_path": str(model_path),
            "reference_path": str(reference_path),
            "model": public(scores) | score_against_reference(scores, ref_scores),
            "reference": public(ref_scores)}
