"""One seed of a bench: its context, the original model, each method's request, and the scoring.

:class:`SeedRun` holds what every step of a seed needs (the config, recipe, data, seed,
device, cache, the original model and its statistics, the budget), so the steps take a
context instead of positional lists. :mod:`pgu.bench.runner` (``pgu bench``) and
:mod:`pgu.bench.selection` (``pgu select``) both build one.

No method sees the retrained model, the test split, or (PGU) the retain data; PGU's stopping
rule reads the val split only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from pgu.bench.config import REFERENCES, BenchConfig
from pgu.bench.methods import PGU_VARIANTS, MethodContext, get_method, method_settings
from pgu.bench.scoring import score_against_reference, score_model
from pgu.data import DataSplits
from pgu.stats import GramStats, stats_batch_size
from pgu.zoo.recipes import Recipe
from pgu.zoo.runs import ModelSpec, load_model, save_model
from pgu.zoo.training import TrainConfig, synchronize, train_model

__all__ = ["SeedRun", "published_settings", "bench_settings", "forget_record"]


def published_settings(name: str, config: BenchConfig) -> dict:
    """A method's settings: ``settings.toml``'s; PGU's variants take the bench's :class:`pgu.PGUSettings`."""
    settings, _ = method_settings(name, pgu=config.pgu if name in PGU_VARIANTS else None)
    return settings


def bench_settings(name: str, config: BenchConfig) -> dict:
    """A method's settings in this bench: :func:`published_settings`, then the selected values (``config.settings``).

    ``pgu``'s selected rates are already in ``config.pgu``."""
    settings = published_settings(name, config)
    if name != "pgu":
        settings.update(config.selected().get(name, {}).get("values", {}))
    return settings


def forget_record(ids: torch.Tensor) -> dict:
    """How a results file records a forget set: its size, the SHA-256 of its ids, and the ids (up to 5,000)."""
    return {"n_forget": int(ids.numel()), "forget_ids_sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
            "forget_ids": ids.tolist() if ids.numel() <= 5000 else None}


