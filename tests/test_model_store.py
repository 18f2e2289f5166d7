"""The model store (pgu.store.model_store, pgu.store.ledger, pgu.store.sample_files): requests over a model's life.

Every refusal is checked to leave the store byte for byte as it was; bookkeeping is checked
against an independent sum of forget passes; crash safety by killing real ``pgu forget``
processes.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pgu import GramStats
from pgu.cli import main
from pgu.data import load_dataset
from pgu.heldout import HELDOUT_LR, request_anchor, request_batching
from pgu.store.model_store import ModelStore, RequestRefused, StoreError
from pgu.store.sample_files import read_samples, sample_digests, write_samples
from pgu.zoo.recipes import load_recipe
from pgu.zoo.workflow import train_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A digits run with its statistics, and sample files of its training and val samples."""
    root = tmp_path_factory.mktemp("store")
    run = train_run(load_recipe("digits"), root / "run", progress=False)
    splits = load_dataset("digits")
    train = splits.train.subset(splits.train.positions_of(run.train_ids))
    write_samples(root / "train.npz", train.ids, train.x, train.y)
    write_samples(root / "val.npz", splits.val.ids, splits.val.x, splits.val.y)
    ModelStore.create(root / "pristine", root / "run")
    return {"root": root, "run": root / "run", "train": train, "val": splits.val, "pristine": root / "pristine"}


