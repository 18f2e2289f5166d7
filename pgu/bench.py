"""``pgu bench``: PROTOCOL.md end to end for one tier and scenario, over seeds, resumable.

For each seed: train the original model with the tier's recipe (or reuse it from the bench's
cache, keyed by the full training config) and take its Gram statistics once; pick the forget
set from the seed; retrain the reference without it; run each method within the same compute
budget (a share of the original training's sample passes); score every model with
:mod:`pgu.scoring` against the retrained one; time everything in the same run. Each finished
seed is written to ``OUT/seeds/seed-S.json`` at once, so a crashed bench picks up where it
stopped; ``OUT/results.json``, ``OUT/results.md`` and the plots are rewritten from all
finished seeds at the end.

No method sees the retrained model, the test split, or (PGU) the retain data; PGU's stopping
rule reads the val split only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .data import load_dataset
from .forget_sets import resolve_forget_spec
from .provenance import environment
from .recipes import load_recipe
from .runs import ModelSpec, load_model, save_model
from .scoring import score_against_reference, score_model
from .stats import GramStats, stats_batch_size
from .training import resolve_device, synchronize, train_model

__all__ = ["BenchConfig", "PGUSettings", "TIER_PGU_SETTINGS", "run_bench", "sequential_requests", "TIERS", "SCENARIOS",
           "METHODS", "REFERENCES", "available_methods", "published_settings"]

TIERS = {"digits": "digits", "mnist": "mnist", "fashion": "fashion", "cifar10-cpu": "cifar10-cpu",
         "allcnn-cifar10": "allcnn-cifar10", "smallvgg-cifar10": "smallvgg-cifar10"}
"""Tier name -> recipe name (PROTOCOL.md, Tiers): four CPU tiers and the paper's CIFAR-10 recipes (for a GPU)."""

SCENARIOS = ("random", "subclass", "class", "sequential", "poison-flip", "poison-backdoor")
POISON_SCENARIOS = ("poison-flip", "poison-backdoor")
REFERENCES = ("original", "retrain")
"""Always run: the original model (doing nothing) and the reference retrained without D_f."""


def available_methods() -> tuple[str, ...]:
    """The references and every registered unlearning method (:mod:`pgu.methods`)."""
    from .methods import method_names

    return REFERENCES + tuple(method_names())


METHODS = REFERENCES + ("pgu",)
"""The default methods of a bench (``--methods all`` takes :func:`available_methods`)."""
FORMAT = "pgu.bench/1"


@dataclass(frozen=True)
class PGUSettings:
    """PGU as the authors run it (METHOD.md sections 3 and 6): every setting the bench passes to :func:`unlearn`.

    ``lr`` is the ``(lr0, lr1)`` schedule of sample removal; ``class_lr`` that of class removal
    (``None``: the same), as the authors set each experiment's rates apart. Poisoned samples
    (METHOD.md section 8) take the authors' depoisoning run: ``poison_lr`` 0.1 -> 0.05 and
    ``poison_threshold`` 0.95 (``exp/unlearned/smallvgg_cifar10/poison/*/config.yaml``).
    """

    threshold: float = 0.9
    rule: str = "pgu"
    lr: tuple[float, float] = (0.1, 0.01)
    epochs: int = 100
    batch_size: int = 128
    class_lr: tuple[float, float] | None = None
    poison_lr: tuple[float, float] = (0.1, 0.05)
    poison_threshold: float = 0.95

    def lr_for(self, mode: str) -> tuple[float, float]:
        """The schedule of a request of ``mode`` (``"sample"``, ``"class"`` or ``"poison"``)."""
        if mode == "poison":
            return tuple(self.poison_lr)
        return tuple(self.class_lr) if mode == "class" and self.class_lr is not None else tuple(self.lr)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr"], d["poison_lr"] = list(self.lr), list(self.poison_lr)
        d["class_lr"] = None if self.class_lr is None else list(self.class_lr)
        return d


