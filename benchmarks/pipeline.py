"""Is training compute-bound? Images/s of the data pipeline alone against images/s of a training step.

For each tier's recipe: the pipeline is the training loader (shuffled index selection,
augmentation on tensors, the memory-format conversion the step does), timed over N batches;
the step is forward + backward + optimizer step on batches already made. Both on the same
device, medians over repeats, after a warm-up. Writes JSON (figures, recipe, machine,
versions, commit) and prints a table.

    python benchmarks/pipeline.py --tiers digits,mnist,fashion,cifar10-cpu --out benchmarks/results
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch.nn.functional as F
from common import tier_setup, write_results

from pgu.zoo.training import resolve_device, synchronize


def measure(tier: str, batches: int, repeats: int, device, data_dir=None) -> dict:
    setup = tier_setup(tier, device, data_dir)
    cfg, model, opt, fmt = setup.recipe.train, setup.model, setup.optimizer, setup.memory_format
    loader = setup.train_loader(device)
    batches = min(batches, len(loader))

    def pipeline_pass():
        n = 0
        synchronize(device)
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i == batches:
                break
            x = x.contiguous(memory_format=fmt)
            n += len(y)
        synchronize(device)
        return n / (time.perf_counter() - start)

    made = []
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        made.append((x.contiguous(memory_format=fmt), y))

    def step_pass():
        model.train()
        n = 0
        synchronize(device)
        start = time.perf_counter()
        for x, y in made:
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        synchronize(device)
        return n / (time.perf_counter() - start)

    pipeline_pass(), step_pass()  # warm-up
    pipe = statistics.median(pipeline_pass() for _ in range(repeats))
    step = statistics.median(step_pass() for _ in range(repeats))
    return {"tier": tier, "recipe": setup.recipe.to_dict(), "batch_size": cfg.batch_size, "batches": batches,
            "repeats": repeats, "pipeline_images_per_s": pipe, "step_images_per_s": step, "ratio": pipe / step}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="digits,mnist,fashion,cifar10-cpu")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = [measure(t, args.batches, args.repeats, device, args.data_dir) for t in args.tiers.split(",")]
    path = write_results(args.out, "pipeline", {"benchmark": "pipeline", "results": rows}, device)
    print(f"{'tier':<14}{'batch':>7}{'pipeline img/s':>16}{'step img/s':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['tier']:<14}{r['batch_size']:>7}{r['pipeline_images_per_s']:>16.0f}{r['step_images_per_s']:>12.0f}"
              f"{r['ratio']:>7.1f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
