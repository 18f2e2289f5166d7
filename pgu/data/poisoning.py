"""Poisoned training sets, reproducible from a seed (the detoxification scenario, docs/method.md section 8).

Two attacks, each returning the poisoned set and a :class:`Poisoning` record of exactly what was
changed (ids, true and poisoned labels, the attack's parameters), so a run can record it and
D_f (the poisoned samples) can be named by id:

* :func:`flip_labels`: the PGU authors' attack. ``n_pairs`` disjoint class pairs ``(a, b)`` are
  drawn from a permutation of the classes; ``n_per_class`` images of ``a`` are relabelled ``b``
  and as many of ``b`` relabelled ``a`` (images drawn by a seeded permutation of each class).
* :func:`add_backdoor`: BadNets (Gu et al. 2017). A ``size x size`` square in the bottom-right
  corner is set to the brightest input value of each channel (white, in the dataset's own
  normalised units: the per-channel maximum over the set); ``fraction`` of the images of the
  other classes are stamped and relabelled ``target``. :func:`stamp_trigger` stamps test images
  the same way, and :func:`attack_success_rate` scores a model on them.

Conventions: inputs ``(N, C, H, W)`` as the loaders give them; ids are the dataset's stable ids;
every draw uses a CPU ``torch.Generator`` seeded with ``seed``, so the same call gives the same
samples, pixels and labels on any machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import torch

from pgu.data import ArrayDataset

__all__ = ["Poisoning", "flip_labels", "add_backdoor", "stamp_trigger", "trigger_values", "attack_success_rate",
           "poison", "parse_poison_spec", "poisoning_summary", "under_true_labels", "default_flip_count",
           "POISON_SPEC_HELP"]

POISON_SPEC_HELP = ("flip:N[:PAIRS] (N images per class relabelled each way between PAIRS random class pairs, "
                    "default 5) or backdoor:FRACTION[:TARGET[:SIZE]] (a SIZE x SIZE trigger, default 3, stamped on "
                    "FRACTION of the images of the other classes, relabelled TARGET, default 0)")


@dataclass(frozen=True)
class Poisoning:
    """What an attack changed: ``ids`` (sorted), their ``true_labels`` and ``poisoned_labels``, and ``details``."""

    kind: str
    ids: torch.Tensor
    true_labels: torch.Tensor
    poisoned_labels: torch.Tensor
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "n_poisoned": int(self.ids.numel()), "ids": self.ids.tolist(),
                "true_labels": self.true_labels.tolist(), "poisoned_labels": self.poisoned_labels.tolist(),
                **self.details}


def _sorted_record(kind, ids, true, poisoned, details) -> Poisoning:
    order = torch.argsort(ids)
    return Poisoning(kind, ids[order], true[order], poisoned[order], details)


def flip_labels(data: ArrayDataset, n_per_class: int, *, n_pairs: int = 5, seed: int = 0
                ) -> tuple[ArrayDataset, Poisoning]:
    """Relabel ``n_per_class`` images each way between ``n_pairs`` random class pairs (module docstring)."""
    classes = sorted(set(data.y.tolist()))
    if n_pairs < 1 or 2 * n_pairs > len(classes):
        raise ValueError(f"{n_pairs} disjoint class pairs need {2 * n_pairs} classes; the set has {len(classes)}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    g = torch.Generator().manual_seed(seed)
    drawn = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    pairs = [(drawn[2 * k], drawn[2 * k + 1]) for k in range(n_pairs)]
    y = data.y.clone()
    positions, true, poisoned = [], [], []
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            members = torch.nonzero(data.y == src).flatten()
            if len(members) < n_per_class:
                raise ValueError(f"class {src} has {len(members)} images, fewer than n_per_class={n_per_class}")
            chosen = members[torch.randperm(len(members), generator=g)[:n_per_class]]
            y[chosen] = dst
            positions.append(chosen)
            true.append(torch.full((n_per_class,), src, dtype=torch.long))
            poisoned.append(torch.full((n_per_class,), dst, dtype=torch.long))
    positions = torch.cat(positions)
    record = _sorted_record("flip", data.ids[positions], torch.cat(true), torch.cat(poisoned),
                            {"pairs": [list(p) for p in pairs], "n_per_class": n_per_class, "seed": seed})
    return ArrayDataset(data.x, y, data.ids), record


def trigger_values(x: torch.Tensor) -> torch.Tensor:
    """The trigger's value per channel: the brightest input value of each channel over ``x``."""
    return x.transpose(0, 1).reshape(x.shape[1], -1).max(dim=1).values


