"""The model store's ledger: one SQLite file recording every sample, request and model version.

Tables (``SCHEMA``):

* ``meta(key, value)``: what the store is (format, model spec, dataset, PGU settings), JSON values.
* ``samples(id, label, digest)``: every sample the model was trained on, with the 32-byte content
  digest of :func:`pgu.store.sample_files.sample_digests`, written once when the store is made.
* ``requests``: one row per deletion request that succeeded: when, what (sample ids or a class),
  how many, the settings, the stop reason, epochs, seconds per phase and metrics on val (JSON).
* ``removed(id, request_id)``: every sample id removed, and by which request; an id appears at
  most once (primary key), which is how a second removal is refused.
* ``versions``: version 0 is the trained model; version ``t`` is the model after request ``t``
  (``request_id``), with the SHA-256 of its model file and Gram-state file, the number of samples
  it retains, and ``chain``: SHA-256 over the previous version's chain and this version's record
  (hashes, request, sorted removed ids), so an edit to any earlier row is detected by
  :meth:`Ledger.chain_problems`.

The current version is the highest. A request's rows are written in one transaction
(:meth:`Ledger.commit_request`); SQLite's journal makes it all-or-nothing, also when the process
is killed, and ``synchronous=FULL`` makes a committed request durable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import torch

__all__ = ["Ledger", "LedgerError", "SCHEMA", "chain_hash", "utc_now"]

LEDGER_FORMAT = "pgu.store/1"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples (id INTEGER PRIMARY KEY, label INTEGER NOT NULL, digest BLOB NOT NULL);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('ids', 'class')),
    class INTEGER, n_samples INTEGER NOT NULL, ids_sha256 TEXT NOT NULL, settings TEXT NOT NULL,
    stop_reason TEXT NOT NULL, epochs INTEGER NOT NULL, kept_epoch INTEGER NOT NULL, seconds TEXT NOT NULL,
    metrics TEXT NOT NULL);
CREATE TABLE removed (id INTEGER PRIMARY KEY REFERENCES samples(id),
                      request_id INTEGER NOT NULL REFERENCES requests(id));
CREATE INDEX removed_by_request ON removed(request_id);
CREATE TABLE versions (
    version INTEGER PRIMARY KEY, time TEXT NOT NULL, request_id INTEGER REFERENCES requests(id),
    model_sha256 TEXT NOT NULL, state_sha256 TEXT NOT NULL, n_retained INTEGER NOT NULL, chain TEXT NOT NULL);
"""


class LedgerError(ValueError):
    """The ledger is missing, not a pgu store's, or damaged."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def ids_sha256(ids: torch.Tensor) -> str:
    """SHA-256 of sorted int64 ids (little-endian): how a set of ids is named in the ledger."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1).sort().values
    return hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()


def chain_hash(previous: str, version: int, request_id, model_sha256: str, state_sha256: str, n_retained: int,
               removed_sha256: str) -> str:
    """A version's link: SHA-256 of the previous link and this version's record (module docstring)."""
    record = json.dumps([previous, version, request_id, model_sha256, state_sha256, n_retained, removed_sha256])
    return hashlib.sha256(record.encode()).hexdigest()