@pytest.fixture()
def store(digits_run, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(digits_run["pristine"], path)
    return ModelStore(path)


def snapshot(path: Path) -> dict[str, str]:
    """SHA-256 of every file in the store but the lock: what 'unchanged' means."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


def ids_of(data, n, start=0):
    return data.ids[start:start + n].tolist()


def forget(store, digits_run, ids=None, **kw):
    return store.forget(ids=ids, samples=kw.pop("samples", digits_run["root"] / "train.npz"),
                        val=kw.pop("val", digits_run["root"] / "val.npz"), device="cpu", **kw)


# -- a request, recorded ----------------------------------------------------------------------------


def test_a_request_is_recorded_with_its_ids_version_and_hashes(store, digits_run):
    train = digits_run["train"]
    ids = ids_of(train, 30)
    record = forget(store, digits_run, ids)
    assert record["version"] == 1 and record["n_samples"] == 30
    assert torch.equal(store.removed_ids(), torch.tensor(sorted(ids)))
    (row,) = store.history()
    assert row["kind"] == "ids" and row["n_samples"] == 30 and row["version"] == 1
    assert set(row["seconds"]) >= {"load", "forget_stats", "subspace", "unlearning", "write", "total"}
    assert set(row["metrics"]["after"]) == {"forget_acc", "val_acc", "val_se"}
    assert row["metrics"]["before"]["val_drop_allowed"] == pytest.approx(2.0 - max(
        0.0, row["metrics"]["before"]["reference_val_acc"] - row["metrics"]["before"]["val_acc"]), abs=1e-3)
    objects = {p.name for p in (store.path / "objects").iterdir()}
    with store.ledger() as ledger:
        current, trained, anchor = ledger.current_version(), ledger.versions()[0], ledger.meta("cgs_anchor")
    # the old version's Gram state is gone; the trained model stays as the guard's reference; the CGS anchor
    # (pgu.store.anchor_files) describes the new version
    assert anchor["version"] == 1 and record["settings"]["subspace"] == "anchored"
    assert objects == {f"{current['model_sha256']}.safetensors", f"{current['state_sha256']}.safetensors",
                       f"{trained['model_sha256']}.safetensors", f"{anchor['eigen']}.safetensors",
                       f"{anchor['shifts']}.safetensors"}
    assert current["model_sha256"] == record["model_sha256"] != trained["model_sha256"]
    model, state, version = store.load()
    assert state.n_samples_ == len(train) - 30 and version["n_retained"] == len(train) - 30
    report = store.verify()
    assert report["ok"] and report["version"] == 1, report


def test_pgu_heldout_serves_sample_requests_when_chosen_and_a_bad_method_is_refused(store, digits_run, tmp_path):
    train = digits_run["train"]
    _refused(store, digits_run, "sample_method must be one of", ids=ids_of(train, 5),
             overrides={"sample_method": "finetune"})
    _refused(store, digits_run, "anchor_weight", ids=ids_of(train, 5),
             overrides={"sample_method": "pgu-heldout", "anchor_weight": -1})
    for bad in ([0.1, 0.3], [0, 0.1], "fast", [0.1, 0.05, 0.01]):
        _refused(store, digits_run, "heldout_lr", ids=ids_of(train, 5),
                 overrides={"sample_method": "pgu-heldout", "heldout_lr": bad})
    record = forget(store, digits_run, ids_of(train, 40), overrides={"sample_method": "pgu-heldout"})
    settings = record["settings"]
    assert settings["method"] == "pgu-heldout" and settings["anchor_weight"] == 10.0
    # its own rate (not PGU's), scaled as request_batching scales a small request's
    assert settings["heldout_lr"] == list(HELDOUT_LR) != settings["lr"]
    assert settings["lr_used"] == pytest.approx(list(request_batching(40, settings["batch_size"], HELDOUT_LR)[1]))
    batch = request_batching(40, settings["batch_size"], HELDOUT_LR)[0]
    assert settings["anchor_weight_used"] == pytest.approx(request_anchor(batch, settings["batch_size"], 10.0)[0])
    # a request's own lr wins over the store's heldout_lr
    given = forget(store, digits_run, ids_of(train, 40, start=100), overrides={"sample_method": "pgu-heldout",
                                                                            "lr": (0.05, 0.01)})["settings"]
    assert given["lr_used"] == pytest.approx(list(request_batching(40, given["batch_size"], (0.05, 0.01))[1]))
    assert 0 < settings["target_forget_acc"] <= 100 and settings["tolerance"] > 0
    assert record["stop_reason"] in ("already_forgotten", "reached_target", "target_plateau", "val_drop", "max_epochs")
    plain = forget(store, digits_run, ids_of(train, 5, start=40))
    assert plain["settings"]["method"] == "pgu"  # the store's default
    # pgu-heldout reads the trained model's val accuracy off its one pass over val: the figure pgu's request reads
    assert record["metrics"]["before"]["reference_val_acc"] == plain["metrics"]["before"]["reference_val_acc"]
    assert "line_search" in record["metrics"] and "line_search" in plain["metrics"]
    assert 0 < record["metrics"]["kept_share"] <= 1 and plain["metrics"]["kept_share"] == 1.0
    assert store.verify()["ok"]
    # a store made to serve pgu-heldout, and class requests still run as pgu there
    made = ModelStore.create(tmp_path / "heldout", digits_run["run"], sample_method="pgu-heldout")
    assert made.info()["pgu"]["sample_method"] == "pgu-heldout"
    assert forget(made, digits_run, ids_of(train, 20))["settings"]["method"] == "pgu-heldout"
    assert forget(made, digits_run, None, forget_class=4)["settings"]["method"] == "pgu"
    with pytest.raises(StoreError, match="sample_method"):
        ModelStore.create(tmp_path / "bad", digits_run["run"], sample_method="nope")
    assert not (tmp_path / "bad").exists()


def test_a_class_request_removes_every_retained_sample_of_the_class(store, digits_run):
    train = digits_run["train"]
    first = train.ids[train.y == 4][:5].tolist()
    forget(store, digits_run, first)
    record = store.forget(forget_class=4, samples=digits_run["root"] / "train.npz",
                          val=digits_run["root"] / "val.npz", device="cpu")
    assert record["kind"] == "class" and record["n_samples"] == int((train.y == 4).sum()) - 5
    # what the class rule promises for any training run: the kept epoch's numbers, the floor when it says
    # the class is gone, and val on the kept classes within the store's lifetime allowance (2 points)
    after, before = record["metrics"]["after"], record["metrics"]["before"]
    kept = record["metrics"]["per_epoch"][record["kept_epoch"]]
    assert after["forget_acc"] == pytest.approx(kept["forget_acc"], abs=1e-4)
    assert (after["forget_acc"] <= 1.0) == (record["stop_reason"] in ("class_forgotten", "already_forgotten"))
    assert after["val_acc_kept_classes"] >= before["reference_val_acc"] - 2.0 - 1e-9
    assert abs(after["val_acc_kept_classes"] - before["val_acc_kept_classes"]) < 5
    with pytest.raises(RequestRefused, match="no samples left"):
        store.forget(forget_class=4, samples=digits_run["root"] / "train.npz", val=digits_run["root"] / "val.npz")
    assert store.verify()["ok"]


def test_the_lifetime_guard_keeps_val_accuracy_near_the_trained_models(store, digits_run):
    """Over many requests val accuracy stays within max_val_drop of the trained model's (each request's rule gets
    what is left); the default run of the same requests on digits loses more (measured: 98.7 -> 90.6 in 3)."""
    train = digits_run["train"]
    for t in range(6):
        record = forget(store, digits_run, ids_of(train, 20, start=20 * t), overrides={"max_val_drop": 0.5})
        before, after = record["metrics"]["before"], record["metrics"]["after"]
        assert after["val_acc"] >= before["reference_val_acc"] - 0.5 - 1e-9, (t, record["metrics"])
        assert before["val_drop_allowed"] <= 0.5
    with pytest.raises(RequestRefused, match="max_val_drop"):
        forget(store, digits_run, ids_of(train, 5, start=200), overrides={"max_val_drop": -1})


def test_val_is_scored_once_per_model_and_the_trained_model_once_per_val_set(store, digits_run, monkeypatch):
    """A request scores the current model on val once (its guard and its rule's start share the pass); which val
    samples the trained model gets right is kept in the ledger: at init for the dataset's val split, at the first
    request for any other val set. The records are those of a store that scores the trained model afresh."""
    import importlib

    import pgu.evaluation
    import pgu.store.model_store as model_store

    unlearn_module = importlib.import_module("pgu.unlearn")  # (the package's `unlearn` is the function)
    train = digits_run["train"]
    scored, references = [], []
    real, real_bits = pgu.evaluation.accuracy, model_store.correct_bits

    def counting(model, loader, **kw):
        scored.append(id(model))
        return real(model, loader, **kw)

    def counting_bits(model, data, device="cpu"):
        references.append(len(data))
        return real_bits(model, data, device)

    monkeypatch.setattr(model_store, "accuracy", counting)
    monkeypatch.setattr(unlearn_module, "accuracy", counting)
    monkeypatch.setattr(model_store, "correct_bits", counting_bits)
    records = [forget(store, digits_run, ids_of(train, 20, start=20 * t)) for t in range(2)]
    epochs = [r["epochs"] for r in records]
    # each request: the current model once, then one pass per epoch; the trained model never (kept since init)
    assert len(scored) == (1 + epochs[0]) + (1 + epochs[1]) and references == [], (scored, epochs, references)
    reference_val = records[0]["metrics"]["before"]["reference_val_acc"]
    assert records[1]["metrics"]["before"]["reference_val_acc"] == reference_val
    # the same requests on a store that scores the trained model afresh give the same records
    monkeypatch.undo()
    fresh = ModelStore(shutil.copytree(digits_run["pristine"], store.path.parent / "fresh"))
    for record, t in zip(records, range(2)):
        with fresh.ledger() as ledger:
            ledger.db.execute("DELETE FROM meta WHERE key LIKE 'reference_correct:%'")
            ledger.db.commit()
        again = forget(fresh, digits_run, ids_of(train, 20, start=20 * t))
        assert again["metrics"] == record["metrics"] and again["stop_reason"] == record["stop_reason"]
    # other val samples: the trained model is scored on them once, then they are known too
    monkeypatch.setattr(model_store, "correct_bits", counting_bits)
    val = digits_run["val"]
    half = val.subset(torch.arange(len(val) // 2))
    for start in (60, 80):
        forget(store, digits_run, ids_of(train, 20, start=start), val=half)
    assert references == [len(half)]
    with store.ledger() as ledger:
        keys = ledger.db.execute("SELECT key FROM meta WHERE key LIKE 'reference_correct:%'").fetchall()
    assert len(keys) == 2


def test_the_stopping_rule_scores_a_fixed_stratified_sample_of_val(store, digits_run, tmp_path):
    """``val_samples=n``: the request is the one served on the first n samples of pgu.val_sample's stratified order
    with every sample scored; the record says how many, of how many, and the standard error."""
    from pgu.val_sample import accuracy_standard_error, stratified_order

    train, val = digits_run["train"], digits_run["val"]
    ids = ids_of(train, 30)
    record = forget(store, digits_run, ids, overrides={"val_samples": 120})
    assert record["settings"]["val_samples"] == 120 and record["settings"]["val_samples_of"] == len(val)
    before = record["metrics"]["before"]
    assert before["val_se"] == pytest.approx(accuracy_standard_error(before["val_acc"], 120, len(val)), abs=1e-3)
    sample = val.subset(stratified_order(val.y)[:120])
    write_samples(tmp_path / "sample.npz", sample.ids, sample.x, sample.y)
    other = ModelStore(shutil.copytree(digits_run["pristine"], tmp_path / "other"))
    same = forget(other, digits_run, ids, val=tmp_path / "sample.npz", overrides={"val_samples": "all"})
    assert same["settings"]["val_samples"] == same["settings"]["val_samples_of"] == 120
    for key in ("stop_reason", "epochs", "kept_epoch"):
        assert same[key] == record[key]
    assert same["metrics"]["per_epoch"] == record["metrics"]["per_epoch"]
    served, _, _ = store.load()
    alike, _, _ = other.load()
    for a, b in zip(served.state_dict().values(), alike.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
    # the default on a small val set scores all of it; a bad setting is refused before anything changes
    assert forget(store, digits_run, ids_of(train, 10, start=30))["settings"]["val_samples"] == len(val)
    _refused(store, digits_run, "val_samples", ids=ids_of(train, 10, start=40), overrides={"val_samples": 0})


def test_once_a_request_has_changed_the_model_every_layer_takes_exact_eigh(digits_run, tmp_path, monkeypatch):
    """The anchor describes statistics taken with the trained model: once a request has changed it, the next request
    takes exact eigh in every layer (its record says why), the course and model an exact request gives, and the
    anchor's entry stays as it was."""
    import pgu.cgs_anchor
    from pgu.store.anchor_files import MOVED_ROUTE

    monkeypatch.setattr(pgu.cgs_anchor, "MIN_DIM", 16)
    train = digits_run["train"]
    store = ModelStore.create(tmp_path / "store", digits_run["run"])
    # an epoch whose steps vanish in float32 rounding is kept, and the weights stay the trained ones: not moved
    still = forget(store, digits_run, ids_of(train, 15, start=200), overrides={"lr": [1e-30, 1e-30], "epochs": 2})
    assert still["kept_epoch"] > 0
    first = forget(store, digits_run, ids_of(train, 15))
    assert first["kept_epoch"] > 0 and "anchored" in first["settings"]["cgs_routes"].values()  # now the model moved
    with store.ledger() as ledger:
        entry = ledger.meta("cgs_anchor")
    twin = ModelStore(shutil.copytree(store.path, tmp_path / "twin"))
    ids = ids_of(train, 15, start=50)
    second = forget(store, digits_run, ids)
    exact = forget(twin, digits_run, ids, overrides={"subspace": "exact"})
    assert second["settings"]["subspace"] == "anchored"
    assert set(second["settings"]["cgs_routes"].values()) == {MOVED_ROUTE}
    for key in ("stop_reason", "epochs", "kept_epoch"):
        assert second[key] == exact[key], key
    for a, b in zip(store.load()[0].parameters(), twin.load()[0].parameters()):
        assert torch.equal(a, b)
    with store.ledger() as ledger:
        assert ledger.meta("cgs_anchor") == entry
    assert store.verify()["ok"]


def test_requests_served_from_the_cgs_anchor_match_exact_eigh_and_keep_it_current(digits_run, tmp_path, monkeypatch):
    """Every layer anchored (MIN_DIM lowered for digits' narrow model): a request takes the course exact eigh takes
    from the same state; the eigendecompositions' file is reused while no layer is anchored again, the removed
    energy written with every request; once the model moved, requests take exact eigh and leave the anchor; a
    damaged anchor file is refused and reported."""
    import pgu.cgs_anchor
    from pgu.cgs_anchor import CGSAnchor
    from pgu.store.anchor_files import MOVED_ROUTE, write_anchor

    monkeypatch.setattr(pgu.cgs_anchor, "MIN_DIM", 16)
    train = digits_run["train"]
    anchored = ModelStore.create(tmp_path / "anchored", digits_run["run"])
    twin = ModelStore(shutil.copytree(anchored.path, tmp_path / "twin"))
    ids = ids_of(train, 15)
    fast = forget(anchored, digits_run, ids)
    slow = forget(twin, digits_run, ids, overrides={"subspace": "exact"})
    routes = fast["settings"]["cgs_routes"]  # (digits' first layer, 9 wide, keeps exact eigh)
    assert list(routes.values()).count("anchored") == 3 and set(routes.values()) == {"anchored", "exact"}, routes
    assert slow["settings"]["subspace"] == "exact" and "cgs_routes" not in slow["settings"]
    for key in ("stop_reason", "epochs", "kept_epoch"):
        assert fast[key] == slow[key], key
    for when in ("before", "after"):
        for name, value in fast["metrics"][when].items():
            assert value == pytest.approx(slow["metrics"][when][name], abs=1.0), (when, name)
    with anchored.ledger() as ledger:
        entries = [ledger.meta("cgs_anchor")]
    assert entries[0]["version"] == 1
    # the eigendecompositions' file is written again only when a layer is anchored again
    _, state, _ = anchored.load()
    objects = tmp_path / "objects"
    objects.mkdir()
    first = write_anchor(objects, CGSAnchor.build(state), None, 1)
    forget_stats = GramStats(state.layer_names).fit(anchored.load()[0], [train.subset(torch.arange(30, 40)).x])
    _, later = CGSAnchor.load(objects / f"{first['eigen']}.safetensors").fit(state - forget_stats, forget_stats, 0.9)
    assert set(later.last_routes.values()) <= {"anchored", "exact"}
    second = write_anchor(objects, later, first, 2)
    assert second["eigen"] == first["eigen"] and second["shifts"] != first["shifts"] and second["version"] == 2
    assert anchored.verify()["ok"]
    # once the model moved (the first request kept an epoch), requests take exact eigh and leave the anchor's entry
    assert fast["kept_epoch"] > 0
    record = forget(anchored, digits_run, ids_of(train, 10, start=100))
    with anchored.ledger() as ledger:
        assert ledger.meta("cgs_anchor") == entries[-1]
    assert set(record["settings"]["cgs_routes"].values()) == {MOVED_ROUTE}
    # a damaged anchor (of a store whose model has not moved): verify reports it, a request refuses, changing nothing
    fresh = ModelStore(shutil.copytree(digits_run["pristine"], tmp_path / "fresh"))
    with fresh.ledger() as ledger:
        eigen = fresh.path / "objects" / f"{ledger.meta('cgs_anchor')['eigen']}.safetensors"
    eigen.write_bytes(eigen.read_bytes()[:-8])
    report = fresh.verify()
    assert not report["ok"] and any("CGS anchor" in p for p in report["problems"])
    _refused(fresh, digits_run, "CGS anchor", ids=ids_of(train, 10, start=100))
    _refused(anchored, digits_run, "subspace", ids=ids_of(train, 10, start=120), overrides={"subspace": "fast"})


# -- refusals leave the store as it was ---------------------------------------------------------------


def _refused(store, digits_run, match, **kw):
    before = snapshot(store.path)
    with pytest.raises(StoreError, match=match):
        forget(store, digits_run, **kw)
    assert snapshot(store.path) == before


def test_bad_requests_are_refused_and_change_nothing(store, digits_run, tmp_path):
    train = digits_run["train"]
    forget(store, digits_run, ids_of(train, 10))
    _refused(store, digits_run, "already removed", ids=ids_of(train, 3) + ids_of(train, 2, start=20))
    _refused(store, digits_run, "never trained on", ids=[int(digits_run["val"].ids[0]) + 10_000])
    _refused(store, digits_run, "more than once", ids=ids_of(train, 2, start=20) * 2)
    _refused(store, digits_run, "names no samples", ids=[])
    _refused(store, digits_run, "does not exist", ids=None, forget_class=12)
    # content that is not what was trained on: one pixel, or the label
    wanted = train.subset(torch.arange(20, 25))
    x = wanted.x.clone()
    x[2, 0, 3, 3] += 0.5
    write_samples(tmp_path / "changed.npz", wanted.ids, x, wanted.y)
    _refused(store, digits_run, "do not match what the model was trained on", ids=wanted.ids.tolist(),
             samples=tmp_path / "changed.npz")
    write_samples(tmp_path / "relabelled.npz", wanted.ids, wanted.x, (wanted.y + 1) % 10)
    _refused(store, digits_run, "do not match", ids=wanted.ids.tolist(), samples=tmp_path / "relabelled.npz")
    write_samples(tmp_path / "short.npz", wanted.ids[:2], wanted.x[:2], wanted.y[:2])
    _refused(store, digits_run, "lack 3 requested", ids=wanted.ids.tolist(), samples=tmp_path / "short.npz")
    assert store.verify()["ok"]


def test_a_loss_that_turns_non_finite_is_rolled_back(store, digits_run, monkeypatch):
    import pgu.losses

    real = pgu.losses.forget_loss
    calls = []

    def turns_nan(*a, **k):  # finite at first, then NaN in the third batch of updates
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) > 3 else loss

    monkeypatch.setattr(pgu.losses, "forget_loss", turns_nan)  # ForgetLoss, the default loss, calls it
    _refused(store, digits_run, "diverged", ids=ids_of(digits_run["train"], 300))
    assert len(calls) > 3
    assert store.verify()["ok"]


