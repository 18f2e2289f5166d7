"""\
Deletion requests through the model store (pgu.store.model_store): a sequence of requests, and latency by request size.

``sequence``: a store made from a trained run takes ``--requests`` requests in a row, each
``--per-class`` samples of every class (disjoint, seeded; pgu.bench.runner.sequential_requests), with
the store's PGU settings. After each: accuracy on the samples the model retains (read here for
the report only; the store never reads them), on val, and on the request's samples; the phases'
seconds; and the bookkeeping check, the largest difference between the store's Gram state and
``G(D) - sum_t G_{w_{t-1}}(D_f^(t))`` summed here independently (each forget pass with the
store's model before that request), relative to the largest entry of ``G(D)``. Each request's
held-out target is recorded twice: ``heldout_target``, the model's val accuracy on the request's
class mix just before it, and ``store_target``, what a ``pgu-heldout`` store aimed at (the
trained model's, from the ledger).

``latency``: from the same store, fresh copies take one random request of each size in
``--sizes`` (``--repeats`` seeds each); per phase (load and hash check, forget-set statistics,
eigendecomposition, unlearning, writing the files and the ledger) mean and std. The training set
is fixed; what grows with the request is the forget pass and the unlearning epochs, and nothing
reads the training set.

``--retrain-reference`` (with ``--from-bench-cache``) also retrains from scratch without every
removed sample, as ``pgu bench`` retrains, and records its val and retained accuracy: where a
faithful unlearner would end.

``--run`` is a run folder written by ``pgu train``; ``--from-bench-cache DIR --recipe NAME``
instead wraps the original a ``pgu bench`` cached (``DIR/model.safetensors``,
``DIR/stats.safetensors``: trained on the whole training split) as a run first.

    python benchmarks/store_requests.py sequence --run runs/mnist-lenet --requests 20
    python benchmarks/store_requests.py latency --run runs/mnist-lenet --sizes 100,1000,5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import cgs_agreement, write_results

from pgu import GramStats
from pgu.bench.runner import sequential_requests
from pgu.data import load_dataset
from pgu.evaluation import accuracy
from pgu.heldout import heldout_target
from pgu.store.model_store import ModelStore
from pgu.zoo.recipes import load_recipe
from pgu.zoo.runs import load_model, load_run, save_run

PHASES = ("load", "anchor", "guard", "forget_stats", "subspace", "unlearning", "val", "write", "total")
"""The request's phases (the record's seconds): ``val`` is the part of ``unlearning`` spent scoring val."""

EXACT = {"subspace": "exact", "val_samples": "all"}
"""What every request did before issue 23: exact eigh of every layer, every val sample scored."""


def run_from_bench_cache(cache: Path, recipe_name: str, out: Path, data_dir=None) -> Path:
    """A run folder for the bench's cached original (trained on the whole training split, with its statistics)."""
    recipe = load_recipe(recipe_name)
    model, spec = load_model(cache / "model.safetensors")
    splits = load_dataset(recipe.dataset, data_dir=data_dir)
    info = json.loads((cache / "info.json").read_text())
    config = {"recipe": recipe.to_dict(), "exclude": None, "source": f"pgu bench cache {cache}",
              "dataset": {"name": recipe.dataset, "train": len(splits.train), "trained_on": len(splits.train),
                          "split_seed": 0}, "model": spec.to_dict(), "results": info}
    save_run(out, model=model, spec=spec, config=config, train_ids=splits.train.ids, excluded_ids=splits.train.ids[:0],
             history=[], stats=GramStats.load(cache / "stats.safetensors"), overwrite=True)
    return out


def overrides(args) -> dict:
    """PGU settings the command line sets for every request (the store's own otherwise)."""
    out = {}
    if args.lr:
        out["lr"] = out["class_lr"] = [float(v) for v in args.lr.split(",")]
    if args.max_val_drop is not None:
        out["max_val_drop"] = args.max_val_drop
    if args.sample_method:
        out["sample_method"] = args.sample_method
    return out


