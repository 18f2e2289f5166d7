"""A trained run on disk: everything unlearning and evaluation need later, nothing executable.

Layout of ``RUN/`` (written to a temporary sibling folder, then renamed, so a crash never
leaves half a run):

* ``model.safetensors``: the weights; the header names the model (registry name, width,
  classes, input channels and size) so :func:`load_run` rebuilds it without pickle.
* ``config.json``: the recipe (dataset, model, every training setting), the forget spec
  excluded, dataset details, library versions, machine and commit.
* ``train_ids.json``: the sample ids trained on; ``excluded_ids.json``: those left out.
* ``history.json``: per-epoch learning rate, loss, train and val accuracy, seconds.
* ``stats.safetensors``: the Gram statistics of the samples trained on (the cache PGU needs),
  unless the run was made without them.
* ``poisoning.json``: for a run trained on poisoned data (``pgu train --poison``), exactly what
  the attack changed (:mod:`pgu.data.poisoning`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pgu.stats import GramStats
from pgu.zoo.models import build_model

__all__ = ["ModelSpec", "Run", "save_run", "load_run", "load_model"]

MODEL_FORMAT = "pgu.model"


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`pgu.zoo.models.build_model` needs to rebuild a model."""

    name: str
    num_classes: int
    in_channels: int
    width: float = 1.0
    input_size: int | None = None

    def build(self) -> nn.Module:
        return build_model(self.name, num_classes=self.num_classes, in_channels=self.in_channels, width=self.width,
                           input_size=self.input_size)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "width": self.width, "input_size": self.input_size}


@dataclass
class Run:
    path: Path
    model: nn.Module
    spec: ModelSpec
    config: dict
    train_ids: torch.Tensor
    excluded_ids: torch.Tensor
    history: list[dict] = field(default_factory=list)

    @property
    def stats_path(self) -> Path | None:
        p = self.path / "stats.safetensors"
        return p if p.is_file() else None

    def load_stats(self) -> GramStats:
        if self.stats_path is None:
            raise FileNotFoundError(f"run {self.path} has no stats.safetensors; it was trained without statistics "
                                    f"(take them with GramStats().fit(model, train_loader))")
        return GramStats.load(self.stats_path)


def save_model(path: Path, model: nn.Module, spec: ModelSpec) -> None:
    from safetensors.torch import save_file

    # a copy per name: safetensors refuses tensors that share memory (tied weights); loading re-ties them
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": MODEL_FORMAT, "model": json.dumps(spec.to_dict())})


def load_model(path, device=None) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model saved by :func:`save_run` (``model.safetensors``) on ``device``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors model ({exc})") from exc
    if header.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is a safetensors file but not a pgu model (format {header.get('format')!r})")
    spec = ModelSpec(**json.loads(header["model"]))
    model = spec.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit model {spec.name!r}: {exc}") from None
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, spec


def save_run(path, *, model: nn.Module, spec: ModelSpec, config: dict, train_ids: torch.Tensor,
             excluded_ids: torch.Tensor, history: list[dict], stats: GramStats | None = None,
             overwrite: bool = False, extra_files: dict[str, object] | None = None) -> Path:
    """Write a run folder atomically (see the module docstring). Refuses to replace one unless ``overwrite``.

    ``extra_files``: more JSON files of the run, ``{file name: payload}``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        save_model(tmp / "model.safetensors", model, spec)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "train_ids.json").write_text(json.dumps(train_ids.tolist()))
        (tmp / "excluded_ids.json").write_text(json.dumps(excluded_ids.tolist()))
        (tmp / "history.json").write_text(json.dumps(history, indent=2))
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload))
        if stats is not None:
            stats.save(tmp / "stats.safetensors", metadata={"run": path.name})
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_run(path, device=None) -> Run:
    """Read a run folder written by :func:`save_run`."""
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} is not a pgu run (no model.safetensors); make one with `pgu train`")
    model, spec = load_model(path / "model.safetensors", device)

    def read(name, default):
        p = path / name
        if not p.is_file():
            return default
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p} is damaged: {exc}") from None

    return Run(
        path=path,
        model=model,
        spec=spec,
        config=read("config.json", {}),
        train_ids=torch.tensor(read("train_ids.json", []), dtype=torch.long),
        excluded_ids=torch.tensor(read("excluded_ids.json", []), dtype=torch.long),
        history=read("history.json", []),
    )
