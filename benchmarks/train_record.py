"""\
Record a `pgu train` run as a results file: its config, per-epoch history and accuracies.

Usage: python benchmarks/train_record.py RUN --out benchmarks/results/train-NAME.json

A run folder's ``config.json`` holds the recipe, the data, the seconds and the final val and test
accuracy; runs written before ``pgu train`` recorded the eval-mode accuracy on the samples trained
on get it here (from the dataset under ``$PGU_DATA_DIR``), and ``test_train_gap`` is added: the
property a memorising tier (``cifar10-memorize``) is chosen by. The file has the layout of a run's
config (what docs/build_pages.py reads).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgu.data import load_dataset
from pgu.evaluation import accuracy
from pgu.zoo.runs import load_run


def record(folder: Path) -> dict:
    """The run's config and history, with ``results.train_acc`` (eval mode, the samples trained on)."""
    run = load_run(folder)
    config = json.loads((folder / "config.json").read_text())
    results = config["results"]
    if results.get("train_acc") is None:
        data = config["dataset"]
        splits = load_dataset(data["name"], split_seed=int(data.get("split_seed", 0)))
        trained_on = splits.train.subset(splits.train.positions_of(run.train_ids))
        results["train_acc"] = accuracy(run.model, trained_on.loader(1024))
    results["test_train_gap"] = results["train_acc"] - results["test_acc"]
    return config | {"run": str(folder), "history": run.history}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder written by `pgu train`")
    parser.add_argument("--out", required=True, type=Path, help="the results file to write")
    args = parser.parse_args(argv)
    r = record(args.run)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    res = r["results"]
    print(f"{r['run']}: seed {r['recipe']['train']['seed']}, train {res['train_acc']:.2f}%, test "
          f"{res['test_acc']:.2f}%, gap {res['test_train_gap']:.2f} points, {res['train_seconds']:.0f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
