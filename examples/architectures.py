"""Five architectures pgu's authors did not write, each served a class request: what pgu covers, and proof
that every projected change stays outside its Core Gradient Space.

Run it with ``python examples/architectures.py`` (about a minute on a CPU). For each model it prints the
coverage table (every trainable parameter, projected or frozen, and why), the CGS ranks, and the share
of each layer's weight change that lies inside its CGS (0 up to rounding; float64 models, so rounding
is ~1e-12). The models are written as their popular public versions are, at small sizes:

* ``resnet18``: a CIFAR-style ResNet-18 (BasicBlocks, 1x1 projection shortcuts, BatchNorm);
* ``mobilenetv2``: MobileNetV2's inverted residuals, depthwise 3x3 convolutions (one Gram per group);
* ``vit``: a ViT on ``nn.TransformerEncoderLayer`` (``nn.MultiheadAttention``), class token and positions;
* ``conv1d``: a 1-D conv sequence tagger returning ``{"logits": [batch, time, classes]}``, reduced to
  ``[batch, classes]`` by the user's ``output=``;
* ``gpt``: a nanoGPT-style language model whose ``lm_head`` shares its weight with the token embedding
  (projected on both sides), returning ``(logits, loss)``; the user's ``output=`` takes the last position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pgu


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes=4, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        hidden = cin * expansion
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)  # depthwise
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    CFG = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2))  # (expansion, out channels, blocks, stride)

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        blocks, cin = [], 8
        for expansion, cout, n, stride in self.CFG:
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(cin, 64, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ViT(nn.Module):
    def __init__(self, classes=4, image=16, patch=4, dim=32, depth=2, heads=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])


class Conv1dTagger(nn.Module):
    """Per-time-step logits, as a sequence tagger returns them."""

    def __init__(self, classes=4, channels=6):
        super().__init__()
        self.c1 = nn.Conv1d(channels, 16, 5, padding="same")
        self.c2 = nn.Conv1d(16, 16, 3, padding=2, dilation=2)
        self.c3 = nn.Conv1d(16, 16, 3, padding=1, groups=4)
        self.tag = nn.Linear(16, classes)

    def forward(self, x):
        h = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return {"logits": self.tag(h.transpose(1, 2))}


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class GPTBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab=24, block=8, dim=32, depth=2, heads=4):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(block, dim)
        self.h = nn.ModuleList(GPTBlock(dim, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as nanoGPT

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x)), None  # (logits per position, loss)


def _images(n, g):
    return torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64)


def _tokens(n, g):
    return torch.randint(0, 24, (n, 8), generator=g)


CASES = {
    # name: (build, inputs, number of classes, output=)
    "resnet18": (ResNet18, _images, 4, None),
    "mobilenetv2": (MobileNetV2, _images, 4, None),
    "vit": (ViT, _images, 4, None),
    "conv1d": (Conv1dTagger, lambda n, g: torch.randn(n, 6, 20, generator=g, dtype=torch.float64), 4,
               lambda out: out["logits"].mean(1)),
    "gpt": (GPT, _tokens, 8, lambda out: out[0][:, -1]),  # next tokens 0-7: eight classes of 64 inputs
}


def serve(name: str, n: int = 64, seed: int = 0, epochs: int = 2, verbose: bool = True) -> dict:
    """Fit statistics on ``n`` random inputs, serve a request forgetting the class of the first one, and return
    ``{"coverage", "cgs", "leak", "moved"}`` (leak: per projected layer, the share of its change inside its CGS)."""
    build, inputs, classes, output = CASES[name]
    torch.manual_seed(seed)
    model = build().double().eval()
    g = torch.Generator().manual_seed(seed)
    x = inputs(n, g)
    y = torch.randperm(n, generator=g) % classes  # every class present; the request forgets one
    stats = pgu.GramStats().fit(model, [(x, y)])
    table = pgu.coverage(model, stats=stats)
    forget = y == 1
    result = pgu.unlearn(model, [(x[forget], y[forget])], stats, mode="class", stop="none", epochs=epochs,
                         lr=0.05, output=output)
    leak = pgu.projection_residual(model, result.model, result.cgs)
    before, after = dict(model.named_parameters()), dict(result.model.named_parameters())
    moved = {p for p in before if not torch.equal(before[p], after[p])}
    if verbose:
        print(f"== {name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"forget class 1 ({int(forget.sum())} of {n} inputs)")
        print(table)
        print("CGS ranks:", result.cgs.summary())
        worst = max(leak.values())
        print(f"largest share of a weight change inside its CGS: {worst:.1e} "
              f"({'OK' if worst <= 1e-4 else 'LEAK'}; {len(moved)} parameters moved)\n")
    return {"coverage": table, "cgs": result.cgs, "leak": leak, "moved": moved}


if __name__ == "__main__":
    for case in CASES:
        serve(case)
