"""Models from outside the registry: ``path/to/file.py:factory``, ``package.module:factory``, or an entry point.

A model reference names a function that builds the network. Wherever pgu takes a model name
(``pgu train --model``, a recipe's ``model``, ``pgu bench --model``) it also takes:

* ``path/to/file.py:factory``: the file is imported (its code runs) and ``factory`` called. The
  path is made absolute when a run or store records it, so ``pgu forget`` and ``pgu verify`` find
  it from any folder;
* ``package.module:factory``: an importable module;
* a name that an installed package declares in the ``pgu.models`` entry-point group
  (``[project.entry-points."pgu.models"] mynet = "mypackage.models:build"``).

The factory gets those of ``num_classes``, ``in_channels``, ``width`` and ``input_size`` it
accepts (by keyword), so ``def build(num_classes): ...`` is enough. A reference whose code cannot
be found raises :class:`ModelCodeMissingError`, which says that the code, not the weights, is
missing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from torch import nn

__all__ = ["ModelCodeMissingError", "is_reference", "canonical_reference", "resolve_factory", "call_factory",
           "entry_point_models", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "pgu.models"
FACTORY_ARGS = ("num_classes", "in_channels", "width", "input_size")


class ModelCodeMissingError(ValueError):
    """A model reference whose code cannot be found or does not provide the factory it names."""

    def __init__(self, reference: str, reason: str):
        self.reference, self.reason = reference, reason
        super().__init__(f"the code of model {reference!r} is missing: {reason}. Weights and statistics saved for it "
                         f"are not affected: restore that code (or install its package), then retry")


def is_reference(name: str) -> bool:
    """Whether ``name`` is ``where:factory`` rather than a registry or entry-point name (a drive letter's
    colon, ``C:\\...``, does not count)."""
    drive = len(name) > 2 and name[1] == ":" and name[2] in "/\\"
    return ":" in (name[2:] if drive else name)


def _split(reference: str) -> tuple[str, str]:
    where, _, factory = reference.rpartition(":")
    if not where or not factory.isidentifier():
        raise ValueError(f"a model reference is 'path/to/file.py:factory' or 'package.module:factory', "
                         f"got {reference!r}")
    return where, factory


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def canonical_reference(reference: str) -> str:
    """``reference`` with a file path made absolute (checked to exist and to define the factory)."""
    if not is_reference(reference):
        return reference
    where, factory = _split(reference)
    if _is_file(where):
        where = str(Path(where).expanduser().resolve())
        reference = f"{where}:{factory}"
    resolve_factory(reference)
    return reference


def resolve_factory(reference: str) -> Callable[..., nn.Module]:
    """The callable a reference names (the module is imported once per process)."""
    where, factory = _split(reference)
    if _is_file(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ModelCodeMissingError(reference, f"no file {path}")
        module = _import_file(path, reference)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ModelCodeMissingError(reference, f"module {where!r} cannot be imported ({exc})") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ModelCodeMissingError(reference, f"{where} defines no function {factory!r}")
    return fn


def _import_file(path: Path, reference: str):
    resolved = path.resolve()
    name = "pgu_user_model_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ModelCodeMissingError(reference, f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def entry_point_models() -> dict[str, str]:
    """``{name: "module:factory"}`` declared by installed packages in the ``pgu.models`` group."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def call_factory(fn: Callable[..., nn.Module], reference: str, **values) -> nn.Module:
    """Call ``fn`` with the keywords of :data:`FACTORY_ARGS` it accepts; check it returns an ``nn.Module``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in values.items() if takes_all or k in params}
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {reference!r} returned a {type(model).__name__}, not an nn.Module")
    return model