def test_tampered_or_truncated_files_are_refused_and_reported(store, digits_run):
    version = store.ledger().current_version()
    model_file = store.path / "objects" / f"{version['model_sha256']}.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0xFF
    model_file.write_bytes(bytes(data))
    _refused(store, digits_run, "does not match the ledger", ids=ids_of(digits_run["train"], 3))
    report = store.verify()
    assert not report["ok"] and any("does not match the ledger" in p for p in report["problems"])
    model_file.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert not store.verify()["ok"]


def test_a_truncated_ledger_or_an_edited_row_is_detected(store, digits_run, tmp_path):
    forget(store, digits_run, ids_of(digits_run["train"], 5))
    edited = tmp_path / "edited"
    shutil.copytree(store.path, edited)
    with sqlite3.connect(edited / "ledger.sqlite") as db:  # quietly un-remove a sample
        db.execute("DELETE FROM removed WHERE id = (SELECT MIN(id) FROM removed)")
        db.execute("UPDATE requests SET n_samples = 4")
    report = ModelStore(edited).verify()
    assert not report["ok"] and any("edited" in p for p in report["problems"]), report
    ledger = store.path / "ledger.sqlite"
    ledger.write_bytes(ledger.read_bytes()[:3000])
    report = store.verify()
    assert not report["ok"]
    with pytest.raises(StoreError, match="damaged|truncated|not a pgu"):
        forget(store, digits_run, ids_of(digits_run["train"], 3, start=10))


