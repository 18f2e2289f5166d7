import math

import pytest
import torch
from torch import nn

import pgu
from pgu.zoo.models import available_models, build_model

# name -> (num_classes, in_channels, usual input size)
CASES = {
    "lenet": (10, 1, 28),
    "allcnn": (10, 3, 32),
    "smallvgg": (10, 3, 32),
    "resnet18": (10, 3, 32),
    "resnet18@64": (200, 3, 64),
    "digits-cnn": (10, 1, 8),
}


def _build(case, width=1.0, **kw):
    k, c, s = CASES[case]
    return build_model(case.split("@")[0], num_classes=k, in_channels=c, width=width, input_size=s, **kw), (c, s, k)


# -- independent parameter counts ------------------------------------------------------------

def conv(c_in, c_out, k, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c


def fc(i, o):
    return i * o + o


def lenet_params(k=10, c=1, s=28):
    return conv(c, 32, 5, True) + conv(32, 64, 5, True) + fc(64 * (s // 4) ** 2, 128) + fc(128, k)


def allcnn_params(k=10, c=3):
    a, b = 96, 192
    convs = conv(c, a, 3) + conv(a, a, 3) + conv(a, b, 3) + 4 * conv(b, b, 3) + conv(b, b, 1)
    return convs + bn(a) * 2 + bn(b) * 6 + fc(b, k)


def smallvgg_params(k=10, c=3):
    return (conv(c, 128, 3, True) + bn(128) + conv(128, 256, 3, True) + bn(256) + conv(256, 512, 3, True) + bn(512)
            + fc(512 * 4 * 4, 512) + bn(512) + fc(512, k))


def resnet18_params(k=10, c=3, stem_kernel=3):
    total = conv(c, 64, stem_kernel) + bn(64)
    c_in = 64
    for c_out in (64, 128, 256, 512):
        for block in range(2):
            total += conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
            if c_in != c_out:
                total += conv(c_in, c_out, 1) + bn(c_out)
            c_in = c_out
    return total + fc(512, k)


@pytest.mark.parametrize("case, formula, by_hand", [
    # 832 + 51,264 + (3136*128 + 128 = 401,536) + 1,290
    ("lenet", lenet_params(), 454_922),
    # convs 2,592 + 82,944 + 165,888 + 4*331,776 + 36,864 = 1,615,392; BN 2*96*2 + 6*192*2 = 2,688; fc 1,930
    ("allcnn", allcnn_params(), 1_620_010),
    # 3,584 + 256 + 295,168 + 512 + 1,180,160 + 1,024 + 4,194,816 + 1,024 + 5,130
    ("smallvgg", smallvgg_params(), 5_681_674),
    # torchvision's resnet18 (1000 classes) has 11,689,512: minus its 7x7 stem (9,408) plus a 3x3 one
    # (1,728), minus fc 513,000 plus fc 5,130
    ("resnet18", resnet18_params(), 11_173_962),
    # the same 11,689,512 with its 7x7 stem, minus fc 513,000 plus fc 512*200 + 200 = 102,600
    ("resnet18@64", resnet18_params(200, stem_kernel=7), 11_279_112),
])
def test_parameter_counts_at_full_width(case, formula, by_hand):
    model, _ = _build(case)
    assert formula == by_hand
    assert sum(p.numel() for p in model.parameters()) == by_hand


# -- shapes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [0.5, 1.0])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_shape(case, width):
    model, (c, s, k) = _build(case, width)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, c, s, s)).shape == (2, k)


@pytest.mark.parametrize("case", list(CASES))
def test_trains_one_step(case):
    model, (c, s, k) = _build(case, 0.25)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, c, s, s)), torch.arange(4) % k)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_width_scales_channels():
    allcnn = build_model("allcnn", num_classes=10, in_channels=3, width=1 / 3)
    assert [m.out_channels for m in allcnn.modules() if isinstance(m, nn.Conv2d)] == [32, 32] + [64] * 6
    half = build_model("resnet18", num_classes=10, in_channels=3, width=0.5)
    assert half.fc.in_features == 256 and half.conv1.out_channels == 32
    vgg = build_model("smallvgg", num_classes=10, in_channels=3, width=0.5)
    assert [m.out_features for m in vgg.modules() if isinstance(m, nn.Linear)] == [256, 10]
    lenet = build_model("lenet", num_classes=10, in_channels=1, width=0.5)
    assert [m.out_channels for m in lenet.modules() if isinstance(m, nn.Conv2d)] == [16, 32]


