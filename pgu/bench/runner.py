"""``pgu bench``: docs/protocol.md end to end for one tier and scenario, over seeds, resumable.

For each seed (a :class:`~pgu.bench.seed.SeedRun`): train the original model with the tier's
recipe (or reuse it from the bench's cache, keyed by the full training config) and take its
Gram statistics once; pick the forget set from the seed; retrain the reference without it; run
each method within the same compute budget (a share of the original training's sample
passes); score every model with :mod:`pgu.bench.scoring` against the retrained one; time
everything in the same run. Each finished seed is written to ``OUT/seeds/seed-S.json`` at once,
so a crashed bench picks up where it stopped; ``OUT/results.json``, ``OUT/results.md`` and the
plots are rewritten from all finished seeds at the end.

No method sees the retrained model, the test split, or (PGU) the retain data; PGU's stopping
rule reads the val split only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pgu.bench.challenge import challenge_score
from pgu.bench.config import FORMAT, POISON_SCENARIOS, REFERENCES, BenchConfig
from pgu.bench.metrics import top1_accuracy
from pgu.bench.report import write_report
from pgu.bench.scoring import score_poisoning, softmax_outputs
from pgu.bench.seed import SeedRun, forget_record
from pgu.data import load_dataset
from pgu.data.forget_sets import resolve_forget_spec
from pgu.data.poisoning import parse_poison_spec, poison, poisoning_summary, under_true_labels
from pgu.provenance import environment
from pgu.stats import GramStats, stats_batch_size
from pgu.zoo.training import resolve_device, train_model

__all__ = ["run_bench", "sequential_requests"]


def run_bench(config: BenchConfig, out, *, data_dir=None, device="auto", progress: bool = True, cache=None) -> dict:
    """Run (or resume) a bench into ``out``; return the aggregated results (also written there).

    ``cache``: where trained originals (with their statistics) and retrained references are kept
    (default ``out/cache``); benches that share one train each model once."""
    config.validate()
    out = Path(out)
    device = resolve_device(device)
    env = environment(str(device))  # at the start: the commit whose code runs, whatever lands meanwhile
    recipe = config.recipe()
    splits = load_dataset(recipe.dataset, data_dir=data_dir, split_seed=0)
    if not splits.num_classes > config.forget_class >= 0:
        raise ValueError(f"forget_class must be a class of {splits.name} (0 to {splits.num_classes - 1}), "
                         f"got {config.forget_class}")
    if config.scenario in POISON_SCENARIOS:
        _check_poisoning(config, splits)
    _claim(out, config)
    cache = out / "cache" if cache is None else Path(cache)
    seeds_dir = out / "seeds"
    seeds_dir.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in config.seeds:
        path = seeds_dir / f"seed-{seed}.json"
        if path.is_file():
            per_seed.append(json.loads(path.read_text()))
            continue
        result = _run_seed(SeedRun(config, recipe, splits, seed, device, cache, progress))
        result["commit"] = env.get("commit")  # a resumed bench may hold seeds of several commits
        _write_json(path, result)
        per_seed.append(result)
    results = {
        "format": FORMAT,
        "config": config.to_dict(),
        "recipe": recipe.to_dict(),
        "dataset": {"name": splits.name, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                    **splits.info},
        "seeds": per_seed,
        "environment": env,
    }
    _write_json(out / "results.json", results)
    write_report(results, out)
    return results


def _claim(out: Path, config: BenchConfig) -> None:
    """Record the config in ``out``; refuse a folder that holds a bench of another config."""
    path = out / "config.json"
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{path} is damaged; remove it (and {out}/seeds) to start this bench afresh") from None
        if not config.same_bench(recorded):
            raise ValueError(f"{out} holds a bench of another config ({path}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, config.to_dict())


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _check_poisoning(config: BenchConfig, splits) -> None:
    """Refuse a poisoning the dataset cannot take before anything trains (the generator's own checks, on a dry run)."""
    if not splits.num_classes > config.poison_target >= 0:
        raise ValueError(f"poison_target must be a class of {splits.name} (0 to {splits.num_classes - 1}), "
                         f"got {config.poison_target}")
    if config.trigger_size > min(splits.input_shape[-2:]):
        raise ValueError(f"a {config.trigger_size}-pixel trigger does not fit {splits.name}'s "
                         f"{splits.input_shape[-2]}x{splits.input_shape[-1]} images")
    if config.scenario == "poison-flip":  # class counts and pairs: labels only, so a one-pixel copy suffices
        small = replace(splits.train, x=splits.train.x[:, :, :1, :1])
        poison(small, parse_poison_spec(config.poison_spec(splits.train.y)), seed=0)


def _run_seed(run: SeedRun) -> dict:
    config, splits, seed = run.config, run.splits, run.seed
    if config.scenario in POISON_SCENARIOS:
        return _run_poison(run)
    run.train_original()
    if config.scenario == "sequential":
        return _run_sequential(run)
    forget = resolve_forget_spec(config.forget_spec(splits.train.y), splits.train, seed)
    mask = forget.mask(splits.train)
    request = run.score_request(mask, forget.classes, run.run_methods(mask, forget.mode),
                                desc=f"seed {seed}: retrain without D_f")
    out = {"seed": seed, "forget_spec": forget.spec, "forget_mode": forget.mode, **forget_record(forget.ids),
           "budget_samples": run.budget, "original": run.original_info, **request}
    if config.challenge:
        out["challenge"] = _challenge(run, mask, forget.mode)
    return out


def _run_poison(run: SeedRun) -> dict:
    """One seed of a poison scenario: poison D with the seed, train on it, remove the poisoned samples.

    The reference (``retrain``) is trained on the clean samples only. Every model gets the
    detoxification metrics of :func:`pgu.bench.scoring.score_poisoning` beside the usual ones, and
    ``TA_recovered``: the share of the test-accuracy gap between the poisoned original and the
    clean model it closed (``None`` when that gap is under 0.1 points).
    """
    config, splits, seed = run.config, run.splits, run.seed
    spec = config.poison_spec(splits.train.y)
    poisoned, record = poison(splits.train, spec, seed=seed)
    summary = {"spec": spec, **poisoning_summary(record)}
    run = run.with_splits(replace(splits, train=poisoned))
    run.train_original(poisoning={k: v for k, v in summary.items() if k != "trigger_values"})
    mask = poisoned.mask_of(record.ids)
    forget_true = under_true_labels(poisoned, record)
    request = run.score_request(mask, (), run.run_methods(mask, "poison"),
                                desc=f"seed {seed}: train on the clean samples only",
                                extra_scores=lambda model: score_poisoning(model, record, forget_true, splits.test))
    clean, dirty = request["methods"]["retrain"], request["methods"]["original"]
    gap = clean["TA"] - dirty["TA"]
    for row in request["methods"].values():
        row["TA_recovered"] = (row["TA"] - dirty["TA"]) / gap if abs(gap) >= 0.1 else None
    return {"seed": seed, "forget_spec": f"poisoned:{spec}", "forget_mode": "poison", **forget_record(record.ids),
            "poisoning": summary, "budget_samples": run.budget, "original": run.original_info, **request}


def _challenge(run: SeedRun, mask: torch.Tensor, mode: str) -> dict:
    """PGU's challenge score (docs/protocol.md): ``config.challenge`` unlearned and as many retrained models.

    The originals' own score against the retrained models (doing nothing) is reported beside it.

    Model ``i`` of both groups trains with seed ``1000 (seed + 1) + i`` (never a bench seed's own).
    """
    splits, seed, device = run.splits, run.seed, run.device
    forget, retain = splits.train.subset(mask), splits.train.subset(~mask)
    groups = {name: {"probs": [], "RA": [], "TA": []} for name in ("unlearned", "retrained", "original")}
    start = time.perf_counter()
    for i in range(run.config.challenge):
        cfg = replace(run.recipe.train, seed=1000 * (seed + 1) + i)
        trained = train_model(run.recipe.model, splits, cfg, device=device, desc=f"challenge original {i}")
        stats = GramStats().fit(trained.model, splits.train.loader(stats_batch_size(device), device=device))
        member = replace(run, progress=False)  # the bench seed's budget and settings
        unlearned = member.run_method("pgu", mask, mode, model=trained.model, stats=stats)["model"]
        retrained = train_model(run.recipe.model, splits, cfg, subset=~mask, device=device,
                                desc=f"challenge retrain {i}")
        for name, model in (("unlearned", unlearned), ("retrained", retrained.model), ("original", trained.model)):
            g = groups[name]
            g["probs"].append(softmax_outputs(model, forget)[0])
            for key, data in (("RA", retain), ("TA", splits.test)):
                g[key].append(top1_accuracy(softmax_outputs(model, data)[0], data.y.numpy()))
    u, r, o = groups["unlearned"], groups["retrained"], groups["original"]

    def versus_retrained(g):
        return challenge_score(np.stack(g["probs"]), np.stack(r["probs"]), forget.y.numpy(), np.mean(g["RA"]),
                               np.mean(r["RA"]), np.mean(g["TA"]), np.mean(r["TA"]))

    score, doing_nothing = versus_retrained(u), versus_retrained(o)
    return {"models_per_group": run.config.challenge, "forgetting_quality": score["forgetting_quality"],
            "score": score["score"], "epsilon_mean": float(np.mean(score["epsilons"])),
            "original_forgetting_quality": doing_nothing["forgetting_quality"],
            "original_score": doing_nothing["score"],
            "ra_unlearned": float(np.mean(u["RA"])), "ra_retrained": float(np.mean(r["RA"])),
            "ta_unlearned": float(np.mean(u["TA"])), "ta_retrained": float(np.mean(r["TA"])),
            "seconds": round(time.perf_counter() - start, 3)}


def sequential_requests(train_y: torch.Tensor, ids: torch.Tensor, steps: int, per_class: int | None,
                        seed: int) -> list[torch.Tensor]:
    """The ids of each request: ``per_class`` samples of every class, disjoint, drawn with ``seed``."""
    classes = sorted(set(train_y.tolist()))
    sizes = {c: int((train_y == c).sum()) for c in classes}
    if per_class is None:  # the authors' 100 of CIFAR-10's 5,000 per class: 2% of the smallest class per request
        per_class = max(1, min(100, min(sizes.values()) // 50))
    short = {c: n for c, n in sizes.items() if n < steps * per_class}
    if per_class < 1 or short:
        raise ValueError(f"{steps} requests of {per_class} samples per class need {steps * max(per_class, 1)} samples "
                         f"of every class; classes {sorted(short)} have fewer: ask for fewer --steps or --per-class")
    g = torch.Generator().manual_seed(seed)
    per_step = [[] for _ in range(steps)]
    for c in classes:
        members = ids[train_y == c]
        members = members[torch.randperm(len(members), generator=g)]
        for t in range(steps):
            per_step[t].append(members[t * per_class : (t + 1) * per_class])
    return [torch.cat(chunks).sort().values for chunks in per_step]


def _run_sequential(run: SeedRun) -> dict:
    """Requests one after another; after each, every method is scored against a model retrained without all so far.

    Every method serves the requests in a row: request ``t`` starts from the model its request
    ``t - 1`` left (the PGU family also from the retain statistics it left), forgets request
    ``t``'s samples, and, where it reads retain data, reads what no request so far removed. Each
    step is timed on its own, against the retraining of that step."""
    config, splits, seed = run.config, run.splits, run.seed
    requests = sequential_requests(splits.train.y, splits.train.ids, config.steps, config.per_class, seed)
    chained = [name for name in config.methods if name not in REFERENCES]
    models, stats = dict.fromkeys(chained, run.original), dict.fromkeys(chained, run.stats)
    steps, forgotten = [], splits.train.ids[:0]
    for t, request in enumerate(requests, start=1):
        forgotten = torch.cat([forgotten, request]).sort().values
        mask = splits.train.mask_of(forgotten)
        method_runs = {}
        for name in chained:
            step = run.run_method(name, splits.train.mask_of(request), "sample", model=models[name], stats=stats[name],
                                  retain=~mask)
            models[name] = step["model"]
            if "retain_stats" in step:
                stats[name] = step.pop("retain_stats")
            method_runs[name] = step
        scored = run.score_request(mask, (), method_runs, desc=f"seed {seed}: retrain without requests 1-{t}")
        steps.append({"step": t, "request_size": int(request.numel()), **forget_record(forgotten), **scored})
    last = steps[-1]
    return {
        "seed": seed,
        "forget_spec": f"sequential:{config.steps}x{requests[0].numel() // len(set(splits.train.y.tolist()))}"
                       f" per class",
        "forget_mode": "sample",
        **{k: last[k] for k in ("n_forget", "forget_ids_sha256", "forget_ids")},
        "budget_samples": run.budget,
        "original": run.original_info,
        "methods": last["methods"],
        "entropy_histograms": last["entropy_histograms"],
        "steps": steps,
    }
