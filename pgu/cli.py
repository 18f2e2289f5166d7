"""The ``pgu`` command line (a thin front end over the library)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _cmd_demo(args) -> int:
    from .demo import format_table, run_demo

    results = run_demo(args.out, seed=args.seed, progress=not args.quiet)
    print(format_table(results))
    if args.out:
        print(f"\nwrote {args.out}/results.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="pgu", description="Projected-Gradient Unlearning for PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"pgu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train on scikit-learn's digits, serve two deletion requests, compare with retraining")
    demo.add_argument("--out", metavar="DIR", help="write DIR/results.json")
    demo.add_argument("--seed", type=int, default=0, help="seed of training and forget sets (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
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
        print(f"pgu {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
