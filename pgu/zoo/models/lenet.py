"""LeNet-style CNN for 28x28 single-channel images (the ``mnist`` / ``fashion`` tiers)."""

from __future__ import annotations

from torch import nn

from pgu.zoo.models import register_model, scaled


@register_model("lenet")
def lenet(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, input_size: int | None = None) -> nn.Module:
    """conv 32 5x5 -> ReLU -> 2x2 max-pool, conv 64 5x5 -> ReLU -> 2x2 max-pool, fc 128 -> ReLU, fc classes.

    The convs use padding 2 ("same"), so a 28 px input gives 28 -> 14 -> 14 -> 7 and the first
    fc layer sees 64 * 7 * 7 = 3136 features (docs/protocol.md's "LeNet" figure names the layers
    but not the padding). The flatten size is computed from ``input_size`` (default 28;
    at least 4 px, as the two pools floor-divide the side by 2 twice). ``width`` multiplies
    32/64/128. No BatchNorm or dropout; PyTorch's default initialisation.
    """
    size = 28 if input_size is None else input_size
    if size < 4:
        raise ValueError(f"lenet needs input_size >= 4 (two 2x2 max-pools), got {size}")
    c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(128, width)
    side = size // 2 // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
