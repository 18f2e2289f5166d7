"""Where a statistics pass spends its time: the top operators of one pass under torch.profiler.

    python benchmarks/stats_profile.py --tier cifar10-cpu --samples 8192 --device cuda --out benchmarks/results
"""

from __future__ import annotations

import argparse

from common import tier_setup, write_results
from torch.profiler import ProfilerActivity, profile

from pgu import GramStats
from pgu.stats import stats_batch_size
from pgu.zoo.training import resolve_device, synchronize


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="cifar10-cpu", help="a `pgu bench` tier or a bundled recipe name")
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--stats-batch", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    setup = tier_setup(args.tier, device, args.data_dir, samples=args.samples)
    loader = setup.train.loader(args.stats_batch or stats_batch_size(device), device=device)
    GramStats().fit(setup.model, loader)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        GramStats().fit(setup.model, loader)
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=args.top)
    print(table)
    rows = [{"op": e.key, "count": e.count, "self_cpu_us": e.self_cpu_time_total,
             "self_device_us": getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))}
            for e in prof.key_averages()]
    rows.sort(key=lambda r: -(r["self_device_us"] or r["self_cpu_us"]))
    path = write_results(args.out, f"stats_profile-{args.tier}-{device.type}",
                         {"benchmark": "stats_profile", "tier": args.tier, "samples": len(setup.train),
                          "stats_batch": loader.batch_size, "ops": rows[: 4 * args.top]}, device)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