def test_resnet_stems_follow_input_size():
    cifar = build_model("resnet18", num_classes=10, in_channels=3)
    tiny = build_model("resnet18", num_classes=200, in_channels=3, input_size=64)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1) and isinstance(cifar.maxpool, nn.Identity)
    assert tiny.conv1.kernel_size == (7, 7) and tiny.conv1.stride == (2, 2) and isinstance(tiny.maxpool, nn.MaxPool2d)
    shortcuts = [n for n, m in cifar.named_modules() if n.endswith("downsample.0")]
    assert shortcuts == ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]


@pytest.mark.parametrize("name, c, s", [("lenet", 1, 32), ("smallvgg", 3, 28), ("allcnn", 3, 24), ("resnet18", 3, 40)])
def test_other_input_sizes(name, c, s):
    model = build_model(name, num_classes=5, in_channels=c, width=0.25, input_size=s).eval()
    with torch.no_grad():
        assert model(torch.randn(2, c, s, s)).shape == (2, 5)


# -- what PGU needs of a model ---------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_parameters_live_in_supported_modules(case):
    model, _ = _build(case, 0.25)
    allowed = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
    owners = {}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own:
            assert isinstance(module, allowed), f"{name} ({type(module).__name__}) holds parameters"
        for p in own:
            assert id(p) not in owners, f"{name} shares a parameter with {owners[id(p)]}"
            owners[id(p)] = name
        if isinstance(module, nn.Conv2d):
            assert module.groups == 1
    assert len(owners) == len(list(model.parameters()))


@pytest.mark.parametrize("case", list(CASES))
def test_gram_stats_cover_every_weight_layer(case):
    model, (c, s, _) = _build(case, 0.25)
    stats = pgu.GramStats().fit(model, [torch.randn(3, c, s, s)])
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(stats.gram_) == set(layers)
    for name, module in layers.items():
        d = module.weight.reshape(module.weight.shape[0], -1).shape[1]
        assert stats.gram_[name].shape == (d, d)
    assert stats.n_samples_ == 3
    assert model.training  # the pass restores the mode


# -- refusals --------------------------------------------------------------------------------

def test_registry_lists_the_models():
    assert set(available_models()) >= {"digits-cnn", "lenet", "allcnn", "smallvgg", "resnet18"}


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        build_model("resnet19", num_classes=10, in_channels=3)


@pytest.mark.parametrize("width", [0, -1, math.nan, math.inf, "1", True, None])
def test_bad_width_raises(width):
    with pytest.raises(ValueError, match="width"):
        build_model("allcnn", num_classes=10, in_channels=3, width=width)


@pytest.mark.parametrize("name, size", [("lenet", 3), ("smallvgg", 7), ("allcnn", 0), ("resnet18", -4),
                                        ("resnet18", 32.0), ("lenet", True)])
def test_bad_input_size_raises(name, size):
    with pytest.raises(ValueError, match="input_size"):
        build_model(name, num_classes=10, in_channels=3, input_size=size)


@pytest.mark.parametrize("kw", [{"num_classes": 0, "in_channels": 3}, {"num_classes": 10, "in_channels": 2.0}])
def test_bad_class_or_channel_counts_raise(kw):
    with pytest.raises(ValueError, match="positive integer"):
        build_model("allcnn", **kw)


# -- the ViT (issue 22, item 5) ----------------------------------------------------------------

def test_vit_shapes_and_coverage():
    model = build_model("vit", num_classes=10, in_channels=1, width=0.5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cifar = build_model("vit", num_classes=10, in_channels=3, input_size=32)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    table = pgu.coverage(model)
    assert not table.unexpected  # nothing frozen but by policy
    projected = {e.name for e in table.projected}
    assert "encoder.layers.3.self_attn.in_proj_weight" in projected and "patch_embed.weight" in projected
    frozen = {e.name: e.reason for e in table.frozen}
    assert "free tensor" in frozen["cls_token"] and "free tensor" in frozen["pos_embed"]
    stats = pgu.GramStats().fit(model, [torch.randn(4, 1, 28, 28)])
    assert stats.n_rows_["encoder.layers.0.self_attn"] == 4 * 17  # every token of every image, once
    assert stats.n_rows_["encoder.layers.0.self_attn.out_proj"] == 4 * 17
    with pytest.raises(ValueError, match="input_size"):
        build_model("vit", num_classes=10, in_channels=1, input_size=30)