class Ledger:
    """An open ledger file. Reads are plain queries; every write goes through one transaction."""

    def __init__(self, path, *, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise LedgerError(f"no ledger at {self.path}: not a pgu store (make one with `pgu store init`)")
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=60.0)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            if create:
                self.db.executescript("BEGIN;" + SCHEMA + "COMMIT;")
                self.set_meta({"format": LEDGER_FORMAT})
            elif self.meta("format") != LEDGER_FORMAT:
                raise LedgerError(f"{self.path} is a SQLite file but not a pgu store ledger "
                                  f"(format {self.meta('format')!r}, expected {LEDGER_FORMAT!r})")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"the ledger {self.path} is damaged or truncated ({exc}); restore the store from a "
                              f"backup") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reads ---------------------------------------------------------------------------

    def _query(self, sql: str, args=()) -> list[tuple]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"the ledger {self.path} is damaged ({exc}); restore the store from a backup") from exc

    def meta(self, key: str, default=None):
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def current_version(self) -> dict:
        rows = self._query("SELECT version, time, request_id, model_sha256, state_sha256, n_retained, chain "
                           "FROM versions ORDER BY version DESC LIMIT 1")
        if not rows:
            raise LedgerError(f"the ledger {self.path} records no model version; the store is incomplete")
        return dict(zip(("version", "time", "request_id", "model_sha256", "state_sha256", "n_retained", "chain"),
                        rows[0]))

    def versions(self) -> list[dict]:
        keys = ("version", "time", "request_id", "model_sha256", "state_sha256", "n_retained", "chain")
        return [dict(zip(keys, r)) for r in self._query(f"SELECT {', '.join(keys)} FROM versions ORDER BY version")]

    def requests(self) -> list[dict]:
        keys = ("id", "time", "kind", "class", "n_samples", "ids_sha256", "settings", "stop_reason", "epochs",
                "kept_epoch", "seconds", "metrics")
        out = []
        for row in self._query(f"SELECT {', '.join(keys)} FROM requests ORDER BY id"):
            rec = dict(zip(keys, row))
            for k in ("settings", "seconds", "metrics"):
                rec[k] = json.loads(rec[k])
            out.append(rec)
        return out

    def n_samples(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM samples")[0][0])

    def sample_rows(self, ids: torch.Tensor) -> dict[int, tuple[int, bytes, int | None]]:
        """``{id: (label, digest, removing request or None)}`` for those of ``ids`` the store knows."""
        out = {}
        ids = [int(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start:start + 900]
            marks = ",".join("?" * len(chunk))
            for sid, label, digest, req in self._query(
                    f"SELECT s.id, s.label, s.digest, r.request_id FROM samples s LEFT JOIN removed r ON r.id = s.id "
                    f"WHERE s.id IN ({marks})", chunk):
                out[int(sid)] = (int(label), bytes(digest), req)
        return out

    def retained_ids_of_class(self, label: int) -> torch.Tensor:
        rows = self._query("SELECT s.id FROM samples s LEFT JOIN removed r ON r.id = s.id "
                           "WHERE s.label = ? AND r.id IS NULL ORDER BY s.id", (int(label),))
        return torch.tensor([r[0] for r in rows], dtype=torch.long)

    def removed_classes(self) -> list[int]:
        """Labels none of whose samples are retained any more (every one was removed)."""
        rows = self._query("SELECT s.label FROM samples s LEFT JOIN removed r ON r.id = s.id GROUP BY s.label "
                           "HAVING COUNT(r.id) = COUNT(*) ORDER BY s.label")
        return [int(r[0]) for r in rows]

    def removed_ids(self, request_id: int | None = None) -> torch.Tensor:
        if request_id is None:
            rows = self._query("SELECT id FROM removed ORDER BY id")
        else:
            rows = self._query("SELECT id FROM removed WHERE request_id = ? ORDER BY id", (int(request_id),))
        return torch.tensor([r[0] for r in rows], dtype=torch.long)

    def integrity_problems(self) -> list[str]:
        rows = self._query("PRAGMA integrity_check")
        return [] if rows == [("ok",)] else [f"SQLite integrity check: {r[0]}" for r in rows]

    def chain_problems(self) -> list[str]:
        """Every version whose chain link does not follow from its record and the previous link."""
        problems, previous = [], ""
        for v in self.versions():
            removed = ids_sha256(self.removed_ids(v["request_id"])) if v["request_id"] is not None else ids_sha256(
                torch.zeros(0, dtype=torch.long))
            expected = chain_hash(previous, v["version"], v["request_id"], v["model_sha256"], v["state_sha256"],
                                  v["n_retained"], removed)
            if expected != v["chain"]:
                problems.append(f"version {v['version']}: its record or an earlier one was edited (chain hash "
                                f"{v['chain'][:12]} should be {expected[:12]})")
            previous = v["chain"]
        return problems

    # -- writes --------------------------------------------------------------------------

    def set_meta(self, values: dict) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    def add_samples(self, ids: torch.Tensor, labels: torch.Tensor, digests: list[bytes]) -> None:
        with self._transaction():
            self.db.executemany("INSERT INTO samples (id, label, digest) VALUES (?, ?, ?)",
                                zip(ids.tolist(), labels.tolist(), digests))

    def add_version(self, *, request_id, model_sha256: str, state_sha256: str, n_retained: int,
                    removed: torch.Tensor, time: str | None = None) -> dict:
        """Append the next version (inside the caller's transaction when there is one)."""
        rows = self._query("SELECT version, chain FROM versions ORDER BY version DESC LIMIT 1")
        version, previous = (rows[0][0] + 1, rows[0][1]) if rows else (0, "")
        chain = chain_hash(previous, version, request_id, model_sha256, state_sha256, n_retained, ids_sha256(removed))
        self.db.execute("INSERT INTO versions (version, time, request_id, model_sha256, state_sha256, n_retained, "
                        "chain) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (version, time or utc_now(), request_id, model_sha256, state_sha256, n_retained, chain))
        return {"version": version, "chain": chain}

    def commit_request(self, request: dict, removed: torch.Tensor, *, model_sha256: str, state_sha256: str,
                       n_retained: int, meta: dict | None = None) -> dict:
        """Record one request, the ids it removed and the version it made, in one transaction; returns the version.

        ``meta``: entries of the meta table written in the same transaction (what the request measured
        that later ones reuse)."""
        with self._transaction():
            if meta:
                self.set_meta(meta)
            cur = self.db.execute(
                "INSERT INTO requests (time, kind, class, n_samples, ids_sha256, settings, stop_reason, epochs, "
                "kept_epoch, seconds, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request["time"], request["kind"], request.get("class"), int(removed.numel()), ids_sha256(removed),
                 json.dumps(request["settings"]), request["stop_reason"], int(request["epochs"]),
                 int(request["kept_epoch"]), json.dumps(request["seconds"]), json.dumps(request["metrics"])))
            request_id = cur.lastrowid
            self.db.executemany("INSERT INTO removed (id, request_id) VALUES (?, ?)",
                                [(int(i), request_id) for i in removed.tolist()])
            version = self.add_version(request_id=request_id, model_sha256=model_sha256, state_sha256=state_sha256,
                                       n_retained=n_retained, removed=removed, time=request["time"])
        return version | {"request_id": request_id}

    def _transaction(self):
        return _Transaction(self)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error; nests (inner ones join the outer)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.outer = False

    def __enter__(self):
        if not self.ledger.db.in_transaction:
            self.ledger.db.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.outer:
            return False
        if exc_type is None:
            self.ledger.db.execute("COMMIT")
        else:
            self.ledger.db.execute("ROLLBACK")
        return False
