"""A small Vision Transformer on ``nn.TransformerEncoderLayer`` (the ``vit-mnist`` tier).

Patches are embedded by a ``Conv2d`` whose kernel and stride are the patch size (the usual ViT
stem); a class token and learned positions (free tensors: frozen by pgu's policy, listed in the
coverage table) are added; pre-norm encoder layers (``nn.MultiheadAttention`` with its packed
``in_proj_weight``, GELU MLP) follow; the class token's final LayerNorm feeds a Linear head. Every
weight matrix sits in a layer pgu projects (Conv2d, MultiheadAttention, Linear).
"""

from __future__ import annotations

import torch
from torch import nn

from pgu.zoo.models import register_model, scaled

HEADS = 4
DEPTH = 4
PATCHES_PER_SIDE = 4


class VisionTransformer(nn.Module):
    """ViT: ``dim``-wide tokens of ``patch`` x ``patch`` patches, ``depth`` encoder layers of ``heads`` heads."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, patch: int, dim: int, depth: int,
                 heads: int, mlp_ratio: int = 2):
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])


@register_model("vit")
def vit(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, input_size: int | None = None) -> nn.Module:
    """ViT for ``input_size`` px images (default 28) cut into 4 x 4 patches (7 px for MNIST, 8 for CIFAR-10):
    16 tokens and a class token, width ``64 * width`` (a multiple of the 4 heads), 4 pre-norm layers, MLP 2x."""
    size = 28 if input_size is None else input_size
    if size < PATCHES_PER_SIDE or size % PATCHES_PER_SIDE:
        raise ValueError(f"vit needs an input_size divisible into {PATCHES_PER_SIDE} patches a side, got {size}")
    dim = HEADS * scaled(64 // HEADS, width)
    return VisionTransformer(num_classes, in_channels, size, size // PATCHES_PER_SIDE, dim, DEPTH, HEADS)
