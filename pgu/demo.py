"""``pgu demo``: the main job end to end on scikit-learn's bundled digits (no files, no network).

Train a small CNN, cache its Gram statistics once, then serve two deletion requests from the
trained model, a random 10% of the training set (``mode="sample"``) and one whole class
(``mode="class"``), each compared with a model retrained from scratch without the forget set
(same seed, same recipe, same machine). Each request is served as pgu serves it for a user
(``served``): a sample request with ``pgu-heldout`` (docs/method.md section 10), a class
request with ``pgu``; both with the settings chosen on val for the tier (``pgu/selected``,
written by ``pgu select``). The authors' ``pgu`` at its published settings runs beside it.
Built from the library's registries (dataset, model, methods), trainer and evaluator, not as a
one-off script.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pgu.bench.config import BenchConfig
from pgu.bench.methods import MethodContext, get_method
from pgu.bench.seed import bench_settings
from pgu.data import load_dataset
from pgu.evaluation import accuracy
from pgu.provenance import environment
from pgu.settings import SELECTED_DIR, PGUSettings
from pgu.stats import GramStats
from pgu.unlearn import unlearn
from pgu.zoo.recipes import load_recipe
from pgu.zoo.training import TrainConfig, train_model

__all__ = ["DemoConfig", "run_demo", "format_table"]


@dataclass(frozen=True)
class DemoConfig:
    dataset: str = "digits"
    model: str = "digits-cnn"
    train: TrainConfig = field(default_factory=lambda: load_recipe("digits").train)
    random_fraction: float = 0.1
    # the authors' All-CNN settings (docs/method.md sections 3, 6), for the row "pgu (authors')"
    pgu: PGUSettings = field(default_factory=PGUSettings)
    # the tier whose settings chosen on val (pgu/selected/<tier>-<mode>.toml) the served requests use
    tier: str = "digits"
    budget_share: float = 0.5  # PGU may process at most this share of the training run's samples


def _forget_masks(train_y: torch.Tensor, seed: int, fraction: float) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    n = len(train_y)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: int(round(fraction * n))]] = True
    forget_class = int(torch.randint(0, int(train_y.max()) + 1, (1,), generator=g))
    return [
        {"name": f"random {fraction:.0%}", "mode": "sample", "mask": mask, "classes": []},
        {"name": f"class {forget_class}", "mode": "class", "mask": train_y == forget_class, "classes": [forget_class]},
    ]


def _scores(model, splits, forget, retain, classes) -> dict:
    def acc(data, **kw):
        return round(accuracy(model, data.loader(512), **kw), 2)

    out = {"forget_acc": acc(forget), "retain_acc": acc(retain), "test_acc": acc(splits.test)}
    if classes:
        out["test_acc_other_classes"] = acc(splits.test, exclude_classes=classes)
    return out


def run_demo(out: str | Path | None = None, seed: int = 0, *, progress: bool = True,
             config: DemoConfig = DemoConfig()) -> dict:
    """Run the demo; return the results (and write ``out/results.json`` when ``out`` is given)."""
    if out is not None:  # fail before any work if the results cannot be written
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    train_cfg = TrainConfig(**{**asdict(config.train), "seed": seed})
    splits = load_dataset(config.dataset, split_seed=0)
    original = train_model(config.model, splits, train_cfg, progress=progress, desc="train original")
    model = original.model

    t0 = time.perf_counter()
    stats = GramStats().fit(model, splits.train.loader(256), progress=progress, desc="Gram statistics of D")
    stats_seconds = time.perf_counter() - t0

    budget = int(config.budget_share * original.samples_seen)
    requests = []
    for req in _forget_masks(splits.train.y, seed, config.random_fraction):
        forget, retain = splits.train.subset(req["mask"]), splits.train.subset(~req["mask"])
        retrained = train_model(config.model, splits, train_cfg, subset=~req["mask"], progress=progress,
                                desc=f"retrain without {req['name']}")
        result = unlearn(model, forget.loader(config.pgu.batch_size), stats, val_loader=splits.val.loader(512),
                         mode=req["mode"], settings=config.pgu, max_samples=budget, progress=progress)
        pgu_seconds = result.seconds["total"]
        served = _serve(model, forget, splits, stats, req["mode"], config, budget, seed, progress)
        requests.append({
            "name": req["name"],
            "mode": req["mode"],
            "n_forget": len(forget),
            "forget_ids": forget.ids.tolist(),
            "methods": {
                "original": {**_scores(model, splits, forget, retain, req["classes"]), "seconds": None},
                "retrain": {**_scores(retrained.model, splits, forget, retain, req["classes"]),
                            "seconds": round(retrained.seconds, 3)},
                "pgu": {**_scores(result.model, splits, forget, retain, req["classes"]),
                        "seconds": round(pgu_seconds, 3)},
                "served": {**_scores(served["model"], splits, forget, retain, req["classes"]),
                           "seconds": round(served["seconds"], 3)},
            },
            "speedup": round(retrained.seconds / pgu_seconds, 2),
            "served": {k: v for k, v in served.items() if k != "model"}
                      | {"speedup": round(retrained.seconds / served["seconds"], 2)},
            "pgu": {
                "stop_reason": result.stop_reason,
                "epochs": result.epochs,
                "kept_epoch": result.kept_epoch,
                "samples_processed": result.samples_processed,
                "budget_samples": budget,
                "ranks": result.cgs.summary(),
                "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
                "history": result.history,
            },
        })
    results = {
        "demo": "pgu demo",
        "seed": seed,
        "config": {**asdict(config), "train": train_cfg.to_dict(), "pgu": config.pgu.to_dict()},
        "dataset": {"name": splits.name, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                    **splits.info},
        "original": {"train_seconds": round(original.seconds, 3), "samples_seen": original.samples_seen,
                     "stats_seconds": round(stats_seconds, 3),
                     "stats_bytes": sum(stats.nbytes.values())},
        "requests": requests,
        "environment": environment(),
    }
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def served_method(mode: str) -> str:
    """How pgu serves a request of ``mode`` for a user: ``pgu-heldout`` for samples, ``pgu`` for whole classes."""
    return "pgu-heldout" if mode == "sample" else "pgu"


def _serve(model, forget, splits, stats, mode: str, config: DemoConfig, budget: int, seed: int, progress: bool):
    """One request served as pgu serves it (:func:`served_method`), with the tier's settings chosen on val: the
    settings ``pgu bench`` would run it with (:func:`pgu.bench.seed.bench_settings`)."""
    name = served_method(mode)
    bench = BenchConfig(tier=config.tier, scenario="class" if mode == "class" else "random")
    settings = bench_settings(name, bench)
    path = bench.selected_path()
    context = MethodContext(num_classes=splits.num_classes, train_epochs=config.train.epochs, max_samples=budget,
                            forget_mode=mode, val_loader=splits.val.loader(512), stats=stats, seed=seed,
                            progress=progress)
    start = time.perf_counter()
    result = get_method(name)[1](model, forget.loader(int(settings["batch_size"])), None, settings, context)
    seconds = time.perf_counter() - start
    d = result.details
    return {"model": result.model, "seconds": seconds, "method": name,
            "settings_source": (f"pgu/selected/{path.name}" if path is not None and path.parent == SELECTED_DIR
                                else str(path) if path is not None else "published (no selected file for the tier)"),
            "lr": list(settings["class_lr"] if mode == "class" and settings.get("class_lr") else settings["lr"]),
            "stop_reason": d["stop_reason"], "epochs": d["epochs"], "kept_epoch": d["kept_epoch"],
            "target_forget_acc": d.get("target_FA")}


def format_table(results: dict) -> str:
    """The demo's results as a plain-text table."""
    o = results["original"]
    lines = [
        f"pgu demo on {results['dataset']['name']} (train {results['dataset']['train']}, seed {results['seed']}): "
        f"trained in {o['train_seconds']:.2f} s, Gram statistics of D in {o['stats_seconds']:.2f} s (once per model)",
    ]
    for req in results["requests"]:
        cls = req["mode"] == "class"
        lines.append("")
        served = req["served"]
        lines.append(f"request: forget {req['name']} ({req['n_forget']} samples); served with {served['method']} "
                     f"(stopped: {served['stop_reason']} after {served['epochs']} epochs); the authors' pgu stopped: "
                     f"{req['pgu']['stop_reason']} after {req['pgu']['epochs']} epochs")
        head = f"  {'method':<16}{'forget':>9}{'retain':>9}{'test':>9}"
        head += f"{'test*':>9}" if cls else ""
        head += f"{'seconds':>10}{'speed-up':>10}"
        lines.append(head)
        labels = {"pgu": "pgu (authors')", "served": served["method"] + " *"}
        speedups = {"pgu": req["speedup"], "served": served["speedup"]}
        for name, m in req["methods"].items():
            row = f"  {labels.get(name, name):<16}{m['forget_acc']:>9.1f}{m['retain_acc']:>9.1f}{m['test_acc']:>9.1f}"
            row += f"{m['test_acc_other_classes']:>9.1f}" if cls else ""
            row += f"{m['seconds']:>10.2f}" if m["seconds"] is not None else f"{'-':>10}"
            row += f"{speedups[name]:>9.1f}x" if name in speedups else f"{'':>10}"
            lines.append(row)
        lines.append("  (accuracies in %" + ("; test* = test accuracy on the classes kept" if cls else "")
                     + f"; * = how pgu serves it, settings from {served['settings_source']})")
    return "\n".join(lines)
