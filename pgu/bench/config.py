"""What one bench is: a tier, a scenario and its parameters, methods, seeds and the compute budget.

:class:`BenchConfig` is typed and checked in :meth:`BenchConfig.validate`; its fields carry
their command-line help (``metadata``), so ``pgu bench``'s options are built from them
(:func:`pgu.cli.bench.add_config_options`) and no default is written twice. PGU's settings are
a :class:`pgu.PGUSettings`, the tier's (:meth:`pgu.PGUSettings.for_tier`) unless given.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch

from pgu.bench.methods import load_selected, method_names
from pgu.data.poisoning import default_flip_count
from pgu.settings import PGUSettings
from pgu.zoo.models.external import canonical_reference
from pgu.zoo.recipes import Recipe, load_recipe

__all__ = ["BenchConfig", "TIERS", "SCENARIOS", "POISON_SCENARIOS", "REFERENCES", "METHODS", "FORMAT",
           "available_methods", "config_defaults"]

TIERS = {"digits": "digits", "mnist": "mnist", "fashion": "fashion", "cifar10-cpu": "cifar10-cpu",
         "cifar10-memorize": "cifar10-memorize", "vit-mnist": "vit-mnist", "allcnn-cifar10": "allcnn-cifar10",
         "smallvgg-cifar10": "smallvgg-cifar10"}
"""Tier name -> recipe name (docs/protocol.md, Tiers): six CPU tiers (``cifar10-memorize``: a model that memorises
its 10,000 training images, for sample forgetting; ``vit-mnist``: a transformer) and the paper's CIFAR-10 recipes
(for a GPU)."""

SCENARIOS = ("random", "subclass", "class", "sequential", "poison-flip", "poison-backdoor")
POISON_SCENARIOS = ("poison-flip", "poison-backdoor")
REFERENCES = ("original", "retrain")
"""Always run: the original model (doing nothing) and the reference retrained without D_f."""
METHODS = REFERENCES + ("pgu",)
"""The default methods of a bench (``--methods all`` takes :func:`available_methods`)."""
FORMAT = "pgu.bench/1"


def available_methods() -> tuple[str, ...]:
    """The references and every registered unlearning method (:mod:`pgu.bench.methods`)."""
    return REFERENCES + tuple(method_names())


def _option(help: str, **more) -> dict:
    """A field's command-line metadata: its help text, and ``flag`` / ``dest``-style extras."""
    return {"help": help, **more}


