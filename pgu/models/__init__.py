"""The model registry: ``build_model(name, num_classes=..., in_channels=..., width=1.0, input_size=None)``."""

from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["register_model", "build_model", "available_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: register ``fn(num_classes, in_channels, width, input_size) -> nn.Module`` as ``name``.

    ``width`` multiplies every hidden channel count (the CPU tiers use reduced widths);
    ``input_size`` is the input's side in pixels (None: the model's usual size), for models
    whose layout depends on it.
    """

    def decorate(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return decorate


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, *, num_classes: int, in_channels: int, width: float = 1.0,
                input_size: int | None = None) -> nn.Module:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, width=width, input_size=input_size)


from . import small  # noqa: E402,F401  (registers the small models)
