"""All-CNN (Springenberg et al., 2015, model C) with BatchNorm, as the PGU authors define it.

Source followed: the PGU authors' repository (hnanhtuan/projected_gradient_unlearning,
``backbone/allcnn.py`` and ``backbone/layers.py``, built with ``dropout: false`` in
``exp/learned/allcnn_cifar10/*/config.yaml``). Their layout differs from the paper's All-CNN-C
in two places, and this module follows the authors:

* the first stride-2 conv already widens 96 -> 192 (the paper keeps 96 and widens in the
  next conv);
* the head is global average pooling then a Linear layer 192 -> classes (the paper ends with
  a 1x1 conv to the classes and then pools). Both compute the same function, but PGU's
  statistics differ: a Linear head sees one pooled row per image, a 1x1 conv one row per
  position.

Every conv is conv (no bias) -> BatchNorm -> ReLU, padding ``(k - 1) // 2`` (1 for 3x3, 0 for
1x1), including the stride-2 convs. The authors pool with ``AvgPool2d(8)``, which is global at
32 px; here ``AdaptiveAvgPool2d(1)`` keeps it global at any input size. Their optional dropout
(off in their experiments) is left out. PyTorch's default initialisation, as theirs.
"""

from __future__ import annotations

from torch import nn

from pgu.zoo.models import register_model, scaled


def _conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AllCNN(nn.Module):
    """``features`` (8 conv-BN-ReLU blocks, two of them stride 2) -> global average pool -> ``classifier``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2 = scaled(96, width), scaled(192, width)
        self.features = nn.Sequential(
            _conv(in_channels, c1),
            _conv(c1, c1),
            _conv(c1, c2, stride=2),  # 32 -> 16 px
            _conv(c2, c2),
            _conv(c2, c2),
            _conv(c2, c2, stride=2),  # 16 -> 8 px
            _conv(c2, c2),
            _conv(c2, c2, kernel=1),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c2, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@register_model("allcnn")
def allcnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, input_size: int | None = None) -> nn.Module:
    """All-CNN with BatchNorm; ``width`` multiplies 96/192 (width 1/3: 32/64). Any input size (usual: 32)."""
    return AllCNN(num_classes, in_channels, width)
