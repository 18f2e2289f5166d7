"""Unlearning methods behind one interface (:mod:`pgu.bench.methods.base`), registered by name.

``run_method(name, model, forget_loader, retain_loader, context, **overrides)`` runs one with
its settings from ``settings.toml`` (the authors' values, each with its source) and any
overrides; ``method_names()`` lists them; ``get_method(name)`` gives ``(info, run)``;
``method_settings(name)`` the settings and their source; ``method_scale(name)`` the settings
``pgu select`` varies (:mod:`pgu.bench.selection`). ``retrain`` and ``original`` are the
bench's own references, not methods here.
"""

from __future__ import annotations

from pathlib import Path

from pgu.bench.methods import boundary_shrink, gradient, pgu_method, salun, scrub, ssd  # noqa: F401  (registration)
from pgu.bench.methods.base import (
    MethodContext,
    MethodInfo,
    MethodResult,
    copy_for_unlearning,
    get_method,
    method_names,
    register,
)
from pgu.bench.methods.pgu_method import PGU_VARIANTS, VARIANT_EXTRAS
from pgu.settings import PGUSettings, read_selected_table, tomllib

__all__ = ["MethodContext", "MethodInfo", "MethodResult", "get_method", "method_names", "method_settings",
           "method_scale", "register", "run_method", "copy_for_unlearning", "load_selected", "PGU_VARIANTS"]

SETTINGS_PATH = Path(__file__).with_name("settings.toml")


def _section(name: str) -> dict:
    get_method(name)  # a clear error for an unknown name
    with open(SETTINGS_PATH, "rb") as f:
        table = tomllib.load(f)
    if name not in table:
        raise ValueError(f"{SETTINGS_PATH} has no [{name}] section")
    return dict(table[name])


def method_settings(name: str, pgu: PGUSettings | None = None) -> tuple[dict, str]:
    """``(settings, source)`` of a registered method from ``settings.toml``.

    PGU's variants (:data:`PGU_VARIANTS`) take every setting from a :class:`pgu.PGUSettings`
    (``pgu``, default the authors'); their sections hold only what the variant changes.
    """
    settings = _section(name)
    settings.pop("scale", None)
    source = settings.pop("source", "")
    if not source:
        raise ValueError(f"[{name}] in {SETTINGS_PATH} must say where its values come from (source = ...)")
    if name in PGU_VARIANTS:
        extras = {k: settings.pop(k, v) for k, v in VARIANT_EXTRAS.get(name, {}).items()}
        settings = (pgu or PGUSettings()).replace(**settings).to_dict() | extras
    return settings, source


def method_scale(name: str) -> dict[str, float]:
    """The settings ``pgu select`` varies and the power of the ladder's factor each takes
    (``settings.toml``'s ``scale``).

    A power of 1 multiplies the setting by the factor (a rate: a larger factor is a stronger
    method), -1 divides by it (SSD's selection weighting and dampening constant).
    """
    scale = _section(name).get("scale")
    settings = method_settings(name)[0]
    if not isinstance(scale, dict) or not scale:
        raise ValueError(f"[{name}] in {SETTINGS_PATH} must name the settings selection varies (scale = {{ lr = 1 }})")
    for key, power in scale.items():
        if key not in settings and key != "class_lr":
            raise ValueError(f"[{name}] scale names {key!r}, which is not one of its settings {sorted(settings)}")
        if not isinstance(power, (int, float)) or power == 0:
            raise ValueError(f"[{name}] scale {key} = {power!r}: the power must be a non-zero number")
    return {k: float(v) for k, v in scale.items()}


def run_method(name: str, model, forget_loader, retain_loader, context: MethodContext, **overrides) -> MethodResult:
    """Run method ``name`` with its settings (``overrides`` replace single values; unknown keys are refused).

    A length given as ``epochs`` replaces the settings' ``epochs_share`` and the other way round."""
    info, run = get_method(name)
    settings, _ = method_settings(name)
    lengths = {"epochs", "epochs_share"} if {"epochs", "epochs_share"} & set(settings) else set()
    unknown = sorted(set(overrides) - set(settings) - lengths - {"class_lr"})
    if unknown:
        raise ValueError(f"{name} has no settings {unknown}; it takes {sorted(set(settings) | lengths)}")
    if lengths & set(overrides):  # a length given replaces the other form of it
        for key in lengths - set(overrides):
            settings.pop(key, None)
    settings.update(overrides)
    return run(model, forget_loader, None if info.data_free else retain_loader, settings, context)


def load_selected(path, methods=None) -> dict[str, dict]:
    """``{method: {"values": {...}, "factor": f, "source": s}}`` from a selected-settings file, checked.

    Every section must name a registered method, say its ``source`` and ``factor``, and set only
    settings the method has (``methods``: restrict to these names). The file is what ``pgu
    select`` writes (:func:`pgu.bench.selection.selected_toml`).
    """
    path = Path(path)
    table = read_selected_table(path)
    out = {}
    for name, section in table.items():
        if name not in method_names():
            raise ValueError(f"{path}: [{name}] is not an unlearning method ({', '.join(method_names())})")
        if not isinstance(section, dict) or not section.get("source") or "factor" not in section:
            raise ValueError(f"{path}: [{name}] must give its source and factor")
        values = {k: v for k, v in section.items() if k not in ("source", "factor")}
        known = set(method_settings(name)[0]) | {"class_lr"}
        unknown = sorted(set(values) - known)
        if unknown or not values:
            raise ValueError(f"{path}: [{name}] sets {unknown or 'nothing'}; it may set {sorted(known)}")
        if methods is None or name in methods:
            out[name] = {"values": values, "factor": float(section["factor"]), "source": str(section["source"])}
    return out
