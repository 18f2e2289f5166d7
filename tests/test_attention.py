"""nn.MultiheadAttention (issue 22, item 2): the rows of in_proj_weight and of out_proj (which the module
applies without calling it) against an explicit per-head loop, a transformer whose every weight is covered
with the fused fast path off during the pass, and requests whose change stays outside the CGS."""

import math
import warnings

import pytest
import torch
from torch import nn

import pgu
from pgu.gram.layers import adapter_for


@torch.no_grad()
def _attention_before_out_proj(mha: nn.MultiheadAttention, q, k, v, key_padding_mask=None) -> torch.Tensor:
    """Per sample, per head, per query position: softmax(q k^T / sqrt(d)) v, written out (batch_first inputs)."""
    e, h = mha.embed_dim, mha.num_heads
    d = e // h
    w_q, w_k, w_v = mha.in_proj_weight.double().split(e)
    b_q, b_k, b_v = mha.in_proj_bias.double().split(e)
    out = torch.zeros(q.shape[0], q.shape[1], e, dtype=torch.float64)
    for n in range(q.shape[0]):
        qq, kk, vv = q[n].double() @ w_q.T + b_q, k[n].double() @ w_k.T + b_k, v[n].double() @ w_v.T + b_v
        for head in range(h):
            cols = slice(head * d, (head + 1) * d)
            for i in range(q.shape[1]):
                scores = [float(qq[i, cols] @ kk[j, cols]) / math.sqrt(d) for j in range(k.shape[1])]
                if key_padding_mask is not None:
                    scores = [s if not key_padding_mask[n, j] else -math.inf for j, s in enumerate(scores)]
                weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
                out[n, i, cols] = sum(weights[j] * vv[j, cols] for j in range(k.shape[1]))
    return out


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention_rows_match_the_explicit_loop(cross):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    q = torch.randn(3, 4, 8)
    k = torch.randn(3, 5, 8) if cross else q
    mask = torch.zeros(3, k.shape[1], dtype=torch.bool)
    mask[1, -2:] = True
    model = nn.Module()
    model.attn = mha
    feeds = adapter_for(mha).feeds(mha, (q, k, k), {"key_padding_mask": mask})
    expected_in = torch.cat([q.reshape(-1, 8), k.reshape(-1, 8)]) if cross else q.reshape(-1, 8)
    assert torch.equal(feeds[""], expected_in)  # each distinct input once
    oracle = _attention_before_out_proj(mha, q, k, k, mask).reshape(-1, 8)
    assert torch.allclose(feeds["out_proj"].double(), oracle, atol=1e-5)
    with torch.no_grad():  # out_proj applied to those rows is the module's output
        out = mha(q, k, k, key_padding_mask=mask, need_weights=False)[0]
        assert torch.allclose(mha.out_proj(feeds["out_proj"]), out.reshape(-1, 8), atol=1e-5)


class TinyViT(nn.Module):
    """Patches -> Linear, a class token and positions (free tensors), 2 encoder layers, a head."""

    def __init__(self, classes=3):
        super().__init__()
        self.patch = nn.Linear(16, 32)
        self.cls = nn.Parameter(torch.zeros(1, 1, 32))
        self.pos = nn.Parameter(torch.randn(1, 5, 32) * 0.02)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        h = self.patch(x.reshape(x.shape[0], 4, 16))
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], 1) + self.pos
        return self.head(self.encoder(h)[:, 0])


def test_a_transformer_is_covered_and_its_request_stays_outside_the_cgs():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x, y = torch.randn(90, 64), torch.arange(90) % 3
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layer left unseen, nothing frozen without a word
        stats = pgu.GramStats().fit(model, [(x, y)])
    assert torch.backends.mha.get_fastpath_enabled() == fastpath  # restored
    for i in range(2):
        assert stats.n_rows_[f"encoder.layers.{i}.self_attn"] == 90 * 5
        assert stats.n_rows_[f"encoder.layers.{i}.self_attn.out_proj"] == 90 * 5
    cov = {e.name: e for e in pgu.coverage(model, stats=stats)}
    assert cov["encoder.layers.0.self_attn.in_proj_weight"].status == "projected"
    assert cov["encoder.layers.0.self_attn.out_proj.weight"].status == "projected"
    assert cov["cls"].status == "frozen" and cov["cls"].chosen and "free tensor" in cov["cls"].reason
    assert not [e for e in cov.values() if not e.chosen]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = pgu.unlearn(model, [(x[y == 0], y[y == 0])], stats, mode="class", stop="none", epochs=3, lr=0.3)
    moved = result.model.encoder.layers[0].self_attn.in_proj_weight - model.encoder.layers[0].self_attn.in_proj_weight
    assert float(moved.abs().max()) > 0
    leak = pgu.projection_residual(model, result.model, result.cgs)
    assert max(leak.values()) <= 1e-4, leak


def test_separate_qkv_weights_are_frozen_with_the_reason():
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)
    model = nn.Module()
    model.attn = mha
    frozen = {e.name: e for e in pgu.coverage(model) if e.status == "frozen"}
    assert not frozen["attn.q_proj_weight"].chosen and "kdim/vdim" in frozen["attn.q_proj_weight"].reason
