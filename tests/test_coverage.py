"""Coverage (every trainable parameter projected or frozen, with the reason), weight sharing across
modules, and models whose output is not a bare logits tensor (issue 22, items 1 and 3)."""

import warnings

import pytest
import torch
from conftest import TinyLM
from torch import nn

import pgu
from pgu.coverage import coverage
from pgu.evaluation import predict
from pgu.outputs import OutputError, logits_of, logits_output


class Mixed(nn.Module):
    """One of every kind of parameter the coverage table distinguishes."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.token = nn.Parameter(torch.zeros(1, 1, 8))
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, groups=2)
        self.unsupported = nn.Conv3d(2, 2, 1)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)
        self.fixed = nn.Linear(8, 8)
        self.fixed.weight.requires_grad_(False)
        self.fixed.bias.requires_grad_(False)

    def forward(self, t):
        h = self.norm(self.emb(t) + self.token)
        h = self.attn(h, h, h, need_weights=False)[0]
        h = self.conv1d(h.transpose(1, 2)).transpose(1, 2)
        return self.head(torch.relu(self.fc(h)).mean(1))


def _by_name(cov):
    return {e.name: e for e in cov}


def test_every_trainable_parameter_is_listed_once_with_its_status():
    model = Mixed()
    cov = _by_name(coverage(model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(cov) == sorted(trainable)
    projected = {n for n, e in cov.items() if e.status == "projected"}
    assert projected == {"fc.weight", "head.weight", "attn.in_proj_weight", "attn.out_proj.weight", "conv1d.weight",
                         "emb.weight", "grouped.weight"}
    assert "2 groups" in cov["grouped.weight"].reason
    # frozen by policy: no warning
    for name in ("fc.bias", "norm.weight", "norm.bias", "token"):
        assert cov[name].status == "frozen" and cov[name].chosen, name
    assert "authors" in cov["fc.bias"].reason and "normalisation" in cov["norm.weight"].reason
    assert "free tensor" in cov["token"].reason
    # frozen because pgu cannot project them: each with its reason
    for name in ("unsupported.weight", "unsupported.bias"):
        assert cov[name].status == "frozen" and not cov[name].chosen, name
    assert "no PGU adapter for Conv3d" in cov["unsupported.weight"].reason


def test_projected_bias_and_chosen_layers_change_the_table():
    model = Mixed()
    cov = _by_name(coverage(model, bias="projected"))
    assert cov["fc.bias"].status == "projected" and cov["head.bias"].status == "projected"
    cov = _by_name(coverage(model, layers=["head"]))
    assert cov["head.weight"].status == "projected"
    assert cov["fc.weight"].status == "frozen" and cov["fc.weight"].chosen  # left out by the user
    assert not cov["unsupported.weight"].chosen  # still not projectable
    with pytest.raises(ValueError, match="bias"):
        coverage(model, bias="sometimes")


def test_table_and_summary_count_values():
    model = Mixed()
    cov = coverage(model)
    table = cov.table()
    for e in cov:
        assert e.name in table
    assert cov.numel("projected") == 8 * 8 + 3 * 8 + 8 * 8 + 8 * 8 * 3 + 30 * 8 + 24 * 8 + 4 * 2 * 3 * 3
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert cov.numel("projected") + cov.numel("frozen") == total
    assert "not by choice" in cov.summary()


def test_a_module_called_twice_is_not_weight_tying():
    layer = nn.Linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU(), layer, nn.Flatten(), nn.Linear(4, 2))
    cov = _by_name(coverage(model))
    assert cov["0.weight"].status == "projected"
    stats = pgu.GramStats().fit(model, [torch.randn(8, 4)])
    assert stats.n_rows_["0"] == 16  # both calls' rows


def _with_frozen_layer_warning(model, tokens, labels, **kw):
    stats = pgu.GramStats().fit(model, [(tokens, labels)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pgu.unlearn(model, [(tokens[:8], labels[:8])], stats, mode="class", stop="none", epochs=2, **kw)
    return result, [str(w.message) for w in caught if "cannot project" in str(w.message)]


class Pooled(nn.Module):
    def __init__(self, kind="tensor"):
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(30, 8)
        self.mixer = nn.Bilinear(8, 8, 8)  # no adapter: frozen, with a warning
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, t):
        e = self.emb(t)
        h = self.mixer(e, e)
        logits = self.head(torch.relu(self.fc(h)).mean(1))
        if self.kind == "dict":
            return {"logits": logits, "hidden": None}
        if self.kind == "tuple":
            return logits, torch.zeros(())
        if self.kind == "attr":
            return type("ModelOutput", (), {"logits": logits, "loss": None})()
        return logits


def test_unlearn_warns_once_about_parameters_it_cannot_project():
    torch.manual_seed(0)
    tokens, labels = torch.randint(0, 30, (64, 5)), torch.randint(0, 4, (64,))
    model = Pooled()
    result, messages = _with_frozen_layer_warning(model, tokens, labels)
    assert len(messages) == 1 and "mixer (Bilinear" in messages[0]
    assert torch.equal(result.model.mixer.weight, model.mixer.weight)
    assert not torch.equal(result.model.emb.weight, model.emb.weight)  # an Embedding is projected
    model.mixer.requires_grad_(False)  # the user freezes it: no warning
    _, messages = _with_frozen_layer_warning(model, tokens, labels)
    assert messages == []


@pytest.mark.parametrize("kind", ["dict", "tuple", "attr"])
def test_outputs_other_than_a_tensor_give_the_same_request(kind):
    torch.manual_seed(0)
    tokens, labels = torch.randint(0, 30, (64, 5)), torch.randint(0, 4, (64,))
    plain = Pooled()
    other = Pooled(kind)
    other.load_state_dict(plain.state_dict())
    r_plain, _ = _with_frozen_layer_warning(plain, tokens, labels)
    r_other, _ = _with_frozen_layer_warning(other, tokens, labels)
    assert r_other.epochs == r_plain.epochs == 2
    for k, v in r_plain.model.state_dict().items():
        assert torch.equal(v, r_other.model.state_dict()[k]), k
    assert not other._forward_hooks and not r_other.model._forward_hooks  # the hook is gone
    logits, _ = predict(other, [(tokens, labels)])
    assert torch.allclose(logits, plain(tokens))


def test_sequence_logits_need_a_reduction_and_say_how():
    torch.manual_seed(0)
    model = TinyLM(tie=False)
    tokens = torch.randint(0, 20, (32, 5))
    labels = tokens[:, -1]
    stats = pgu.GramStats().fit(model, [(tokens, labels)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    warnings.simplefilter("ignore")  # the frozen embedding's warning (pytest restores the filters)
    with pytest.raises(OutputError, match=r"\[32, 5, 20\].*Classifiers: reduce to \[batch, classes\] logits"):
        pgu.unlearn(model, [(tokens, labels)], stats, mode="class", stop="none", epochs=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing lost
    result = pgu.unlearn(model, [(tokens[:8], labels[:8])], stats, mode="class", stop="none", epochs=2,
                         output=lambda out: out[0][:, -1])
    assert result.epochs == 2
    assert not torch.equal(result.model.mlp.weight, model.mlp.weight)
    with pytest.raises(TypeError, match="output must be a callable"):
        pgu.unlearn(model, [(tokens, labels)], stats, mode="class", stop="none", output="logits")


def test_logits_of_reads_each_form_and_refuses_others():
    x = torch.randn(4, 3)
    assert logits_of(x) is x
    assert logits_of({"logits": x}) is x
    assert logits_of((x, None)) is x
    assert logits_of(type("O", (), {"logits": x})()) is x
    assert logits_of({"out": x}, select=lambda o: o["out"]) is x
    with pytest.raises(OutputError, match="not a logits tensor"):
        logits_of({"hidden": x})
    with pytest.raises(OutputError, match="classes >= 2"):
        logits_of(torch.randn(4, 1))
    with pytest.raises(OutputError, match="output= failed"):
        logits_of({"a": x}, select=lambda o: o["missing"])
    model = nn.Linear(3, 2)
    with logits_output(model):
        assert len(model._forward_hooks) == 1
    assert not model._forward_hooks


def test_a_layer_the_statistics_never_saw_is_reported_frozen():
    """A covered layer the forward never calls has no rows: it stays frozen, and the table says so."""
    torch.manual_seed(0)

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.used(x).relu())

    model = Skips()
    with pytest.warns(UserWarning, match="never called"):
        stats = pgu.GramStats().fit(model, [torch.randn(16, 4)])
    assert stats.n_rows_["unused"] == 0
    cov = _by_name(coverage(model, stats=stats))
    assert cov["unused.weight"].status == "frozen" and not cov["unused.weight"].chosen
    assert "never called" in cov["unused.weight"].reason
    assert cov["used.weight"].status == "projected"