def sequence(store: ModelStore, args, data_dir) -> dict:
    info = store.info()
    splits = load_dataset(info["dataset"]["name"], data_dir=data_dir, split_seed=info["dataset"]["split_seed"])
    run = load_run(info["run"])
    train = splits.train.subset(splits.train.positions_of(run.train_ids))
    requests = sequential_requests(train.y, train.ids, args.requests, args.per_class, args.seed)
    _, expected, _ = store.load()
    scale = max(float(g.abs().max()) for g in expected.gram_.values())
    model, _, _ = store.load()
    twin = None
    if args.compare_exact:  # the same requests served as before issue 23
        twin_path = store.path.with_name(store.path.name + "-exact")
        shutil.rmtree(twin_path, ignore_errors=True)  # (a previous run's)
        twin = ModelStore.create(twin_path, info["run"], data_dir=data_dir, sample_method=args.sample_method)
    retained = torch.ones(len(train), dtype=torch.bool)
    start = {"retain_acc": accuracy(model, train.loader(1024)), "val_acc": accuracy(model, splits.val.loader(1024))}
    print(f"start: retain accuracy {start['retain_acc']:.2f}, val {start['val_acc']:.2f}")
    rows = []
    for t, ids in enumerate(requests, start=1):
        model, state_before, version = store.load()
        request = train.subset(train.positions_of(ids))
        forget_stats = GramStats().fit(model, request.loader(int(info["pgu"]["batch_size"])))
        expected = expected - forget_stats
        agreement = store_cgs_agreement(store, state_before, forget_stats, version, args) if twin else None
        target = heldout_target(model, splits.val.loader(1024), request.y)
        stepwise = None
        if twin is not None:  # the same request from the same state, served exactly (on a copy of the store)
            with tempfile.TemporaryDirectory(dir=store.path.parent) as tmp:
                copy = ModelStore(shutil.copytree(store.path, Path(tmp) / "store"))
                stepwise = copy.forget(ids=ids.tolist(), samples=request, val=splits.val, device="cpu",
                                       overrides=overrides(args) | EXACT)
        record = store.forget(ids=ids.tolist(), samples=request, val=splits.val, device="cpu",
                              overrides=overrides(args))
        retained &= ~train.mask_of(ids)
        model, state, _ = store.load()
        drift = max(float((state.gram_[n] - expected.gram_[n]).abs().max()) for n in state.gram_) / scale
        row = {"request": t, "size": int(ids.numel()), "retained": int(retained.sum()),
               "retain_acc": accuracy(model, train.subset(retained).loader(1024)),
               "val_acc": accuracy(model, splits.val.loader(1024)),
               "forget_acc_before": record["metrics"]["before"]["forget_acc"],
               "forget_acc_after": record["metrics"]["after"]["forget_acc"],
               "heldout_target": target, "store_target": record["settings"].get("target_forget_acc"),
               "method": record["settings"].get("method", "pgu"),
               "stop_reason": record["stop_reason"], "epochs": record["epochs"], "kept_epoch": record["kept_epoch"],
               "kept_share": record["metrics"].get("kept_share", 1.0),
               "seconds": record["seconds"], "gram_state_relative_difference": drift,
               "n_samples_in_state": state.n_samples_, "cgs_routes": record["settings"].get("cgs_routes"),
               "val_samples": record["settings"].get("val_samples")}
        if twin is not None:
            exact = twin.forget(ids=ids.tolist(), samples=request, val=splits.val, device="cpu",
                                overrides=overrides(args) | EXACT)
            row["exact"] = {"stop_reason": exact["stop_reason"], "epochs": exact["epochs"],
                            "kept_epoch": exact["kept_epoch"], "seconds": exact["seconds"],
                            "forget_acc_after": exact["metrics"]["after"]["forget_acc"]}
            row["same_course"] = all(row[k] == row["exact"][k] for k in ("stop_reason", "epochs", "kept_epoch"))
            row["exact_from_the_same_state"] = {k: stepwise[k] for k in ("stop_reason", "epochs", "kept_epoch")} | {
                "forget_acc_after": stepwise["metrics"]["after"]["forget_acc"],
                "val_acc_after": stepwise["metrics"]["after"].get("val_acc")}
            row["same_course_from_the_same_state"] = all(row[k] == stepwise[k]
                                                         for k in ("stop_reason", "epochs", "kept_epoch"))
            row["cgs_agreement"] = agreement
        rows.append(row)
        print(f"request {t:>2}: {row['size']} samples, forget acc {row['forget_acc_before']:.2f} -> "
              f"{row['forget_acc_after']:.2f} (target {target:.2f}; {row['stop_reason']}, {row['epochs']} epochs), "
              f"retain acc "
              f"{row['retain_acc']:.2f}, val {row['val_acc']:.2f}, {record['seconds']['total']:.2f} s, "
              f"Gram state vs independent sum {drift:.1e}")
    report = store.verify()
    worst = min(r["retain_acc"] for r in rows)
    comparison = None
    if twin is not None:
        exact_model, _, _ = twin.load()
        final = {"retain_acc": accuracy(exact_model, train.subset(retained).loader(1024)),
                 "val_acc": accuracy(exact_model, splits.val.loader(1024))}
        comparison = {"settings": EXACT, "final": final,
                      "retain_acc_difference": rows[-1]["retain_acc"] - final["retain_acc"],
                      "val_acc_difference": rows[-1]["val_acc"] - final["val_acc"],
                      "requests_with_the_same_course": sum(r["same_course"] for r in rows),
                      "requests_with_the_same_course_from_the_same_state": sum(
                          r["same_course_from_the_same_state"] for r in rows),
                      "total_seconds_median": {
                          "store": statistics.median(r["seconds"]["total"] for r in rows),
                          "exact": statistics.median(r["exact"]["seconds"]["total"] for r in rows)}}
        print(f"exact twin: final retain acc {final['retain_acc']:.2f} (store {rows[-1]['retain_acc']:.2f}), val "
              f"{final['val_acc']:.2f} (store {rows[-1]['val_acc']:.2f}); same stop reason, epochs and kept epoch in "
              f"{comparison['requests_with_the_same_course']} of {len(rows)} requests")
    reference = retrain_reference(args, torch.cat(requests), data_dir) if args.retrain_reference else None
    if reference:
        cached = ", cached" if reference["cached"] else ""
        print(f"retrained without all {reference['removed']}: retain acc {reference['retain_acc']:.2f}, "
              f"val {reference['val_acc']:.2f} ({reference['seconds']:.1f} s{cached})")
    return {"start": start, "requests": rows, "verify": report, "retrain_without_all": reference,
            "compare_exact": comparison,
            "val_acc_largest_drop": start["val_acc"] - min(r["val_acc"] for r in rows),
            "largest_distance_to_target": max(abs(r["forget_acc_after"] - r["heldout_target"]) for r in rows),
            "retain_acc_largest_drop": start["retain_acc"] - worst,
            "gram_state_largest_relative_difference": max(r["gram_state_relative_difference"] for r in rows)}