@dataclass(frozen=True)
class BenchConfig:
    """One bench (see the field help; docs/protocol.md for the scenarios).

    ``sequential`` makes ``steps`` requests of ``per_class`` samples of every class each, drawn
    from the seed, and scores every method after each request against a model retrained without
    all requests so far (docs/method.md section 7). ``challenge`` > 0 also takes the 2023 NeurIPS
    challenge score of PGU (docs/protocol.md) from that many originals (each unlearned with PGU) and
    retrained models per seed. ``budget_share``: every method may process at most this share of
    the sample passes the original training made (docs/protocol.md, Cost). ``settings``:
    ``"selected"`` applies the settings ``pgu select`` chose for the tier and mode on val only
    (``pgu/selected/<tier>-<mode>.toml``, where pgu ships one; else the published ones),
    ``"published"`` the authors' values, or a path to a selected-settings file. An explicit
    ``pgu`` replaces the tier's PGU settings and any selected PGU rate. ``poison-flip`` and
    ``poison-backdoor`` (docs/method.md section 8) poison the training set with the seed, train the
    original on it, and make D_f the poisoned samples with the labels they were trained with;
    the reference is the model trained on the clean samples only. No selection is shipped for
    poisoned samples, so ``settings="selected"`` runs the published settings there.
    """

    tier: str = field(metadata=_option("digits, mnist, fashion, cifar10-cpu, cifar10-memorize, the paper's "
                                       "allcnn-cifar10 / smallvgg-cifar10 (GPU), or a recipe TOML file of yours",
                                       required=True))
    scenario: str = field(metadata=_option("random, subclass, class, sequential, or poison-flip / poison-backdoor "
                                           "(train on poisoned data, then remove the poisoned samples; the "
                                           "reference is trained on the clean ones)", required=True))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_option("comma-separated seeds", kind="ints"))
    methods: tuple[str, ...] = field(default=METHODS, metadata=_option(
        "comma-separated unlearning methods (pgu, pgu-energy, pgu-heldout, finetune, neggrad, neggrad+, random-label, "
        "boundary-shrink, scrub, ssd, salun, l1-sparse), or all; original and retrain always run", kind="methods"))
    fraction: float = field(default=0.1, metadata=_option("random: share of D forgotten"))
    forget_class: int = field(default=0, metadata=_option("class and subclass: the class", flag="--class"))
    count: int | None = field(default=None, metadata=_option("subclass: samples forgotten (default 500, or half a "
                                                             "smaller class)", kind=int))
    steps: int = field(default=4, metadata=_option("sequential: number of requests"))
    per_class: int | None = field(default=None, metadata=_option(
        "sequential: samples of every class per request (default 2%% of the smallest class, at most 100)", kind=int))
    challenge: int = field(default=0, metadata=_option(
        "also the NeurIPS 2023 challenge score of PGU from N unlearned and N retrained models per seed "
        "(PROTOCOL: N >= 32; affordable on the digits tier)", metavar="N"))
    budget_share: float = field(default=0.5, metadata=_option(
        "each method's budget, a share of the original training's sample passes"))
    pgu: PGUSettings | None = None
    settings: str = field(default="selected", metadata=_option(
        "the methods' settings: selected on val by `pgu select` where pgu ships them for the tier (pgu/selected), "
        "the authors' published ones, or a selected.toml of yours", metavar="selected|published|FILE"))
    poison_count: int | None = field(default=None, metadata=_option(
        "poison-flip: images relabelled per class (default 1000, at most a fifth of the smallest class)", kind=int,
        metavar="N"))
    poison_pairs: int = field(default=5, metadata=_option("poison-flip: class pairs flipped"))
    poison_fraction: float = field(default=0.05, metadata=_option("poison-backdoor: share of the other classes' "
                                                                  "images stamped"))
    poison_target: int = field(default=0, metadata=_option("poison-backdoor: the target class"))
    trigger_size: int = field(default=3, metadata=_option("poison-backdoor: side of the square trigger in pixels"))
    model: str | None = field(default=None, metadata=_option(
        "your model in place of the tier's: path/to/file.py:factory, package.module:factory or a pgu.models entry "
        "point (docs/guide/cli.md)", metavar="REF", kind=str))

    def __post_init__(self):
        if self.tier not in TIERS and self.tier.endswith(".toml") and Path(self.tier).is_file():
            object.__setattr__(self, "tier", str(Path(self.tier).resolve()))  # resumable from any folder
        if self.model is not None:
            object.__setattr__(self, "model", canonical_reference(self.model))
        if self.pgu is None:  # the tier's settings, with the rates selected for this mode
            object.__setattr__(self, "pgu", PGUSettings.for_tier(self.tier, self.mode, self.settings))

    @property
    def mode(self) -> str:
        """``"class"``, ``"poison"`` (the poison scenarios) or ``"sample"``: what selected settings are keyed by."""
        if self.scenario in POISON_SCENARIOS:
            return "poison"
        return "class" if self.scenario == "class" else "sample"

    def selected_path(self) -> Path | None:
        """The selected-settings file this bench applies (:meth:`pgu.PGUSettings.selected_path`)."""
        return PGUSettings.selected_path(self.tier, self.mode, self.settings)

    def selected(self) -> dict:
        """``{method: {"values", "factor", "source"}}`` of the selected settings applied (empty: the published ones)."""
        path = self.selected_path()
        return {} if path is None else load_selected(path)

    def recipe(self) -> Recipe:
        """The training recipe of this bench's tier (a named tier's, or the tier's TOML file), ``model`` swapped in."""
        recipe = load_recipe(TIERS.get(self.tier, self.tier))
        return recipe if self.model is None else recipe.with_overrides(model=self.model)

    def validate(self) -> None:
        if self.tier not in TIERS and not (self.tier.endswith(".toml") and Path(self.tier).is_file()):
            raise ValueError(f"unknown tier {self.tier!r}; choose one of {', '.join(TIERS)}, or give a recipe TOML "
                             f"file (pgu/zoo/recipes/*.toml show the form)")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        available = available_methods()
        unknown = [m for m in self.methods if m not in available]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown}; available: {', '.join(available)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is named twice in {list(self.methods)}")
        if not 0 < self.fraction < 1:
            raise ValueError(f"the random scenario's fraction must lie in (0, 1), got {self.fraction}")
        if not 0 < self.budget_share <= 10:
            raise ValueError(f"budget_share must lie in (0, 10], got {self.budget_share}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be a positive number of samples, got {self.count}")
        if not 1 <= self.steps <= 50:
            raise ValueError(f"steps must lie in 1..50 requests, got {self.steps}")
        if self.challenge and not 2 <= self.challenge <= 256:
            raise ValueError(f"challenge needs 2 to 256 models per group (PROTOCOL: at least 32), got {self.challenge}")
        if self.challenge and (self.scenario == "sequential" or "pgu" not in self.methods):
            raise ValueError("the challenge score is taken for pgu on a single request: not with the sequential "
                             "scenario, and pgu must be among the methods")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"per_class must be a positive number of samples, got {self.per_class}")
        if self.challenge and self.scenario in POISON_SCENARIOS:
            raise ValueError("the challenge score compares unlearned with retrained models on a random forget set; "
                             "the poison scenarios do not take it")
        if self.poison_count is not None and self.poison_count < 1:
            raise ValueError(f"poison_count must be a positive number of images per class, got {self.poison_count}")
        if self.poison_pairs < 1:
            raise ValueError(f"poison_pairs must be >= 1, got {self.poison_pairs}")
        if not 0 < self.poison_fraction < 1:
            raise ValueError(f"poison_fraction must lie in (0, 1), got {self.poison_fraction}")
        if self.trigger_size < 1:
            raise ValueError(f"trigger_size must be >= 1 pixel, got {self.trigger_size}")
        self.selected()  # an unknown value or a damaged file is refused before anything runs

    def forget_spec(self, train_y: torch.Tensor) -> str:
        """The forget spec (:mod:`pgu.data.forget_sets`) of this scenario; ``random`` takes the run's seed."""
        if self.scenario == "random":
            return f"random:{self.fraction}"
        if self.scenario == "class":
            return f"class:{self.forget_class}"
        count = self.count
        if count is None:
            in_class = int((train_y == self.forget_class).sum())
            count = 500 if in_class >= 1000 else max(1, in_class // 2)
        return f"subclass:{self.forget_class}:{count}"

    def poison_spec(self, train_y: torch.Tensor) -> str:
        """The :mod:`pgu.data.poisoning` spec of a poison scenario."""
        if self.scenario == "poison-flip":
            count = self.poison_count if self.poison_count is not None else default_flip_count(train_y)
            return f"flip:{count}:{self.poison_pairs}"
        if self.scenario == "poison-backdoor":
            return f"backdoor:{self.poison_fraction:g}:{self.poison_target}:{self.trigger_size}"
        raise ValueError(f"{self.scenario!r} is not a poison scenario ({', '.join(POISON_SCENARIOS)})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"], d["methods"] = list(self.seeds), list(self.methods)
        d["pgu"] = self.pgu.to_dict()
        d["selected"] = {name: {"factor": v["factor"], **v["values"]} for name, v in self.selected().items()}
        return d

    def same_bench(self, other: dict) -> bool:
        """Whether a bench folder's recorded config is this one, seeds aside (more seeds may be added).

        A setting added to pgu after the folder was written (absent from its record) matches when
        this bench leaves it at its default, so benches made before it can still be resumed."""
        mine = {k: v for k, v in self.to_dict().items() if k != "seeds"}
        theirs = {k: v for k, v in other.items() if k != "seeds"}
        defaults = {"config": config_defaults(BenchConfig, skip=("tier", "scenario", "pgu")),
                    "pgu": PGUSettings().to_dict()}
        for key in [k for k in mine if k not in theirs]:
            if key in defaults["config"] and mine[key] == defaults["config"][key]:
                del mine[key]
        if isinstance(mine.get("pgu"), dict) and isinstance(theirs.get("pgu"), dict):
            mine["pgu"] = {k: v for k, v in mine["pgu"].items()
                           if k in theirs["pgu"] or v != defaults["pgu"].get(k, object())}
        return mine == theirs


def config_defaults(cls, skip=()) -> dict:
    """A dataclass's default field values, in ``to_dict``'s JSON form (tuples as lists)."""
    out = {}
    for f in fields(cls):
        if f.name in skip or f.default is MISSING:
            continue
        out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out
