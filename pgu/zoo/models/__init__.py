"""The model registry: ``build_model(name, num_classes=..., in_channels=..., width=1.0, input_size=None)``.

Registered models (every trainable weight sits in a Conv2d, Linear or BatchNorm module, but the ViT's
attention, class token, positions and LayerNorms):

* ``digits-cnn`` (:mod:`.small`): three 3x3 convs for 8x8 digits.
* ``lenet`` (:mod:`.lenet`): conv 32 5x5, conv 64 5x5, fc 128 for 28x28 MNIST-like images.
* ``allcnn`` (:mod:`.allcnn`): the PGU authors' All-CNN with BatchNorm (CIFAR-10).
* ``smallvgg`` (:mod:`.vgg`): the PGU authors' Small VGG with dropout 0.5 (CIFAR-10).
* ``resnet18`` (:mod:`.resnet`): ResNet-18; CIFAR stem below 64 px, ImageNet stem from 64 px.
* ``vit`` (:mod:`.vit`): a small ViT on ``nn.TransformerEncoderLayer`` (4 x 4 patches, 4 layers, 4 heads).

Any other model by reference (:mod:`.external`): ``path/to/file.py:factory``,
``package.module:factory``, or a name in the ``pgu.models`` entry-point group.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

from torch import nn

__all__ = ["register_model", "build_model", "available_models", "scaled"]

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


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1 (96 * 1/3 -> 32)."""
    return max(1, int(round(channels * width)))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def build_model(name: str, *, num_classes: int, in_channels: int, width: float = 1.0,
                input_size: int | None = None) -> nn.Module:
    """A registered model by name, or a model by reference (:mod:`.external`)."""
    factory = _MODELS.get(name)
    reference = name
    if factory is None:
        if not is_reference(name):
            reference = entry_point_models().get(name)
            if reference is None:
                raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}, a name in the "
                                 f"{ENTRY_POINT_GROUP!r} entry points, or path/to/file.py:factory")
        factory = resolve_factory(reference)
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if input_size is not None and (not _is_int(input_size) or input_size < 1):
        raise ValueError(f"input_size must be None or a positive integer, got {input_size!r}")
    if name in _MODELS:
        return factory(num_classes=num_classes, in_channels=in_channels, width=width, input_size=input_size)
    return call_factory(factory, reference, num_classes=num_classes, in_channels=in_channels, width=width,
                        input_size=input_size)


from pgu.zoo.models import allcnn, lenet, resnet, small, vgg, vit  # noqa: E402,F401  (register the models)
from pgu.zoo.models.external import (  # noqa: E402
    ENTRY_POINT_GROUP,
    call_factory,
    entry_point_models,
    is_reference,
    resolve_factory,
)
