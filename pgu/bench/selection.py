"""``pgu select``: choose each method's setting on held-out data only, with the same trials for every method.

The authors' settings (``pgu/bench/methods/settings.toml``) come from ResNets on CIFAR-10; on another
tier they may move nothing or far too much. Selection tries every method at the same ladder of
factors (:data:`LADDER`) on the settings its ``scale`` names, on one reference request (a seed
no bench uses), and scores each trial by a *held-out proxy gap* (the rule that picks the factor
is below). It never sees a
retrained model or the test split; it reads the forget set (which every method is given) and
the val split (the methods' own held-out data).

The proxy gap stands in for Avg.Gap (docs/protocol.md) with what a request can know:

* A model that never trained on D_f predicts it as it predicts unseen data. For sample removal
  (random, subclass) the target forget accuracy is the original's val accuracy on D_f's class
  mix (per-class val accuracy weighted by D_f's class counts); for class removal it is 0 (a model
  retrained without a class never predicts it).
* Held-out accuracy should stay where it was: val accuracy (for class removal, on the classes kept).

``proxy_gap = (|FA - target| + |VA - VA_original|) / 2``, in percentage points. Of the factors
whose proxy gap is within one standard error of the val accuracy (``100 sqrt(p (1 - p) / n)``)
of the lowest, the one closest to 1 is kept: differences below what val can measure do not move
a method off its authors' value, nor to an extreme where it does nothing at all. Only trials
that keep val accuracy within :data:`MAX_VAL_DROP` points of the original's compete (all of them
when none does), the allowance PGU's own stopping rule has.

The result is a settings file (``selected.toml``) in the format the bench reads
(``pgu/selected/<tier>-<mode>.toml`` ship with the package), and ``selection.json``
with every trial.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pgu.bench import metrics
from pgu.bench.config import BenchConfig
from pgu.bench.methods import load_selected, method_scale
from pgu.bench.scoring import softmax_outputs
from pgu.bench.seed import SeedRun, published_settings
from pgu.data import load_dataset
from pgu.data.forget_sets import resolve_forget_spec
from pgu.heldout import class_mix_accuracy, standard_error
from pgu.provenance import environment
from pgu.settings import SELECTED_DIR
from pgu.zoo.training import resolve_device

__all__ = ["LADDER", "MAX_VAL_DROP", "scaled_settings", "heldout_target", "proxy_gap", "choose_factor", "choose_all",
           "run_selection", "selected_toml", "load_selected", "SELECTED_DIR"]

MAX_VAL_DROP = 5.0
"""Points of val accuracy a chosen setting may lose against the original (PGU's own guard, the issue's allowance)."""

LADDER = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""Factors every method is tried at (1 is the published setting): nine trials each, two decades either way."""



def scaled_settings(settings: dict, scale: dict[str, float], factor: float, mode: str) -> tuple[dict, dict]:
    """``(settings at factor, the values changed)``: each setting in ``scale`` times ``factor ** power``.

    A schedule (a list of rates) is scaled element by element. Of PGU's two schedules only the
    one the request's ``mode`` runs is varied: ``class_lr`` for class removal when it is set,
    else ``lr``.
    """
    if not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"a selection factor must be a positive number, got {factor}")
    keys = dict(scale)
    if "class_lr" in keys and "lr" in keys:
        class_schedule = mode == "class" and settings.get("class_lr") is not None
        keys.pop("lr" if class_schedule else "class_lr")
    out, changed = dict(settings), {}
    for key, power in keys.items():
        value = settings.get(key)
        if value is None:
            continue
        times = factor ** power
        changed[key] = ([_round(float(v) * times) for v in value] if isinstance(value, (list, tuple))
                        else _round(float(value) * times))
        out[key] = changed[key]
    return out, changed


def _round(value: float) -> float:
    """12 significant digits: 0.1 x 0.1 is written 0.01, not 0.010000000000000002."""
    return float(f"{value:.12g}")


