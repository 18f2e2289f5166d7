"""The ``pgu`` command line: a thin front end over the library (``pgu --help``).

Each module adds its commands: :mod:`pgu.cli.train` (``demo``, ``train``), :mod:`pgu.cli.bench`
(``bench``, ``select``, ``evaluate``) and :mod:`pgu.cli.store` (``store init``, ``forget``,
``history``, ``verify``, ``samples``). Every command exits 1 with a one-line
``pgu COMMAND: error: ...`` that says what to fix.
"""

from __future__ import annotations

import argparse
import sys

from pgu import __version__
from pgu.cli import bench, store, train

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgu", description="Projected-Gradient Unlearning for PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"pgu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_commands(sub)
    bench.add_commands(sub)
    store.add_commands(sub)
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
