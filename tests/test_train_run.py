"""Recipes, forget specs, `pgu train` and the run folder it writes."""

import json
import subprocess
import sys

import pytest
import torch

from pgu.data import load_dataset
from pgu.data.forget_sets import resolve_forget_spec
from pgu.evaluation import accuracy
from pgu.zoo.recipes import available_recipes, find_recipe, load_recipe
from pgu.zoo.runs import load_model, load_run
from pgu.zoo.training import TrainConfig, _epoch_lr
from pgu.zoo.workflow import train_run


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_every_recipe_loads_and_names_a_registered_dataset_and_model():
    from pgu.data import available_datasets
    from pgu.zoo.models import available_models

    names = available_recipes()
    assert {"digits", "mnist", "fashion", "cifar10-cpu", "allcnn-cifar10", "smallvgg-cifar10",
            "resnet18-tinyimagenet"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.dataset in available_datasets() and r.model in available_models(), name


def test_recipe_overrides_and_errors(tmp_path):
    r = find_recipe("mnist").with_overrides(epochs=1, width=0.5, model="digits-cnn")
    assert (r.train.epochs, r.train.width, r.model) == (1, 0.5, "digits-cnn")
    with pytest.raises(ValueError, match="unknown training settings"):
        find_recipe("mnist").with_overrides(epoch=1)
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "digits"\nmodel = "digits-cnn"\n[train]\nepochs = "ten"\n')
    with pytest.raises(ValueError, match="epochs must be an integer"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="no recipe for dataset"):
        find_recipe("imagenet")


def test_train_config_validation_and_exponential_schedule():
    with pytest.raises(ValueError, match="lr_end"):
        TrainConfig(schedule="exponential")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    cfg = TrainConfig(schedule="exponential", lr=0.01, lr_end=5e-4, epochs=100)
    assert _epoch_lr(cfg, 0) == pytest.approx(0.01) and _epoch_lr(cfg, 99) == pytest.approx(5e-4)
    assert _epoch_lr(cfg, 50) == pytest.approx(0.01 * (0.05 ** (50 / 99)))


def test_forget_specs(digits, tmp_path):
    train = digits.train
    cls = resolve_forget_spec("class:3,5", train)
    assert cls.mode == "class" and cls.classes == (3, 5)
    assert set(train.y[train.mask_of(cls.ids)].tolist()) == {3, 5}
    assert len(cls.ids) == int(((train.y == 3) | (train.y == 5)).sum())
    rnd = resolve_forget_spec("random:0.1", train, seed=4)
    assert (len(rnd.ids) == round(0.1 * len(train))
            and torch.equal(rnd.ids, resolve_forget_spec("random:0.1:4", train).ids))
    assert not torch.equal(rnd.ids, resolve_forget_spec("random:0.1:5", train).ids)
    assert len(resolve_forget_spec("random:25", train).ids) == 25
    sub = resolve_forget_spec("subclass:0:7", train)
    assert torch.equal(sub.ids, train.ids[train.y == 0].sort().values[:7])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"# two ids\n{int(train.ids[4])}\n{int(train.ids[9])}\n")
    assert resolve_forget_spec(f"ids:{ids_file}", train).ids.tolist() == sorted([int(train.ids[4]), int(train.ids[9])])
    for bad, match in [("class:42", "no training sample"), ("random:1.5", r"\(0, 1\)"),
                       ("subclass:0:100000", "ask for"), ("colour:red", "unknown forget spec"),
                       ("random:x", "not a fraction|integer")]:
        with pytest.raises(ValueError, match=match):
            resolve_forget_spec(bad, train)
    ids_file.write_text(f"{int(train.ids[4])}\n{int(train.ids[4])}\n")
    with pytest.raises(ValueError, match="twice"):
        resolve_forget_spec(f"ids:{ids_file}", train)
    ids_file.write_text(f"{int(digits.val.ids[0])}\n")
    with pytest.raises(KeyError, match="not in this set"):
        resolve_forget_spec(f"ids:{ids_file}", train)