def store_cgs_agreement(store: ModelStore, state: GramStats, forget: GramStats, version: dict, args) -> dict:
    """Per layer, the store's CGS for this request (its anchor, as the store computes it) against exact eigh of the
    same retain Gram: principal angles (degrees: largest, mean, how many above 1) and the retain energy the store's
    CGS leaves unprotected beyond what the exact one leaves, as a share of the latter (exact is optimal: >= 0)."""
    from pgu.store.anchor_files import ANCHOR_META, read_anchor
    from pgu.store.settings import request_settings
    from pgu.subspace import CoreGradientSpace

    settings, _ = request_settings(store.info()["pgu"], overrides(args))
    run = settings.for_mode("sample")
    with store.ledger() as ledger:
        entry = ledger.meta(ANCHOR_META)
    anchor = read_anchor(entry, version["version"], store._checked)
    if anchor is None:
        return {}
    retain = state - forget
    fast, nxt = anchor.fit(retain, forget, run.threshold, run.rule, run.bias)
    exact = CoreGradientSpace(run.threshold, run.rule, run.bias).fit(retain)
    out = {}
    for name, route in nxt.last_routes.items():
        a, b = fast.basis_[name], exact.basis_[name]
        gram = retain.augmented_gram(name) if exact.augmented_[name] else retain.gram_[name]
        measured = cgs_agreement(a, b, gram)
        if measured:
            out[name] = {"route": route, "k": int(a.shape[1]), "k_exact": int(b.shape[1]), "d": int(a.shape[0]),
                         **measured}
    return out


