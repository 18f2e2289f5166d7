"""ResNet-18 (He et al., 2016) with BasicBlocks, for 32 px (CIFAR) and 64 px (Tiny ImageNet) inputs.

Two stems, chosen by ``input_size``:

* below 64 px (default, 32): the usual CIFAR variant, a 3x3 stride-1 conv and no max-pool, so
  the four stages run at 32/16/8/4 px.
* 64 px and above: the ImageNet stem, 7x7 stride-2 conv (padding 3) then 3x3 stride-2 max-pool
  (padding 1), so 64 px gives stages at 16/8/4/2 px. This is what the PGU authors train on
  Tiny ImageNet: their ``backbone/resnet18.py`` (hnanhtuan/projected_gradient_unlearning)
  subclasses torchvision's unmodified ImageNet ResNet-18 (``BasicBlock, [2, 2, 2, 2]``), with
  ``num_classes: 200`` and 64 px images (``image_size: 64`` in
  ``exp/learned/resnet18_tinyimagenet/*/config.yaml``).

Both: BasicBlock (3x3 conv-BN-ReLU, 3x3 conv-BN, add, ReLU), convs without bias, projection
shortcut (1x1 conv with the block's stride + BN) wherever the shape changes, global average
pool, Linear head. Module names follow torchvision's (``conv1``, ``layer1.0.downsample.0``,
``fc``...). Initialisation as torchvision's: convs Kaiming-normal (fan_out, ReLU), BatchNorm
weight 1 / bias 0, Linear PyTorch default; no zero-init of the last BN of each block.
``width`` multiplies 64/128/256/512.
"""

from __future__ import annotations

from torch import nn

from pgu.zoo.models import register_model, scaled

IMAGENET_STEM_FROM = 64  # input sizes from this on get the 7x7 stride-2 stem and the max-pool


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, imagenet_stem: bool = False):
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             input_size: int | None = None) -> nn.Module:
    """ResNet-18: CIFAR stem below 64 px (usual size 32), the authors' ImageNet stem from 64 px (Tiny ImageNet)."""
    size = 32 if input_size is None else input_size
    return ResNet18(num_classes, in_channels, width, imagenet_stem=size >= IMAGENET_STEM_FROM)
