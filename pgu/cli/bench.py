"""``pgu bench``, ``pgu select`` and ``pgu evaluate``: the bench's commands.

``pgu bench``'s options are built from :class:`~pgu.bench.config.BenchConfig`'s fields (their
``metadata`` holds the help), so a default is written once, in the config.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields, replace
from pathlib import Path

from pgu.bench.config import METHODS, REFERENCES, BenchConfig, available_methods
from pgu.bench.report import format_table
from pgu.bench.runner import run_bench
from pgu.bench.scoring import evaluate_against_reference
from pgu.bench.selection import LADDER, run_selection
from pgu.cli.common import add_data_and_device, ladder, lr_pair, seeds

__all__ = ["add_commands", "add_config_options"]

SELECT_OPTIONS = ("tier", "scenario", "fraction", "forget_class", "count", "budget_share", "model")
"""The :class:`BenchConfig` fields ``pgu select`` takes too."""


def methods_option(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated method names; the references always run, first."""
    if text == "all":
        return available_methods()
    named = tuple(m.strip() for m in text.split(",") if m.strip())
    return REFERENCES + tuple(m for m in named if m not in REFERENCES)


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value if v not in REFERENCES) if value == METHODS else ",".join(map(str, value))
    return str(value)


def add_config_options(parser: argparse.ArgumentParser, only=None, helps=None) -> None:
    """One option per :class:`BenchConfig` field with help metadata (``only``: these fields),
    its default the field's (``helps``: other help texts, by field)."""
    types = {"ints": seeds, "methods": methods_option}
    for f in fields(BenchConfig):
        meta = f.metadata
        if "help" not in meta or (only is not None and f.name not in only):
            continue
        kind = meta.get("kind") or type(f.default)
        kwargs = {"dest": f.name, "type": types.get(kind, kind), "help": (helps or {}).get(f.name, meta["help"])}
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if meta.get("required"):
            kwargs.update(required=True, type=str)
        elif f.default is not MISSING:
            kwargs["default"] = f.default
            if f.default is not None:
                kwargs["help"] += f" (default {_shown(f.default)})"
        parser.add_argument(meta.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def config_from_args(args) -> BenchConfig:
    """The bench the options describe, with ``--pgu-lr`` / ``--pgu-class-lr`` applied to its PGU settings."""
    config = BenchConfig(**{f.name: getattr(args, f.name) for f in fields(BenchConfig) if "help" in f.metadata})
    changes = {k: v for k, v in (("lr", args.pgu_lr), ("class_lr", args.pgu_class_lr)) if v is not None}
    if changes:
        config = replace(config, pgu=config.pgu.replace(**changes))
    return config


def cmd_bench(args) -> int:
    results = run_bench(config_from_args(args), args.out, data_dir=args.data_dir, device=args.device,
                        progress=not args.quiet, cache=args.cache)
    print(format_table(results))
    print(f"wrote {args.out}/results.json, results.md, entropy.png, gap_speedup.png")
    return 0


def cmd_select(args) -> int:
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
                              budget_share=args.budget_share, cache=args.cache, model=args.model)
    print(f"original: FA {selection['original']['FA']:.2f}, VA {selection['original']['VA']:.2f}; "
          f"target FA {selection['target_FA']:.2f}; margin {selection['margin']:.3f}")
    for name, m in selection["methods"].items():
        print(f"{name:16s} x{m['chosen_factor']:<6g} {m['chosen']}")
    print(f"wrote {args.out}/selection.json, selected.toml, selection.png; pass --settings {args.out}/selected.toml to "
          f"pgu bench, or copy it to pgu/selected/{args.tier}-{selection['forget_mode']}.toml")
    return 0


def cmd_evaluate(args) -> int:
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
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


def add_commands(sub) -> None:
    bench = sub.add_parser("bench", help="compare unlearning methods with retraining (docs/protocol.md), over seeds")
    add_config_options(bench)
    bench.add_argument("--pgu-lr", type=lr_pair, metavar="LR0,LR1",
                       help="PGU's learning rate, decaying per epoch from LR0 to LR1 (default: the tier's, "
                            "pgu.PGUSettings.for_tier, else the authors' 0.1,0.01)")
    bench.add_argument("--pgu-class-lr", type=lr_pair, metavar="LR0,LR1",
                       help="the same for class removal (default: the tier's, else --pgu-lr)")
    add_data_and_device(bench)
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun resumes finished seeds)")
    bench.add_argument("--cache", metavar="DIR",
                       help="where trained originals and retrained references are kept (default OUT/cache); "
                            "benches and selections that share one train each model once")
    bench.set_defaults(func=cmd_bench)

    select = sub.add_parser("select", help="choose each method's setting on val only, the same trials for every method")
    add_config_options(select, only=SELECT_OPTIONS, helps={"scenario": "random, subclass or class (one request)"})
    select.add_argument("--seed", type=int, default=100,
                        help="the reference request's seed: one no bench of yours uses (default 100)")
    select.add_argument("--methods", default="all", help="comma-separated unlearning methods, or all (default)")
    select.add_argument("--ladder", type=ladder, metavar="F,F,...",
                        help="factors on each method's published setting, 1 among them "
                             "(default 0.01,0.03,0.1,0.3,1,3,10,30,100)")
    add_data_and_device(select)
    select.add_argument("--quiet", action="store_true", help="no progress output")
    select.add_argument("--out", required=True, metavar="DIR", help="where selection.json and selected.toml go")
    select.add_argument("--cache", metavar="DIR",
                        help="where trained originals and retrained references are kept (default OUT/cache); "
                            "benches and selections that share one train each model once")
    select.set_defaults(func=cmd_select)

    evaluate = sub.add_parser("evaluate", help="score a model against a reference retrained without the forget set")
    evaluate.add_argument("--model", required=True, help="a run folder or a model.safetensors file to score")
    evaluate.add_argument("--reference", required=True, help="a run made with `pgu train --exclude FORGET_SPEC`")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the membership attacks' sampling (default 0)")
    add_data_and_device(evaluate)
    evaluate.add_argument("--out", metavar="FILE", help="also write the metrics as JSON")
    evaluate.set_defaults(func=cmd_evaluate)