@contextlib.contextmanager
def training_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` of the cache while its model is looked up or trained.

    Benches that share a cache (seeds or methods split across processes) then train each original and
    each reference once: the second to ask waits for the first, then loads its model. The lock is
    ``fcntl.flock`` on ``.NAME.lock`` beside the folder, released when the process ends however it
    ends; where ``fcntl`` is missing (Windows) nothing is locked and a model may be trained twice
    (the first stored is kept)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class SeedRun:
    """Everything one seed's steps share. :meth:`train_original` fills the original, its statistics and the budget."""

    config: BenchConfig
    recipe: Recipe
    splits: DataSplits
    seed: int
    device: torch.device
    cache: Path
    progress: bool = False
    original: nn.Module | None = None
    stats: GramStats | None = None
    original_info: dict = field(default_factory=dict)
    budget: int = 0

    @property
    def train_cfg(self) -> TrainConfig:
        """The tier's recipe at this seed."""
        return replace(self.recipe.train, seed=self.seed)

    def with_splits(self, splits: DataSplits) -> "SeedRun":
        """The same seed on other data (a poisoned copy of the training set)."""
        return replace(self, splits=splits)

    # -- the original model ---------------------------------------------------------------

    def train_original(self, poisoning: dict | None = None) -> None:
        """The seed's original model and its Gram statistics, from the cache when the full config matches.

        ``poisoning``: the summary of the poisoning ``splits.train`` carries (part of the cache key)."""
        key = self._key() if poisoning is None else self._key(poisoning=poisoning)
        folder = self.cache / f"original-{key}"
        with training_lock(folder):
            self._train_original(folder, key, poisoning)

    def _train_original(self, folder: Path, key: str, poisoning: dict | None) -> None:
        recipe, train_cfg, splits = self.recipe, self.train_cfg, self.splits
        if (folder / "info.json").is_file():
            info = json.loads((folder / "info.json").read_text())
            model, _ = load_model(folder / "model.safetensors", device=self.device)
            self._set_original(model, GramStats.load(folder / "stats.safetensors"), info | {"cached": True})
            return
        trained = train_model(recipe.model, splits, train_cfg, device=self.device, progress=self.progress,
                              desc=f"seed {train_cfg.seed}: train original"
                                   + (" on poisoned data" if poisoning else ""))
        start = time.perf_counter()
        stats = GramStats().fit(trained.model, splits.train.loader(stats_batch_size(self.device), device=self.device),
                                progress=self.progress, desc="Gram statistics of D")
        stats_seconds = time.perf_counter() - start
        info = {"train_seconds": round(trained.seconds, 4), "samples_seen": trained.samples_seen,
                "stats_seconds": round(stats_seconds, 4), "stats_bytes": sum(stats.nbytes.values()), "cache_key": key}
        self._store(folder, trained.model, info, stats)
        self._set_original(trained.model, stats, info | {"cached": False})

    def _set_original(self, model: nn.Module, stats: GramStats, info: dict) -> None:
        self.original, self.stats, self.original_info = model, stats, info
        self.budget = int(self.config.budget_share * info["samples_seen"])

    # -- one request by one method --------------------------------------------------------

    def run_method(self, name: str, mask: torch.Tensor, mode: str, *, model: nn.Module | None = None,
                   stats: GramStats | None = None, settings: dict | None = None,
                   retain: torch.Tensor | None = None) -> dict:
        """One request by method ``name``, timed, as the bench records it (the model, seconds and what it reports).

        The method gets the forget set (``mask`` of the training set), the retain set only when
        it is not data-free (PGU gets the retain statistics instead), the val split, and the
        budget in sample passes. ``model`` / ``stats``: the model the request starts from and
        its retain statistics (default: the original's); ``settings``: default the bench's
        (:func:`bench_settings`); ``retain``: the retain set's mask (default ``~mask``; after earlier
        requests, what none of them removed), read by the methods that are not data-free.
        """
        retain = ~mask if retain is None else retain
        if bool((retain & mask).any()):
            raise ValueError(f"{name}: the retain set and the forget set overlap")
        info, run = get_method(name)
        if settings is None:
            settings = bench_settings(name, self.config)
        splits, device = self.splits, self.device
        forget_loader = splits.train.subset(mask).loader(int(settings["batch_size"]), device=device)
        retain_loader = None
        if not info.data_free:
            batch = int(settings.get("retain_batch_size", settings["batch_size"]))
            retain_loader = splits.train.subset(retain).loader(batch, shuffle=True, seed=self.seed, device=device)
        mean, std = _pixel_scale(splits.info)
        context = MethodContext(num_classes=splits.num_classes, train_epochs=self.train_cfg.epochs,
                                max_samples=self.budget, forget_mode=mode,
                                val_loader=splits.val.loader(512, device=device),
                                stats=self.stats if stats is None else stats, seed=self.seed, pixel_mean=mean,
                                pixel_std=std, progress=self.progress, reference=self.original)
        synchronize(device)
        start = time.perf_counter()
        result = run(self.original if model is None else model, forget_loader, retain_loader, settings, context)
        synchronize(device)
        seconds = time.perf_counter() - start
        details = {"samples_processed": result.samples_processed, "hit_budget": result.hit_budget, **result.details,
                   "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
        out = {"model": result.model, "seconds": seconds, "data_free": info.data_free, "details": details}
        if "retain_stats" in result.extras:
            out["retain_stats"] = result.extras["retain_stats"]
        return out

    def run_methods(self, mask: torch.Tensor, mode: str) -> dict:
        """Every method of the bench (the references aside) on one request from the original."""
        return {name: self.run_method(name, mask, mode) for name in self.config.methods if name not in REFERENCES}

    # -- the reference -------------------------------------------------------------------

    def _key(self, **extra) -> str:
        """The cache key of a model trained with this seed's recipe on ``splits`` (plus ``extra``)."""
        keyed = {"recipe": self.recipe.to_dict() | {"train": self.train_cfg.to_dict()}, "dataset": self.splits.name,
                 "train": len(self.splits.train), "info": self.splits.info, **extra}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def retrain_without(self, mask: torch.Tensor, desc: str) -> tuple[nn.Module, dict]:
        """The model retrained from scratch without ``mask`` and ``{"seconds", "samples_seen", "cached"}``.

        Cached in ``cache/retrain-KEY`` (the key: the full training config and the SHA-256 of the ids
        kept), so benches of other methods on the same requests score against the same reference;
        ``seconds`` is then the time the reference took when it was trained, on the machine that
        trained it (``machine`` says which).
        """
        kept = self.splits.train.ids[~mask]
        key = self._key(kept_ids_sha256=hashlib.sha256(kept.numpy().tobytes()).hexdigest())
        folder = self.cache / f"retrain-{key}"
        with training_lock(folder):
            return self._retrain(folder, key, mask, desc)

    def _retrain(self, folder: Path, key: str, mask: torch.Tensor, desc: str) -> tuple[nn.Module, dict]:
        if (folder / "info.json").is_file():
            info = json.loads((folder / "info.json").read_text())
            model, _ = load_model(folder / "model.safetensors", device=self.device)
            return model, info | {"cached": True}
        trained = train_model(self.recipe.model, self.splits, self.train_cfg, subset=~mask, device=self.device,
                              progress=self.progress, desc=desc)
        info = {"seconds": round(trained.seconds, 4), "samples_seen": trained.samples_seen, "cache_key": key,
                "machine": platform.processor() or platform.machine(), "device": str(self.device),
                "torch_threads": torch.get_num_threads()}
        self._store(folder, trained.model, info, None)
        return trained.model, info | {"cached": False}

    def _store(self, folder: Path, model: nn.Module, info: dict, stats: GramStats | None) -> None:
        """Write a trained model (and its statistics) into the cache, atomically; a folder already there is kept."""
        splits, train_cfg = self.splits, self.train_cfg
        spec = ModelSpec(self.recipe.model, splits.num_classes, splits.input_shape[0], train_cfg.width,
                         splits.input_shape[-1])
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        save_model(tmp / "model.safetensors", model, spec)
        if stats is not None:
            stats.save(tmp / "stats.safetensors")
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        if folder.exists():  # a concurrent bench finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)

    # -- scoring ---------------------------------------------------------------------------

    def score_request(self, mask: torch.Tensor, classes, method_runs: dict, desc: str, extra_scores=None) -> dict:
        """Retrain without ``mask``, then score original, retrain and the methods' models on that forget set.

        ``extra_scores(model) -> dict``: more metrics of each model, added to its row."""
        splits = self.splits
        retrained, retrain_info = self.retrain_without(mask, desc)
        runs = {"original": {"model": self.original, "seconds": 0.0, "data_free": True, "details": {}},
                "retrain": {"model": retrained, "seconds": retrain_info["seconds"], "data_free": False,
                            "details": {k: v for k, v in retrain_info.items() if k != "seconds"}}}
        for name, run in method_runs.items():
            runs[name] = {k: v for k, v in run.items() if k != "retain_stats"}
        sets = {"forget": splits.train.subset(mask), "retain": splits.train.subset(~mask), "val": splits.val,
                "test": splits.test}
        scores = {name: score_model(run["model"], sets, classes=classes, seed=self.seed) for name, run in runs.items()}
        methods = {}
        for name, run in runs.items():
            row = {k: v for k, v in scores[name].items() if not k.startswith("_")}
            row.update(score_against_reference(scores[name], scores["retrain"]))
            if extra_scores is not None:
                row.update(extra_scores(run["model"]))
            row["seconds"] = round(run["seconds"], 4)
            row["speedup"] = (round(runs["retrain"]["seconds"] / run["seconds"], 3)
                              if name not in REFERENCES and run["seconds"] > 0 else None)
            row["needs_retain_data"] = not run["data_free"]
            row["details"] = run["details"]
            methods[name] = row
        return {"methods": methods,
                "entropy_histograms": {name: scores[name]["_forget_entropy_histogram"] for name in runs}}


def _pixel_scale(info: dict):
    """``(mean, std)`` of the dataset's pixel normalisation (``None`` when it records none)."""
    norm = info.get("normalise")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        return tuple(norm["mean"]), tuple(norm["std"])
    if isinstance(norm, (list, tuple)) and len(norm) == 2:
        return (float(norm[0]),), (float(norm[1]),)
    return None, None