TIER_PGU_SETTINGS = {
    # LeNet has no published PGU setting (the authors' All-CNN one is the default). Class removal:
    # lr0 the largest of 0.1, 0.2, 0.5 (lr1 = lr0 / 10) whose first epoch on class 0 of a reference
    # run (`pgu train --recipe mnist`, not a bench seed) kept val accuracy on the other classes
    # within 0.5 points. At 0.1 the class took 2 epochs (forget accuracy 99.9 -> 5.3 -> 0.8), at
    # 0.2 one (0.8), at 0.5 one (0.2); val accuracy 99.34 -> 99.38 / 99.38 / 99.36.
    "mnist": PGUSettings(class_lr=(0.5, 0.05)),
}
"""Per-tier PGU settings where the authors' defaults (:class:`PGUSettings`) are not used; each with its source."""


@dataclass(frozen=True)
class BenchConfig:
    """One bench: a tier, a scenario and its parameters, methods, seeds and the compute budget.

    ``fraction`` is the ``random`` scenario's share of D; ``forget_class`` the class of
    ``class`` and ``subclass``; ``count`` the size of ``subclass`` (default: 500, the authors'
    CIFAR-10 setting, or half the class when it has fewer than 1,000 samples). ``sequential``
    makes ``steps`` requests of ``per_class`` samples of every class each (default: 2% of the
    smallest class, at most 100: the authors' Small VGG setting of 100 of CIFAR-10's 5,000 per
    class), drawn from the seed, and
    scores every method after each request against a model retrained without all requests so
    far (METHOD.md section 7). ``challenge`` > 0 also takes the 2023 NeurIPS challenge score
    of PGU (PROTOCOL.md): that many originals (each unlearned with PGU) and retrained models
    per seed, all on the seed's forget set.
    ``budget_share``: every method may process at most this share of the sample passes the
    original training made (PROTOCOL.md, Cost; the table marks a run that hit it).
    ``settings``: ``"selected"`` applies the settings ``pgu select`` chose for the tier and mode
    on val only (``pgu/methods/selected/<tier>-<mode>.toml``, where pgu ships one; else the
    published ones), ``"published"`` the authors' values (``settings.toml``), or a path to a
    selected-settings file of your own. An explicit ``pgu`` replaces any selected PGU rate.
    ``poison-flip`` and ``poison-backdoor`` (METHOD.md section 8) poison the training set with
    the seed (:mod:`pgu.poisoning`), train the original on it, and make D_f the poisoned
    samples with the labels they were trained with; the reference retrained without D_f is the
    model trained on the clean samples only. ``poison_count`` images per class are relabelled
    each way between ``poison_pairs`` class pairs (default :func:`pgu.poisoning.default_flip_count`);
    the backdoor stamps a ``trigger_size`` square on ``poison_fraction`` of the images of the
    classes other than ``poison_target``. No selection is shipped for poisoned samples, so
    ``settings="selected"`` runs the published settings there.
    """

    tier: str
    scenario: str
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    fraction: float = 0.1
    forget_class: int = 0
    count: int | None = None
    steps: int = 4
    per_class: int | None = None
    challenge: int = 0
    budget_share: float = 0.5
    pgu: PGUSettings | None = None
    settings: str = "selected"
    poison_count: int | None = None
    poison_pairs: int = 5
    poison_fraction: float = 0.05
    poison_target: int = 0
    trigger_size: int = 3

    def __post_init__(self):
        if self.pgu is None:  # the tier's settings (TIER_PGU_SETTINGS, then any selected rate), else the authors'
            pgu = TIER_PGU_SETTINGS.get(self.tier, PGUSettings())
            chosen = self.selected().get("pgu", {}).get("values", {})
            changes = {k: tuple(v) for k, v in chosen.items() if k in ("lr", "class_lr")}
            object.__setattr__(self, "pgu", replace(pgu, **changes))

    @property
    def mode(self) -> str:
        """``"class"``, ``"poison"`` (the poison scenarios) or ``"sample"``: what selected settings are keyed by."""
        if self.scenario in POISON_SCENARIOS:
            return "poison"
        return "class" if self.scenario == "class" else "sample"

    def selected_path(self) -> Path | None:
        """The selected-settings file this bench applies: none (``published``), the one pgu ships for the
        tier and mode (``selected``, when there is one), or the file named."""
        from .selection import SELECTED_DIR

        if self.settings == "published":
            return None
        if self.settings == "selected":
            path = SELECTED_DIR / f"{self.tier}-{self.mode}.toml"
            return path if path.is_file() else None
        if not Path(self.settings).is_file():
            raise ValueError(f"settings must be 'published', 'selected' or a selected-settings file written by "
                             f"`pgu select`; {self.settings!r} is none of these")
        return Path(self.settings)

    def selected(self) -> dict:
        """``{method: {"values", "factor", "source"}}`` of the selected settings applied (empty: the published ones)."""
        from .selection import load_selected

        path = self.selected_path()
        return {} if path is None else load_selected(path)

    def validate(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; choose one of {', '.join(TIERS)}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        available = available_methods()
        unknown = [m for m in self.methods if m not in available]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown}; available: {', '.join(available)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is named twice in {list(self.methods)}")
        if not 0 < self.fraction < 1:
            raise ValueError(f"the random scenario's fraction must lie in (0, 1), got {self.fraction}")
        if not 0 < self.budget_share <= 10:
            raise ValueError(f"budget_share must lie in (0, 10], got {self.budget_share}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be a positive number of samples, got {self.count}")
        if not 1 <= self.steps <= 50:
            raise ValueError(f"steps must lie in 1..50 requests, got {self.steps}")
        if self.challenge and not 2 <= self.challenge <= 256:
            raise ValueError(f"challenge needs 2 to 256 models per group (PROTOCOL: at least 32), got {self.challenge}")
        if self.challenge and (self.scenario == "sequential" or "pgu" not in self.methods):
            raise ValueError("the challenge score is taken for pgu on a single request: not with the sequential "
                             "scenario, and pgu must be among the methods")
        chained = {m for m in self.methods if m not in REFERENCES} - {"pgu"}
        if self.scenario == "sequential" and chained:
            raise ValueError(f"the sequential scenario chains pgu's requests (model and retain statistics); "
                             f"{sorted(chained)} cannot run in it: leave them out of --methods")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"per_class must be a positive number of samples, got {self.per_class}")
        if self.challenge and self.scenario in POISON_SCENARIOS:
            raise ValueError("the challenge score compares unlearned with retrained models on a random forget set; "
                             "the poison scenarios do not take it")
        if self.poison_count is not None and self.poison_count < 1:
            raise ValueError(f"poison_count must be a positive number of images per class, got {self.poison_count}")
        if self.poison_pairs < 1:
            raise ValueError(f"poison_pairs must be >= 1, got {self.poison_pairs}")
        if not 0 < self.poison_fraction < 1:
            raise ValueError(f"poison_fraction must lie in (0, 1), got {self.poison_fraction}")
        if self.trigger_size < 1:
            raise ValueError(f"trigger_size must be >= 1 pixel, got {self.trigger_size}")
        self.selected()  # an unknown value or a damaged file is refused before anything runs

    def forget_spec(self, train_y: torch.Tensor) -> str:
        """The forget spec (:mod:`pgu.forget_sets`) of this scenario; ``random`` takes the run's seed."""
        if self.scenario == "random":
            return f"random:{self.fraction}"
        if self.scenario == "class":
            return f"class:{self.forget_class}"
        count = self.count
        if count is None:
            in_class = int((train_y == self.forget_class).sum())
            count = 500 if in_class >= 1000 else max(1, in_class // 2)
        return f"subclass:{self.forget_class}:{count}"

    def poison_spec(self, train_y: torch.Tensor) -> str:
        """The :mod:`pgu.poisoning` spec of a poison scenario."""
        from .poisoning import default_flip_count

        if self.scenario == "poison-flip":
            count = self.poison_count if self.poison_count is not None else default_flip_count(train_y)
            return f"flip:{count}:{self.poison_pairs}"
        if self.scenario == "poison-backdoor":
            return f"backdoor:{self.poison_fraction:g}:{self.poison_target}:{self.trigger_size}"
        raise ValueError(f"{self.scenario!r} is not a poison scenario ({', '.join(POISON_SCENARIOS)})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"], d["methods"] = list(self.seeds), list(self.methods)
        d["pgu"] = self.pgu.to_dict()
        d["selected"] = {name: {"factor": v["factor"], **v["values"]} for name, v in self.selected().items()}
        return d

    def same_bench(self, other: dict) -> bool:
        """Whether a bench folder's recorded config is this one, seeds aside (more seeds may be added).

        A setting added to pgu after the folder was written (absent from its record) matches when
        this bench leaves it at its default, so benches made before it can still be resumed."""
        mine = {k: v for k, v in self.to_dict().items() if k != "seeds"}
        theirs = {k: v for k, v in other.items() if k != "seeds"}
        defaults = {"config": _defaults(BenchConfig, skip=("tier", "scenario", "pgu")), "pgu": _defaults(PGUSettings)}
        for key in [k for k in mine if k not in theirs]:
            if key in defaults["config"] and mine[key] == defaults["config"][key]:
                del mine[key]
        if isinstance(mine.get("pgu"), dict) and isinstance(theirs.get("pgu"), dict):
            mine["pgu"] = {k: v for k, v in mine["pgu"].items()
                           if k in theirs["pgu"] or v != defaults["pgu"].get(k, object())}
        return mine == theirs


def _defaults(cls, skip=()) -> dict:
    """A dataclass's default field values, in ``to_dict``'s JSON form (tuples as lists)."""
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(cls):
        if f.name in skip or f.default is MISSING:
            continue
        out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


def run_bench(config: BenchConfig, out, *, data_dir=None, device="auto", progress: bool = True) -> dict:
    """Run (or resume) a bench into ``out``; return the aggregated results (also written there)."""
    from .report import write_report

    config.validate()
    out = Path(out)
    device = resolve_device(device)
    env = environment(str(device))  # at the start: the commit whose code runs, whatever lands meanwhile
    recipe = load_recipe(TIERS[config.tier])
    splits = load_dataset(recipe.dataset, data_dir=data_dir, split_seed=0)
    if not splits.num_classes > config.forget_class >= 0:
        raise ValueError(f"forget_class must be a class of {splits.name} (0 to {splits.num_classes - 1}), "
                         f"got {config.forget_class}")
    if config.scenario in POISON_SCENARIOS:
        _check_poisoning(config, splits)
    _claim(out, config)
    seeds_dir = out / "seeds"
    seeds_dir.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in config.seeds:
        path = seeds_dir / f"seed-{seed}.json"
        if path.is_file():
            per_seed.append(json.loads(path.read_text()))
            continue
        result = _run_seed(config, recipe, splits, seed, device, out / "cache", progress)
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
    from .poisoning import parse_poison_spec, poison

    if not splits.num_classes > config.poison_target >= 0:
        raise ValueError(f"poison_target must be a class of {splits.name} (0 to {splits.num_classes - 1}), "
                         f"got {config.poison_target}")
    if config.trigger_size > min(splits.input_shape[-2:]):
        raise ValueError(f"a {config.trigger_size}-pixel trigger does not fit {splits.name}'s "
                         f"{splits.input_shape[-2]}x{splits.input_shape[-1]} images")
    if config.scenario == "poison-flip":  # class counts and pairs: labels only, so a one-pixel copy suffices
        small = replace(splits.train, x=splits.train.x[:, :, :1, :1])
        poison(small, parse_poison_spec(config.poison_spec(splits.train.y)), seed=0)


def _run_seed(config: BenchConfig, recipe, splits, seed: int, device, cache: Path, progress: bool) -> dict:
    train_cfg = replace(recipe.train, seed=seed)
    if config.scenario in POISON_SCENARIOS:
        return _run_poison(config, recipe, splits, seed, device, cache, progress, train_cfg)
    original, stats, original_info = _original(recipe, train_cfg, splits, device, cache, progress)
    budget = int(config.budget_share * original_info["samples_seen"])
    if config.scenario == "sequential":
        return _run_sequential(config, recipe, splits, seed, device, progress, train_cfg, original, stats,
                               original_info, budget)
    forget = resolve_forget_spec(config.forget_spec(splits.train.y), splits.train, seed)
    mask = forget.mask(splits.train)
    method_runs = {}
    for name in config.methods:
        if name not in REFERENCES:
            method_runs[name] = _run_method(name, config, original, stats, splits, mask, forget.mode, budget, device,
                                            seed, train_cfg, progress)
    request = _score_request(config, recipe, splits, seed, device, progress, train_cfg, original, mask, forget.classes,
                             method_runs, desc=f"seed {seed}: retrain without D_f")
    out = {
        "seed": seed,
        "forget_spec": forget.spec,
        "forget_mode": forget.mode,
        **_forget_record(forget.ids),
        "budget_samples": budget,
        "original": original_info,
        **request,
    }
    if config.challenge:
        out["challenge"] = _challenge(config, recipe, splits, seed, device, mask, forget.mode, budget, progress)
    return out


def _run_poison(config: BenchConfig, recipe, splits, seed: int, device, cache: Path, progress: bool, train_cfg) -> dict:
    """One seed of a poison scenario: poison D with the seed, train on it, remove the poisoned samples.

    The reference (``retrain``) is trained on the clean samples only. Every model gets the
    detoxification metrics of :func:`pgu.scoring.score_poisoning` beside the usual ones, and
    ``TA_recovered``: the share of the test-accuracy gap between the poisoned original and the
    clean model it closed (``None`` when that gap is under 0.1 points).
    """
    from .poisoning import poison, poisoning_summary, under_true_labels
    from .scoring import score_poisoning

    spec = config.poison_spec(splits.train.y)
    poisoned, record = poison(splits.train, spec, seed=seed)
    summary = {"spec": spec, **poisoning_summary(record)}
    psplits = replace(splits, train=poisoned)
    original, stats, original_info = _original(recipe, train_cfg, psplits, device, cache, progress,
                                               poisoning={k: v for k, v in summary.items() if k != "trigger_values"})
    budget = int(config.budget_share * original_info["samples_seen"])
    mask = poisoned.mask_of(record.ids)
    method_runs = {}
    for name in config.methods:
        if name not in REFERENCES:
            method_runs[name] = _run_method(name, config, original, stats, psplits, mask, "poison", budget, device,
                                            seed, train_cfg, progress)
    forget_true = under_true_labels(poisoned, record)
    request = _score_request(config, recipe, psplits, seed, device, progress, train_cfg, original, mask, (),
                             method_runs, desc=f"seed {seed}: train on the clean samples only",
                             extra_scores=lambda model: score_poisoning(model, record, forget_true, splits.test))
    clean, dirty = request["methods"]["retrain"], request["methods"]["original"]
    gap = clean["TA"] - dirty["TA"]
    for row in request["methods"].values():
        row["TA_recovered"] = (row["TA"] - dirty["TA"]) / gap if abs(gap) >= 0.1 else None
    return {"seed": seed, "forget_spec": f"poisoned:{spec}", "forget_mode": "poison", **_forget_record(record.ids),
            "poisoning": summary, "budget_samples": budget, "original": original_info, **request}


def _challenge(config, recipe, splits, seed, device, mask, mode: str, budget: int, progress: bool) -> dict:
    """PGU's challenge score (PROTOCOL.md): ``config.challenge`` unlearned and as many retrained models.

    The originals' own score against the retrained models (doing nothing) is reported beside it.

    Model ``i`` of both groups trains with seed ``1000 (seed + 1) + i`` (never a bench seed's own).
    """
    from .metrics import accuracy, challenge_score
    from .scoring import softmax_outputs

    forget, retain = splits.train.subset(mask), splits.train.subset(~mask)
    groups = {name: {"probs": [], "RA": [], "TA": []} for name in ("unlearned", "retrained", "original")}
    start = time.perf_counter()
    for i in range(config.challenge):
        cfg = replace(recipe.train, seed=1000 * (seed + 1) + i)
        trained = train_model(recipe.model, splits, cfg, device=device, desc=f"challenge original {i}")
        stats = GramStats().fit(trained.model, splits.train.loader(stats_batch_size(device), device=device))
        unlearned = _run_method("pgu", config, trained.model, stats, splits, mask, mode, budget, device, seed, cfg,
                                False)["model"]
        retrained = train_model(recipe.model, splits, cfg, subset=~mask, device=device, desc=f"challenge retrain {i}")
        for name, model in (("unlearned", unlearned), ("retrained", retrained.model), ("original", trained.model)):
            g = groups[name]
            g["probs"].append(softmax_outputs(model, forget)[0])
            for key, data in (("RA", retain), ("TA", splits.test)):
                g[key].append(accuracy(softmax_outputs(model, data)[0], data.y.numpy()))
    u, r, o = groups["unlearned"], groups["retrained"], groups["original"]

    def versus_retrained(g):
        return challenge_score(np.stack(g["probs"]), np.stack(r["probs"]), forget.y.numpy(), np.mean(g["RA"]),
                               np.mean(r["RA"]), np.mean(g["TA"]), np.mean(r["TA"]))

    score, doing_nothing = versus_retrained(u), versus_retrained(o)
    return {"models_per_group": config.challenge, "forgetting_quality": score["forgetting_quality"],
            "score": score["score"], "epsilon_mean": float(np.mean(score["epsilons"])),
            "original_forgetting_quality": doing_nothing["forgetting_quality"],
            "original_score": doing_nothing["score"],
            "ra_unlearned": float(np.mean(u["RA"])), "ra_retrained": float(np.mean(r["RA"])),
            "ta_unlearned": float(np.mean(u["TA"])), "ta_retrained": float(np.mean(r["TA"])),
            "seconds": round(time.perf_counter() - start, 3)}


def _forget_record(ids: torch.Tensor) -> dict:
    return {"n_forget": int(ids.numel()), "forget_ids_sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
            "forget_ids": ids.tolist() if ids.numel() <= 5000 else None}


def _method_settings(name: str, config: BenchConfig) -> dict:
    """A method's settings in this bench: :func:`published_settings`, then the selected values (``config.settings``).

    ``pgu``'s selected rates are already in ``config.pgu``."""
    settings = published_settings(name, config)
    if name != "pgu":
        settings.update(config.selected().get(name, {}).get("values", {}))
    return settings


def published_settings(name: str, config: BenchConfig) -> dict:
    """A method's settings: ``settings.toml``'s, with PGU's schedule and (for ``pgu``) threshold from ``config.pgu``."""
    from .methods import method_settings

    settings, _ = method_settings(name)
    if name in ("pgu", "pgu-energy"):
        p = config.pgu
        settings.update(lr=list(p.lr), class_lr=None if p.class_lr is None else list(p.class_lr), epochs=p.epochs,
                        batch_size=p.batch_size, poison_lr=list(p.poison_lr))
        if name == "pgu":
            settings.update(threshold=p.threshold, rule=p.rule, poison_threshold=p.poison_threshold)
    return settings


def _run_method(name: str, config: BenchConfig, model, stats, splits, mask, mode: str, budget: int, device, seed: int,
                train_cfg, progress: bool, settings: dict | None = None) -> dict:
    """One request by method ``name``, timed, as the bench records it (the model, seconds and what it reports).

    The method gets the forget set, the retain set only when it is not data-free (PGU gets the
    retain statistics instead), the val split, and the budget in sample passes; ``settings``
    (default: the bench's, :func:`_method_settings`).
    """
    from .methods import MethodContext, get_method

    info, run = get_method(name)
    if settings is None:
        settings = _method_settings(name, config)
    forget_data = splits.train.subset(mask)
    forget_loader = forget_data.loader(int(settings["batch_size"]), device=device)
    retain_loader = None
    if not info.data_free:
        retain_loader = splits.train.subset(~mask).loader(int(settings.get("retain_batch_size", settings["batch_size"])),
                                                          shuffle=True, seed=seed, device=device)
    mean, std = _pixel_scale(splits.info)
    context = MethodContext(num_classes=splits.num_classes, train_epochs=train_cfg.epochs, max_samples=budget,
                            forget_mode=mode, val_loader=splits.val.loader(512, device=device), stats=stats, seed=seed,
                            pixel_mean=mean, pixel_std=std, progress=progress)
    synchronize(device)
    start = time.perf_counter()
    result = run(model, forget_loader, retain_loader, settings, context)
    synchronize(device)
    seconds = time.perf_counter() - start
    details = {"samples_processed": result.samples_processed, "hit_budget": result.hit_budget, **result.details,
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
    out = {"model": result.model, "seconds": seconds, "data_free": info.data_free, "details": details}
    if "retain_stats" in result.extras:
        out["retain_stats"] = result.extras["retain_stats"]
    return out


def _pixel_scale(info: dict):
    """``(mean, std)`` of the dataset's pixel normalisation (``None`` when it records none)."""
    norm = info.get("normalise")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        return tuple(norm["mean"]), tuple(norm["std"])
    if isinstance(norm, (list, tuple)) and len(norm) == 2:
        return (float(norm[0]),), (float(norm[1]),)
    return None, None


def _score_request(config, recipe, splits, seed, device, progress, train_cfg, original, mask, classes, method_runs,
                   desc: str, extra_scores=None) -> dict:
    """Retrain without ``mask``, then score original, retrain and the methods' models on that forget set.

    ``extra_scores(model) -> dict``: more metrics of each model, added to its row."""
    retrained = train_model(recipe.model, splits, train_cfg, subset=~mask, device=device, progress=progress, desc=desc)
    runs = {"original": {"model": original, "seconds": 0.0, "data_free": True, "details": {}},
            "retrain": {"model": retrained.model, "seconds": retrained.seconds, "data_free": False,
                        "details": {"samples_seen": retrained.samples_seen}}}
    for name, run in method_runs.items():
        runs[name] = {k: v for k, v in run.items() if k != "retain_stats"}
    sets = {"forget": splits.train.subset(mask), "retain": splits.train.subset(~mask), "val": splits.val,
            "test": splits.test}
    scores = {name: score_model(run["model"], sets, classes=classes, seed=seed) for name, run in runs.items()}
    methods = {}
    for name, run in runs.items():
        row = {k: v for k, v in scores[name].items() if not k.startswith("_")}
        row.update(score_against_reference(scores[name], scores["retrain"]))
        if extra_scores is not None:
            row.update(extra_scores(run["model"]))
        row["seconds"] = round(run["seconds"], 4)
        row["speedup"] = (round(runs["retrain"]["seconds"] / run["seconds"], 3)
                          if name not in ("original", "retrain") and run["seconds"] > 0 else None)
        row["needs_retain_data"] = not run["data_free"]
        row["details"] = run["details"]
        methods[name] = row
    return {"methods": methods,
            "entropy_histograms": {name: scores[name]["_forget_entropy_histogram"] for name in runs}}


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


def _run_sequential(config, recipe, splits, seed, device, progress, train_cfg, original, stats, original_info,
                    budget) -> dict:
    """Requests one after another; after each, every method is scored against a model retrained without all so far."""
    requests = sequential_requests(splits.train.y, splits.train.ids, config.steps, config.per_class, seed)
    model, current_stats = original, stats
    steps, forgotten = [], splits.train.ids[:0]
    for t, request in enumerate(requests, start=1):
        forgotten = torch.cat([forgotten, request]).sort().values
        mask = splits.train.mask_of(forgotten)
        method_runs = {}
        if "pgu" in config.methods:
            pgu_run = _run_method("pgu", config, model, current_stats, splits, splits.train.mask_of(request), "sample",
                                  budget, device, seed, train_cfg, progress)
            model, current_stats = pgu_run["model"], pgu_run.pop("retain_stats")
            method_runs["pgu"] = pgu_run
        scored = _score_request(config, recipe, splits, seed, device, progress, train_cfg, original, mask, (),
                                method_runs, desc=f"seed {seed}: retrain without requests 1-{t}")
        steps.append({"step": t, "request_size": int(request.numel()), **_forget_record(forgotten), **scored})
    last = steps[-1]
    return {
        "seed": seed,
        "forget_spec": f"sequential:{config.steps}x{requests[0].numel() // len(set(splits.train.y.tolist()))}"
                       f" per class",
        "forget_mode": "sample",
        **{k: last[k] for k in ("n_forget", "forget_ids_sha256", "forget_ids")},
        "budget_samples": budget,
        "original": original_info,
        "methods": last["methods"],
        "entropy_histograms": last["entropy_histograms"],
        "steps": steps,
    }


def _original(recipe, train_cfg, splits, device, cache: Path, progress: bool, poisoning: dict | None = None):
    """The seed's original model and its Gram statistics, from the cache when the full config matches.

    ``poisoning``: the summary of the poisoning ``splits.train`` carries (part of the cache key)."""
    keyed = {"recipe": recipe.to_dict() | {"train": train_cfg.to_dict()}, "dataset": splits.name,
             "train": len(splits.train), "info": splits.info}
    if poisoning is not None:
        keyed["poisoning"] = poisoning
    key_source = json.dumps(keyed, sort_keys=True, default=str)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    folder = cache / f"original-{key}"
    spec = ModelSpec(recipe.model, splits.num_classes, splits.input_shape[0], train_cfg.width, splits.input_shape[-1])
    if (folder / "info.json").is_file():
        info = json.loads((folder / "info.json").read_text())
        model, _ = load_model(folder / "model.safetensors", device=device)
        stats = GramStats.load(folder / "stats.safetensors")
        return model, stats, info | {"cached": True}
    trained = train_model(recipe.model, splits, train_cfg, device=device, progress=progress,
                          desc=f"seed {train_cfg.seed}: train original" + (" on poisoned data" if poisoning else ""))
    start = time.perf_counter()
    stats = GramStats().fit(trained.model, splits.train.loader(stats_batch_size(device), device=device), progress=progress,
                            desc="Gram statistics of D")
    stats_seconds = time.perf_counter() - start
    info = {"train_seconds": round(trained.seconds, 4), "samples_seen": trained.samples_seen,
            "stats_seconds": round(stats_seconds, 4), "stats_bytes": sum(stats.nbytes.values()), "cache_key": key}
    tmp = cache / f".original-{key}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_model(tmp / "model.safetensors", trained.model, spec)
    stats.save(tmp / "stats.safetensors")
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    if folder.exists():  # a concurrent bench finished first: keep theirs
        import shutil

        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)
    return trained.model, stats, info | {"cached": False}
