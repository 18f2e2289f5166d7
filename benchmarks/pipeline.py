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
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pgu.data import load_dataset
from pgu.models import build_model
from pgu.provenance import environment
from pgu.recipes import load_recipe
from pgu.training import _augmentation, _make_optimizer, resolve_device

TIER_RECIPES = {"digits": "digits", "mnist": "mnist", "fashion": "fashion", "cifar10-cpu": "cifar10-cpu"}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(tier: str, batches: int, repeats: int, device, data_dir=None) -> dict:
    recipe = load_recipe(TIER_RECIPES[tier])
    cfg = recipe.train
    splits = load_dataset(recipe.dataset, data_dir=data_dir)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    transform = _augmentation(cfg)
    kwargs = {"transform": transform} if transform is not None else {}
    loader = splits.train.loader(cfg.batch_size, shuffle=True, seed=0, device=device, **kwargs)
    batches = min(batches, len(loader))

    def pipeline_pass():
        n = 0
        _sync(device)
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i == batches:
                break
            x = x.contiguous(memory_format=fmt)
            n += len(y)
        _sync(device)
        return n / (time.perf_counter() - start)

    torch.manual_seed(0)
    model = build_model(recipe.model, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                        width=cfg.width, input_size=splits.input_shape[-1]).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(model, cfg)
    made = []
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        made.append((x.contiguous(memory_format=fmt), y))

    def step_pass():
        model.train()
        n = 0
        _sync(device)
        start = time.perf_counter()
        for x, y in made:
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        _sync(device)
        return n / (time.perf_counter() - start)

    pipeline_pass(), step_pass()  # warm-up
    pipe = statistics.median(pipeline_pass() for _ in range(repeats))
    step = statistics.median(step_pass() for _ in range(repeats))
    return {"tier": tier, "recipe": recipe.to_dict(), "batch_size": cfg.batch_size, "batches": batches,
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pipeline.json"
    path.write_text(json.dumps({"benchmark": "pipeline", "results": rows, "environment": environment(str(device))},
                               indent=2))
    print(f"{'tier':<14}{'batch':>7}{'pipeline img/s':>16}{'step img/s':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['tier']:<14}{r['batch_size']:>7}{r['pipeline_images_per_s']:>16.0f}{r['step_images_per_s']:>12.0f}"
              f"{r['ratio']:>7.1f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
