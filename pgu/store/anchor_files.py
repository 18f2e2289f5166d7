"""A store's CGS anchor (:mod:`pgu.cgs_anchor`) as two objects: its eigendecompositions and the energy removed since.

The ledger's meta entry ``cgs_anchor`` names both files (their SHA-256), the keys of the
eigendecompositions and the version whose Gram state the anchor describes. A request that finds
the entry of the current version updates the anchor; any other request (the entry missing, of an
older version, a store made before anchors) anchors the current state first, an exact ``eigh``
per wide layer, as every request did before. The eigendecompositions are rewritten only when a
layer is anchored again; the removed energy (``d`` numbers per layer) with every request. Once a
request has changed the trained model (version 0's), requests take exact ``eigh`` and leave the
anchor as it is (:data:`MOVED_ROUTE`).
"""

from __future__ import annotations

from pathlib import Path

from pgu.cgs_anchor import CGSAnchor
from pgu.store.objects import write_object

__all__ = ["ANCHOR_META", "SUBSPACE_ROUTES", "MOVED_ROUTE", "read_anchor", "write_anchor", "anchor_files"]

ANCHOR_META = "cgs_anchor"

SUBSPACE_ROUTES = ("anchored", "exact")
"""A store's ``subspace`` setting: the CGS from the store's anchor (default) or exact ``eigh`` of every layer."""

MOVED_ROUTE = "exact (the model moved since the statistics)"
"""Every layer's route once a request has changed the trained model: the anchor describes statistics taken with it."""


def read_anchor(entry: dict | None, version: int, checked) -> CGSAnchor | None:
    """The anchor ``entry`` names when it describes ``version``'s Gram state, else None; ``checked(sha, what)``
    gives an object's path after checking its hash."""
    if not entry or entry.get("version") != version:
        return None
    return CGSAnchor.load(checked(entry["eigen"], "CGS anchor"), shifts=checked(entry["shifts"], "CGS anchor shift"))


def write_anchor(objects: Path, anchor: CGSAnchor, previous: dict | None, version: int) -> dict:
    """Write ``anchor`` (the state of ``version``) as objects, reusing the eigendecompositions' file of ``previous``
    when no layer was anchored again; returns the meta entry."""
    keys = anchor.keys()
    if previous and previous.get("keys") == keys:
        eigen = previous["eigen"]
    else:
        eigen = write_object(objects, lambda p: anchor.save(p, parts=("eigen",)))
    shifts = write_object(objects, lambda p: anchor.save(p, parts=("shifts",)))
    return {"eigen": eigen, "shifts": shifts, "keys": keys, "version": version}


def anchor_files(entry: dict | None) -> set[str]:
    """The object files an anchor entry names."""
    return {f"{entry[k]}.safetensors" for k in ("eigen", "shifts")} if entry else set()
