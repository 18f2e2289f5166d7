"""``pgu demo`` and ``pgu train``: the demo on the bundled digits, and training a model with a named recipe."""

from __future__ import annotations

from pgu import distributed
from pgu.cli.common import add_data_and_device, parse_setting
from pgu.coverage import coverage
from pgu.data.poisoning import POISON_SPEC_HELP
from pgu.demo import format_table, run_demo
from pgu.zoo.recipes import available_recipes, find_recipe, load_recipe
from pgu.zoo.workflow import train_run

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    demo = sub.add_parser("demo",
                          help="train on scikit-learn's digits, serve two deletion requests, compare with retraining")
    demo.add_argument("--out", metavar="DIR", help="write DIR/results.json")
    demo.add_argument("--seed", type=int, default=0, help="seed of training and forget sets (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a model with a named recipe and cache its Gram statistics")
    train.add_argument("--recipe", help="recipe name (see --list-recipes) or TOML file")
    train.add_argument("--dataset", help="dataset name; without --recipe, picks the dataset's recipe")
    train.add_argument("--model", help="model (overrides the recipe's): a registered name, path/to/file.py:factory, "
                                       "package.module:factory, or a 'pgu.models' entry point")
    train.add_argument("--width", type=float, help="channel width multiplier")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--set", action="append", type=parse_setting, metavar="KEY=VALUE",
                       help="override any training setting of the recipe (repeatable)")
    train.add_argument("--exclude", metavar="FORGET_SPEC",
                       help="train without these samples: class:C, random:F[:SEED], subclass:C:N, ids:FILE, or "
                            "poisoned (with --poison: the poisoned samples)")
    train.add_argument("--poison", metavar="SPEC",
                       help="train on a poisoned copy of the training set, drawn with the run's seed and recorded in "
                            "RUN/poisoning.json: " + POISON_SPEC_HELP + "; with --exclude poisoned, train on the "
                            "clean samples only")
    add_data_and_device(train)
    train.add_argument("--no-stats", action="store_true", help="skip the Gram statistics pass")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    train.add_argument("--out", metavar="RUN", help="the run folder to write")
    train.set_defaults(func=cmd_train)


def cmd_demo(args) -> int:
    results = run_demo(args.out, seed=args.seed, progress=not args.quiet)
    print(format_table(results))
    if args.out:
        print(f"\nwrote {args.out}/results.json")
    return 0


def cmd_train(args) -> int:
    if args.list_recipes:
        for name in available_recipes():
            r = load_recipe(name)
            print(f"{name:<24} {r.dataset:<14} {r.model:<12} {r.description}")
        return 0
    if args.out is None:
        raise ValueError("--out RUN is required (the folder the run is written to)")
    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif args.dataset:
        recipe = find_recipe(args.dataset, args.model)
    else:
        raise ValueError("name a --dataset (its recipe is used) or a --recipe; see --list-recipes")
    overrides = dict(args.set or [])
    overrides.update({k: v for k, v in {"width": args.width, "epochs": args.epochs, "batch_size": args.batch_size,
                                        "lr": args.lr, "seed": args.seed}.items() if v is not None})
    recipe = recipe.with_overrides(dataset=args.dataset, model=args.model, **overrides)
    with distributed.launched():  # under torchrun: data-parallel, one process group for the command
        run = train_run(recipe, args.out, exclude=args.exclude, data_dir=args.data_dir, device=args.device,
                        stats=not args.no_stats, progress=not args.quiet and distributed.rank() == 0,
                        overwrite=args.overwrite, poison=args.poison)
        if distributed.rank() != 0:
            return 0  # rank 0 reports
    res = run.config["results"]
    print(f"trained {recipe.model} on {recipe.dataset} ({run.config['dataset']['trained_on']} samples"
          f"{', without ' + args.exclude if args.exclude else ''}"
          + (f", poisoned by {args.poison}: {run.config['poisoning']['n_poisoned']} samples" if args.poison else "")
          + f") in {res['train_seconds']:.1f} s: "
          f"val {res['val_acc']:.2f}%, test {res['test_acc']:.2f}%"
          + (f"; Gram statistics in {res['stats_seconds']:.1f} s" if res["stats_seconds"] is not None else ""))
    if res["stats_seconds"] is not None:
        print(f"\nWhat a request moves and what stays frozen (pgu.coverage, bias as the authors):\n"
              f"{coverage(run.model).table()}\n")
    print(f"wrote {args.out}")
    return 0
