import pytest
import torch


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