def heldout_target(val_correct: np.ndarray, val_y: np.ndarray, forget_y: np.ndarray, mode: str) -> float:
    """The forget accuracy (percent) of a model that never saw D_f, estimated from the original on val.

    Sample removal: the original's per-class val accuracy, weighted by D_f's class counts (a
    class missing from val counts at the overall val accuracy). Class removal: 0.
    """
    if mode == "class":
        return 0.0
    return class_mix_accuracy(val_correct, val_y, forget_y)


def proxy_gap(forget_acc: float, val_acc: float, target: float, val_acc_original: float) -> float:
    """``(|FA - target| + |VA - VA_original|) / 2`` in points: Avg.Gap's forget and held-out terms, on val."""
    return (abs(forget_acc - target) + abs(val_acc - val_acc_original)) / 2.0


def choose_factor(trials: list[dict], margin: float, val_floor: float | None = None) -> float:
    """The factor closest to the published one (1) among those whose proxy gap is within ``margin`` of the lowest.

    A one-standard-error rule: the trials val cannot tell apart from the best are equally good,
    and of those the one nearest the authors' value is kept (the published value itself whenever
    it is among them). ``trials`` hold ``factor``, ``proxy_gap`` (``None`` for a trial that
    failed) and ``VA``. With ``val_floor``, only trials whose val accuracy stays at or above it
    compete (all of them when none does): forgetting bought with the model's held-out accuracy is
    not a setting a user would keep. Ties go to the lower gap, then the lower factor. Trials that
    measured exactly the same forget and val accuracy as the one kept did the same thing on val:
    of those, the one that processed the fewest samples is kept (the same result, sooner).
    """
    done = [t for t in trials if t.get("proxy_gap") is not None and math.isfinite(t["proxy_gap"])]
    if not done:
        raise ValueError("every trial failed: no factor can be chosen")
    if val_floor is not None:
        done = [t for t in done if t["VA"] >= val_floor] or done
    best = min(t["proxy_gap"] for t in done)
    near = [t for t in done if t["proxy_gap"] <= best + margin + 1e-12]
    def closeness(t):
        return round(abs(math.log(t["factor"])), 9), t["proxy_gap"], t["factor"]

    chosen = min(near, key=closeness)
    same = [t for t in near if t.get("samples_processed") is not None and t.get("FA") == chosen.get("FA")
            and t.get("VA") == chosen.get("VA")]
    if chosen in same:
        chosen = min(same, key=lambda t: (t["samples_processed"], *closeness(t)))
    return float(chosen["factor"])


