"""Weight tying (issue 22, item 1): an embedding and a Linear head sharing one matrix are projected on
both sides, ``dW <- (I - P_tokens) dW (I - P_hidden)`` (pgu.gram.lookup); any other sharing is refused."""

import pytest
import torch
from conftest import TinyLM
from torch import nn

import pgu
from pgu.coverage import coverage
from pgu.gram.layers import UnsupportedLayerError
from pgu.projection import GradientProjector, projection_residual
from pgu.subspace import CoreGradientSpace
from pgu.zoo.runs import ModelSpec, load_model, save_model


def last_position(out):
    """The user's reduction of a sequence model's output to [batch, classes] logits."""
    return out[0][:, -1]


def retain_and_forget(seed=0, vocab=20, kept=14):
    """Retained sequences use tokens below ``kept`` only; forget sequences are made of the others."""
    g = torch.Generator().manual_seed(seed)
    retain = torch.randint(0, kept, (64, 5), generator=g)
    forget = torch.randint(kept, vocab, (16, 5), generator=g)
    return retain, forget


def test_coverage_lists_the_tied_weight_once_as_projected_on_both_sides():
    cov = {e.name: e for e in coverage(TinyLM())}
    assert "lm_head.weight" not in cov  # the same tensor, listed once under its first owner
    assert cov["wte.weight"].status == "projected" and "lm_head" in cov["wte.weight"].reason
    assert not coverage(TinyLM()).unexpected


@pytest.mark.parametrize("head_bias", [False, True])
def test_projected_gradient_equals_the_two_sided_oracle(head_bias):
    torch.manual_seed(0)
    model = TinyLM(head_bias=head_bias)
    retain, _ = retain_and_forget()
    stats = pgu.GramStats().fit(model, [(retain, retain[:, -1])])
    bias = "projected" if head_bias else "frozen"
    cgs = CoreGradientSpace(threshold=0.9, bias=bias).fit(stats)
    projector = GradientProjector(model, cgs)
    grad_w = torch.randn_like(model.wte.weight)
    grad_b = torch.randn(20) if head_bias else None
    model.wte.weight.grad = grad_w.clone()
    if head_bias:
        model.lm_head.bias.grad = grad_b.clone()
    projector.project_()
    mask = cgs.basis_["wte"]  # (V,) 0/1: the tokens the CGS holds (the embedding's Gram is diagonal)
    m_t = torch.eye(20, dtype=torch.float64)[:, mask > 0.5]  # (V, k): token space
    m_h = cgs.basis_["lm_head"]  # (E [+1], k): hidden space
    joined = grad_w.double() if not head_bias else torch.cat([grad_w.double(), grad_b.double()[:, None]], 1)
    left = torch.eye(20, dtype=torch.float64) - m_t @ m_t.T
    right = torch.eye(joined.shape[1], dtype=torch.float64) - m_h @ m_h.T
    expected = left @ joined @ right
    got = model.wte.weight.grad.double()
    if head_bias:
        got = torch.cat([got, model.lm_head.bias.grad.double()[:, None]], 1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert float((m_t.T @ got[:, :8]).norm()) < 1e-5 and float((got @ m_h).norm()) < 1e-5
    assert 0 < m_t.shape[1] < 20 and 0 < m_h.shape[1] < joined.shape[1]  # both sides really project
    assert sum(p is model.wte.weight for p in projector.projected_params) == 1  # one tensor, stepped once


def test_a_request_moves_the_tied_weight_only_outside_both_subspaces():
    torch.manual_seed(0)
    model = TinyLM()
    retain, forget = retain_and_forget()
    stats = pgu.GramStats().fit(model, [(torch.cat([retain, forget]), torch.cat([retain, forget])[:, -1])])
    before = model.wte.weight.detach().clone()
    result = pgu.unlearn(model, [(forget, forget[:, -1])], stats, mode="class", stop="none", epochs=3,
                         lr=0.5, output=last_position)
    after = result.model
    assert after.lm_head.weight is after.wte.weight  # the copy keeps the tie
    assert torch.equal(model.wte.weight, before)  # the caller's model is untouched
    change = after.wte.weight.detach() - before
    assert float(change.norm()) > 1e-3  # the request did move the shared matrix
    held = result.cgs.basis_["wte"] > 0.5  # tokens whose one-hot rows the CGS holds
    assert held[:14].sum() >= 10 and not held[14:].any()  # the frequent retained tokens, no forget token
    assert float(change[held].abs().max()) < 1e-6  # ...keep their embeddings
    leak = projection_residual(model, after, result.cgs)
    assert leak["wte"] <= 1e-4 and leak["lm_head"] <= 1e-4, leak


def test_other_sharing_is_still_refused_naming_both():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(UnsupportedLayerError, match="weight tying") as info:
        coverage(TwoHeads())
    assert "a.weight" in str(info.value) and "b.weight" in str(info.value)
    with pytest.raises(UnsupportedLayerError, match="weight tying"):
        pgu.GramStats().fit(TwoHeads(), [torch.randn(2, 4)])
    with pytest.raises(UnsupportedLayerError, match="weight tying"):
        pgu.GramStats(["a"]).fit(TwoHeads(), [torch.randn(2, 4)])
    # one layer of a tied pair left out: the other would move it unchecked
    with pytest.raises(UnsupportedLayerError, match="wte.weight"):
        pgu.GramStats(["lm_head", "mlp"]).fit(TinyLM(), [(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2))])


MODEL_FILE = """
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, 8)
        self.lm_head = nn.Linear(8, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, t):
        return self.lm_head(self.wte(t))[:, -1]


def build(num_classes):
    return TinyLM(num_classes)
"""


def test_a_tied_model_saves_and_loads_with_its_tie(tmp_path):
    (tmp_path / "lm.py").write_text(MODEL_FILE)
    spec = ModelSpec(name=f"{tmp_path / 'lm.py'}:build", num_classes=20, in_channels=1)
    model = spec.build()
    save_model(tmp_path / "m.safetensors", model, spec)  # safetensors refuses tensors that share memory
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.lm_head.weight is loaded.wte.weight
    assert torch.equal(loaded.wte.weight, model.wte.weight)
