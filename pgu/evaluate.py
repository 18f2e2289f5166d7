"""``pgu evaluate``: score one model against a reference retrained without the forget set (PROTOCOL.md).

The reference is a run folder made by ``pgu train --exclude FORGET_SPEC``: its excluded ids
are D_f, the ids it trained on are D_r, and its dataset and split seed give val and test. The
model scored is a run folder or a ``model.safetensors`` file of the same architecture family
and classes (an unlearned model, or the original to see the gap doing nothing leaves).
A reference made with ``--poison SPEC --exclude poisoned`` (trained on the clean samples only)
poisons the training set again from its record, so D_f is the poisoned samples as they were
trained, and both models also get the detoxification metrics (:func:`pgu.scoring.score_poisoning`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .data import load_dataset
from .poisoning import poison, under_true_labels
from .runs import load_model, load_run
from .scoring import score_against_reference, score_model, score_poisoning
from .training import resolve_device

__all__ = ["evaluate_against_reference"]


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
        raise ValueError(f"{model_path} is a model of {spec.num_classes} classes on {spec.in_channels}x{spec.input_size}"
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
