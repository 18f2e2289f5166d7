"""Five architectures from outside the project (issue 22's "Done when"): each fits statistics and serves a
class request with its coverage table printed; every trainable parameter is projected or frozen with its
reason, and every projected layer's weight change lies outside its CGS (share inside at most 1e-4)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "architectures.py"
spec = importlib.util.spec_from_file_location("architectures", EXAMPLE)
architectures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(architectures)


@pytest.mark.parametrize("name", list(architectures.CASES))
def test_outside_architecture_is_covered_and_its_request_stays_outside_the_cgs(name, capsys):
    out = architectures.serve(name)
    printed = capsys.readouterr().out
    table = out["coverage"]
    assert "parameters projected" in printed and "status" in printed  # the coverage table, printed
    model = architectures.CASES[name][0]()
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(e.name for e in table) == sorted(trainable.values())  # each listed once
    assert not table.unexpected, [(e.name, e.reason) for e in table.unexpected]
    for e in table:
        assert e.reason, e.name
    projected = {e.name for e in table.projected}
    assert out["moved"] and out["moved"] <= projected  # only projected weights move
    assert max(out["leak"].values()) <= 1e-4, out["leak"]
    reasons = {e.name: e.reason for e in table}
    if name == "mobilenetv2":
        assert "groups" in reasons["layers.1.conv2.weight"] and "layers.1.conv2.weight" in projected
    if name == "vit":
        assert {"encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn.out_proj.weight"} <= projected
        assert "free tensor" in reasons["cls_token"] and "free tensor" in reasons["pos_embed"]
    if name == "gpt":
        assert "lm_head" in reasons["wte.weight"] and "wte.weight" in out["moved"]
