"""``train_run``: train a recipe (optionally without a forget set), take its statistics, save the run.

The Python equivalent of ``pgu train``. With ``exclude`` (a forget spec, see
:mod:`pgu.data.forget_sets`) the same recipe is trained without those samples: that is how the
retrain reference of an unlearning request is made. With ``poison`` (a spec of
:mod:`pgu.data.poisoning`, drawn with the recipe's seed) the training set is poisoned first and the
run records exactly what was changed (``poisoning.json``: ids, true and poisoned labels, the
attack's parameters; a summary in ``config.json``); ``exclude="poisoned"`` then trains the same
recipe on the clean samples only, the reference a detoxified model is measured against.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from pgu import distributed
from pgu.data import load_dataset
from pgu.data.forget_sets import ForgetSet, resolve_forget_spec
from pgu.data.poisoning import parse_poison_spec, poisoning_summary
from pgu.data.poisoning import poison as poison_set
from pgu.evaluation import accuracy
from pgu.provenance import environment
from pgu.stats import GramStats
from pgu.stats import stats_batch_size as stats_batch_size_for
from pgu.zoo.models.external import canonical_reference
from pgu.zoo.recipes import Recipe
from pgu.zoo.runs import ModelSpec, Run, load_run, save_run
from pgu.zoo.training import resolve_device, train_model

__all__ = ["train_run"]


def train_run(recipe: Recipe, out, *, exclude: str | None = None, data_dir=None, device="auto", stats: bool = True,
              progress: bool = True, overwrite: bool = False, split_seed: int = 0, stats_batch_size: int | None = None,
              poison: str | None = None) -> Run:
    """Train ``recipe`` and write the run folder ``out`` (see :mod:`pgu.zoo.runs`); returns the loaded run.

    ``stats_batch_size``: images per batch of the statistics pass (default: :func:`pgu.stats.stats_batch_size`)."""
    out = Path(out)
    if out.exists() and not overwrite:  # refuse before any work
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
    recipe = replace(recipe, model=canonical_reference(recipe.model))  # a file path recorded absolute
    if exclude == "poisoned" and not poison:
        raise ValueError("--exclude poisoned leaves out the poisoned samples, so it needs --poison SPEC")
    record = None
    if poison:
        parse_poison_spec(poison)  # a bad spec is refused before the data is read
    device = resolve_device(device)
    splits = load_dataset(recipe.dataset, data_dir=data_dir, split_seed=split_seed)
    if poison:
        poisoned, record = poison_set(splits.train, poison, seed=recipe.train.seed)
        splits = replace(splits, train=poisoned)
    if exclude == "poisoned":
        forget = ForgetSet("poisoned", record.ids, "sample")
    else:
        forget = resolve_forget_spec(exclude, splits.train, seed=recipe.train.seed) if exclude else None
    keep = ~forget.mask(splits.train) if forget is not None else None
    trained_on = splits.train if keep is None else splits.train.subset(keep)
    excluded = forget.ids if forget is not None else splits.train.ids[:0]

    result = train_model(recipe.model, splits, recipe.train, subset=keep, device=device, progress=progress,
                         desc=f"train {recipe.model} on {recipe.dataset}", validate=True)
    gram, stats_seconds = None, None
    if stats:
        start = time.perf_counter()
        # under torchrun each rank takes its share of the samples and the pass sums over ranks
        world = distributed.world_size() if distributed.active() else 1
        share = trained_on if world == 1 else trained_on.subset(
            torch.arange(distributed.rank(), len(trained_on), world))
        gram = GramStats().fit(result.model,
                               share.loader(stats_batch_size or stats_batch_size_for(device), device=device),
                               progress=progress, desc="Gram statistics of the training set")
        stats_seconds = time.perf_counter() - start
    test_loader = splits.test.loader(1024, device=device)
    spec = ModelSpec(recipe.model, splits.num_classes, splits.input_shape[0], recipe.train.width,
                     splits.input_shape[-1])
    config = {
        "recipe": recipe.to_dict(),
        "exclude": exclude,
        "dataset": {"name": splits.name, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                    "trained_on": len(trained_on), "excluded": len(excluded), "split_seed": split_seed,
                    **{k: v for k, v in splits.info.items() if isinstance(v, (str, int, float, bool, list))}},
        "model": spec.to_dict(),
        "poisoning": None if record is None else {"spec": poison, **poisoning_summary(record)},
        "results": {
            "train_seconds": result.seconds,
            "samples_seen": result.samples_seen,
            "stats_seconds": stats_seconds,
            "val_acc": result.history[-1].get("val_acc"),
            "test_acc": accuracy(result.model, test_loader),
            # eval mode over the samples trained on: whether the model memorised them (cifar10-memorize)
            "train_acc": accuracy(result.model, trained_on.loader(1024, device=device)),
        },
        "environment": environment(str(device)),
    }
    if distributed.rank() == 0:  # one writer; every rank holds the same model
        save_run(out, model=result.model, spec=spec, config=config, train_ids=trained_on.ids, excluded_ids=excluded,
                 history=result.history, stats=gram, overwrite=overwrite,
                 extra_files={} if record is None else {"poisoning.json": {"spec": poison, **record.to_dict()}})
    distributed.barrier()
    return load_run(out, device=device)
