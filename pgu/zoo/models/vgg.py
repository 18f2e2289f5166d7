"""The PGU authors' Small VGG for CIFAR-10.

Source followed: hnanhtuan/projected_gradient_unlearning, ``backbone/small_vgg.py``, built with
``dropout: 0.5`` in ``exp/learned/smallvgg_cifar10/*/config.yaml``. Layer for layer:

    conv 3x3 128 -> ReLU -> max-pool 2 -> BN
    conv 3x3 256 -> ReLU -> max-pool 2 -> BN
    conv 3x3 512 -> ReLU -> BN -> max-pool 2
    flatten (512 * 4 * 4 = 8192 at 32 px) -> dropout 0.5 -> fc 512 -> ReLU -> BN1d -> fc classes

Convs have padding 1 and a bias, as theirs (BatchNorm comes after the ReLU there). Theirs has
3 input channels and a fixed 8192-wide flatten; here ``in_channels`` is free and the flatten
size follows ``input_size``. PyTorch's default initialisation, as theirs.
"""

from __future__ import annotations

from torch import nn

from pgu.zoo.models import register_model, scaled


class SmallVGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, input_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, hidden = (scaled(c, width) for c in (128, 256, 512, 512))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c1),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(c3),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = input_size // 2 // 2 // 2
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c3 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("smallvgg")
def smallvgg(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             input_size: int | None = None) -> nn.Module:
    """Small VGG with dropout 0.5; ``width`` multiplies 128/256/512 and the 512-wide fc. Input >= 8 px (usual: 32)."""
    size = 32 if input_size is None else input_size
    if size < 8:
        raise ValueError(f"smallvgg needs input_size >= 8 (three 2x2 max-pools), got {size}")
    return SmallVGG(num_classes, in_channels, width, size)
