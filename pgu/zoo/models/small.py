"""Small models for the CPU tiers."""

from __future__ import annotations

from torch import nn

from pgu.zoo.models import register_model


def _conv_bn(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


@register_model("digits-cnn")
def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
               input_size: int | None = None) -> nn.Module:
    """Three 3x3 convs (the last two stride 2: 8 -> 4 -> 2 px) with BatchNorm, global average pool, linear head."""
    c1, c2, c3 = (max(1, int(round(c * width))) for c in (16, 32, 64))
    return nn.Sequential(
        *_conv_bn(in_channels, c1, 1),
        *_conv_bn(c1, c2, 2),
        *_conv_bn(c2, c3, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, num_classes),
    )
