"""A model pgu's registry does not know: pgu imports this file and calls ``build`` (see walkthrough.sh).

The factory takes any of ``num_classes``, ``in_channels``, ``width`` and ``input_size`` it declares.
"""

from torch import nn


class DigitsNet(nn.Module):
    """Two convolutions (the second depthwise) and a linear head, for 8x8 images."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        h = self.bn(self.depthwise(self.conv(x).relu())).relu()
        return self.head(nn.functional.max_pool2d(h, 2).flatten(1))


def build(num_classes: int, in_channels: int) -> nn.Module:
    return DigitsNet(num_classes, in_channels)
