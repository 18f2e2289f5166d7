"""``pgu store init``, ``pgu forget``, ``pgu history``, ``pgu verify``, ``pgu samples``: a model store's commands."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from pgu.cli.common import DATA_DIR_HELP, DEVICE_HELP, lr_pair
from pgu.data import load_dataset
from pgu.data.forget_sets import read_ids_file
from pgu.settings import tomllib
from pgu.store.model_store import ModelStore
from pgu.store.sample_files import write_samples

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    store = sub.add_parser("store", help="a model store serving deletion requests over a model's life")
    store_sub = store.add_subparsers(dest="store_command", metavar="STORE_COMMAND", required=True)
    init = store_sub.add_parser("init", help="make a store from a trained run with its Gram statistics")
    init.add_argument("store", metavar="STORE", help="the store folder to make (must not exist)")
    init.add_argument("--from", dest="run", required=True, metavar="RUN", help="a run folder written by `pgu train`")
    init.add_argument("--pgu-settings", metavar="FILE",
                      help="TOML of PGU settings: any pgu.PGUSettings field (threshold, rule, lr, class_lr, epochs, "
                           "batch_size, ...), max_val_drop, val_samples, subspace, and pgu-heldout's anchor_weight and "
                           "heldout_lr; the rest keep their defaults: the tier's for the run's recipe "
                           "(pgu.PGUSettings.for_tier), else the authors', max_val_drop 2, val_samples auto")
    init.add_argument("--sample-method", choices=("pgu", "pgu-heldout"),
                      help="how sample requests are served: the authors' pgu (default) or pgu-heldout, which moves "
                           "the samples to the model's held-out behaviour (docs/method.md section 10)")
    init.add_argument("--data-dir", help="where the run's dataset lives (default: $PGU_DATA_DIR); read once, to "
                                         "record each trained sample's content digest")
    init.set_defaults(func=cmd_store_init)

    forget = sub.add_parser("forget", help="apply one deletion request to a store with PGU (data-free)")
    forget.add_argument("store", metavar="STORE")
    what = forget.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", metavar="FILE", help="sample ids to forget, one per line or a JSON list")
    what.add_argument("--class", dest="forget_class", type=int, metavar="C",
                      help="forget every retained sample of class C (class removal)")
    forget.add_argument("--data", metavar="FILE",
                        help="the forget samples as a sample file (.npz: ids, y, and x or images; `pgu samples` "
                             "writes one); default: read from the store's dataset under --data-dir")
    forget.add_argument("--val", metavar="FILE",
                        help="held-out samples for the stopping rule (.npz: y, and x or images); default: the "
                             "dataset's val split")
    forget.add_argument("--lr", type=lr_pair, metavar="LR0,LR1",
                        help="this request's learning rates (default: the store's lr, or its heldout_lr for a "
                             "pgu-heldout sample request)")
    forget.add_argument("--epochs", type=int, help="this request's epoch cap (default: the store's)")
    forget.add_argument("--threshold", type=float, help="this request's CGS threshold (default: the store's)")
    forget.add_argument("--method", choices=("pgu", "pgu-heldout"),
                        help="how this sample request is served (default: the store's sample_method)")
    forget.add_argument("--max-val-drop", type=float, metavar="POINTS",
                        help="points of val accuracy the model may be below the trained model's after this request "
                             "(default: the store's, 2)")
    forget.add_argument("--val-samples", type=_val_samples, metavar="N|auto|all",
                        help="val samples the stopping rule scores: auto (default: enough for the request's size, "
                             "pgu.val_sample), all, or a number; a fixed stratified sample of val")
    forget.add_argument("--subspace", choices=("anchored", "exact"),
                        help="how the CGS is found: from the store's anchor (default: first-order updates of an exact "
                             "eigendecomposition, pgu.cgs_anchor) or exact eigh of every layer, as the authors")
    forget.add_argument("--data-dir", help="where the store's dataset lives, when --data or --val is left out")
    forget.add_argument("--device", default="auto", help=DEVICE_HELP)
    forget.add_argument("--json", action="store_true", help="also print the ledger record as JSON")
    forget.add_argument("--quiet", action="store_true", help="no progress bar")
    forget.set_defaults(func=cmd_forget)

    history = sub.add_parser("history", help="print a store's ledger: every request, what it removed, its version")
    history.add_argument("store", metavar="STORE")
    history.add_argument("--json", action="store_true", help="the ledger's requests as JSON")
    history.set_defaults(func=cmd_history)

    verify = sub.add_parser("verify", help="re-check a store: hashes, the ledger's chain, the Gram state's count")
    verify.add_argument("store", metavar="STORE")
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.set_defaults(func=cmd_verify)

    samples = sub.add_parser("samples", help="write samples of a dataset as a sample file for `pgu forget`")
    samples.add_argument("--dataset", required=True, help="dataset name (digits, mnist, fashion, cifar10, ...)")
    samples.add_argument("--split", default="train", choices=("train", "val", "test"), help="default train")
    samples.add_argument("--ids", metavar="FILE", help="sample ids, one per line or a JSON list")
    samples.add_argument("--class", dest="forget_class", type=int, metavar="C", help="every sample of class C")
    samples.add_argument("--split-seed", type=int, default=0, help="the val/test split's seed (default 0)")
    samples.add_argument("--data-dir", help=DATA_DIR_HELP)
    samples.add_argument("--out", required=True, metavar="FILE", help="the .npz to write")
    samples.set_defaults(func=cmd_samples)


def _val_samples(text: str):
    """``--val-samples``: auto, all or a whole number."""
    if text in ("auto", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, all or a whole number of samples, got {text!r}") from None


def cmd_store_init(args) -> int:
    settings = None
    if args.pgu_settings:
        with open(args.pgu_settings, "rb") as f:
            settings = tomllib.load(f)
    store = ModelStore.create(args.store, args.run, data_dir=args.data_dir, pgu_settings=settings,
                              sample_method=args.sample_method)
    info = store.info()
    print(f"made store {store.path} from {args.run}: {info['model']['name']} on {info['dataset']['name']}, "
          f"version 0; PGU settings {info['pgu']}")
    return 0


def cmd_forget(args) -> int:
    store = ModelStore(args.store)
    ids = read_ids_file(args.ids) if args.ids else None
    overrides = {"lr": args.lr, "class_lr": args.lr if args.forget_class is not None else None, "epochs": args.epochs,
                 "threshold": args.threshold, "max_val_drop": args.max_val_drop, "sample_method": args.method,
                 "val_samples": args.val_samples, "subspace": args.subspace}
    record = store.forget(ids=ids, forget_class=args.forget_class, samples=args.data, val=args.val,
                          data_dir=args.data_dir, overrides=overrides, device=args.device, progress=not args.quiet)
    m = record["metrics"]
    what = f"class {record['class']}" if record["kind"] == "class" else "ids"
    print(f"request {record['id']}: forgot {record['n_samples']} samples ({what}) -> version {record['version']} "
          f"in {record['seconds']['total']:.2f} s; stop: {record['stop_reason']} after {record['epochs']} epochs "
          f"(kept epoch {record['kept_epoch']}{_share(m)})")
    val_key = "val_acc_kept_classes" if "val_acc_kept_classes" in m["after"] else "val_acc"
    print(f"  forget accuracy {m['before']['forget_acc']:.2f} -> {m['after']['forget_acc']:.2f}, "
          f"val accuracy{' on the classes kept' if val_key != 'val_acc' else ''} "
          f"{m['before'][val_key]:.2f} -> {m['after'][val_key]:.2f} (the trained model's "
          f"{m['before']['reference_val_acc']:.2f}; this request could lose {m['before']['val_drop_allowed']:.2f})")
    if record["stop_reason"] == "val_drop" and record["kept_epoch"] == 0:
        print("  note: the val guard stopped the request before any update was kept; the model is as it was. Raise "
              "--max-val-drop, or retrain, if these samples must be forgotten harder.")
    if args.json:
        print(json.dumps(record, indent=2))
    return 0


def _share(metrics) -> str:
    """How much of the kept epoch a line search (pgu.stopping.StopDecision.aim) kept, when it kept part of it."""
    if metrics.get("kept_share", 1.0) == 1.0:
        return ""
    return f", {metrics['kept_share']:.3g} of its update: a line search aimed at forget accuracy "\
           f"{metrics['line_search']['aim']:.1f}"


def cmd_history(args) -> int:
    store = ModelStore(args.store)
    rows = store.history()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    info = store.info()
    print(f"store {store.path}: {info['model']['name']} on {info['dataset']['name']}, made {info['created']}, "
          f"{len(rows)} request(s), {int(store.removed_ids().numel())} sample(s) removed")
    head = ["id", "time", "what", "samples", "stop", "epochs", "seconds", "forget acc", "val acc", "version"]
    print("  ".join(f"{h:>10}" if i else f"{h:>3}" for i, h in enumerate(head)))
    for r in rows:
        m = r["metrics"]
        what = f"class {r['class']}" if r["kind"] == "class" else "ids"
        cells = [f"{r['id']:>3}", f"{r['time'][:19]:>10}", f"{what:>10}", f"{r['n_samples']:>10}",
                 f"{r['stop_reason']:>10}", f"{r['epochs']:>10}", f"{r['seconds']['total']:>10.2f}",
                 f"{m['before']['forget_acc']:.1f}->{m['after']['forget_acc']:.1f}".rjust(10),
                 val_change(m).rjust(10), f"{r['version']:>10}"]
        print("  ".join(cells))
    return 0


def val_change(metrics: dict) -> str:
    """Val accuracy before -> after a request (for class removal, on the classes kept)."""
    key = "val_acc_kept_classes" if "val_acc_kept_classes" in metrics["after"] else "val_acc"
    return f"{metrics['before'][key]:.1f}->{metrics['after'][key]:.1f}"


def cmd_verify(args) -> int:
    report = ModelStore(args.store).verify()
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"store {args.store}: ok at version {report['version']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if not report["ok"]:
        for problem in report["problems"]:
            print(f"pgu verify: problem: {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_samples(args) -> int:
    splits = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    data = getattr(splits, args.split)
    if args.ids is not None and args.forget_class is not None:
        raise ValueError("name the samples by --ids FILE or by --class C, not both")
    if args.ids is None and args.forget_class is None and args.split == "train":
        raise ValueError("name the training samples: --ids FILE or --class C (a whole held-out split needs neither)")
    if args.ids:
        data = data.subset(data.positions_of(read_ids_file(args.ids)))
    elif args.forget_class is not None:
        data = data.subset(data.y == int(args.forget_class))
    if len(data) == 0:
        raise ValueError("no samples match; nothing written")
    write_samples(args.out, data.ids, data.x, data.y.to(torch.long))
    print(f"wrote {len(data)} {args.dataset} {args.split} samples to {args.out}")
    return 0
