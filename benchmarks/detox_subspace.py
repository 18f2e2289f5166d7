"""How much of the poisoned samples a projected update can reach: D_f's input energy outside the CGS, per layer.

For a run trained on poisoned data (``pgu train --poison SPEC --out RUN``, with its statistics):
the retain statistics ``G(D) - G(D_f)`` with D_f the poisoned samples as trained, the CGS at
each ``--thresholds`` value (the authors' k rule), and per layer the share of D_f's input energy
outside it (:meth:`pgu.CoreGradientSpace.outside_share`). The same for a random set of as many
clean training samples (seeded), removed instead: what an ordinary deletion request of that
size leaves free. A share near 0 means PGU cannot change how that layer responds to D_f; a
backdoor trigger is a new input direction, a flipped image is not.

    pgu train --recipe mnist --poison backdoor:0.05 --out runs/mnist-backdoor
    python benchmarks/detox_subspace.py --run runs/mnist-backdoor --name detox-subspace-mnist-backdoor
"""

from __future__ import annotations

import argparse
import json

import torch
from common import write_results

from pgu import CoreGradientSpace, GramStats
from pgu.data import load_dataset
from pgu.data.poisoning import poison
from pgu.zoo.runs import load_run


def outside_shares(model, stats: GramStats, data, thresholds) -> dict:
    forget = GramStats(stats.layer_names, precision=stats.precision).fit(model, data.loader(256))
    retain = stats - forget
    out = {}
    for t in thresholds:
        cgs = CoreGradientSpace(t).fit(retain)
        out[f"{t:g}"] = {"outside": cgs.outside_share(forget), "ranks": cgs.summary()}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run written by `pgu train --poison SPEC` (with statistics)")
    parser.add_argument("--thresholds", default="0.95,0.9,0.7,0.5", help="CGS thresholds (k rule 'pgu')")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clean comparison set")
    parser.add_argument("--data-dir")
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    run = load_run(args.run, device="cpu")
    spec = (run.config.get("poisoning") or {}).get("spec")
    if not spec:
        raise SystemExit(f"{args.run} was not trained on poisoned data (no poisoning in config.json)")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    splits = load_dataset(run.config["dataset"]["name"], data_dir=args.data_dir,
                          split_seed=int(run.config["dataset"].get("split_seed", 0)))
    poisoned, record = poison(splits.train, spec, seed=int(run.config["recipe"]["train"]["seed"]))
    stats = run.load_stats()
    mask = poisoned.mask_of(record.ids)
    clean_positions = torch.nonzero(~mask).flatten()
    g = torch.Generator().manual_seed(args.seed)
    chosen = clean_positions[torch.randperm(len(clean_positions), generator=g)[: int(mask.sum())]]
    payload = {
        "config": {"run": args.run, "poisoning": spec, "thresholds": thresholds, "seed": args.seed,
                   "n_poisoned": int(mask.sum()), "rule": "pgu"},
        "poisoned": outside_shares(run.model, stats, poisoned.subset(mask), thresholds),
        "clean_random": outside_shares(run.model, stats, poisoned.subset(chosen), thresholds),
    }
    path = write_results(args.out, args.name, payload, "cpu")
    for kind in ("poisoned", "clean_random"):
        for t, v in payload[kind].items():
            print(kind, t, json.dumps({k: None if s is None else round(s, 4) for k, s in v["outside"].items()}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
