"""``pgu verify``: re-check a model store's files, ledger and Gram state against each other.

Kept apart from :mod:`pgu.store.model_store`, which serves requests; this only reads.
"""

from __future__ import annotations

from pgu.store.ledger import LedgerError
from pgu.store.settings import StoreError

__all__ = ["verify_store", "OBJECTS"]

OBJECTS = "objects"


def verify_store(store) -> dict:
    """Re-check the store: ``{"ok", "problems", "version", "notes"}`` (``ok`` when there are no problems).

    Checks SQLite's integrity, the version chain (an edited ledger row breaks it), the current
    files' and the trained model's hashes and readability, that the Gram state is of the
    model's architecture and covers exactly the samples the ledger says are retained (their
    number, and each layer's rows: that many times the layer's rows per sample), and that
    every request's count matches the ids recorded for it.
    """
    problems, notes = [], []
    with store._lock(exclusive=False):
        try:
            ledger = store.ledger()
        except StoreError as exc:
            return {"ok": False, "problems": [str(exc)], "version": None, "notes": notes}
        with ledger:
            try:
                problems += ledger.integrity_problems()
                problems += ledger.chain_problems()
                version = ledger.current_version()
                n_total, n_removed = ledger.n_samples(), int(ledger.removed_ids().numel())
                rows_per_sample = ledger.meta("rows_per_sample", {})
                for r in ledger.requests():
                    got = int(ledger.removed_ids(r["id"]).numel())
                    if got != r["n_samples"]:
                        problems.append(f"request {r['id']} records {r['n_samples']} samples but {got} removed ids")
                reference_sha = ledger.versions()[0]["model_sha256"]
                anchor = ledger.meta("cgs_anchor")
                anchor_shas = [anchor[k] for k in ("eigen", "shifts")] if anchor else []
                wanted = {version["model_sha256"], version["state_sha256"], reference_sha, *anchor_shas}
            except LedgerError as exc:
                return {"ok": False, "problems": problems + [str(exc)], "version": None, "notes": notes}
        if version["n_retained"] != n_total - n_removed:
            problems.append(f"version {version['version']} retains {version['n_retained']} samples but the ledger "
                            f"has {n_total} trained and {n_removed} removed")
        try:
            store._checked(reference_sha, "trained model")
            for sha in anchor_shas:  # the CGS anchor (pgu.store.anchor_files): a damaged one would mislead requests
                store._checked(sha, "CGS anchor")
            _, state, _ = store.load()
            if state.n_samples_ != version["n_retained"]:
                problems.append(f"the Gram state covers {state.n_samples_} samples but the ledger says "
                                f"{version['n_retained']} are retained")
            for name, per in rows_per_sample.items():
                if state.n_rows_.get(name) != per * version["n_retained"]:
                    problems.append(f"layer {name!r} of the Gram state holds {state.n_rows_.get(name)} rows, not "
                                    f"{per} for each of the {version['n_retained']} retained samples")
        except StoreError as exc:
            problems.append(str(exc))
        leftovers = [p.name for p in (store.path / OBJECTS).iterdir() if p.name.split(".")[0] not in wanted]
        if leftovers:
            notes.append(f"{len(leftovers)} file(s) no version names (left by an interrupted request; the next "
                         f"request deletes them)")
    return {"ok": not problems, "problems": problems, "version": version["version"], "notes": notes}

# -- a deletion request --------------------------------------------------------------
