"""Your own model through the command line (issue 22, item 4): `pgu train --model file.py:factory`, a
recipe naming a model file next to it, a store that records the reference, and a store whose model code
is missing, which says exactly that (its files are intact)."""

import pytest
import torch
from torch import nn

from pgu.cli import main
from pgu.store.model_store import ModelStore
from pgu.zoo.models import build_model
from pgu.zoo.models.external import ModelCodeMissingError, canonical_reference, is_reference
from pgu.zoo.runs import load_run

MODEL_FILE = '''
from torch import nn


class TinyDigits(nn.Module):
    """Not in pgu's registry: a conv and a linear layer for 8x8 digits."""

    def __init__(self, classes):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        return self.head(nn.functional.max_pool2d(self.conv(x).relu(), 2).flatten(1))


def build(num_classes):
    return TinyDigits(num_classes)


def not_a_model(num_classes):
    return "nope"
'''


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "code" / "tiny.py"
    path.parent.mkdir()
    path.write_text(MODEL_FILE)
    return path


def test_references_resolve_and_refuse_clearly(model_file, tmp_path, monkeypatch):
    model = build_model(f"{model_file}:build", num_classes=10, in_channels=1)
    assert type(model).__name__ == "TinyDigits" and model.head.out_features == 10
    monkeypatch.chdir(model_file.parent)
    assert canonical_reference("tiny.py:build") == f"{model_file.resolve()}:build"  # recorded absolute
    assert canonical_reference("lenet") == "lenet" and not is_reference("lenet") and is_reference("a.b:build")
    with pytest.raises(ModelCodeMissingError, match="no file"):
        build_model(f"{tmp_path}/gone.py:build", num_classes=10, in_channels=1)
    with pytest.raises(ModelCodeMissingError, match="defines no function 'missing'"):
        build_model(f"{model_file}:missing", num_classes=10, in_channels=1)
    with pytest.raises(ModelCodeMissingError, match="cannot be imported"):
        build_model("no_such_package_xyz.models:build", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="not an nn.Module"):
        build_model(f"{model_file}:not_a_model", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="path/to/file.py:factory"):
        build_model("no-such-model", num_classes=10, in_channels=1)


def test_an_entry_point_names_a_model(model_file, monkeypatch):
    import pgu.zoo.models as models

    monkeypatch.setattr(models, "entry_point_models", lambda: {"tiny": f"{model_file}:build"})
    assert type(build_model("tiny", num_classes=3, in_channels=1)).__name__ == "TinyDigits"


def test_own_model_from_train_to_store_to_verify(model_file, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", f"{model_file}:build", "--epochs", "2", "--quiet",
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "conv.weight" in out and "head.weight" in out and "0 of them not by choice" in out
    trained = load_run(run)
    assert trained.spec.name == f"{model_file.resolve()}:build" and type(trained.model).__name__ == "TinyDigits"

    store = tmp_path / "store"
    assert main(["store", "init", str(store), "--from", str(run)]) == 0
    assert main(["forget", str(store), "--class", "3", "--epochs", "2", "--device", "cpu", "--quiet"]) == 0
    assert main(["verify", str(store)]) == 0
    capsys.readouterr()

    moved = model_file.with_name("elsewhere.py")
    model_file.rename(moved)  # the code goes missing; the store's files do not change
    assert main(["verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert "intact" in err and "code of model" in err and "backup" not in err, err
    assert main(["forget", str(store), "--class", "4", "--device", "cpu", "--quiet"]) == 1
    assert "code of model" in capsys.readouterr().err
    moved.rename(model_file)
    assert ModelStore(store).verify()["ok"]


def test_a_recipe_names_a_model_file_next_to_it(model_file, tmp_path):
    recipe = model_file.parent / "tiny.toml"
    recipe.write_text('description = "mine"\ndataset = "digits"\nmodel = "tiny.py:build"\n'
                      '[train]\nepochs = 1\nbatch_size = 64\nlr = 0.05\n')
    assert main(["train", "--recipe", str(recipe), "--quiet", "--no-stats", "--out", str(tmp_path / "r")]) == 0
    run = load_run(tmp_path / "r")
    assert run.spec.name == f"{model_file.resolve()}:build"
    assert isinstance(run.model, nn.Module) and torch.isfinite(run.model.head.weight).all()


def test_bench_on_a_tier_file_with_your_model(model_file, tmp_path, capsys):
    tier = model_file.parent / "my_tier.toml"
    tier.write_text('description = "my tier"\ndataset = "digits"\nmodel = "digits-cnn"\n'
                    '[train]\nepochs = 2\nbatch_size = 64\nlr = 0.05\n')
    out = tmp_path / "bench"
    assert main(["bench", "--tier", str(tier), "--model", f"{model_file}:build", "--scenario", "class",
                 "--seeds", "0", "--methods", "pgu,neggrad", "--quiet", "--out", str(out)]) == 0
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["tier"] == str(tier.resolve())
    assert results["config"]["model"] == results["recipe"]["model"] == f"{model_file.resolve()}:build"
    rows = results["seeds"][0]["methods"]
    assert {"original", "retrain", "pgu", "neggrad"} <= set(rows)
    assert rows["retrain"]["UA"] > rows["original"]["UA"]  # the class is forgotten by retraining
    missing = str(tmp_path / "nope.toml")
    assert main(["bench", "--tier", missing, "--scenario", "class", "--out", str(tmp_path / "x")]) == 1
    assert "recipe TOML file" in capsys.readouterr().err
