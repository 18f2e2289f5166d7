"""A projected unlearning step against a plain SGD step: same model, same batch, same machine.

The `cifar10-cpu` model (All-CNN, width 1/3) at batch 128: forward, PGU's forget loss, backward
and an SGD step with momentum 0.9 and weight decay 5e-4, plain against wrapped in
ProjectedOptimizer (which keeps every weight change orthogonal to the CGS). The CGS comes from
statistics of random inputs at threshold 0.9. Medians over repeats; JSON and a table.

    python benchmarks/projected_step.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_results

from pgu import CoreGradientSpace, GradientProjector, GramStats, ProjectedOptimizer, forget_loss
from pgu.modes import unlearning_mode
from pgu.zoo.models import build_model
from pgu.zoo.training import resolve_device, synchronize


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model("allcnn", num_classes=10, in_channels=3, width=1 / 3).to(device)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    stats = GramStats().fit(model, [torch.randn(256, 3, 32, 32, device=device) for _ in range(2)])
    cgs = CoreGradientSpace(args.threshold).fit(stats)

    def make(projected: bool):
        params = GradientProjector(model, cgs).projected_params
        sgd = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)
        return ProjectedOptimizer(sgd, GradientProjector(model, cgs)) if projected else sgd

    def run(opt) -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = forget_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        synchronize(device)
        return (time.perf_counter() - start) / args.steps

    with unlearning_mode(model):
        plain, projected = make(False), make(True)
        run(plain), run(projected)  # warm-up
        times = {"plain": [], "projected": []}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit both alike
            times["plain"].append(run(plain))
            times["projected"].append(run(projected))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"benchmark": "projected_step", "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
              "threshold": args.threshold, "ranks": cgs.summary(), "seconds_per_step": med,
              "all_seconds": times, "ratio": med["projected"] / med["plain"]}
    path = write_results(args.out, "projected_step", result, device)
    print(f"plain SGD step {med['plain'] * 1e3:.1f} ms, projected step {med['projected'] * 1e3:.1f} ms, "
          f"ratio {result['ratio']:.3f}x  (wrote {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
