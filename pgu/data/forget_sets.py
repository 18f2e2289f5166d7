"""Forget sets named by a spec string, resolved to stable sample ids of a training set.

Specs (docs/protocol.md, Scenarios):

* ``class:C[,C...]``: every training sample of the classes.
* ``random:F[:SEED]``: a random fraction ``F`` in (0, 1) of the training set (seed defaults to
  the run's seed), or ``random:N[:SEED]`` for an integer count ``N``.
* ``subclass:C:N``: the first ``N`` training samples of class ``C`` in id order (the PGU
  authors' All-CNN setting is ``subclass:0:500``).
* ``ids:FILE``: sample ids listed in a file, one per line (``#`` comments allowed), or a JSON list.

Duplicate ids, ids unknown to the set and empty forget sets are refused with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pgu.data.base import ArrayDataset

__all__ = ["ForgetSet", "resolve_forget_spec", "read_ids_file"]


@dataclass(frozen=True)
class ForgetSet:
    spec: str
    ids: torch.Tensor  # sorted int64 sample ids
    mode: str  # "class" when whole classes are forgotten, else "sample"
    classes: tuple[int, ...] = ()

    def mask(self, data: ArrayDataset) -> torch.Tensor:
        """Boolean mask of these ids over ``data``."""
        return data.mask_of(self.ids)


def read_ids_file(path) -> list[int]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ids file at {path}")
    text = path.read_text().strip()
    try:
        if text.startswith("["):
            values = json.loads(text)
        else:
            values = [line.split("#", 1)[0].strip() for line in text.splitlines()]
            values = [v for v in values if v]
        ids = [int(v) for v in values]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: expected integer sample ids, one per line or a JSON list ({exc})") from None
    return ids


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"forget spec {spec!r}: {what} must be an integer, got {text!r}") from None


def resolve_forget_spec(spec: str, train: ArrayDataset, seed: int = 0) -> ForgetSet:
    """The forget set ``spec`` names within ``train`` (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    n = len(train)
    if kind == "class":
        if len(parts) != 1 or not parts[0]:
            raise ValueError(f"forget spec {spec!r}: write class:C or class:C1,C2")
        classes = tuple(sorted({_int(c, "a class", spec) for c in parts[0].split(",")}))
        present = set(train.y.unique().tolist())
        missing = [c for c in classes if c not in present]
        if missing:
            raise ValueError(f"forget spec {spec!r}: no training sample has class {missing}; "
                             f"classes are {sorted(present)}")
        mask = torch.isin(train.y, torch.tensor(classes))
        return ForgetSet(spec, train.ids[mask].sort().values, "class", classes)
    if kind == "random":
        if len(parts) not in (1, 2):
            raise ValueError(f"forget spec {spec!r}: write random:FRACTION[:SEED] or random:COUNT[:SEED]")
        size = parts[0]
        if "." in size or "e" in size.lower():
            try:
                fraction = float(size)
            except ValueError:
                raise ValueError(f"forget spec {spec!r}: {size!r} is not a fraction") from None
            if not 0 < fraction < 1:
                raise ValueError(f"forget spec {spec!r}: the fraction must lie in (0, 1)")
            count = int(round(fraction * n))
        else:
            count = _int(size, "the count", spec)
        if not 0 < count < n:
            raise ValueError(f"forget spec {spec!r}: the forget set must hold between 1 and {n - 1} samples, "
                             f"not {count}")
        s = _int(parts[1], "the seed", spec) if len(parts) == 2 else seed
        g = torch.Generator().manual_seed(s)
        chosen = torch.randperm(n, generator=g)[:count]
        return ForgetSet(spec, train.ids[chosen].sort().values, "sample")
    if kind == "subclass":
        if len(parts) != 2:
            raise ValueError(f"forget spec {spec!r}: write subclass:CLASS:COUNT")
        c, count = _int(parts[0], "the class", spec), _int(parts[1], "the count", spec)
        of_class = train.ids[train.y == c].sort().values
        if count < 1 or count > len(of_class):
            raise ValueError(f"forget spec {spec!r}: class {c} has {len(of_class)} training samples; "
                             f"ask for 1 to that many")
        return ForgetSet(spec, of_class[:count], "sample")
    if kind == "ids":
        if not rest:
            raise ValueError(f"forget spec {spec!r}: write ids:FILE")
        ids = read_ids_file(rest)
        if not ids:
            raise ValueError(f"forget spec {spec!r}: the file lists no ids")
        if len(set(ids)) != len(ids):
            raise ValueError(f"forget spec {spec!r}: the file lists some ids twice")
        tensor = torch.tensor(sorted(ids), dtype=torch.long)
        train.positions_of(tensor)  # raises KeyError naming unknown ids
        return ForgetSet(spec, tensor, "sample")
    raise ValueError(f"unknown forget spec {spec!r}; use class:C, random:F[:SEED], subclass:C:N or ids:FILE")
