"""A model store: one trained model serving deletion requests over its life (docs/method.md section 7).

``ModelStore.create(STORE, RUN)`` (``pgu store init``) makes, from a trained run with its Gram
statistics, a folder holding

* ``ledger.sqlite``: the ledger (:mod:`pgu.store.ledger`): every trained sample's id, label and content
  digest, every request, every removed id, every model version with its files' SHA-256;
* ``objects/<sha256>.safetensors``: the current version's model and retain Gram state, and the
  trained model (version 0, the reference of the guard below), each named by the SHA-256 of its
  bytes (weights in float32 with the model spec in the header; the Gram state in float64,
  :meth:`pgu.stats.GramStats.save`); nothing is unpickled;
* ``.lock``: held by the process applying a request.

The retain Gram state is ``G^(0) = G(D)`` and ``G^(t) = G^(t-1) - G_{w_{t-1}}(D_f^(t))``: each
request's forget pass uses the weights the store holds before it (:func:`pgu.unlearn.unlearn`).

A request (:meth:`ModelStore.forget`, ``pgu forget``) reads only the forget samples and a held-out
val set, never the retain data. It is checked completely before any work (empty, duplicate,
unknown or already removed ids; samples whose content digest differs from what was trained on;
files whose hash differs from the ledger's; statistics of another architecture), runs PGU on
copies, and is refused, with nothing written, when a loss or weight turns non-finite.

The lifetime guard: over all its requests the model may lose at most ``max_val_drop`` points
(default :data:`LIFETIME_VAL_DROP`) of val accuracy against the trained model, both measured on
the request's val samples (for class removal, on the classes kept; classes already removed
whole are left out of val). Each request's stopping rule gets what earlier requests left of
that allowance (``unlearn(max_val_drop=...)``); with none left, the rule keeps the model as it
was and the ledger says so (stop reason ``val_drop``, kept epoch 0).

A request that passed every check commits in this order:

1. the new model and Gram state are written under their hash names (temporary file, fsync,
   rename): files no version names yet, so the store is still at the old version;
2. one SQLite transaction adds the request, its removed ids and the new version: the commit point;
3. files no longer named by the current version (or the trained model) are deleted (an
   interrupted request's leftovers too, at the start of the next one).

Killed at any moment, the store is at the old version or the new one, and :meth:`ModelStore.verify`
passes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from pgu.cgs_anchor import CGSAnchor
from pgu.data import load_dataset
from pgu.evaluation import accuracy
from pgu.heldout import prepare_heldout, request_anchor, request_batching, split_heldout
from pgu.stats import GramStats, StatsMismatchError
from pgu.stopping import default_rule
from pgu.store.anchor_files import ANCHOR_META, MOVED_ROUTE, anchor_files, read_anchor, write_anchor
from pgu.store.ledger import Ledger, LedgerError, ids_sha256, utc_now
from pgu.store.objects import file_sha256, write_object
from pgu.store.request_samples import accuracy_from_bits, correct_bits, forget_samples, val_samples
from pgu.store.sample_files import pixel_normalisation, sample_digests, val_fingerprint
from pgu.store.settings import (
    RequestRefused,
    StoreError,
    check_sample_method,
    check_settings,
    default_pgu_settings,
    request_settings,
    request_subspace,
    request_val_samples,
)
from pgu.store.verify import OBJECTS, verify_store
from pgu.unlearn import unlearn
from pgu.val_sample import accuracy_standard_error, stratified_order, val_sample_size
from pgu.zoo.models.external import ModelCodeMissingError
from pgu.zoo.runs import ModelSpec, load_model, load_run, save_model
from pgu.zoo.training import resolve_device

__all__ = ["ModelStore", "StoreError", "RequestRefused", "default_pgu_settings"]

LEDGER_NAME = "ledger.sqlite"


class ModelStore:
    """An existing store folder (see the module docstring); ``ModelStore.create`` makes one."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / LEDGER_NAME).is_file():
            raise StoreError(f"{self.path} is not a pgu model store (no {LEDGER_NAME}); make one with "
                             f"`pgu store init {self.path} --from RUN`")

    # -- making a store ------------------------------------------------------------------

    @classmethod
    def create(cls, path, run_path, *, data_dir=None, pgu_settings: dict | None = None,
               sample_method: str | None = None) -> "ModelStore":
        """Make a store at ``path`` (which must not exist) from the run folder ``run_path``.

        ``sample_method``: how sample requests are served (:data:`~pgu.store.settings.SAMPLE_METHODS`;
        default ``pgu_settings``' ``sample_method``, else ``pgu``).

        Reads the run's model and statistics and the training samples (from ``data_dir`` /
        ``$PGU_DATA_DIR``, by the dataset the run names) to record each one's content digest.
        The folder appears whole or not at all.
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} exists; a store is made in a new folder (choose another path)")
        try:
            run = load_run(run_path)
            stats = run.load_stats()
        except (FileNotFoundError, ValueError) as exc:
            raise StoreError(f"cannot make a store from {run_path}: {exc}") from exc
        try:
            stats.check_model(run.model)
        except StatsMismatchError as exc:
            raise StoreError(f"the statistics of {run_path} are not those of its model ({exc}); retake them with "
                             f"`pgu train` or GramStats().fit") from exc
        if run.config.get("poisoning"):
            raise StoreError(f"{run_path} was trained on poisoned data (`pgu train --poison`); a store records the "
                             f"dataset's samples as published, so its digests and forget passes would not match what "
                             f"the model saw. Remove the poisoned samples with unlearn(..., mode='poison') or "
                             f"`pgu bench --scenario poison-flip|poison-backdoor`")
        dataset = run.config.get("dataset", {})
        name, split_seed = dataset.get("name"), int(dataset.get("split_seed", 0))
        if not name:
            raise StoreError(f"{run_path}/config.json names no dataset; the store must know what was trained on")
        splits = load_dataset(name, data_dir=data_dir, split_seed=split_seed)
        try:
            positions = splits.train.positions_of(run.train_ids)
        except KeyError as exc:
            raise StoreError(f"{run_path} trained on samples the dataset {name!r} does not have: {exc}") from None
        trained = splits.train.subset(positions)
        if stats.n_samples_ != len(trained):
            raise StoreError(f"the statistics of {run_path} cover {stats.n_samples_} samples but the run trained on "
                             f"{len(trained)}; retake them over the training set")
        if tuple(trained.x.shape[1:]) != (run.spec.in_channels, *trained.x.shape[2:]):
            raise StoreError(f"the dataset's inputs {tuple(trained.x.shape[1:])} do not fit the model {run.spec}")
        given = pgu_settings or default_pgu_settings(run.config.get("recipe", {}).get("name"))
        if sample_method is not None:
            given = {**given, "sample_method": sample_method}
        chosen, drop = check_settings(given)
        settings = chosen.to_dict() | {"max_val_drop": drop} | check_sample_method(given)

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
        try:
            (tmp / OBJECTS).mkdir()
            model_sha = write_object(tmp / OBJECTS, lambda p: save_model(p, run.model, run.spec))
            state_sha = write_object(tmp / OBJECTS, lambda p: stats.save(p))
            anchor = write_anchor(tmp / OBJECTS, CGSAnchor.build(stats, bias=chosen.bias), None, 0)
            with Ledger(tmp / LEDGER_NAME, create=True) as ledger:
                ledger.set_meta({
                    "created": utc_now(), "run": str(Path(run_path).resolve()), "model": run.spec.to_dict(),
                    "dataset": {"name": name, "split_seed": split_seed, "num_classes": splits.num_classes,
                                "input_shape": list(trained.x.shape[1:]),
                                "normalisation": pixel_normalisation(splits.info)},
                    "recipe": run.config.get("recipe", {}), "pgu": settings,
                    "rows_per_sample": {n: stats.n_rows_[n] // stats.n_samples_ for n in stats.n_rows_},
                    ANCHOR_META: anchor,  # the CGS anchor, and which val samples the trained model gets right:
                    f"reference_correct:{val_fingerprint(splits.val)}": correct_bits(run.model, splits.val),
                })
                ledger.add_samples(trained.ids, trained.y, sample_digests(trained.x, trained.y))
                with ledger._transaction():
                    ledger.add_version(request_id=None, model_sha256=model_sha, state_sha256=state_sha,
                                       n_retained=len(trained), removed=torch.zeros(0, dtype=torch.long))
            (tmp / ".lock").touch()
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path)

    # -- reading -------------------------------------------------------------------------

    def ledger(self) -> Ledger:
        try:
            return Ledger(self.path / LEDGER_NAME)
        except LedgerError as exc:
            raise StoreError(str(exc)) from exc

    def info(self) -> dict:
        with self.ledger() as ledger:
            return {k: ledger.meta(k) for k in ("format", "created", "run", "model", "dataset", "recipe", "pgu")}

    def _object(self, sha: str) -> Path:
        return self.path / OBJECTS / f"{sha}.safetensors"

    def _checked(self, sha: str, what: str) -> Path:
        path = self._object(sha)
        if not path.is_file():
            raise StoreError(f"the store's {what} file {path} is missing; the store was tampered with: restore it "
                             f"from a backup")
        actual = file_sha256(path)
        if actual != sha:
            raise StoreError(f"the store's {what} file {path} does not match the ledger (SHA-256 {actual[:12]}, "
                             f"recorded {sha[:12]}): it was changed or truncated; restore the store from a backup")
        return path

    def load(self, device=None) -> tuple[torch.nn.Module, GramStats, dict]:
        """The current model, its retain Gram state and version record, after checking both files' hashes."""
        with self.ledger() as ledger:
            version = ledger.current_version()
            spec = ModelSpec(**ledger.meta("model"))
        try:
            model, found = load_model(self._checked(version["model_sha256"], "model"), device=device)
            state = GramStats.load(self._checked(version["state_sha256"], "Gram state"))
        except (ValueError, FileNotFoundError) as exc:
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, ModelCodeMissingError):  # the files are intact (hashes checked): say what is missing
                raise StoreError(f"the store's files are intact (their hashes match the ledger), but {exc}") from exc
            raise StoreError(f"the store's files cannot be read ({exc}); restore the store from a backup") from exc
        if found != spec:
            raise StoreError(f"the store's model is a {found} but the ledger records a {spec}")
        try:
            state.check_model(model)
        except StatsMismatchError as exc:
            raise StoreError(f"the store's Gram state is not of its model's architecture ({exc})") from exc
        return model, state, version

    def history(self) -> list[dict]:
        """Every request in order, with the version it made."""
        with self.ledger() as ledger:
            made = {v["request_id"]: v for v in ledger.versions() if v["request_id"] is not None}
            return [r | {"version": made[r["id"]]["version"], "model_sha256": made[r["id"]]["model_sha256"]}
                    for r in ledger.requests()]

    def removed_ids(self) -> torch.Tensor:
        with self.ledger() as ledger:
            return ledger.removed_ids()

    def verify(self) -> dict:
        """Re-check the store: ``{"ok", "problems", "version", "notes"}`` (:func:`pgu.store.verify.verify_store`)."""
        return verify_store(self)

    def forget(self, *, ids=None, forget_class: int | None = None, samples=None, val=None, data_dir=None,
               overrides: dict | None = None, device="auto", progress: bool = False) -> dict:
        """Apply one deletion request with PGU; returns its ledger record (with ``version``).

        Name the samples by ``ids`` (sample removal) or ``forget_class`` (every retained sample of
        that class: class removal). ``samples``: an :class:`~pgu.data.ArrayDataset` or a sample
        file (:mod:`pgu.store.sample_files`) holding at least the requested ids; ``val``: held-out
        samples for the stopping rule (dataset or file). Either left out is read from the
        dataset the store was made from (``data_dir`` / ``$PGU_DATA_DIR``): only the forget rows
        of its training split are used. ``overrides``: PGU settings for this request only
        (``lr``, ``class_lr``, ``epochs``, ``threshold``, ``rule``, ``batch_size``, ``max_val_drop``,
        ``sample_method``, ``anchor_weight``, ``heldout_lr``; a ``pgu-heldout`` request runs at ``lr`` where
        given, else at the store's ``heldout_lr``).
        """
        if (ids is None) == (forget_class is None):
            raise RequestRefused("name the samples to forget: sample ids, or one class (not both)")
        start = time.perf_counter()
        seconds = {}
        with self._lock(exclusive=True):
            self._collect_garbage()
            with self.ledger() as ledger:
                meta = {k: ledger.meta(k) for k in ("dataset", "pgu", "model", ANCHOR_META)}
                request_ids, mode = self._resolve(ledger, ids, forget_class)
                known = ledger.sample_rows(request_ids)
                gone_classes = ledger.removed_classes()
                reference_sha = ledger.versions()[0]["model_sha256"]
            settings, max_val_drop = request_settings(meta["pgu"], overrides)
            given = {k: v for k, v in (overrides or {}).items() if v is not None}
            method = check_sample_method({**meta["pgu"], **given})
            dataset = meta["dataset"]
            shape, num_classes = tuple(dataset["input_shape"]), int(dataset["num_classes"])
            norm = dataset.get("normalisation")
            forget_data = forget_samples(samples, request_ids, known, shape, num_classes, norm, data_dir, dataset)
            full_val = val_samples(val, shape, num_classes, norm, data_dir, dataset)
            keep = torch.arange(len(full_val))  # the val samples this request scores, as positions in full_val
            if gone_classes:  # classes removed whole: the model no longer predicts them, val leaves them out
                keep = keep[~torch.isin(full_val.y, torch.tensor(gone_classes))]
                if len(keep) == 0:
                    raise RequestRefused(f"the val samples are all of classes already removed ({gone_classes}); give "
                                         f"val samples of the classes the model keeps")
            heldout = mode == "sample" and method["sample_method"] == "pgu-heldout"
            n_val = len(keep)
            if not heldout:  # the stopping rule's fixed, stratified val sample (pgu.val_sample); pgu-heldout: all
                n_scored = val_sample_size(n_val, len(forget_data), request_val_samples({**meta["pgu"], **given}))
                keep = keep[stratified_order(full_val.y[keep])[:n_scored]] if n_scored < n_val else keep
            val_data = full_val.subset(keep)
            device = resolve_device(device)
            t = time.perf_counter()
            model, state, version = self.load(device=device)
            reference, _ = load_model(self._checked(reference_sha, "trained model"), device=device)
            seconds["load"] = time.perf_counter() - t

            run = settings.for_mode(mode)
            forget_loader = forget_data.loader(run.batch_size, device=device)
            val_loader = val_data.loader(512, device=device)
            classes = sorted(set(forget_data.y.tolist())) if mode == "class" else []
            # The lifetime guard: val accuracy may fall at most max_val_drop points below the trained model's
            # (version 0) over all requests; this request may use what earlier ones left. Val accuracy is
            # measured as the stopping rule measures it (for class removal, on the classes kept).
            val_key = "val_acc_kept_classes" if classes else "val_acc"
            t = time.perf_counter()
            split = split_heldout(reference, val_loader) if heldout else None  # the reference's one pass over val
            reference_key = f"reference_correct:{val_fingerprint(full_val)}"
            with self.ledger() as ledger:  # which val samples the trained model gets right: once per val set
                reference_bits = ledger.meta(reference_key)
            if heldout:
                reference_val = 100.0 * float((split.logits.argmax(1) == split.y).double().mean())
            else:
                reference_bits = reference_bits or correct_bits(reference, full_val, device)
                reference_val = accuracy_from_bits(reference_bits, keep, full_val.y, classes)
            current_val = accuracy(model, val_loader, exclude_classes=classes, what="the val samples")
            allowance = max(0.0, max_val_drop - max(0.0, reference_val - current_val))
            seconds["guard"] = time.perf_counter() - t
            # the stopping rule starts from current_val: the same model on the same samples, not scored twice
            rule = dict(val_loader=val_loader, loss=None, stop=default_rule(mode, max_val_drop=allowance),
                        val_acc_start=current_val)
            if heldout:  # pgu.heldout: its batch size, its loss, its stop, and the check half of val
                rate = tuple(given["lr"]) if given.get("lr") is not None else tuple(method["heldout_lr"])
                batch, lr = request_batching(len(forget_data), run.batch_size, rate)
                weight, anchor_batch = request_anchor(batch, run.batch_size, method["anchor_weight"])
                forget_loader, run = forget_data.loader(batch, device=device), run.replace(lr=lr)
                request = prepare_heldout(model, forget_loader, val_loader, anchor_weight=weight,
                                          anchor_batch=anchor_batch, max_val_drop=allowance, reference=reference,
                                          split=split)
                rule = dict(val_loader=request.val_loader, loss=request.loss, stop=request.stop)
            subspace = request_subspace({**meta["pgu"], **given})
            # The anchor serves a model whose statistics it describes: once a request has changed the trained model,
            # its forget rows are no share of G(D) and first order left up to 18% more retain energy unprotected
            # than exact eigh (issue 23), so from then on every layer takes exact eigh, as the authors.
            moved = subspace == "anchored" and any(
                not torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
            del reference
            anchor, t = None, time.perf_counter()
            if subspace == "anchored" and not moved:  # the store's anchor of this version, else one of this state
                anchor = (read_anchor(meta[ANCHOR_META], version["version"], self._checked)
                          or CGSAnchor.build(state, bias=run.bias))
            seconds["anchor"] = time.perf_counter() - t
            try:
                result = unlearn(model, forget_loader, state, mode=mode, settings=run, progress=progress,
                                 anchor=anchor, **rule)
            except FloatingPointError as exc:
                raise RequestRefused(f"unlearning diverged ({exc}); the request was rolled back and the store is "
                                     f"unchanged: retry with a lower --lr") from exc
            except StatsMismatchError as exc:
                raise StoreError(f"the store's Gram state does not fit its model: {exc}") from exc
            if not all(torch.isfinite(p).all() for p in result.model.parameters()):
                raise RequestRefused("unlearning left non-finite weights; the request was rolled back and the store "
                                     "is unchanged: retry with a lower --lr")
            # Before and after, as the stopping rule measured them (epoch 0 and the epoch kept): no second pass.
            first = result.history[0]
            kept = result.line_search or next(h for h in result.history if h["epoch"] == result.kept_epoch)
            n_rule = None if heldout else len(val_data)  # (pgu-heldout's rule reads its check half of val)
            before = {"forget_acc": _round(first["forget_acc"]), val_key: _round(first["val_acc"]),
                      "val_se": _val_se(first["val_acc"], n_rule, n_val), "reference_val_acc": _round(reference_val),
                      "val_drop_allowed": _round(allowance)}
            after = {"forget_acc": _round(kept["forget_acc"]), val_key: _round(kept["val_acc"]),
                     "val_se": _val_se(kept["val_acc"], n_rule, n_val)}
            seconds.update({k: v for k, v in result.seconds.items() if k != "total"})

            t = time.perf_counter()
            spec = ModelSpec(**meta["model"])
            model_sha = write_object(self.path / OBJECTS, lambda p: save_model(p, result.model.cpu(), spec))
            state_sha = write_object(self.path / OBJECTS, lambda p: result.retain_stats.save(p))
            new_meta = {reference_key: reference_bits} if reference_bits else {}
            if result.anchor is not None:
                new_meta[ANCHOR_META] = write_anchor(self.path / OBJECTS, result.anchor, meta[ANCHOR_META],
                                                     version["version"] + 1)
            record = {"time": utc_now(), "kind": "class" if mode == "class" else "ids",
                      "class": None if forget_class is None else int(forget_class),
                      "settings": settings.to_dict() | {"max_val_drop": max_val_drop, "lr_used": list(run.lr),
                                                        "mode": mode, "device": str(device),
                                                        "val_samples": n_val if heldout else len(val_data),
                                                        "val_samples_of": n_val, "subspace": subspace}
                                  | ({"cgs_routes": result.anchor.last_routes} if result.anchor else {})
                                  | ({"cgs_routes": {n: MOVED_ROUTE for n in state.layer_names}} if moved else {})
                                  | {"method": "pgu-heldout" if heldout else "pgu"}
                                  | ({"anchor_weight": method["anchor_weight"], "heldout_lr": method["heldout_lr"],
                                      "anchor_weight_used": request.loss.anchor_weight, "target_forget_acc":
                                      _round(request.target), "tolerance": _round(request.tolerance)}
                                     if heldout else {}),
                      "stop_reason": result.stop_reason, "epochs": result.epochs, "kept_epoch": result.kept_epoch,
                      "metrics": {"before": before, "after": after, "kept_share": result.kept_share,
                                  "line_search": result.line_search,
                                  "per_epoch": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}
                                                for h in result.history]}}
            with self.ledger() as ledger:
                current = ledger.current_version()
                if current["version"] != version["version"]:
                    raise StoreError("the store changed while the request ran; nothing was recorded: retry")
                seconds["write"] = time.perf_counter() - t
                seconds["total"] = time.perf_counter() - start
                record["seconds"] = {k: round(v, 4) for k, v in seconds.items()}
                made = ledger.commit_request(record, request_ids.sort().values, model_sha256=model_sha,
                                             state_sha256=state_sha,
                                             n_retained=version["n_retained"] - int(request_ids.numel()),
                                             meta=new_meta)
            self._collect_garbage()
        return record | {"id": made["request_id"], "version": made["version"], "n_samples": int(request_ids.numel()),
                         "ids_sha256": ids_sha256(request_ids), "model_sha256": model_sha}

    def _resolve(self, ledger: Ledger, ids, forget_class) -> tuple[torch.Tensor, str]:
        """The request's ids and mode, after every check that needs only the ledger."""
        if forget_class is not None:
            num_classes = int(ledger.meta("dataset")["num_classes"])
            if not 0 <= int(forget_class) < num_classes:
                raise RequestRefused(f"class {forget_class} does not exist: the model has classes 0..{num_classes - 1}")
            request = ledger.retained_ids_of_class(int(forget_class))
            if request.numel() == 0:
                raise RequestRefused(f"class {forget_class} has no samples left in the store (all were removed)")
            return request, "class"
        request = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        if request.numel() == 0:
            raise RequestRefused("the request names no samples; give at least one id")
        uniq, counts = torch.unique(request, return_counts=True)
        if (counts > 1).any():
            raise RequestRefused(f"the request names ids more than once: {uniq[counts > 1][:10].tolist()}; "
                                 f"name each sample once")
        rows = ledger.sample_rows(request)
        unknown = [int(i) for i in request.tolist() if int(i) not in rows]
        if unknown:
            raise RequestRefused(f"{len(unknown)} id(s) the store never trained on: {unknown[:10]}"
                                 f"{' ...' if len(unknown) > 10 else ''}")
        gone = sorted((int(i), rows[int(i)][2]) for i in request.tolist() if rows[int(i)][2] is not None)
        if gone:
            shown = ", ".join(f"{i} (request {r})" for i, r in gone[:10])
            raise RequestRefused(f"{len(gone)} id(s) were already removed: {shown}{' ...' if len(gone) > 10 else ''}; "
                                 f"a sample can be removed once")
        return request, "sample"

    # -- housekeeping --------------------------------------------------------------------

    @contextmanager
    def _lock(self, exclusive: bool):
        lock_path = self.path / ".lock"
        with open(lock_path, "a+") as f:
            try:
                fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"another pgu process is using {self.path} (a request, or a verify while one is "
                                 f"applied); try again when it finishes") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _collect_garbage(self) -> None:
        """Delete files the current version does not name (the previous version's, an interrupted request's)."""
        with self.ledger() as ledger:
            version = ledger.current_version()
            reference = ledger.versions()[0]["model_sha256"]
            anchor = ledger.meta(ANCHOR_META)
        keep = {f"{version['model_sha256']}.safetensors", f"{version['state_sha256']}.safetensors",
                f"{reference}.safetensors"} | anchor_files(anchor)
        for p in (self.path / OBJECTS).iterdir():
            if p.name not in keep:
                p.unlink(missing_ok=True)


def _val_se(value, n: int | None, population: int):
    """The standard error of a val accuracy measured on ``n`` of ``population`` samples (None: not known)."""
    return None if n is None or value is None else _round(accuracy_standard_error(value, n, population))


def _round(value):
    return None if value is None else round(float(value), 4)
