"""A store's PGU settings: a :class:`pgu.PGUSettings` and the lifetime val guard, and the store's errors."""

from __future__ import annotations

from pgu.settings import PGUSettings

__all__ = ["StoreError", "RequestRefused", "LIFETIME_VAL_DROP", "default_pgu_settings", "check_settings",
           "request_settings"]

LIFETIME_VAL_DROP = 2.0
"""Default points of val accuracy the store's model may lose against the trained model, over all requests."""


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
