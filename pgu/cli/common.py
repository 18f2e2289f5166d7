"""Option parsers shared by the ``pgu`` commands."""

from __future__ import annotations

import argparse

from pgu.settings import tomllib

__all__ = ["seeds", "lr_pair", "ladder", "parse_setting", "add_data_and_device", "DEVICE_HELP", "DATA_DIR_HELP"]

DEVICE_HELP = "auto (GPU when there is one), cpu or cuda"
DATA_DIR_HELP = "where datasets live (default: $PGU_DATA_DIR)"


def seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers separated by commas, got {text!r}") from None


def lr_pair(text: str) -> tuple[float, float]:
    try:
        lr0, lr1 = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes two learning rates LR0,LR1 (e.g. 0.1,0.01), got {text!r}") from None
    if not (0 < lr0 < float("inf") and 0 < lr1 < float("inf")):
        raise argparse.ArgumentTypeError(f"learning rates must be positive and finite, got {text!r}")
    return lr0, lr1


def ladder(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"the ladder is comma-separated factors such as 0.1,1,10; got {text!r}")


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (a number, a list, a string in quotes), else as plain text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def add_data_and_device(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--device``, as every command that loads data and runs a model takes them."""
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
