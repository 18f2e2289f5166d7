"""A store's PGU settings: a :class:`pgu.PGUSettings` and the lifetime val guard, and the store's errors."""

from __future__ import annotations

from pgu.heldout import ANCHOR_WEIGHT, HELDOUT_LR
from pgu.settings import PGUSettings, check_schedule
from pgu.val_sample import check_val_samples

__all__ = ["StoreError", "RequestRefused", "LIFETIME_VAL_DROP", "SAMPLE_METHODS", "default_pgu_settings",
           "check_settings", "check_sample_method", "request_settings", "request_val_samples", "request_subspace"]

LIFETIME_VAL_DROP = 2.0
"""Default points of val accuracy the store's model may lose against the trained model, over all requests."""


SAMPLE_METHODS = ("pgu", "pgu-heldout")
"""How a store serves sample requests: the authors' PGU, or the variant aimed at held-out behaviour
(:mod:`pgu.heldout`; its ``anchor_weight`` and its rate ``heldout_lr`` are store settings too). Class requests
always run as PGU."""

_METHOD_KEYS = {"sample_method": "pgu", "anchor_weight": ANCHOR_WEIGHT, "heldout_lr": list(HELDOUT_LR)}


class StoreError(ValueError):
    """The store cannot be used as it is (missing, damaged, tampered with); the message says what to do."""


class RequestRefused(StoreError):
    """A deletion request was refused before anything changed; the message says what to fix."""


def default_pgu_settings(recipe_name: str | None) -> dict:
    """PGU's settings for a store: the tier's for the run's recipe (:meth:`pgu.PGUSettings.for_tier`, with the rates
    selected for each mode where pgu ships them), else the authors'; and the lifetime guard."""
    return PGUSettings.for_tier(recipe_name).to_dict() | {"max_val_drop": LIFETIME_VAL_DROP}


def check_settings(settings: dict) -> tuple[PGUSettings, float]:
    """A store's settings as ``(PGUSettings, max_val_drop)``: checked by :class:`pgu.PGUSettings`, and the guard."""
    settings = dict(settings)
    check_sample_method(settings)
    request_val_samples(settings)
    request_subspace(settings)
    for key in (*_METHOD_KEYS, "val_samples", "subspace"):
        settings.pop(key, None)
    drop = settings.pop("max_val_drop", LIFETIME_VAL_DROP)
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 100:
        raise RequestRefused(f"setting max_val_drop (points of val accuracy the model may lose over the store's "
                             f"life) must lie in [0, 100), got {drop!r}")
    try:
        return PGUSettings.from_dict(settings), float(drop)
    except (TypeError, ValueError) as exc:
        raise RequestRefused(f"PGU setting refused: {exc}") from None


def request_settings(stored: dict, overrides: dict | None) -> tuple[PGUSettings, float]:
    settings = dict(stored)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        settings[key] = list(value) if isinstance(value, tuple) else value
    return check_settings(settings)


def request_val_samples(settings: dict) -> int | str:
    """The ``val_samples`` setting (default ``"auto"``): how many val samples the stopping rule scores
    (:mod:`pgu.val_sample`; pgu-heldout requests score all of them)."""
    value = settings.get("val_samples")
    try:
        return check_val_samples("auto" if value is None else value)
    except ValueError as exc:
        raise RequestRefused(str(exc)) from None


def request_subspace(settings: dict) -> str:
    """The ``subspace`` setting (default ``"anchored"``): the CGS from the store's anchor (:mod:`pgu.cgs_anchor`,
    first-order updates of an exact eigendecomposition) or ``"exact"`` ``eigh`` of every layer, as the authors."""
    value = settings.get("subspace") or "anchored"
    if value not in ("anchored", "exact"):
        raise RequestRefused(f"subspace must be 'anchored' (the store's anchor, pgu.cgs_anchor) or 'exact' (eigh of "
                             f"every layer on every request), got {value!r}")
    return value


def check_sample_method(settings: dict) -> dict:
    """``{"sample_method", "anchor_weight", "heldout_lr"}`` of a store's settings (defaults: ``pgu``, 10,
    :data:`pgu.heldout.HELDOUT_LR`), checked."""
    chosen = {key: settings.get(key, default) for key, default in _METHOD_KEYS.items()}
    chosen = {k: _METHOD_KEYS[k] if v is None else v for k, v in chosen.items()}
    if chosen["sample_method"] not in SAMPLE_METHODS:
        raise RequestRefused(f"sample_method must be one of {', '.join(SAMPLE_METHODS)} (how sample requests are "
                             f"served), got {chosen['sample_method']!r}")
    weight = chosen["anchor_weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < 1e6:
        raise RequestRefused(f"anchor_weight (pgu-heldout's weight on held-out outputs) must be a number >= 0, "
                             f"got {weight!r}")
    try:  # pgu-heldout's rates LR0 -> LR1, checked as every PGU rate is, and decaying
        lr0, lr1 = check_schedule(chosen["heldout_lr"], "heldout_lr")
    except ValueError as exc:
        raise RequestRefused(str(exc)) from None
    if lr1 > lr0:
        raise RequestRefused(f"heldout_lr: the rate decays per epoch, so LR1 must be <= LR0, got {lr0}, {lr1}")
    return {"sample_method": chosen["sample_method"], "anchor_weight": float(weight), "heldout_lr": [lr0, lr1]}
