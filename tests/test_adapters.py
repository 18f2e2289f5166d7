"""Layer adapters beyond Linear and Conv2d (issue 22, item 2), each exact against a per-row oracle:
the rows reproduce the layer's output, the Gram equals an explicit loop, and a request's change stays
outside the CGS."""

import warnings

import pytest
import torch
from torch import nn

import pgu
from pgu.gram.layers import adapter_for
from pgu.testing import explicit_rows

CONV1D_CASES = [
    dict(),
    dict(padding=2),
    dict(padding="same", dilation=2),
    dict(padding="valid", stride=3),
    dict(stride=2, padding=1, padding_mode="reflect"),
    dict(padding=3, padding_mode="circular", dilation=2),
    dict(padding=1, padding_mode="replicate", bias=False),
]


@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_rows_reproduce_the_layer_and_match_the_explicit_loop(case):
    torch.manual_seed(0)
    layer = nn.Conv1d(3, 5, 3, **case).double()
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    rows = adapter_for(layer).rows(layer, x)
    assert torch.equal(rows, explicit_rows(layer, x))
    out = rows @ layer.weight.reshape(5, -1).T
    if layer.bias is not None:
        out = out + layer.bias
    assert torch.allclose(out.reshape(2, -1, 5).permute(0, 2, 1), layer(x), atol=1e-12)
    stats = pgu.GramStats(precision="float64").fit(nn.Sequential(layer), [x])
    oracle = explicit_rows(layer, x)
    assert torch.allclose(stats.gram_["0"], oracle.T @ oracle, atol=1e-10)
    assert stats.n_rows_["0"] == oracle.shape[0]


class Conv1dNet(nn.Module):
    """A small 1-D conv classifier (sequences of 4 channels)."""

    def __init__(self, classes=3, groups_last=1):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding="same")
        self.c2 = nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=groups_last)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(h.mean(2))