def test_a_store_is_not_made_from_statistics_of_another_architecture(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run["run"], run)
    wider = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    stats = GramStats().fit(wider, digits_run["train"].loader(256))
    stats.save(run / "stats.safetensors")
    with pytest.raises(StoreError, match="not those of its model"):
        ModelStore.create(tmp_path / "store", run)
    assert not (tmp_path / "store").exists()
    with pytest.raises(StoreError, match="exists"):
        ModelStore.create(digits_run["pristine"], digits_run["run"])


def test_refusals_exit_non_zero_from_the_command_line(store, digits_run, tmp_path, capsys):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(str(i) for i in ids_of(digits_run["train"], 4)))
    assert main(["samples", "--dataset", "digits", "--ids", str(ids_file), "--out", str(tmp_path / "f.npz")]) == 0
    assert main(["samples", "--dataset", "digits", "--split", "val", "--out", str(tmp_path / "v.npz")]) == 0
    assert main(["samples", "--dataset", "digits", "--out", str(tmp_path / "x.npz")]) == 1
    args = [str(store.path), "--ids", str(ids_file), "--data", str(tmp_path / "f.npz"),
            "--val", str(tmp_path / "v.npz"), "--device", "cpu", "--quiet"]
    assert main(["forget", *args, "--val-samples", "50", "--subspace", "exact"]) == 0
    capsys.readouterr()
    assert main(["history", str(store.path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["settings"]["val_samples"] == 50 and row["settings"]["subspace"] == "exact"
    with pytest.raises(SystemExit) as bad:
        main(["forget", *args, "--val-samples", "many"])
    assert bad.value.code == 2 and "auto, all or a whole number" in capsys.readouterr().err
    before = snapshot(store.path)
    assert main(["forget", *args]) == 1
    assert "already removed" in capsys.readouterr().err
    assert snapshot(store.path) == before
    assert main(["verify", str(store.path)]) == 0
    assert main(["history", str(store.path)]) == 0
    assert "1 request(s), 4 sample(s) removed" in capsys.readouterr().out
    assert main(["verify", str(tmp_path)]) == 1


# -- data-free -----------------------------------------------------------------------------------------


def test_a_request_reads_only_the_forget_and_val_samples(store, digits_run, tmp_path, monkeypatch):
    """No dataset is loaded and PGU is given exactly the requested samples."""
    import pgu.data
    import pgu.data.registry
    import pgu.store.model_store as store_module

    def no_dataset(*a, **k):
        raise AssertionError("the request loaded a dataset: it must read only the files given")

    monkeypatch.setattr(pgu.data.registry, "load_dataset", no_dataset)
    monkeypatch.setattr(pgu.data, "load_dataset", no_dataset)
    monkeypatch.setattr(store_module, "load_dataset", no_dataset)
    monkeypatch.setenv("PGU_DATA_DIR", str(tmp_path / "nothing-here"))
    seen = {}
    real = store_module.unlearn

    def spy(model, forget_loader, stats, **kw):
        seen["ids"] = forget_loader.n_samples
        seen["x"] = forget_loader.x.clone()
        return real(model, forget_loader, stats, **kw)

    monkeypatch.setattr(store_module, "unlearn", spy)
    wanted = digits_run["train"].subset(torch.arange(40, 52))
    write_samples(tmp_path / "forget.npz", wanted.ids, wanted.x, wanted.y)
    forget(store, digits_run, wanted.ids.tolist(), samples=tmp_path / "forget.npz")
    assert seen["ids"] == 12 and torch.equal(seen["x"], wanted.x)


# -- sequential bookkeeping ----------------------------------------------------------------------------


def test_the_gram_state_is_g_of_d_minus_every_forget_pass(store, digits_run):
    """docs/method.md section 7: G^(t) = G(D) - sum_t G_{w_{t-1}}(D_f^(t)), each pass with the weights before it."""
    train = digits_run["train"]
    _, expected, _ = store.load()
    batch = store.info()["pgu"]["batch_size"]
    for t in range(20):  # 20 requests in a row, 25 samples each
        ids = train.ids[t * 25:(t + 1) * 25]
        model, _, _ = store.load()
        request = train.subset(train.positions_of(ids))
        expected = expected - GramStats().fit(model, request.loader(batch))
        forget(store, digits_run, ids.tolist())
    _, state, version = store.load()
    assert version["version"] == 20 and state.n_samples_ == len(train) - 500
    for name in state.gram_:
        assert torch.allclose(state.gram_[name], expected.gram_[name], rtol=1e-12, atol=1e-9), name
        assert torch.allclose(state.row_sum_[name], expected.row_sum_[name], rtol=1e-12, atol=1e-9), name
        assert state.n_rows_[name] == expected.n_rows_[name]


# -- crash safety --------------------------------------------------------------------------------------


def test_an_interrupted_commit_leaves_the_old_version_and_the_next_request_cleans_up(store, digits_run, monkeypatch):
    import pgu.store.ledger

    before = snapshot(store.path)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed between writing the files and the ledger")

    monkeypatch.setattr(pgu.store.ledger.Ledger, "commit_request", crash)
    with pytest.raises(KeyboardInterrupt):
        forget(store, digits_run, ids_of(digits_run["train"], 5))
    report = store.verify()
    assert report["ok"] and report["version"] == 0 and report["notes"]  # the new files are left, unnamed
    assert {k: v for k, v in snapshot(store.path).items() if k in before} == before
    monkeypatch.undo()
    forget(store, digits_run, ids_of(digits_run["train"], 5))
    assert store.verify() == {"ok": True, "problems": [], "version": 1, "notes": []}


def test_killing_pgu_forget_at_random_moments_leaves_the_old_or_the_new_version(store, digits_run, tmp_path):
    """SIGKILL a real ``pgu forget`` process at random moments, 24 times: verify passes each time."""
    train, root = digits_run["train"], digits_run["root"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

    def command(ids):
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text(json.dumps(ids))
        return [sys.executable, "-m", "pgu", "forget", str(store.path), "--ids", str(ids_file), "--data",
                str(root / "train.npz"), "--val", str(root / "val.npz"), "--device", "cpu", "--quiet", "--epochs", "3"]

    start = time.perf_counter()  # one uninterrupted request sets the range of moments
    subprocess.run(command(ids_of(train, 8)), env=env, check=True, capture_output=True)
    full = time.perf_counter() - start
    write = store.history()[-1]["seconds"]["write"]
    rng = random.Random(0)
    outcomes = {"old": 0, "new": 0}
    for k in range(24):
        version = store.ledger().current_version()["version"]
        ids = ids_of(train, 8, start=8 * (k + 1))
        proc = subprocess.Popen(command(ids), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # every other kill aims near the writes and the commit (the last moments before exit)
        delay = rng.uniform(0.3, 1.1) * full if k % 2 else rng.uniform(full - write - 0.4, full)
        time.sleep(max(delay, 0.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report = store.verify()
        assert report["ok"], (k, report)
        assert report["version"] in (version, version + 1)
        removed = set(store.removed_ids().tolist())
        done = report["version"] == version + 1
        assert set(ids) <= removed if done else not (set(ids) & removed)
        outcomes["new" if done else "old"] += 1
    assert store.verify()["ok"]
    print(f"kills: {outcomes} (one request takes {full:.2f} s)")


# -- nothing executes from a file ------------------------------------------------------------------------


def test_the_load_path_never_unpickles(store, digits_run, monkeypatch):
    """torch.load is never called and numpy reads every array with allow_pickle=False."""
    real_np_load = np.load

    def torch_load(*a, **k):
        raise AssertionError("torch.load (pickle) on the store's load path")

    def np_load(*a, allow_pickle=False, **k):
        assert allow_pickle is False, "np.load with pickles allowed"
        return real_np_load(*a, allow_pickle=False, **k)

    monkeypatch.setattr(torch, "load", torch_load)
    monkeypatch.setattr(np, "load", np_load)
    forget(store, digits_run, ids_of(digits_run["train"], 6))
    assert store.verify()["ok"] and len(store.history()) == 1


# -- sample files ---------------------------------------------------------------------------------------


def test_sample_digests_see_one_pixel_and_the_label(digits_run):
    train = digits_run["train"]
    x, y = train.x[:3].clone(), train.y[:3].clone()
    base = sample_digests(x, y)
    assert base == sample_digests(x.clone(), y.clone()) and len(set(base)) == 3
    x[1, 0, 0, 0] = torch.nextafter(x[1, 0, 0, 0], torch.tensor(10.0))
    assert sample_digests(x, y)[1] != base[1] and sample_digests(x, y)[0] == base[0]
    y[2] = (y[2] + 1) % 10
    assert sample_digests(train.x[:3], y)[2] != base[2]


def test_sample_files_are_checked_and_images_are_normalised_as_in_training(tmp_path):
    shape = (1, 4, 4)
    good = dict(ids=np.arange(3), y=np.array([0, 1, 2]), x=np.zeros((3, *shape), np.float32))
    cases = {
        "exactly one of 'x'": dict(good, images=np.zeros((3, 4, 4), np.uint8)),
        "labels must lie": dict(good, y=np.array([0, 1, 10])),
        "duplicate ids": dict(good, ids=np.array([1, 1, 2])),
        "float32 of shape": dict(good, x=np.zeros((3, 1, 5, 4), np.float32)),
        "NaN": dict(good, x=np.full((3, *shape), np.nan, np.float32)),
        "no samples": dict(ids=np.arange(0), y=np.zeros(0, np.int64), x=np.zeros((0, *shape), np.float32)),
    }
    for match, arrays in cases.items():
        np.savez(tmp_path / "f.npz", **arrays)
        with pytest.raises(ValueError, match=match):
            read_samples(tmp_path / "f.npz", input_shape=shape, num_classes=10)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_samples(tmp_path / "bad.npz", input_shape=shape, num_classes=10)
    images = np.arange(48, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(tmp_path / "img.npz", ids=np.arange(3), y=np.array([0, 1, 2]), images=images)
    with pytest.raises(ValueError, match="no pixel normalisation"):
        read_samples(tmp_path / "img.npz", input_shape=shape, num_classes=10)
    data = read_samples(tmp_path / "img.npz", input_shape=shape, num_classes=10, normalisation=([0.5], [0.25]))
    assert torch.allclose(data.x[:, 0], (torch.from_numpy(images).float() / 255 - 0.5) / 0.25, atol=1e-6)


@pytest.mark.slow
def test_twenty_requests_on_mnist_keep_exact_bookkeeping_and_retained_accuracy(tmp_path):
    """The issue's sequence on the mnist tier: 20 requests of 100 images a class; the Gram state stays
    G(D) minus the forget passes, and accuracy on the retained images within 2 points of its start."""
    if not os.environ.get("PGU_DATA_DIR"):
        pytest.skip("PGU_DATA_DIR is not set")
    from pgu.bench.runner import sequential_requests
    from pgu.evaluation import accuracy

    run = train_run(load_recipe("mnist"), tmp_path / "run", progress=False, device="cpu")
    store = ModelStore.create(tmp_path / "store", tmp_path / "run")
    splits = load_dataset("mnist")
    train = splits.train.subset(splits.train.positions_of(run.train_ids))
    model, expected, _ = store.load()
    start = accuracy(model, train.loader(1024))
    retained = torch.ones(len(train), dtype=torch.bool)
    for ids in sequential_requests(train.y, train.ids, 20, None, seed=0):
        request = train.subset(train.positions_of(ids))
        model, _, _ = store.load()
        expected = expected - GramStats().fit(model, request.loader(store.info()["pgu"]["batch_size"]))
        store.forget(ids=ids.tolist(), samples=request, val=splits.val, device="cpu")
        retained &= ~train.mask_of(ids)
        model, state, _ = store.load()
        assert accuracy(model, train.subset(retained).loader(1024)) >= start - 2.0
    assert state.n_samples_ == len(train) - 20_000
    for name in state.gram_:
        assert torch.allclose(state.gram_[name], expected.gram_[name], rtol=1e-12, atol=1e-9), name
    assert store.verify()["ok"]
