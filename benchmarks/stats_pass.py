"""The Gram statistics pass against one training epoch, same model, same samples, same machine.

For each tier's recipe: train-epoch images/s (forward + backward + step, the recipe's batch
and augmentation) against statistics-pass images/s (eval-mode forward with the hooks) over the
same ``--samples`` training images, epochs and passes alternating, medians over repeats; the ratio
statistics/epoch (median of the pairs) is in
epochs' worth (PROTOCOL: the pass over D should cost at most one epoch). Also per-layer seconds
of the pass and its largest relative error against a float64 reference on one batch.

    python benchmarks/stats_pass.py --tiers mnist,cifar10-cpu --samples 4096 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest.mock import patch

import torch.nn.functional as F
from common import tier_setup, write_results

from pgu import GramStats
from pgu.stats import stats_batch_size
from pgu.zoo.training import resolve_device, synchronize


def measure(tier: str, samples: int, repeats: int, device, data_dir=None, stats_batch: int = 512,
            precision: str = "auto") -> dict:
    setup = tier_setup(tier, device, data_dir, samples=samples)
    cfg, model, opt, fmt, data = setup.recipe.train, setup.model, setup.optimizer, setup.memory_format, setup.train
    train_loader = setup.train_loader(device)
    stats_loader = data.loader(stats_batch, device=device)

    def epoch():
        model.train()
        synchronize(device)
        start = time.perf_counter()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x.contiguous(memory_format=fmt)), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        synchronize(device)
        return time.perf_counter() - start

    def stats_pass():
        synchronize(device)
        start = time.perf_counter()
        GramStats(precision=precision).fit(model, stats_loader)
        synchronize(device)
        return time.perf_counter() - start

    epoch(), stats_pass()  # warm-up (and a trained-ish model)
    # interleaved, so drift of a shared machine hits both alike; the ratio is taken per pair
    pairs = [(epoch(), stats_pass()) for _ in range(repeats)]
    t_epoch = statistics.median(e for e, _ in pairs)
    t_stats = statistics.median(s for _, s in pairs)
    ratio = statistics.median(s / e for e, s in pairs)
    best_ratio = min(s for _, s in pairs) / min(e for e, _ in pairs)  # least disturbed run of each

    # exactness: against products in float64 on the same model and batch
    x = data.x[:256].to(device)
    fast = GramStats(precision=precision).fit(model, [x])
    with patch("pgu.gram.accumulators.conv2d_gram_route", lambda *a: "unfold"), \
            patch("pgu.gram.accumulators.upper_blocks_gram", lambda r: r.T @ r):
        ref = GramStats(precision="float64").fit(model, [x])
    errors = {n: float((fast.gram_[n] - ref.gram_[n]).abs().max() / ref.gram_[n].abs().max()) for n in ref.gram_}
    n = len(data)
    return {"tier": tier, "samples": n, "repeats": repeats, "epoch_seconds": t_epoch, "stats_seconds": t_stats,
            "epoch_images_per_s": n / t_epoch, "stats_images_per_s": n / t_stats, "stats_in_epochs": ratio,
            "fastest_stats_in_fastest_epochs": best_ratio, "pairs_seconds": pairs,
            "max_relative_error_vs_float64": max(errors.values()), "relative_error_by_layer": errors}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="mnist,cifar10-cpu",
                        help="comma-separated `pgu bench` tiers or bundled recipe names (allcnn-cifar10 on a GPU)")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stats-batch", type=int, default=None,
                        help="images per batch of the statistics pass (default: the library's for the device)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    parser.add_argument("--label", default="current", help="name of this measurement (e.g. the lever tried)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float64"], help="GramStats precision")
    parser.add_argument("--conv-route", default="auto", choices=["auto", "unfold", "rows", "cpu-model"],
                        help="force one Conv2d route (auto: the library's choice; cpu-model: the CPU cost model on "
                             "any device)")
    parser.add_argument("--forward-chunk", type=int, default=None,
                        help="samples per forward of the pass on a CPU (default: the library's; 0: whole loader "
                             "batches)")
    parser.add_argument("--no-triangle", action="store_true",
                        help="full rows^T rows products (no upper-triangle blocks)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    import pgu.fast_forward

    args.stats_batch = args.stats_batch or stats_batch_size(device)
    if args.forward_chunk is not None:
        pgu.fast_forward.CPU_CHUNK = args.forward_chunk or None
    levers = {"forward_chunk_cpu": pgu.fast_forward.CPU_CHUNK, "stats_batch": args.stats_batch,
              "precision": args.precision, "conv_route": args.conv_route, "triangle": not args.no_triangle}
    import pgu.gram.accumulators

    cost_model = pgu.gram.accumulators.conv2d_gram_route
    route = (lambda *a: cost_model(*a[:6])) if args.conv_route == "cpu-model" else (lambda *a: args.conv_route)
    with (patch("pgu.gram.accumulators.conv2d_gram_route", route) if args.conv_route != "auto" else _nothing()), \
            (patch("pgu.gram.accumulators.upper_blocks_gram", lambda r: r.T @ r) if args.no_triangle else _nothing()):
        rows = [measure(t, args.samples, args.repeats, device, args.data_dir, stats_batch=args.stats_batch,
                        precision=args.precision)
                for t in args.tiers.split(",")]
    path = write_results(args.out, f"stats_pass-{args.label}",
                         {"benchmark": "stats_pass", "label": args.label, "levers": levers, "results": rows}, device)
    print(f"{'tier':<14}{'samples':>8}{'epoch s':>9}{'stats s':>9}{'stats/epoch':>13}{'fastest':>9}{'max rel err':>13}")
    for r in rows:
        print(f"{r['tier']:<14}{r['samples']:>8}{r['epoch_seconds']:>9.2f}{r['stats_seconds']:>9.2f}"
              f"{r['stats_in_epochs']:>12.2f}x{r['fastest_stats_in_fastest_epochs']:>8.2f}x"
              f"{r['max_relative_error_vs_float64']:>13.1e}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
