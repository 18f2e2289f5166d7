"""Latency of one deletion request, broken down, against the request's size and the training set's.

For a trained run (``pgu train ... --out RUN``, with its statistics): random forget sets of each
size in ``--sizes``, served with PGU for a fixed ``--epochs`` (``stop="none"``, so every request
does the same work per forget sample), from statistics of the first ``N`` training samples for
each ``N`` in ``--train-sizes`` (the full set reuses the run's cached statistics). Reported per
request: forget-set statistics, the subspace step, unlearning epochs, writing the new model and
retain statistics, in seconds; the subspace step both ways: exact (one ``eigh`` per layer) and from
a CGS anchor (``pgu.cgs_anchor``, built on the statistics beforehand as a store does at ``init``;
its build time is reported apart). A request reads only D_f, so its cost
should follow |D_f| and not |D|. Also the memory of the cached statistics per layer.

    pgu train --dataset mnist --out runs/mnist-lenet
    python benchmarks/request_latency.py --run runs/mnist-lenet --sizes 100,1000,5000 --train-sizes 10000,60000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import write_results

from pgu import GramStats, unlearn
from pgu.cgs_anchor import CGSAnchor
from pgu.data import load_dataset
from pgu.zoo.runs import load_run, save_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder written by `pgu train` (with stats)")
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--train-sizes", default="10000,60000")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    run = load_run(args.run, device="cpu")
    model = run.model
    splits = load_dataset(run.config["dataset"]["name"], data_dir=args.data_dir,
                          split_seed=run.config["dataset"].get("split_seed", 0))
    train = splits.train.subset(splits.train.mask_of(run.train_ids))
    full_stats = run.load_stats()
    warm = train.subset(torch.arange(16))  # one untimed request first: the process's first one pays its start-up
    unlearn(model, warm.loader(16), full_stats, stop="none", epochs=1, anchor=CGSAnchor.build(full_stats))
    rows = []
    for n_train in [int(v) for v in args.train_sizes.split(",")]:
        n_train = min(n_train, len(train))
        subset = train.subset(torch.arange(n_train))
        start = time.perf_counter()
        stats = full_stats if n_train == len(train) else GramStats().fit(model, subset.loader(512))
        stats_seconds = None if n_train == len(train) else time.perf_counter() - start
        start = time.perf_counter()
        anchor = CGSAnchor.build(stats)
        anchor_seconds = time.perf_counter() - start
        for size in [int(v) for v in args.sizes.split(",")]:
            if size >= n_train:
                continue
            g = torch.Generator().manual_seed(0)
            forget = subset.subset(torch.randperm(n_train, generator=g)[:size])
            anchored = unlearn(model, forget.loader(128), stats, stop="none", epochs=args.epochs, anchor=anchor)
            result = unlearn(model, forget.loader(128), stats, stop="none", epochs=args.epochs)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                save_model(Path(tmp) / "model.safetensors", result.model, run.spec)
                result.retain_stats.save(Path(tmp) / "stats.safetensors")
                write = time.perf_counter() - start
            row = {"train_size": n_train, "forget_size": size, "epochs": result.epochs,
                   "forget_stats": result.seconds["forget_stats"], "eigh": result.seconds["subspace"],
                   "unlearning": result.seconds["unlearning"], "write": write,
                   "total": result.seconds["total"] + write, "stats_pass_over_D": stats_seconds,
                   "anchored_subspace": anchored.seconds["subspace"],
                   "anchored_total": anchored.seconds["total"] + write, "anchor_build": anchor_seconds}
            rows.append(row)
            print(f"|D|={n_train:>6} |D_f|={size:>5}: forget stats {row['forget_stats']:6.2f} s, eigh "
                  f"{row['eigh']:5.2f} s (anchored {row['anchored_subspace']:5.2f} s), unlearning "
                  f"{row['unlearning']:6.2f} s, write {write:5.2f} s, total {row['total']:6.2f} s (anchored "
                  f"{row['anchored_total']:6.2f} s)")
    memory = full_stats.memory_report()
    total = sum(r["bytes"] for r in memory)
    print(f"cached statistics: {total / 2**20:.1f} MiB in float64 ({total / 2**21:.1f} MiB stored as float32); "
          f"largest layer {memory[0]['layer']} (d={memory[0]['d']}): {memory[0]['bytes'] / 2**20:.1f} MiB")
    path = write_results(args.out, f"request_latency-{Path(args.run).name}",
                         {"benchmark": "request_latency", "run": str(args.run), "epochs": args.epochs,
                          "requests": rows, "stats_memory": memory, "stats_bytes_total": total}, "cpu")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
