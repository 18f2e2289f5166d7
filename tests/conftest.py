import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def batches(x, y=None, size=16):
    """A re-iterable list of (inputs, targets) batches (or bare inputs when y is None)."""
    if y is None:
        return [x[i : i + size] for i in range(0, len(x), size)]
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def play(rule, start, epochs):
    """Feed a stopping rule (forget, val) accuracies; return (epoch stopped at, decision) or (None, None)."""
    decision = rule.start(*start)
    if decision:
        return 0, decision
    for e, (a_f, a_v) in enumerate(epochs, start=1):
        decision = rule.after_epoch(a_f, a_v)
        if decision:
            return e, decision
    return None, None


class TinyLM(nn.Module):
    """nanoGPT-style: the output head shares its weight with the token embedding."""

    def __init__(self, vocab=20, dim=8, tie=True, head_bias=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.mlp = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=head_bias)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, t):
        return self.lm_head(torch.relu(self.mlp(self.wte(t)))), None  # (logits per position, loss)