def run_selection(tier: str, scenario: str, seed: int, methods, out, *, ladder=LADDER, data_dir=None,
                  device="auto", progress: bool = True, fraction: float = 0.1, forget_class: int = 0,
                  count: int | None = None, budget_share: float = 0.5, cache=None, model: str | None = None) -> dict:
    """Try every method at every factor of ``ladder`` on one reference request; write ``selection.json``,
    ``selected.toml`` and ``selection.png`` into ``out``; return the selection.

    The original is trained with the tier's recipe at ``seed`` (cached in ``cache``, default
    ``out/cache``, as the bench caches it), the forget set drawn from ``seed``. Use a seed no bench of yours uses.
    ``tier`` and ``model`` as :class:`~pgu.bench.config.BenchConfig`'s (a recipe file; your model).
    """
    ladder = tuple(float(f) for f in ladder)
    if 1.0 not in ladder or len(set(ladder)) != len(ladder) or any(not f > 0 for f in ladder):
        raise ValueError(f"the ladder must hold distinct positive factors including 1 (the published setting), "
                         f"got {list(ladder)}")
    if scenario not in ("random", "subclass", "class"):
        raise ValueError(f"selection runs one request of random, subclass or class forgetting (its held-out proxy); "
                         f"{scenario!r} is not one: choose random, subclass or class")
    config = BenchConfig(tier=tier, scenario=scenario, seeds=(seed,), methods=("original", "retrain", *methods),
                         fraction=fraction, forget_class=forget_class, count=count, budget_share=budget_share,
                         settings="published", model=model)
    config.validate()
    if not methods:
        raise ValueError("name at least one method to select settings for")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    env = environment(str(device))
    recipe = config.recipe()
    splits = load_dataset(recipe.dataset, data_dir=data_dir, split_seed=0)
    run = SeedRun(config, recipe, splits, seed, device, out / "cache" if cache is None else Path(cache), progress)
    run.train_original()
    original, original_info, budget = run.original, run.original_info, run.budget
    forget = resolve_forget_spec(config.forget_spec(splits.train.y), splits.train, seed)
    mask = forget.mask(splits.train)
    forget_data = splits.train.subset(mask)
    val = splits.val
    if forget.mode == "class":
        val = val.subset(~torch.isin(val.y, torch.as_tensor(list(forget.classes))))

    def accuracies(model) -> tuple[float, float, np.ndarray]:
        pf, _ = softmax_outputs(model, forget_data, what="the forget set")
        pv, _ = softmax_outputs(model, val, what="the val split")
        return (metrics.top1_accuracy(pf, forget_data.y.numpy()), metrics.top1_accuracy(pv, val.y.numpy()),
                pv.argmax(1) == val.y.numpy())

    fa0, va0, val_correct0 = accuracies(original)
    target = heldout_target(val_correct0, val.y.numpy(), forget_data.y.numpy(), forget.mode)
    margin = standard_error(va0, len(val))
    selection = {"format": "pgu.selection/1", "tier": tier, "scenario": scenario, "seed": seed,
                 "forget_spec": forget.spec, "forget_mode": forget.mode, "n_forget": int(mask.sum()),
                 "n_val": len(val), "ladder": list(ladder), "budget_samples": budget,
                 "original": {"FA": fa0, "VA": va0, "proxy_gap": proxy_gap(fa0, va0, target, va0), **original_info},
                 "target_FA": target, "margin": margin, "max_val_drop": MAX_VAL_DROP, "methods": {},
                 "environment": env}
    earlier = _earlier_trials(out / "selection.json", selection, original_info)
    trial_run = replace(run, progress=False)
    start = time.perf_counter()
    for name in methods:
        base = published_settings(name, config)
        scale = method_scale(name)
        trials = []
        for factor in ladder:
            settings, changed = scaled_settings(base, scale, factor, forget.mode)
            trial = {"factor": factor, "changed": changed}
            done = earlier.get((name, json.dumps([_jsonable(base), changed], sort_keys=True)))
            if done is not None:  # the same trial of an earlier selection into this folder
                trials.append(done | {"factor": factor, "reused": True})
                continue
            try:
                done = trial_run.run_method(name, mask, forget.mode, settings=settings)
                if not all(torch.isfinite(p).all() for p in done["model"].parameters()):
                    raise FloatingPointError("the unlearned model has non-finite weights")
                fa, va, _ = accuracies(done["model"])
                trial.update(FA=fa, VA=va, proxy_gap=proxy_gap(fa, va, target, va0), seconds=round(done["seconds"], 3),
                             samples_processed=done["details"]["samples_processed"],
                             hit_budget=done["details"]["hit_budget"])
            except FloatingPointError as e:  # a diverged trial is a result; any other error is a bug and surfaces
                trial.update(FA=None, VA=None, proxy_gap=None, error=f"{type(e).__name__}: {e}")
            trials.append(trial)
            if progress:
                shown = "failed" if trial["proxy_gap"] is None else (
                    f"FA {trial['FA']:.2f} VA {trial['VA']:.2f} proxy gap {trial['proxy_gap']:.3f}")
                print(f"select {name} x{factor:g}: {shown}", flush=True)
        selection["methods"][name] = {"published": _jsonable(base), "scale": scale, "trials": trials}
    selection["seconds"] = round(time.perf_counter() - start, 3)
    choose_all(selection)
    (out / "selection.json").write_text(json.dumps(selection, indent=2))
    (out / "selected.toml").write_text(selected_toml(selection))
    _plot(selection, out / "selection.png")
    return selection