def retrain_reference(args, removed: torch.Tensor, data_dir=None) -> dict:
    """What a faithful unlearner would end the sequence at: the model retrained from scratch without every sample
    the sequence removed, by ``pgu bench``'s own retraining (its recipe at ``--bench-seed``), cached beside the
    bench's original (``--from-bench-cache``'s parent), so a rerun reuses it; scored on val and on what is retained."""
    from pgu.bench.config import TIERS, BenchConfig
    from pgu.bench.seed import SeedRun

    tier = next((t for t, r in TIERS.items() if r == args.recipe), None)
    if tier is None:
        raise SystemExit(f"--retrain-reference: recipe {args.recipe!r} is no bench tier's ({sorted(TIERS.values())})")
    recipe = load_recipe(args.recipe)
    splits = load_dataset(recipe.dataset, data_dir=data_dir, split_seed=0)  # as pgu bench loads it
    seed_run = SeedRun(BenchConfig(tier=tier, scenario="random", seeds=[args.bench_seed]), recipe, splits,
                       args.bench_seed, torch.device("cpu"), Path(args.from_bench_cache).parent, progress=True)
    mask = splits.train.mask_of(removed)
    model, info = seed_run.retrain_without(mask, f"retrain without the {len(removed)} removed")
    return {"removed": int(len(removed)), "val_acc": accuracy(model, splits.val.loader(1024)),
            "retain_acc": accuracy(model, splits.train.subset(~mask).loader(1024)), **info}


def latency(base: ModelStore, args, data_dir) -> dict:
    info = base.info()
    splits = load_dataset(info["dataset"]["name"], data_dir=data_dir, split_seed=info["dataset"]["split_seed"])
    run = load_run(info["run"])
    train = splits.train.subset(splits.train.positions_of(run.train_ids))
    modes = {"store": {}, "exact": EXACT} if args.baseline else {"store": {}}
    rows = []
    for size in [int(v) for v in args.sizes.split(",")]:
        runs = {mode: [] for mode in modes}
        for seed in range(args.repeats):
            g = torch.Generator().manual_seed(seed)
            request = train.subset(torch.randperm(len(train), generator=g)[:size])
            for mode, settings in modes.items():  # the same request on a fresh copy of the store, each way
                with tempfile.TemporaryDirectory(dir=base.path.parent) as tmp:
                    copy = ModelStore(shutil.copytree(base.path, Path(tmp) / "store"))
                    record = copy.forget(ids=request.ids.tolist(), samples=request, val=splits.val, device="cpu",
                                         overrides={"epochs": args.epochs} | overrides(args) | settings)
                runs[mode].append({k: record["seconds"].get(k, 0.0) for k in PHASES}
                                  | {"epochs": record["epochs"], "stop_reason": record["stop_reason"],
                                     "kept_epoch": record["kept_epoch"],
                                     "val_samples": record["settings"]["val_samples"]})
        row = {"forget_size": size, "train_size": len(train), "repeats": args.repeats}
        for mode in modes:
            summary = {}
            for key in (*PHASES, "epochs"):
                values = [r[key] for r in runs[mode]]
                summary[key] = {"mean": statistics.mean(values), "median": statistics.median(values),
                                "std": statistics.stdev(values) if len(values) > 1 else 0.0}
            summary["unlearning_per_epoch"] = {
                "mean": statistics.mean(r["unlearning"] / max(r["epochs"], 1) for r in runs[mode])}
            summary["runs"] = runs[mode]
            row[mode] = summary
            print(f"|D|={len(train)} |D_f|={size:>5} {mode:>5}: " + ", ".join(
                f"{k} {summary[k]['median']:.3f}" for k in PHASES)
                  + f" s (medians), epochs {summary['epochs']['mean']:.1f}")
        if args.baseline:
            row["speedup_median"] = row["exact"]["total"]["median"] / row["store"]["total"]["median"]
            row["same_course"] = all((a["stop_reason"], a["kept_epoch"], a["epochs"]) ==
                                     (b["stop_reason"], b["kept_epoch"], b["epochs"])
                                     for a, b in zip(runs["store"], runs["exact"]))
        rows.append(row)
    return {"requests": rows, "phases": list(PHASES),
            "modes": {mode: settings or "the store's settings" for mode, settings in modes.items()}}


