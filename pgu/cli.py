"""The ``pgu`` command line (a thin front end over the library)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

__all__ = ["main"]


def _cmd_demo(args) -> int:
    from .demo import format_table, run_demo

    results = run_demo(args.out, seed=args.seed, progress=not args.quiet)
    print(format_table(results))
    if args.out:
        print(f"\nwrote {args.out}/results.json")
    return 0


def _parse_setting(text: str) -> tuple[str, object]:
    from .recipes import tomllib  # the standard library's on 3.11+, tomli before

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def _cmd_train(args) -> int:
    from .recipes import available_recipes, find_recipe, load_recipe
    from .workflow import train_run

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
    run = train_run(recipe, args.out, exclude=args.exclude, data_dir=args.data_dir, device=args.device,
                    stats=not args.no_stats, progress=not args.quiet, overwrite=args.overwrite, poison=args.poison)
    res = run.config["results"]
    print(f"trained {recipe.model} on {recipe.dataset} ({run.config['dataset']['trained_on']} samples"
          f"{', without ' + args.exclude if args.exclude else ''}"
          + (f", poisoned by {args.poison}: {run.config['poisoning']['n_poisoned']} samples" if args.poison else "")
          + f") in {res['train_seconds']:.1f} s: "
          f"val {res['val_acc']:.2f}%, test {res['test_acc']:.2f}%"
          + (f"; Gram statistics in {res['stats_seconds']:.1f} s" if res["stats_seconds"] is not None else ""))
    print(f"wrote {args.out}")
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers separated by commas, got {text!r}") from None


def _lr_pair(text: str) -> tuple[float, float]:
    try:
        lr0, lr1 = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes two learning rates LR0,LR1 (e.g. 0.1,0.01), got {text!r}") from None
    if not (0 < lr0 < float("inf") and 0 < lr1 < float("inf")):
        raise argparse.ArgumentTypeError(f"learning rates must be positive and finite, got {text!r}")
    return lr0, lr1


def _cmd_bench(args) -> int:
    from .bench import REFERENCES, BenchConfig, available_methods, run_bench
    from .report import format_table

    if args.methods == "all":
        methods = available_methods()
    else:
        named = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        methods = REFERENCES + tuple(m for m in named if m not in REFERENCES)
    config = BenchConfig(tier=args.tier, scenario=args.scenario, seeds=args.seeds, methods=methods,
                         fraction=args.fraction, forget_class=args.forget_class, count=args.count,
                         steps=args.steps, per_class=args.per_class, challenge=args.challenge,
                         budget_share=args.budget_share, settings=args.settings, poison_count=args.poison_count,
                         poison_pairs=args.poison_pairs, poison_fraction=args.poison_fraction,
                         poison_target=args.poison_target, trigger_size=args.trigger_size)
    if args.pgu_lr is not None or args.pgu_class_lr is not None:
        changes = {k: v for k, v in (("lr", args.pgu_lr), ("class_lr", args.pgu_class_lr)) if v is not None}
        config = replace(config, pgu=replace(config.pgu, **changes))
    results = run_bench(config, args.out, data_dir=args.data_dir, device=args.device, progress=not args.quiet)
    print(format_table(results))
    print(f"wrote {args.out}/results.json, results.md, entropy.png, gap_speedup.png")
    return 0


def _cmd_select(args) -> int:
    from .bench import available_methods, REFERENCES
    from .selection import LADDER, run_selection

    if args.methods == "all":
        methods = tuple(m for m in available_methods() if m not in REFERENCES)
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        refs = [m for m in methods if m in REFERENCES]
        if refs:
            raise ValueError(f"{refs} have no settings to select: name unlearning methods only")
    ladder = LADDER if args.ladder is None else args.ladder
    selection = run_selection(args.tier, args.scenario, args.seed, methods, args.out, ladder=ladder,
                              data_dir=args.data_dir, device=args.device, progress=not args.quiet,
                              fraction=args.fraction, forget_class=args.forget_class, count=args.count,
                              budget_share=args.budget_share)
    print(f"original: FA {selection['original']['FA']:.2f}, VA {selection['original']['VA']:.2f}; "
          f"target FA {selection['target_FA']:.2f}; margin {selection['margin']:.3f}")
    for name, m in selection["methods"].items():
        print(f"{name:16s} x{m['chosen_factor']:<6g} {m['chosen']}")
    print(f"wrote {args.out}/selection.json, selected.toml, selection.png; pass --settings {args.out}/selected.toml to "
          f"pgu bench, or copy it to pgu/methods/selected/{args.tier}-{selection['forget_mode']}.toml")
    return 0


def _ladder(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"the ladder is comma-separated factors such as 0.1,1,10; got {text!r}")


def _cmd_evaluate(args) -> int:
    import json

    from .evaluate import evaluate_against_reference

    result = evaluate_against_reference(args.model, args.reference, data_dir=args.data_dir, device=args.device,
                                        seed=args.seed)
    keys = ["UA", "RA", "TA", "MIA", "loss_MIA", "avg_gap", "js_divergence"]
    keys += [k for k in ("poisoned_true_acc", "ASR", "triggered_acc") if k in result["reference"]]
    print(f"forget set {result['forget_spec']} ({result['n_forget']} samples), metrics in %:")
    print(f"  {'':<10}" + "".join(f"{k:>14}" for k in keys))
    for name in ("model", "reference"):
        row = result[name]
        print(f"  {name:<10}" + "".join(f"{row[k]:>14.3f}" if k in row else f"{'0':>14}" for k in keys))
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


def _cmd_store_init(args) -> int:
    from .model_store import ModelStore
    from .recipes import tomllib

    settings = None
    if args.pgu_settings:
        settings = tomllib.loads(open(args.pgu_settings).read())
    store = ModelStore.create(args.store, args.run, data_dir=args.data_dir, pgu_settings=settings)
    info = store.info()
    print(f"made store {store.path} from {args.run}: {info['model']['name']} on {info['dataset']['name']}, "
          f"version 0; PGU settings {info['pgu']}")
    return 0


def _cmd_forget(args) -> int:
    import json

    from .forget_sets import read_ids_file
    from .model_store import ModelStore

    store = ModelStore(args.store)
    ids = read_ids_file(args.ids) if args.ids else None
    overrides = {"lr": args.lr, "class_lr": args.lr if args.forget_class is not None else None, "epochs": args.epochs,
                 "threshold": args.threshold, "max_val_drop": args.max_val_drop}
    record = store.forget(ids=ids, forget_class=args.forget_class, samples=args.data, val=args.val,
                          data_dir=args.data_dir, overrides=overrides, device=args.device, progress=not args.quiet)
    m = record["metrics"]
    what = f"class {record['class']}" if record["kind"] == "class" else "ids"
    print(f"request {record['id']}: forgot {record['n_samples']} samples ({what}) -> version {record['version']} "
          f"in {record['seconds']['total']:.2f} s; stop: {record['stop_reason']} after {record['epochs']} epochs "
          f"(kept epoch {record['kept_epoch']})")
    val_key = "val_acc_kept_classes" if "val_acc_kept_classes" in m["after"] else "val_acc"
    print(f"  forget accuracy {m['before']['forget_acc']:.2f} -> {m['after']['forget_acc']:.2f}, "
          f"val accuracy{' on the classes kept' if val_key != 'val_acc' else ''} "
          f"{m['before'][val_key]:.2f} -> {m['after'][val_key]:.2f} (the trained model's "
          f"{m['before']['reference_val_acc']:.2f}; this request could lose {m['before']['val_drop_allowed']:.2f})")
    if record["stop_reason"] == "val_drop" and record["kept_epoch"] == 0:
        print("  note: the val guard stopped the request before any update was kept; the model is as it was. Raise "
              "--max-val-drop, or retrain, if these samples must be forgotten harder.")
    if args.json:
        print(json.dumps(record, indent=2))
    return 0


def _cmd_history(args) -> int:
    import json

    from .model_store import ModelStore

    store = ModelStore(args.store)
    rows = store.history()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    info = store.info()
    print(f"store {store.path}: {info['model']['name']} on {info['dataset']['name']}, made {info['created']}, "
          f"{len(rows)} request(s), {int(store.removed_ids().numel())} sample(s) removed")
    head = ["id", "time", "what", "samples", "stop", "epochs", "seconds", "forget acc", "val acc", "version"]
    print("  ".join(f"{h:>10}" if i else f"{h:>3}" for i, h in enumerate(head)))
    for r in rows:
        m = r["metrics"]
        what = f"class {r['class']}" if r["kind"] == "class" else "ids"
        cells = [f"{r['id']:>3}", f"{r['time'][:19]:>10}", f"{what:>10}", f"{r['n_samples']:>10}",
                 f"{r['stop_reason']:>10}", f"{r['epochs']:>10}", f"{r['seconds']['total']:>10.2f}",
                 f"{m['before']['forget_acc']:.1f}->{m['after']['forget_acc']:.1f}".rjust(10),
                 _val_change(m).rjust(10), f"{r['version']:>10}"]
        print("  ".join(cells))
    return 0


def _val_change(metrics: dict) -> str:
    """Val accuracy before -> after a request (for class removal, on the classes kept)."""
    key = "val_acc_kept_classes" if "val_acc_kept_classes" in metrics["after"] else "val_acc"
    return f"{metrics['before'][key]:.1f}->{metrics['after'][key]:.1f}"


def _cmd_verify(args) -> int:
    import json

    from .model_store import ModelStore

    report = ModelStore(args.store).verify()
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"store {args.store}: ok at version {report['version']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if not report["ok"]:
        for problem in report["problems"]:
            print(f"pgu verify: problem: {problem}", file=sys.stderr)
        return 1
    return 0


def _cmd_samples(args) -> int:
    import torch

    from .data import load_dataset
    from .forget_sets import read_ids_file
    from .sample_files import write_samples

    splits = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    data = getattr(splits, args.split)
    if args.ids is not None and args.forget_class is not None:
        raise ValueError("name the samples by --ids FILE or by --class C, not both")
    if args.ids is None and args.forget_class is None and args.split == "train":
        raise ValueError("name the training samples: --ids FILE or --class C (a whole held-out split needs neither)")
    if args.ids:
        data = data.subset(data.positions_of(read_ids_file(args.ids)))
    elif args.forget_class is not None:
        data = data.subset(data.y == int(args.forget_class))
    if len(data) == 0:
        raise ValueError("no samples match; nothing written")
    write_samples(args.out, data.ids, data.x, data.y.to(torch.long))
    print(f"wrote {len(data)} {args.dataset} {args.split} samples to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .poisoning import POISON_SPEC_HELP

    parser = argparse.ArgumentParser(prog="pgu", description="Projected-Gradient Unlearning for PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"pgu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train on scikit-learn's digits, serve two deletion requests, compare with retraining")
    demo.add_argument("--out", metavar="DIR", help="write DIR/results.json")
    demo.add_argument("--seed", type=int, default=0, help="seed of training and forget sets (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="train a model with a named recipe and cache its Gram statistics")
    train.add_argument("--recipe", help="recipe name (see --list-recipes) or TOML file")
    train.add_argument("--dataset", help="dataset name; without --recipe, picks the dataset's recipe")
    train.add_argument("--model", help="model name (overrides the recipe's)")
    train.add_argument("--width", type=float, help="channel width multiplier")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--set", action="append", type=_parse_setting, metavar="KEY=VALUE",
                       help="override any training setting of the recipe (repeatable)")
    train.add_argument("--exclude", metavar="FORGET_SPEC",
                       help="train without these samples: class:C, random:F[:SEED], subclass:C:N, ids:FILE, or "
                            "poisoned (with --poison: the poisoned samples)")
    train.add_argument("--poison", metavar="SPEC",
                       help="train on a poisoned copy of the training set, drawn with the run's seed and recorded in "
                            "RUN/poisoning.json: " + POISON_SPEC_HELP + "; with --exclude poisoned, train on the "
                            "clean samples only")
    train.add_argument("--data-dir", help="where datasets live (default: $PGU_DATA_DIR)")
    train.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    train.add_argument("--no-stats", action="store_true", help="skip the Gram statistics pass")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    train.add_argument("--out", metavar="RUN", help="the run folder to write")
    train.set_defaults(func=_cmd_train)

    bench = sub.add_parser("bench", help="compare unlearning methods with retraining (PROTOCOL.md), over seeds")
    bench.add_argument("--tier", required=True,
                       help="digits, mnist, fashion, cifar10-cpu, or the paper's allcnn-cifar10 / smallvgg-cifar10 (GPU)")
    bench.add_argument("--scenario", required=True,
                       help="random, subclass, class, sequential, or poison-flip / poison-backdoor (train on poisoned "
                            "data, then remove the poisoned samples; the reference is trained on the clean ones)")
    bench.add_argument("--fraction", type=float, default=0.1, help="random: share of D forgotten (default 0.1)")
    bench.add_argument("--class", dest="forget_class", type=int, default=0, help="class and subclass: the class (default 0)")
    bench.add_argument("--count", type=int, help="subclass: samples forgotten (default 500, or half a smaller class)")
    bench.add_argument("--steps", type=int, default=4, help="sequential: number of requests (default 4)")
    bench.add_argument("--per-class", type=int,
                       help="sequential: samples of every class per request (default 2%% of the smallest class, at most 100)")
    bench.add_argument("--poison-count", type=int, metavar="N",
                       help="poison-flip: images relabelled per class (default 1000, at most a fifth of the smallest "
                            "class)")
    bench.add_argument("--poison-pairs", type=int, default=5, help="poison-flip: class pairs flipped (default 5)")
    bench.add_argument("--poison-fraction", type=float, default=0.05,
                       help="poison-backdoor: share of the other classes' images stamped (default 0.05)")
    bench.add_argument("--poison-target", type=int, default=0, help="poison-backdoor: the target class (default 0)")
    bench.add_argument("--trigger-size", type=int, default=3,
                       help="poison-backdoor: side of the square trigger in pixels (default 3)")
    bench.add_argument("--challenge", type=int, default=0, metavar="N",
                       help="also the NeurIPS 2023 challenge score of PGU from N unlearned and N retrained models "
                            "per seed (PROTOCOL: N >= 32; affordable on the digits tier)")
    bench.add_argument("--methods", default="original,retrain,pgu",
                       help="comma-separated unlearning methods (pgu.methods: pgu, pgu-energy, finetune, neggrad, "
                            "neggrad+, random-label, boundary-shrink, scrub, ssd, salun, l1-sparse), or all; original "
                            "and retrain always run (default: pgu)")
    bench.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated (default 0,1,2)")
    bench.add_argument("--budget-share", type=float, default=0.5,
                       help="each method's budget, a share of the original training's sample passes (default 0.5)")
    bench.add_argument("--pgu-lr", type=_lr_pair, metavar="LR0,LR1",
                       help="PGU's learning rate, decaying per epoch from LR0 to LR1 (default: the tier's, "
                            "pgu.bench.TIER_PGU_SETTINGS, else the authors' 0.1,0.01)")
    bench.add_argument("--pgu-class-lr", type=_lr_pair, metavar="LR0,LR1",
                       help="the same for class removal (default: the tier's, else --pgu-lr)")
    bench.add_argument("--settings", default="selected", metavar="selected|published|FILE",
                       help="the methods' settings: selected on val by `pgu select` where pgu ships them for the tier "
                            "(pgu/methods/selected), the authors' published ones, or a selected.toml of yours "
                            "(default: selected)")
    bench.add_argument("--data-dir", help="where datasets live (default: $PGU_DATA_DIR)")
    bench.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun resumes finished seeds)")
    bench.set_defaults(func=_cmd_bench)

    select = sub.add_parser("select", help="choose each method's setting on val only, the same trials for every method")
    select.add_argument("--tier", required=True, help="a bench tier (see pgu bench --help)")
    select.add_argument("--scenario", required=True, help="random, subclass or class")
    select.add_argument("--seed", type=int, default=100,
                        help="the reference request's seed: one no bench of yours uses (default 100)")
    select.add_argument("--methods", default="all", help="comma-separated unlearning methods, or all (default)")
    select.add_argument("--ladder", type=_ladder, metavar="F,F,...",
                        help="factors on each method's published setting, 1 among them (default 0.01,0.03,0.1,0.3,1,3,10,30,100)")
    select.add_argument("--fraction", type=float, default=0.1, help="random: share of D forgotten (default 0.1)")
    select.add_argument("--class", dest="forget_class", type=int, default=0, help="class and subclass: the class")
    select.add_argument("--count", type=int, help="subclass: samples forgotten")
    select.add_argument("--budget-share", type=float, default=0.5, help="each trial's budget, as in pgu bench")
    select.add_argument("--data-dir", help="where datasets live (default: $PGU_DATA_DIR)")
    select.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    select.add_argument("--quiet", action="store_true", help="no progress output")
    select.add_argument("--out", required=True, metavar="DIR", help="where selection.json and selected.toml go")
    select.set_defaults(func=_cmd_select)

    evaluate = sub.add_parser("evaluate", help="score a model against a reference retrained without the forget set")
    evaluate.add_argument("--model", required=True, help="a run folder or a model.safetensors file to score")
    evaluate.add_argument("--reference", required=True, help="a run made with `pgu train --exclude FORGET_SPEC`")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the membership attacks' sampling (default 0)")
    evaluate.add_argument("--data-dir", help="where datasets live (default: $PGU_DATA_DIR)")
    evaluate.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    evaluate.add_argument("--out", metavar="FILE", help="also write the metrics as JSON")
    evaluate.set_defaults(func=_cmd_evaluate)

    store = sub.add_parser("store", help="a model store serving deletion requests over a model's life")
    store_sub = store.add_subparsers(dest="store_command", metavar="STORE_COMMAND", required=True)
    init = store_sub.add_parser("init", help="make a store from a trained run with its Gram statistics")
    init.add_argument("store", metavar="STORE", help="the store folder to make (must not exist)")
    init.add_argument("--from", dest="run", required=True, metavar="RUN", help="a run folder written by `pgu train`")
    init.add_argument("--pgu-settings", metavar="FILE",
                      help="TOML of PGU settings (threshold, rule, lr, class_lr, epochs, batch_size, max_val_drop); "
                           "default: the bench tier's for the run's recipe, else the authors', and max_val_drop 2")
    init.add_argument("--data-dir", help="where the run's dataset lives (default: $PGU_DATA_DIR); read once, to "
                                         "record each trained sample's content digest")
    init.set_defaults(func=_cmd_store_init)

    forget = sub.add_parser("forget", help="apply one deletion request to a store with PGU (data-free)")
    forget.add_argument("store", metavar="STORE")
    what = forget.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", metavar="FILE", help="sample ids to forget, one per line or a JSON list")
    what.add_argument("--class", dest="forget_class", type=int, metavar="C",
                      help="forget every retained sample of class C (class removal)")
    forget.add_argument("--data", metavar="FILE",
                        help="the forget samples as a sample file (.npz: ids, y, and x or images; `pgu samples` "
                             "writes one); default: read from the store's dataset under --data-dir")
    forget.add_argument("--val", metavar="FILE",
                        help="held-out samples for the stopping rule (.npz: y, and x or images); default: the "
                             "dataset's val split")
    forget.add_argument("--lr", type=_lr_pair, metavar="LR0,LR1", help="this request's learning rates (default: the store's)")
    forget.add_argument("--epochs", type=int, help="this request's epoch cap (default: the store's)")
    forget.add_argument("--threshold", type=float, help="this request's CGS threshold (default: the store's)")
    forget.add_argument("--max-val-drop", type=float, metavar="POINTS",
                        help="points of val accuracy the model may be below the trained model's after this request "
                             "(default: the store's, 2)")
    forget.add_argument("--data-dir", help="where the store's dataset lives, when --data or --val is left out")
    forget.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    forget.add_argument("--json", action="store_true", help="also print the ledger record as JSON")
    forget.add_argument("--quiet", action="store_true", help="no progress bar")
    forget.set_defaults(func=_cmd_forget)

    history = sub.add_parser("history", help="print a store's ledger: every request, what it removed, its version")
    history.add_argument("store", metavar="STORE")
    history.add_argument("--json", action="store_true", help="the ledger's requests as JSON")
    history.set_defaults(func=_cmd_history)

    verify = sub.add_parser("verify", help="re-check a store: hashes, the ledger's chain, the Gram state's count")
    verify.add_argument("store", metavar="STORE")
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.set_defaults(func=_cmd_verify)

    samples = sub.add_parser("samples", help="write samples of a dataset as a sample file for `pgu forget`")
    samples.add_argument("--dataset", required=True, help="dataset name (digits, mnist, fashion, cifar10, ...)")
    samples.add_argument("--split", default="train", choices=("train", "val", "test"), help="default train")
    samples.add_argument("--ids", metavar="FILE", help="sample ids, one per line or a JSON list")
    samples.add_argument("--class", dest="forget_class", type=int, metavar="C", help="every sample of class C")
    samples.add_argument("--split-seed", type=int, default=0, help="the val/test split's seed (default 0)")
    samples.add_argument("--data-dir", help="where datasets live (default: $PGU_DATA_DIR)")
    samples.add_argument("--out", required=True, metavar="FILE", help="the .npz to write")
    samples.set_defaults(func=_cmd_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pgu {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