def choose_all(selection: dict) -> dict:
    """Set every method's ``chosen_factor`` and ``chosen`` values from its trials (:func:`choose_factor`).

    The choice is a function of the recorded trials, the margin and the val floor
    (``original VA - max_val_drop``) alone, so a selection file can be re-chosen without rerunning
    anything.
    """
    floor = selection["original"]["VA"] - selection.get("max_val_drop", MAX_VAL_DROP)
    for m in selection["methods"].values():
        m["chosen_factor"] = choose_factor(m["trials"], selection["margin"], floor)
        m["chosen"] = next(t["changed"] for t in m["trials"] if t["factor"] == m["chosen_factor"])
    return selection


def _earlier_trials(path: Path, selection: dict, original_info: dict) -> dict:
    """Trials of an earlier selection in the same folder on the same request, by (method, settings varied).

    Reused only when the tier, scenario, seed, forget set, budget and original model (cache key)
    match, and the method's published settings are the same, so widening a ladder reruns only the
    new factors.
    """
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    same = all(old.get(k) == selection[k] for k in ("tier", "scenario", "seed", "forget_spec", "n_forget", "n_val",
                                                     "budget_samples"))
    if not same or old.get("original", {}).get("cache_key") != original_info.get("cache_key"):
        return {}
    out = {}
    for name, m in old.get("methods", {}).items():
        for t in m.get("trials", []):
            t = {k: v for k, v in t.items() if k != "reused"}
            out[(name, json.dumps([m.get("published"), t.get("changed")], sort_keys=True))] = t
    return out


def _jsonable(settings: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def selected_toml(selection: dict) -> str:
    """The selected settings as the bench reads them: one section per method, its values, factor and source."""
    commit = (selection.get("environment") or {}).get("commit") or "unknown"
    lines = [f"# Written by `pgu select --tier {selection['tier']} --scenario {selection['scenario']} "
             f"--seed {selection['seed']}` (commit {commit}).",
             "# Each method at the factor of the ladder nearest its published value among those whose held-out",
             "# proxy gap is within one standard error of the lowest (pgu.bench.selection); the values replace the",
             "# published ones in pgu/bench/methods/settings.toml.", ""]
    for name, m in selection["methods"].items():
        chosen = next(t for t in m["trials"] if t["factor"] == m["chosen_factor"])
        published = next(t for t in m["trials"] if t["factor"] == 1.0)
        lines.append(f'["{name}"]')
        lines.append(f'source = "pgu select seed {selection["seed"]}: factor {m["chosen_factor"]:g} of the published '
                     f'value, proxy gap {_fmt(chosen.get("proxy_gap"))} against {_fmt(published.get("proxy_gap"))} '
                     f'at the published value (margin {selection["margin"]:.3f})"')
        lines.append(f"factor = {m['chosen_factor']!r}")
        for key, value in m["chosen"].items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "failed" if v is None else f"{v:.3f}"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return repr(float(value))


def _plot(selection: dict, path: Path) -> None:
    """Proxy gap against factor, one line per method: where each method's published setting sits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = plt.get_cmap("tab20").colors
    for i, (name, m) in enumerate(selection["methods"].items()):
        pts = [(t["factor"], t["proxy_gap"]) for t in m["trials"] if t.get("proxy_gap") is not None]
        if pts:
            ax.plot(*zip(*pts), marker="osD^v<>ph*"[i % 10], ms=4, color=colours[(2 * i) % 20 + (i >= 10)],
                    label=f"{name} (x{m['chosen_factor']:g})")
    ax.axhline(selection["original"]["proxy_gap"], color="k", ls=":", lw=1, label="original")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("factor on the published setting")
    ax.set_ylabel("held-out proxy gap (points)")
    ax.set_title(f"selection: {selection['tier']} {selection['scenario']}, seed {selection['seed']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
