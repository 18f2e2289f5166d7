"""Unlearning methods behind one interface (:mod:`pgu.methods.base`), registered by name.

``run_method(name, model, forget_loader, retain_loader, context, **overrides)`` runs one with
its settings from ``settings.toml`` (the authors' values, each with its source) and any
overrides; ``method_names()`` lists them; ``get_method(name)`` gives ``(info, run)``;
``method_settings(name)`` the settings and their source. ``retrain`` and ``original`` are the
bench's own references, not methods here.
"""

from __future__ import annotations

from pathlib import Path

from ..recipes import tomllib
from . import boundary_shrink, gradient, pgu_method, salun, scrub, ssd  # noqa: F401  (registration)
from .base import (MethodContext, MethodInfo, MethodResult, copy_for_unlearning, get_method, method_names,
                   register)

__all__ = ["MethodContext", "MethodInfo", "MethodResult", "get_method", "method_names", "method_settings",
           "register", "run_method", "copy_for_unlearning"]

SETTINGS_PATH = Path(__file__).with_name("settings.toml")


def method_settings(name: str) -> tuple[dict, str]:
    """``(settings, source)`` of a registered method from ``settings.toml``."""
    get_method(name)  # a clear error for an unknown name
    with open(SETTINGS_PATH, "rb") as f:
        table = tomllib.load(f)
    if name not in table:
        raise ValueError(f"{SETTINGS_PATH} has no [{name}] section")
    settings = dict(table[name])
    source = settings.pop("source", "")
    if not source:
        raise ValueError(f"[{name}] in {SETTINGS_PATH} must say where its values come from (source = ...)")
    return settings, source


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
