"""What the benchmark scripts share: a tier's model, optimizer and loaders from its recipe; JSON output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pgu.bench.config import TIERS as TIER_RECIPES  # tier name -> recipe name, as `pgu bench` uses them
from pgu.data import ArrayDataset, load_dataset
from pgu.provenance import environment
from pgu.zoo.models import build_model
from pgu.zoo.recipes import Recipe, load_recipe
from pgu.zoo.training import _augmentation, _make_optimizer


@dataclass
class TierSetup:
    recipe: Recipe
    train: ArrayDataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    memory_format: torch.memory_format

    def train_loader(self, device):
        """The recipe's training loader: its batch size, shuffling and augmentation, on ``device``."""
        transform = _augmentation(self.recipe.train)
        kwargs = {"transform": transform} if transform is not None else {}
        return self.train.loader(self.recipe.train.batch_size, shuffle=True, seed=0, device=device, **kwargs)


def tier_setup(tier: str, device, data_dir=None, samples: int | None = None) -> TierSetup:
    """The tier's recipe, its training set (the first ``samples``), and a seeded model and optimizer on ``device``.

    ``tier`` is a `pgu bench` tier or the name of a bundled recipe (the GPU tiers: ``allcnn-cifar10``,
    ``smallvgg-cifar10``)."""
    recipe = load_recipe(TIER_RECIPES.get(tier, tier))
    cfg = recipe.train
    splits = load_dataset(recipe.dataset, data_dir=data_dir)
    train = splits.train if samples is None else splits.train.subset(torch.arange(min(samples, len(splits.train))))
    torch.manual_seed(0)
    model = build_model(recipe.model, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                        width=cfg.width, input_size=splits.input_shape[-1]).to(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    return TierSetup(recipe, train, model, _make_optimizer(model, cfg), fmt)


def write_results(out, name: str, payload: dict, device) -> Path:
    """``out/name.json`` with the payload and the environment (machine, versions, commit)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({**payload, "environment": environment(str(device))}, indent=2))
    return path


def cgs_agreement(fast: torch.Tensor, exact: torch.Tensor, gram: torch.Tensor) -> dict:
    """One layer's CGS (basis ``fast``) against the exact one (``exact``) on the retain Gram ``gram``: the principal
    angles in degrees (largest, mean, how many above 1) and the retain energy ``fast`` leaves unprotected beyond what
    ``exact`` leaves, as a share of the latter (exact is optimal, so >= 0; 0 when the Gram leaves nothing
    outside). ``{}`` for a basis that is not a dense one with columns."""
    if fast.dim() != 2 or not fast.shape[1] or not exact.shape[1]:
        return {}
    k = min(fast.shape[1], exact.shape[1])
    cosines = torch.linalg.svdvals(fast.T @ exact)[:k]
    angles = torch.rad2deg(torch.arccos(cosines.clamp(max=1.0)))
    gram = gram.to(torch.float64)
    left = float(gram.trace() - ((gram @ exact) * exact).sum())
    ours = float(gram.trace() - ((gram @ fast) * fast).sum())
    return {"largest_angle_deg": float(angles.max()), "mean_angle_deg": float(angles.mean()),
            "angles_above_1_deg": int((angles > 1).sum()),
            "extra_unprotected_share": (ours - left) / left if left > 0 else 0.0}
