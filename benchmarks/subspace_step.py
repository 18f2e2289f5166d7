"""The subspace step of one request: exact eigh of every layer against the CGS anchor (pgu.cgs_anchor), per layer.

A model (default: ResNet-18 at CIFAR-10's shape; ``--run`` a trained run folder instead, with its
statistics) and its Gram statistics over ``--samples`` training images (cached in ``--stats`` so a
rerun skips the pass). The anchor is built on them, as a store does at ``init``; then each of
``--repeats`` requests of ``--forget`` random images (seeded) is served both ways on the same retain
Gram (its forget pass timed twice: as exact eigh needs it, and keeping the rows of layers that see fewer
than their width, as a request served from the anchor takes it): exact ``CoreGradientSpace.fit`` (one
``eigh`` per layer, as the authors) and ``CGSAnchor.fit``.
Per layer: width ``d``, ranks, seconds each way (medians), the anchor's route, principal angles
between the two CGSs (largest, mean, how many above 1 degree) and the retain energy the anchor's
CGS leaves unprotected beyond the exact one's, as a share of the latter. Totals: medians and their
ratio, measured in one run.

    python benchmarks/subspace_step.py --model resnet18 --samples 2000 --forget 100 --repeats 3
    python benchmarks/subspace_step.py --run runs/mnist-lenet --forget 100 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import cgs_agreement, write_results

from pgu import GramStats, PGUSettings
from pgu.cgs_anchor import CGSAnchor
from pgu.data import load_dataset
from pgu.subspace import CoreGradientSpace, _leading_eigenvectors
from pgu.zoo.models import build_model
from pgu.zoo.runs import load_run


def model_and_stats(args):
    """The model, its training samples and Gram statistics (from ``--stats`` when there)."""
    if args.run:
        run = load_run(args.run, device="cpu")
        splits = load_dataset(run.config["dataset"]["name"], data_dir=args.data_dir,
                              split_seed=run.config["dataset"].get("split_seed", 0))
        return run.model, splits.train.subset(splits.train.mask_of(run.train_ids)), run.load_stats(), args.run
    torch.manual_seed(args.seed)
    splits = load_dataset(args.dataset, data_dir=args.data_dir)
    model = build_model(args.model, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                        input_size=splits.input_shape[-1]).eval()
    train = splits.train.subset(torch.arange(min(args.samples, len(splits.train))))
    path = Path(args.stats) if args.stats else None
    if path and path.is_file():
        stats = GramStats.load(path)
    else:
        start = time.perf_counter()
        stats = GramStats().fit(model, train.loader(128), progress=True, desc="Gram statistics")
        print(f"statistics over {len(train)} samples in {time.perf_counter() - start:.1f} s")
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            stats.save(path)
    return model, train, stats, f"{args.model} (seed {args.seed}, untrained) on {len(train)} {args.dataset} images"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--run", help="a run folder written by `pgu train` (with stats), instead of --model")
    parser.add_argument("--samples", type=int, default=2000, help="training images the statistics cover")
    parser.add_argument("--stats", help="a statistics file to reuse (written when missing)")
    parser.add_argument("--forget", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    model, train, stats, what = model_and_stats(args)
    run = PGUSettings().for_mode("sample")
    start = time.perf_counter()
    anchor = CGSAnchor.build(stats, bias=run.bias)
    build_seconds = time.perf_counter() - start
    print(f"{what}: anchor built in {build_seconds:.1f} s ({len(anchor.layers)} of {len(stats.layer_names)} layers)")
    per_layer = {name: {"exact": [], "anchor": [], "agreement": []} for name in stats.layer_names}
    totals = {"exact": [], "anchor": [], "forget_pass": [], "forget_pass_keeping_rows": []}
    GramStats(stats.layer_names, precision=stats.precision).fit(model, train.subset(torch.arange(args.forget)).loader(
        128))  # one untimed pass first: the process's first forward pays its start-up, not the first timed one
    for repeat in range(args.repeats):
        g = torch.Generator().manual_seed(args.seed * 1000 + repeat)
        forget_set = train.subset(torch.randperm(len(train), generator=g)[:args.forget])
        t0 = time.perf_counter()
        GramStats(stats.layer_names, precision=stats.precision).fit(model, forget_set.loader(128))
        totals["forget_pass"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # as a request served from the anchor takes it: the forget rows kept where few
        forget = GramStats(stats.layer_names, precision=stats.precision, keep_rows=True).fit(model,
                                                                                            forget_set.loader(128))
        totals["forget_pass_keeping_rows"].append(time.perf_counter() - t0)
        retain = stats - forget
        seconds = {}

        def timed(name):
            def solve(*a):
                t0 = time.perf_counter()
                out = _leading_eigenvectors(*a)
                seconds[name] = time.perf_counter() - t0
                return out
            return solve

        t0 = time.perf_counter()
        exact = CoreGradientSpace(run.threshold, run.rule, run.bias).fit(
            retain, solvers={n: timed(n) for n in stats.layer_names})
        totals["exact"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast, nxt = anchor.fit(retain, forget, run.threshold, run.rule, run.bias)
        totals["anchor"].append(time.perf_counter() - t0)
        for name in stats.layer_names:
            entry = per_layer[name]
            entry["exact"].append(seconds[name])
            entry["anchor"].append(nxt.last_seconds[name])
            entry["route"], entry["d"] = nxt.last_routes[name], int(exact.dim_[name])
            entry["k_exact"], entry["k_anchor"] = exact.rank_[name], fast.rank_[name]
            gram = retain.augmented_gram(name) if exact.augmented_[name] else retain.gram_[name]
            entry["agreement"].append(cgs_agreement(fast.basis_[name], exact.basis_[name], gram))
        print(f"request {repeat + 1}: exact {totals['exact'][-1]:.2f} s, anchor {totals['anchor'][-1]:.2f} s")
    layers = []
    for name, e in per_layer.items():
        row = {"layer": name, "d": e["d"], "route": e["route"], "k_exact": e["k_exact"], "k_anchor": e["k_anchor"],
               "exact_seconds": statistics.median(e["exact"]), "anchor_seconds": statistics.median(e["anchor"])}
        if e["agreement"] and e["agreement"][-1]:
            row.update({k: max(a[k] for a in e["agreement"]) for k in e["agreement"][-1]})
        layers.append(row)
        print(f"  {name:>24} d={row['d']:>5} {row['route']:<28} exact {row['exact_seconds']:7.3f} s  anchor "
              f"{row['anchor_seconds']:7.3f} s  " + (f"angle max {row['largest_angle_deg']:.2f} deg, extra "
                                                     f"unprotected {row['extra_unprotected_share']:.1e}"
                                                     if "largest_angle_deg" in row else ""))
    summary = {k: statistics.median(v) for k, v in totals.items()}
    summary["speedup"] = summary["exact"] / summary["anchor"]
    print(f"subspace step: exact {summary['exact']:.2f} s, anchor {summary['anchor']:.2f} s (medians): "
          f"{summary['speedup']:.1f}x; forget pass {summary['forget_pass']:.2f} s, keeping the rows "
          f"{summary['forget_pass_keeping_rows']:.2f} s")
    name = Path(args.run).name if args.run else f"{args.model}-{args.dataset}"
    path = write_results(args.out, f"subspace_step-{name}{'-' + args.tag if args.tag else ''}",
                         {"benchmark": "subspace_step", "what": what, "args": vars(args), "threshold": run.threshold,
                          "rule": run.rule, "anchor_build_seconds": build_seconds, "totals": totals,
                          "median": summary, "layers": layers}, "cpu")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