def stamp_trigger(x: torch.Tensor, values: torch.Tensor, size: int = 3) -> torch.Tensor:
    """A copy of ``x`` with the bottom-right ``size x size`` square of every channel set to ``values``."""
    if not 1 <= size <= min(x.shape[-2:]):
        raise ValueError(f"the trigger size must lie in 1..{min(x.shape[-2:])}, got {size}")
    out = x.clone()
    out[..., -size:, -size:] = values.to(x.dtype).view(1, -1, 1, 1)
    return out


def add_backdoor(data: ArrayDataset, fraction: float, target: int, *, size: int = 3, seed: int = 0,
                 values: torch.Tensor | None = None) -> tuple[ArrayDataset, Poisoning]:
    """Stamp ``fraction`` of the images of classes other than ``target`` and relabel them ``target`` (BadNets)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the backdoor fraction must lie in (0, 1), got {fraction}")
    if target not in set(data.y.tolist()):
        raise ValueError(f"target class {target} is not among the set's labels")
    others = torch.nonzero(data.y != target).flatten()
    count = int(round(fraction * len(others)))
    if count < 1:
        raise ValueError(f"a fraction of {fraction} of {len(others)} images stamps none; raise it")
    g = torch.Generator().manual_seed(seed)
    chosen = others[torch.randperm(len(others), generator=g)[:count]]
    values = trigger_values(data.x) if values is None else values
    x, y = data.x.clone(), data.y.clone()
    x[chosen] = stamp_trigger(data.x[chosen], values, size)
    y[chosen] = target
    record = _sorted_record("backdoor", data.ids[chosen], data.y[chosen], y[chosen],
                            {"target": target, "fraction": fraction, "size": size, "seed": seed,
                             "trigger_values": values.tolist()})
    return ArrayDataset(x, y, data.ids), record


def attack_success_rate(predictions, labels, target: int) -> float:
    """Percent of triggered images whose true class is not ``target`` that are predicted ``target``."""
    predictions, labels = torch.as_tensor(predictions).reshape(-1), torch.as_tensor(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.numel()} predictions for {labels.numel()} labels")
    keep = labels != target
    if not keep.any():
        raise ValueError(f"every image is of the target class {target}; the attack success rate is undefined")
    return 100.0 * float((predictions[keep] == target).float().mean())


def default_flip_count(labels: torch.Tensor) -> int:
    """Images relabelled per class when none is named: 1,000 (the middle of the authors' 100 to 2,500 on
    CIFAR-10's 5,000 per class), at most a fifth of the smallest class."""
    smallest = min(int((labels == c).sum()) for c in set(labels.tolist()))
    return max(1, min(1000, smallest // 5))


def parse_poison_spec(spec: str) -> dict:
    """``{"kind": "flip", "n_per_class", "n_pairs"}`` or ``{"kind": "backdoor", "fraction", "target", "size"}``."""
    parts = str(spec).strip().split(":")
    kind, args = parts[0], parts[1:]
    try:
        if kind == "flip" and 1 <= len(args) <= 2:
            out = {"kind": "flip", "n_per_class": int(args[0]), "n_pairs": int(args[1]) if len(args) > 1 else 5}
        elif kind == "backdoor" and 1 <= len(args) <= 3:
            out = {"kind": "backdoor", "fraction": float(args[0]), "target": int(args[1]) if len(args) > 1 else 0,
                   "size": int(args[2]) if len(args) > 2 else 3}
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"bad poisoning {spec!r}; use {POISON_SPEC_HELP}") from None
    return out


def poison(data: ArrayDataset, spec, seed: int) -> tuple[ArrayDataset, Poisoning]:
    """Apply a poisoning (a spec string, see :data:`POISON_SPEC_HELP`, or a parsed dict) drawn with ``seed``."""
    p = parse_poison_spec(spec) if isinstance(spec, str) else dict(spec)
    if p["kind"] == "flip":
        return flip_labels(data, p["n_per_class"], n_pairs=p["n_pairs"], seed=seed)
    if p["kind"] == "backdoor":
        return add_backdoor(data, p["fraction"], p["target"], size=p["size"], seed=seed)
    raise ValueError(f"unknown poisoning kind {p['kind']!r}; use {POISON_SPEC_HELP}")


def poisoning_summary(record: Poisoning) -> dict:
    """What a results file records of a poisoning: its parameters, size and the SHA-256 of its sorted ids."""
    return {"kind": record.kind, "n_poisoned": int(record.ids.numel()),
            "ids_sha256": hashlib.sha256(record.ids.numpy().astype("<i8").tobytes()).hexdigest(), **record.details}


def under_true_labels(poisoned: ArrayDataset, record: Poisoning) -> ArrayDataset:
    """The poisoned samples of ``poisoned`` as they were trained (a backdoor's trigger included), in the record's
    id order, with their true labels: what a model that never saw the poison should classify right."""
    return replace(poisoned.subset(poisoned.positions_of(record.ids)), y=record.true_labels.clone())