def plot_sequence(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["requests"]
    t = [0] + [r["request"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.plot(t, [result["start"]["retain_acc"]] + [r["retain_acc"] for r in rows], marker="o", label="retained samples")
    ax.plot(t, [result["start"]["val_acc"]] + [r["val_acc"] for r in rows], marker="s", label="val")
    ax.plot(t[1:], [r["forget_acc_after"] for r in rows], marker="x", label="each request's samples, after")
    if all("heldout_target" in r for r in rows):
        ax.plot(t[1:], [r["heldout_target"] for r in rows], ls="--", color="black", lw=0.8,
                label="held-out target (val on the class mix)")
    ax.axhline(result["start"]["val_acc"] - 2, color="grey", ls=":", label="val at start - 2 points")
    ax.set_xlabel("request")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    bottom = [0.0] * len(rows)
    for phase in ("load", "forget_stats", "subspace", "unlearning", "write"):
        values = [r["seconds"].get(phase, 0.0) for r in rows]
        bx.bar(t[1:], values, bottom=bottom, label=phase)
        bottom = [a + b for a, b in zip(bottom, values)]
    from matplotlib.ticker import MaxNLocator

    for axis in (ax, bx):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    bx.set_xlabel("request")
    bx.set_ylabel("seconds")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sequence", "latency"))
    parser.add_argument("--run", help="a run folder written by `pgu train` (with stats)")
    parser.add_argument("--from-bench-cache", metavar="DIR", help="a `pgu bench` cache folder original-<key>")
    parser.add_argument("--recipe", help="with --from-bench-cache: the recipe it was trained with")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--per-class", type=int, help="sequence: samples of each class per request (default 2%% of "
                                                      "the smallest class, at most 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="latency: epoch cap of each request")
    parser.add_argument("--lr", metavar="LR0,LR1", help="PGU's rates for every request (default: the store's)")
    parser.add_argument("--max-val-drop", type=float, help="the store's lifetime guard, points (default: the store's)")
    parser.add_argument("--sample-method", choices=("pgu", "pgu-heldout"),
                        help="how the store serves the sample requests (default: the store's, pgu)")
    parser.add_argument("--retrain-reference", action="store_true",
                        help="sequence, with --from-bench-cache: also retrain from scratch without every removed "
                             "sample (pgu bench's retraining, cached beside the bench's original) and record it")
    parser.add_argument("--bench-seed", type=int, default=0, help="--retrain-reference: the bench seed of the original")
    parser.add_argument("--baseline", action="store_true",
                        help="latency: serve each request a second time as before issue 23 (exact eigh of every layer, "
                             "every val sample scored) on another copy, for the ratio in one run")
    parser.add_argument("--compare-exact", action="store_true",
                        help="sequence: serve each request also exactly (exact eigh, all of val) from the same state "
                             "(a copy of the store) and along a second store served exactly throughout, and measure "
                             "the principal angles between the store's CGS and the exact one")
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    parser.add_argument("--data-dir")
    parser.add_argument("--work", default="runs/store-bench", help="where the stores are made")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.retrain_reference and not (args.from_bench_cache and args.what == "sequence"):
        parser.error("--retrain-reference needs --from-bench-cache and the sequence benchmark")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.from_bench_cache:
        if not args.recipe:
            parser.error("--from-bench-cache needs --recipe")
        run_path = run_from_bench_cache(Path(args.from_bench_cache), args.recipe, work / f"run-{args.recipe}",
                                        args.data_dir)
    elif args.run:
        run_path = Path(args.run)
    else:
        parser.error("give --run or --from-bench-cache")
    name = run_path.name
    store_path = work / f"store-{name}-{args.what}"
    if store_path.exists():
        shutil.rmtree(store_path)
    start = time.perf_counter()
    store = ModelStore.create(store_path, run_path, data_dir=args.data_dir, sample_method=args.sample_method)
    made = time.perf_counter() - start
    print(f"made {store_path} in {made:.1f} s")
    result = sequence(store, args, args.data_dir) if args.what == "sequence" else latency(store, args, args.data_dir)
    trained = load_run(run_path).config.get("results", {})
    payload = {"benchmark": f"store_requests {args.what}", "run": str(run_path), "store_seconds_to_make": made,
               "train_seconds": trained.get("train_seconds", trained.get("seconds")),
               "pgu": store.info()["pgu"], "args": vars(args), **result}
    name = f"{name}{'-' + args.tag if args.tag else ''}"
    path = write_results(args.out, f"store-{args.what}-{name}", payload, "cpu")
    print(f"wrote {path}")
    if args.what == "sequence":
        figure = Path(args.out) / "figures" / f"store-sequence-{name}.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        plot_sequence(result, figure, f"{name}: {args.requests} requests through a store")
        print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