def test_train_run_with_exclude_writes_a_complete_run(digits, tmp_path):
    recipe = find_recipe("digits").with_overrides(epochs=2)
    run = train_run(recipe, tmp_path / "run", exclude="class:3", progress=False, device="cpu")
    excluded = set(run.excluded_ids.tolist())
    assert excluded == set(digits.train.ids[digits.train.y == 3].tolist())
    assert not excluded & set(run.train_ids.tolist())
    assert len(run.train_ids) + len(excluded) == len(digits.train)
    assert [h["epoch"] for h in run.history] == [1, 2] and "val_acc" in run.history[-1]
    stats = run.load_stats()
    assert stats.n_samples_ == len(run.train_ids)
    stats.check_model(run.model)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["exclude"] == "class:3" and config["recipe"]["train"]["epochs"] == 2
    assert config["environment"]["torch"] and 0 <= config["results"]["test_acc"] <= 100
    # the eval-mode accuracy on exactly the samples trained on (class 3 left out)
    trained_on = digits.train.subset(digits.train.positions_of(run.train_ids))
    assert config["results"]["train_acc"] == pytest.approx(accuracy(run.model, trained_on.loader(512)))
    model, spec = load_model(tmp_path / "run" / "model.safetensors")
    x = digits.test.x[:5]
    assert torch.equal(model(x), run.model(x))
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_run(recipe, tmp_path / "run", progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders left


def test_retrain_reference_is_the_same_recipe_on_fewer_samples(digits, tmp_path):
    recipe = find_recipe("digits").with_overrides(epochs=1)
    full = train_run(recipe, tmp_path / "full", progress=False, stats=False, device="cpu")
    assert full.stats_path is None and len(full.excluded_ids) == 0
    with pytest.raises(FileNotFoundError, match="without statistics"):
        full.load_stats()


def pgu_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pgu", *args], capture_output=True, text=True, timeout=300, **kw)


def test_cli_train_and_its_errors(tmp_path):
    out = tmp_path / "run"
    proc = pgu_cli("train", "--dataset", "digits", "--epochs", "1", "--set", "batch_size=128", "--exclude",
                   "random:0.1", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test" in proc.stdout and load_run(out).config["recipe"]["train"]["batch_size"] == 128
    # the coverage table after the statistics pass: every trainable parameter, projected or frozen
    for name, _ in load_run(out).model.named_parameters():
        assert name in proc.stdout, name
    assert "projected" in proc.stdout and "0 of them not by choice" in proc.stdout
    again = pgu_cli("train", "--dataset", "digits", "--quiet", "--out", str(out))
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    for args, message in [(["--dataset", "nope"], "no recipe"), (["--recipe", "nope"], "unknown recipe"),
                          (["--dataset", "digits", "--exclude", "class:99"], "no training sample"),
                          (["--dataset", "digits", "--set", "epochs=0"], "epochs must be")]:
        proc = pgu_cli("train", *args, "--quiet", "--out", str(tmp_path / "x"))
        assert proc.returncode == 1 and message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "x").exists()
    assert "cifar10-cpu" in pgu_cli("train", "--list-recipes").stdout


@pytest.mark.slow
def test_lenet_learns_real_mnist_in_one_epoch(tmp_path):
    """Real data, the real recipe shortened to one epoch: the loaders, model and trainer work together."""
    import os

    if not os.environ.get("PGU_DATA_DIR"):
        pytest.skip("PGU_DATA_DIR is not set")
    recipe = find_recipe("mnist").with_overrides(epochs=1)
    run = train_run(recipe, tmp_path / "mnist", stats=False, progress=False, device="cpu")
    assert run.config["results"]["test_acc"] > 97.0


@pytest.mark.parametrize("name", ["allcnn-cifar10", "smallvgg-cifar10", "resnet18-tinyimagenet", "cifar10-cpu",
                                  "cifar10-memorize", "mnist", "fashion"])
def test_each_recipe_runs_its_code_path_on_small_synthetic_data(name):
    """The paper recipes (exponential schedule, Adam, crop + flip, channels-last) run unchanged on any device."""
    from pgu.data import ArrayDataset, DataSplits
    from pgu.zoo.training import train_model

    recipe = load_recipe(name)
    shape = {"cifar10": (3, 32, 32), "cifar10-10k": (3, 32, 32), "tinyimagenet": (3, 64, 64), "mnist": (1, 28, 28),
             "fashion": (1, 28, 28)}[recipe.dataset]
    classes = 200 if recipe.dataset == "tinyimagenet" else 10
    g = torch.Generator().manual_seed(0)

    def part(n):
        return ArrayDataset(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g),
                            torch.arange(n))

    splits = DataSplits("synthetic", part(8), part(4), part(4), [str(c) for c in range(classes)])
    cfg = recipe.with_overrides(epochs=2, batch_size=4, width=0.125).train
    result = train_model(recipe.model, splits, cfg, validate=True)
    assert len(result.history) == 2 and all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.history[0]["lr"] == pytest.approx(cfg.lr) or cfg.schedule == "onecycle"
