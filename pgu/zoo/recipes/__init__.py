"""Named training recipes: TOML files in ``pgu/zoo/recipes/`` (or any path), one per dataset/model pair.

A recipe holds ``description``, ``dataset``, ``model`` (a registered name or a reference,
:mod:`pgu.zoo.models.external`; a relative file path is read from the recipe's folder) and a ``[train]`` table of
:class:`~pgu.zoo.training.TrainConfig` settings, each with a comment saying where its value comes
from. Anything in it can be overridden from the command line or from Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pgu.settings import tomllib
from pgu.zoo.models.external import is_reference
from pgu.zoo.training import TrainConfig

__all__ = ["Recipe", "load_recipe", "available_recipes", "find_recipe", "RECIPE_DIR"]

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    dataset: str
    model: str
    train: TrainConfig

    def with_overrides(self, *, dataset: str | None = None, model: str | None = None, **train_overrides) -> "Recipe":
        """A copy with the dataset, model and training settings given (None values ignored)."""
        settings = {k: v for k, v in train_overrides.items() if v is not None}
        train = TrainConfig.from_dict({**self.train.to_dict(), **settings}) if settings else self.train
        return replace(self, dataset=dataset or self.dataset, model=model or self.model, train=train)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "dataset": self.dataset, "model": self.model,
                "train": self.train.to_dict()}


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name (``available_recipes()``) or from a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ValueError(f"unknown recipe {name_or_path!r}; available: {', '.join(available_recipes())} "
                             f"(or a path to a TOML file)")
    if not path.is_file():
        raise FileNotFoundError(f"no recipe file at {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from None
    missing = [k for k in ("dataset", "model", "train") if k not in data]
    if missing:
        raise ValueError(f"recipe {path} lacks {missing}")
    unknown = sorted(set(data) - {"description", "dataset", "model", "train"})
    if unknown:
        raise ValueError(f"recipe {path} has unknown keys {unknown}")
    try:
        train = TrainConfig.from_dict(data["train"])
    except ValueError as exc:
        raise ValueError(f"recipe {path}: {exc}") from None
    model = str(data["model"])
    where, _, factory = model.rpartition(":")
    if is_reference(model) and (where.endswith(".py") or "/" in where) and not Path(where).is_absolute():
        model = f"{(path.parent / where).resolve()}:{factory}"  # a model file next to the recipe
    return Recipe(path.stem, data.get("description", ""), data["dataset"], model, train)


def find_recipe(dataset: str, model: str | None = None) -> Recipe:
    """The recipe for ``dataset`` and ``model``; with no exact match, the dataset's recipe with ``model`` swapped in."""
    recipes = [load_recipe(n) for n in available_recipes()]
    for r in recipes:
        if r.dataset == dataset and (model is None or r.model == model):
            return r
    for r in recipes:
        if r.dataset == dataset:
            return r.with_overrides(model=model)
    raise ValueError(f"no recipe for dataset {dataset!r}; recipes cover {sorted({r.dataset for r in recipes})}. "
                     f"Pass --recipe with a TOML file of your own.")