def test_a_1d_conv_net_is_covered_and_its_request_stays_outside_the_cgs():
    torch.manual_seed(0)
    model = Conv1dNet()
    x, y = torch.randn(96, 4, 20), torch.randint(0, 3, (96,))
    cov = {e.name: e.status for e in pgu.coverage(model)}
    assert cov["c1.weight"] == cov["c2.weight"] == cov["head.weight"] == "projected"
    stats = pgu.GramStats().fit(model, [(x, y)])
    assert stats.layer_names == ["c1", "c2", "head"]
    forget = [(x[y == 0], y[y == 0])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing frozen without a word
        result = pgu.unlearn(model, forget, stats, mode="class", stop="none", epochs=3, lr=0.5)
    moved = {n for n in ("c1", "c2", "head")
             if not torch.equal(getattr(model, n).weight, getattr(result.model, n).weight)}
    assert moved == {"c1", "c2", "head"}
    leak = pgu.projection_residual(model, result.model, result.cgs)
    assert max(leak.values()) <= 1e-4, leak


def test_embedding_gram_is_the_token_counts_and_matches_the_one_hot_oracle():
    torch.manual_seed(0)
    layer = nn.Embedding(12, 4)
    tokens = torch.randint(0, 12, (5, 7))
    stats = pgu.GramStats().fit(nn.Sequential(layer), [tokens])
    rows = explicit_rows(layer, tokens)
    assert stats.gram_["0"].shape == (12,)  # kept as its diagonal
    assert torch.equal(torch.diag(stats.gram_["0"]), rows.T @ rows)
    assert torch.equal(stats.gram_["0"], torch.bincount(tokens.flatten(), minlength=12).double())
    assert stats.n_rows_["0"] == tokens.numel()
    assert torch.allclose(rows @ layer.weight.double(), layer(tokens).reshape(-1, 4).double())  # weight.T @ onehot


class TokenNet(nn.Module):
    """Token ids -> embedding -> mean over positions -> linear: the embedding is the first covered layer."""

    def __init__(self, vocab=24, dim=8, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, t):
        return self.head(torch.relu(self.fc(self.emb(t).mean(1))))


def test_an_embedding_request_leaves_retained_tokens_alone():
    """Class 0's sequences use tokens 0-7 only, the others 8-23: the retained tokens' embeddings are the CGS."""
    torch.manual_seed(0)
    n = 90
    y = torch.arange(n) % 3
    t = torch.where((y == 0)[:, None], torch.randint(0, 8, (n, 6)), torch.randint(8, 24, (n, 6)))
    model = TokenNet()
    stats = pgu.GramStats().fit(model, [(t, y)])
    forget = [(t[y == 0], y[y == 0])]
    result = pgu.unlearn(model, forget, stats, mode="class", stop="none", epochs=3, lr=1.0, threshold=0.99)
    change = (result.model.emb.weight - model.emb.weight).detach().abs().sum(1)
    assert float(change[8:].max()) < 1e-6  # tokens the retained data use: in the CGS, untouched
    assert float(change[:8].min()) > 0  # tokens only the forget set uses: free to move
    leak = pgu.projection_residual(model, result.model, result.cgs)
    assert max(leak.values()) <= 1e-4, leak


@pgu.register_transposed_linear
class GPT2Conv1D(nn.Module):
    """GPT-2's Conv1D, written out: weight stored (in, out), applied as x @ weight + bias."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("bias", ["frozen", "projected"])
def test_a_transposed_weight_linear_is_projected_on_its_transpose(bias):
    torch.manual_seed(0)
    model = nn.Sequential(GPT2Conv1D(16, 6), nn.ReLU(), GPT2Conv1D(3, 16))
    x, y = torch.randn(60, 6), torch.arange(60) % 3
    rows = adapter_for(model[0]).rows(model[0], x)
    assert torch.allclose(rows @ model[0].weight + model[0].bias, model[0](x))
    stats = pgu.GramStats().fit(model, [(x, y)])
    assert stats.layer_info_["0"]["weight_shape"] == [16, 6]  # (C_out, d), the weight's transpose
    result = pgu.unlearn(model, [(x[y == 1], y[y == 1])], stats, mode="class", stop="none", epochs=3, lr=0.5,
                         bias=bias, threshold=0.8)
    assert not torch.equal(result.model[0].weight, model[0].weight)
    leak = pgu.projection_residual(model, result.model, result.cgs)
    assert max(leak.values()) <= 1e-4, leak


def test_a_diagonal_embedding_cgs_projects_as_the_dense_one():
    """The (V,) count vector and its 0/1 mask give the projection the dense Gram diag(counts) gives."""
    import copy

    from pgu.projection import GradientProjector
    from pgu.subspace import CoreGradientSpace

    torch.manual_seed(0)
    model = TokenNet(vocab=12)
    tokens = torch.cat([torch.full((k + 1,), k) for k in range(12)]).reshape(1, -1)  # token k seen k + 1 times
    stats = pgu.GramStats().fit(model, [(tokens, torch.zeros(1, dtype=torch.long))])
    dense = copy.deepcopy(stats)
    dense.gram_["emb"] = torch.diag(stats.gram_["emb"])
    del dense.layer_info_["emb"]["gram"]
    grads = {}
    for which, s in (("diagonal", stats), ("dense", dense)):
        cgs = CoreGradientSpace(threshold=0.8).fit(s)
        model.emb.weight.grad = torch.arange(12 * 8, dtype=torch.float32).reshape(12, 8)
        GradientProjector(model, cgs).project_()
        grads[which] = model.emb.weight.grad.clone()
        if which == "diagonal":
            mask = cgs.basis_["emb"]
            assert mask.shape == (12,) and mask.sum() == cgs.rank_["emb"] and 0 < cgs.rank_["emb"] < 12
            assert torch.equal(mask[-cgs.rank_["emb"]:], torch.ones(cgs.rank_["emb"], dtype=torch.float64))
    assert torch.allclose(grads["diagonal"], grads["dense"], atol=1e-4)


def test_a_vocabulary_whose_dense_gram_would_not_fit_is_covered():
    """60,000 tokens: a dense Gram would take 28.8 GB; the diagonal takes 480 kB."""
    torch.manual_seed(0)
    model = TokenNet(vocab=60_000, dim=4)
    y = torch.arange(64) % 3
    t = torch.where((y == 0)[:, None], torch.randint(0, 30_000, (64, 6)), torch.randint(30_000, 60_000, (64, 6)))
    stats = pgu.GramStats().fit(model, [(t, y)])
    assert stats.gram_["emb"].shape == (60_000,) and stats.nbytes["emb"] == 2 * 8 * 60_000
    result = pgu.unlearn(model, [(t[y == 0], y[y == 0])], stats, mode="class", stop="none", epochs=2, lr=1.0,
                         threshold=0.99)
    change = (result.model.emb.weight - model.emb.weight).detach().abs().sum(1)
    retained = torch.unique(t[y != 0])
    assert float(change[retained].max()) < 1e-6 and float(change.max()) > 0
    assert max(pgu.projection_residual(model, result.model, result.cgs).values()) <= 1e-4
