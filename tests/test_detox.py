"""Detoxification (docs/method.md section 8): the depoisoning loss and rule, poisoned runs, and the poison bench
scenarios."""

import json
import math

import pytest
import torch
from conftest import batches, play
from torch import nn

from pgu import GramStats, unlearn
from pgu.bench.config import BenchConfig
from pgu.bench.runner import run_bench
from pgu.bench.scoring import score_poisoning
from pgu.cli import main
from pgu.data.poisoning import add_backdoor, flip_labels, parse_poison_spec, poison, stamp_trigger
from pgu.losses import depoison_loss
from pgu.stopping import PoisonRemovalStop, StopDecision


@pytest.mark.parametrize("offset, weight", [(0.1, 0.2), (0.05, 0.0), (0.5, 1.0)])
def test_depoison_loss_matches_the_formula_sample_by_sample(offset, weight):
    logits = torch.randn(9, 5, dtype=torch.float64) * 3
    poisoned = torch.randint(0, 5, (9,))
    total = 0.0
    for z, y in zip(logits.tolist(), poisoned.tolist()):
        e = [math.exp(v) for v in z]
        p_poisoned = e[y] / sum(e)
        others = [v for c, v in enumerate(e) if c != y]  # softmax over the other classes' logits
        q = [v / sum(others) for v in others]
        total += -math.log(1 - p_poisoned + offset) + weight * -sum(v * math.log(v) for v in q)
    assert depoison_loss(logits, poisoned, offset, weight).item() == pytest.approx(total / 9, rel=1e-10)


def test_depoison_loss_pushes_the_poisoned_label_down_and_sharpens_the_others():
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0]], requires_grad=True)
    poisoned = torch.tensor([0])
    depoison_loss(logits, poisoned, entropy_weight=1.0).backward()
    assert torch.isfinite(logits.grad).all()
    new = logits - 0.5 * logits.grad
    assert new.softmax(1)[0, 0] < logits.softmax(1)[0, 0]
    before, after = logits[0, 1:].softmax(0), new[0, 1:].softmax(0)
    entropy = lambda q: float(-(q * q.log()).sum().detach())  # noqa: E731
    assert entropy(after) < entropy(before)  # added, not subtracted: the prediction settles on one other class
    confident = torch.tensor([[100.0, -100.0, -100.0]], requires_grad=True)
    depoison_loss(confident, torch.tensor([0])).backward()
    assert torch.isfinite(confident.grad).all()
    with pytest.raises(ValueError, match="two classes"):
        depoison_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="offset"):
        depoison_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), offset=0)


def test_poison_rule_stops_when_the_poisoned_labels_are_gone_or_val_fell_too_far():
    assert play(PoisonRemovalStop(), (80, 95), [(40, 95), (5, 96), (1, 96)]) == (3, StopDecision("poison_removed"))
    assert play(PoisonRemovalStop(poison_floor=0), (80, 95), [(1, 96), (0, 96)]) == (2, StopDecision("poison_removed"))
    assert play(PoisonRemovalStop(poison_floor=5), (80, 95), [(40, 95), (5, 96)]) == (2, StopDecision("poison_removed"))
    # the val guard comes first, and keeps the previous epoch
    assert play(PoisonRemovalStop(max_val_drop=5), (80, 95), [(40, 94), (0, 89)]) == (2, StopDecision("val_drop", True))
    assert play(PoisonRemovalStop(), (0, 95), []) == (0, StopDecision("already_forgotten"))
    assert play(PoisonRemovalStop(), (80, 95), [(70, 95)] * 5) == (None, None)
    with pytest.raises(ValueError):
        PoisonRemovalStop(poison_floor=-1)
    with pytest.raises(ValueError):
        PoisonRemovalStop(max_val_drop=None)


def test_poison_rule_stops_on_a_plateau_of_the_poisoned_label_share():
    # a clean model keeps a few percent too: once the share falls by < 0.5 points in 5 epochs, stop here
    slow = [(40, 95), (10, 95), (5, 95), (4.9, 95), (4.8, 95), (4.7, 95), (4.6, 95), (4.6, 95)]
    assert play(PoisonRemovalStop(), (80, 95), slow) == (8, StopDecision("poison_plateau"))
    assert play(PoisonRemovalStop(patience=3), (80, 95), slow) == (6, StopDecision("poison_plateau"))
    # a drop of exactly min_drop still counts as progress
    assert play(PoisonRemovalStop(patience=1, min_drop=0.5), (80, 95), [(40, 95), (39.5, 95), (39.1, 95)]) == \
        (3, StopDecision("poison_plateau"))
    # a share still above half its start is not a plateau: the logits may be moving under it
    assert play(PoisonRemovalStop(patience=1), (80, 95), [(80, 95), (80, 95), (40.1, 95), (40.1, 95)]) == (None, None)
    assert play(PoisonRemovalStop(patience=None), (80, 95), slow) == (None, None)
    assert play(PoisonRemovalStop(min_drop=0), (80, 95), slow) == (None, None)
    # the floor and the val guard come first
    assert play(PoisonRemovalStop(poison_floor=4.6), (80, 95), slow) == (7, StopDecision("poison_removed"))
    assert play(PoisonRemovalStop(), (80, 95), slow[:-1] + [(4.6, 89)]) == (8, StopDecision("val_drop", True))
    for bad in (0, -1, 1.5, True, "5"):
        with pytest.raises(ValueError, match="patience"):
            PoisonRemovalStop(patience=bad)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="min_drop"):
            PoisonRemovalStop(min_drop=bad)


def flipped_problem():
    """Three Gaussian blobs in 40 dimensions, 12 samples each; 4 of class 0 are trained as class 1 (a label flip).

    Fewer samples than dimensions: the net memorises the flipped ones, and their inputs stick out of
    the span of the clean ones (what PGU's projection leaves free to change).
    """
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 40, generator=g) * 1.5
    y = torch.arange(3).repeat_interleave(12)
    x = centers[y] + torch.randn(len(y), 40, generator=g)
    xv = centers[y] + torch.randn(len(y), 40, generator=g)
    poisoned = y.clone()
    flipped = torch.nonzero(y == 0).flatten()[:4]
    poisoned[flipped] = 1
    torch.manual_seed(0)  # the same net whatever ran before
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(300):
        for xb, yb in batches(x, poisoned, size=12):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    stats = GramStats(precision="float64").fit(model, batches(x, size=60))
    return model, stats, x, y, poisoned, flipped, (xv, y)


def test_unlearn_in_poison_mode_removes_the_flipped_labels_with_the_poison_rule():
    model, stats, x, y, poisoned, flipped, (xv, yv) = flipped_problem()
    forget = batches(x[flipped], poisoned[flipped], size=10)
    with torch.no_grad():
        assert (model(x[flipped]).argmax(1) == 1).float().mean() > 0.9  # the poison was learned
    result = unlearn(model, forget, stats, mode="poison", threshold=0.95, lr=(0.1, 0.05), epochs=200,
                     val_loader=batches(xv, yv, size=60))
    assert result.stop_reason == "poison_removed" and result.history[-1]["forget_acc"] == 0
    with torch.no_grad():
        assert (result.model(x[flipped]).argmax(1) == 0).all()  # back to their true class
        clean = torch.ones(len(y), dtype=torch.bool)
        clean[flipped] = False
        assert (result.model(x[clean]).argmax(1) == model(x[clean]).argmax(1)).all()  # the retained data kept
    assert result.history[-1]["val_acc"] >= result.history[0]["val_acc"]
    with pytest.raises(ValueError, match="needs val_loader"):
        unlearn(model, forget, stats, mode="poison")
    with pytest.raises(ValueError, match="mode must be"):
        unlearn(model, forget, stats, mode="detox", val_loader=forget)
    with pytest.raises(ValueError, match="max_val_drop"):
        unlearn(model, forget, stats, mode="poison", val_loader=forget, stop=PoisonRemovalStop(max_val_drop=None))
    # the plateau settings reach the rule, and are checked before any work is done
    stalled = unlearn(model, forget, stats, mode="poison", threshold=0.95, lr=0.03, epochs=200,
                      val_loader=batches(xv, yv, size=60),
                      stop=PoisonRemovalStop(poison_floor=0, patience=1, min_drop=101))
    shares = [h["forget_acc"] for h in stalled.history]
    assert stalled.stop_reason == "poison_plateau" and shares[-1] <= shares[0] / 2 < min(shares[:-1])
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class CountedBatches(list):
        """The forget batches, counting how many unlearn reads."""

        def __init__(self, batches):
            super().__init__(batches)
            self.read = 0

        def __iter__(self):
            for batch in list.__iter__(self):
                self.read += 1
                yield batch

    counted = CountedBatches(forget)
    for bad in ({"patience": 0}, {"min_drop": -1}):
        with pytest.raises(ValueError, match="patience|min_drop"):
            unlearn(model, counted, stats, mode="poison", val_loader=forget, inplace=True,
                    stop=PoisonRemovalStop(**bad))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert counted.read == 0  # refused before the forget pass, not after it


def test_poison_specs_parse_and_dispatch_to_the_generators():
    assert parse_poison_spec("flip:100") == {"kind": "flip", "n_per_class": 100, "n_pairs": 5}
    assert parse_poison_spec("flip:7:2") == {"kind": "flip", "n_per_class": 7, "n_pairs": 2}
    assert parse_poison_spec("backdoor:0.1") == {"kind": "backdoor", "fraction": 0.1, "target": 0, "size": 3}
    assert parse_poison_spec("backdoor:0.1:4:2") == {"kind": "backdoor", "fraction": 0.1, "target": 4, "size": 2}
    for bad in ("flip", "flip:x", "flip:1:2:3", "backdoor:a", "trojan:1", ""):
        with pytest.raises(ValueError, match="bad poisoning"):
            parse_poison_spec(bad)
    from pgu.data import ArrayDataset

    y = torch.arange(10).repeat_interleave(6)
    data = ArrayDataset(torch.rand(60, 1, 5, 5), y, torch.arange(60) + 7)
    a, ra = poison(data, "flip:2:3", seed=4)
    b, rb = flip_labels(data, 2, n_pairs=3, seed=4)
    assert torch.equal(a.y, b.y) and ra.to_dict() == rb.to_dict()
    a, ra = poison(data, "backdoor:0.2:5:2", seed=1)
    b, rb = add_backdoor(data, 0.2, 5, size=2, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and ra.to_dict() == rb.to_dict()


class CornerDetector(nn.Module):
    """Predicts ``target`` when the bottom-right pixel is bright, else the class in the top-left pixel (hand-made)."""

    def __init__(self, target, classes=4):
        super().__init__()
        self.target, self.classes = target, classes

    def forward(self, x):
        out = torch.nn.functional.one_hot(x[:, 0, 0, 0].round().long().clamp(0, self.classes - 1), self.classes).float()
        bright = x[:, 0, -1, -1] > 5
        out[bright] = torch.nn.functional.one_hot(torch.tensor(self.target), self.classes).float()
        return out


def test_score_poisoning_counts_triggered_test_images_of_other_classes_and_true_labels():
    from pgu.data import ArrayDataset

    y = torch.arange(4).repeat_interleave(5)
    x = torch.zeros(20, 1, 4, 4)
    x[:, 0, 0, 0] = y.float()
    test = ArrayDataset(x, y, torch.arange(20))
    _, record = add_backdoor(test, 0.5, 2, size=1, seed=0, values=torch.tensor([9.0]))
    forget_true = ArrayDataset(stamp_trigger(x[:3], torch.tensor([9.0]), 1), torch.tensor([0, 0, 2]), torch.arange(3))
    scores = score_poisoning(CornerDetector(target=2), record, forget_true, test)
    assert scores["ASR"] == 100.0  # every stamped image of classes 0, 1, 3 goes to the target
    assert scores["triggered_acc"] == 0.0
    assert scores["poisoned_true_acc"] == pytest.approx(100 / 3)  # stamped: predicted 2, true 0, 0, 2
    scores = score_poisoning(CornerDetector(target=3), record, forget_true, test)
    assert scores["ASR"] == 0.0  # this model's trigger response is another class
    assert scores["triggered_acc"] == pytest.approx(100 / 3)  # right only for the stamped images of class 3
    _, flip_record = flip_labels(test, 1, n_pairs=2, seed=0)
    assert "ASR" not in score_poisoning(CornerDetector(target=2), flip_record, forget_true, test)


def test_train_records_the_poisoning_and_trains_a_clean_reference_without_it(tmp_path, capsys):
    from pgu.data import load_dataset
    from pgu.evaluation import accuracy
    from pgu.zoo.runs import load_run

    assert main(["train", "--dataset", "digits", "--epochs", "2", "--poison", "flip:10:2", "--quiet",
                 "--out", str(tmp_path / "poisoned")]) == 0
    assert "poisoned by flip:10:2: 40 samples" in capsys.readouterr().out
    run = load_run(tmp_path / "poisoned")
    record = json.loads((tmp_path / "poisoned" / "poisoning.json").read_text())
    seed = run.config["recipe"]["train"]["seed"]
    _, expected = flip_labels(load_dataset("digits").train, 10, n_pairs=2, seed=seed)
    assert record["ids"] == expected.ids.tolist() and record["poisoned_labels"] == expected.poisoned_labels.tolist()
    assert run.config["poisoning"]["n_poisoned"] == 40 and run.config["poisoning"]["spec"] == "flip:10:2"
    assert len(run.excluded_ids) == 0

    assert main(["train", "--dataset", "digits", "--epochs", "2", "--poison", "flip:10:2", "--exclude", "poisoned",
                 "--quiet", "--no-stats", "--out", str(tmp_path / "clean")]) == 0
    clean = load_run(tmp_path / "clean")
    assert clean.excluded_ids.tolist() == record["ids"]
    assert not set(clean.train_ids.tolist()) & set(record["ids"])
    assert len(clean.train_ids) == len(run.train_ids) - 40

    # pgu evaluate poisons the data again from the reference's record: D_f is the poisoned samples as trained
    assert main(["evaluate", "--model", str(tmp_path / "poisoned"), "--reference", str(tmp_path / "clean"),
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "poisoned_true_acc" in capsys.readouterr().out
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["n_forget"] == 40 and scored["forget_spec"] == "poisoned"
    # D_f is the poisoned samples under the labels they were trained with: both models scored on exactly that
    poisoned, _ = flip_labels(load_dataset("digits").train, 10, n_pairs=2, seed=seed)
    forget = poisoned.subset(poisoned.mask_of(torch.tensor(record["ids"])))
    assert forget.y.tolist() == record["poisoned_labels"]
    for key, folder in (("model", "poisoned"), ("reference", "clean")):
        model = load_run(tmp_path / folder).model
        assert scored[key]["FA"] == pytest.approx(accuracy(model, forget.loader(512)), abs=1e-3)
    assert 0 <= scored["reference"]["poisoned_true_acc"] <= 100 and "ASR" not in scored["reference"]

    # a store would record the published samples, not the poisoned ones the model saw: refused, nothing made
    assert main(["store", "init", str(tmp_path / "store"), "--from", str(tmp_path / "poisoned")]) == 1
    assert "trained on poisoned data" in capsys.readouterr().err and not (tmp_path / "store").exists()

    assert main(["train", "--dataset", "digits", "--exclude", "poisoned", "--out", str(tmp_path / "x")]) == 1
    assert "needs --poison" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--poison", "flip:1000", "--out", str(tmp_path / "x")]) == 1
    assert "fewer than n_per_class" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("scenario", ["poison-flip", "poison-backdoor"])
def test_poison_scenario_end_to_end_on_digits(scenario, tmp_path):
    config = BenchConfig(tier="digits", scenario=scenario, seeds=(0,),
                         methods=("original", "retrain", "pgu", "neggrad"),
                         poison_count=15, poison_fraction=0.05, poison_target=3)
    results = run_bench(config, tmp_path / "bench", progress=False)
    seed = results["seeds"][0]
    p = seed["poisoning"]
    from pgu.data import load_dataset

    _, record = poison(load_dataset("digits").train, config.poison_spec(load_dataset("digits").train.y), seed=0)
    assert seed["forget_ids"] == record.ids.tolist() and p["n_poisoned"] == seed["n_forget"] == record.ids.numel()
    assert seed["forget_mode"] == "poison" and p["kind"] == ("flip" if scenario == "poison-flip" else "backdoor")
    rows = seed["methods"]
    for name, row in rows.items():
        assert 0 <= row["poisoned_true_acc"] <= 100 and 0 <= row["TA"] <= 100, name
        assert ("ASR" in row) == ("triggered_acc" in row) == (scenario == "poison-backdoor")
    # the share of the test-accuracy gap recovered is defined only when the gap is at least 0.1 points
    gap = rows["retrain"]["TA"] - rows["original"]["TA"]
    defined = abs(gap) >= 0.1
    assert all((row["TA_recovered"] is not None) == defined for row in rows.values())
    if defined:
        assert rows["original"]["TA_recovered"] == 0 and rows["retrain"]["TA_recovered"] == pytest.approx(1)
        assert rows["pgu"]["TA_recovered"] == pytest.approx((rows["pgu"]["TA"] - rows["original"]["TA"]) / gap)
    # the poisoned original fits its poisoned labels; the clean model does not, and predicts the true ones
    assert rows["original"]["FA"] > rows["retrain"]["FA"] + 30 and rows["retrain"]["FA"] < 20
    assert rows["retrain"]["poisoned_true_acc"] > rows["original"]["poisoned_true_acc"]
    if scenario == "poison-backdoor":
        assert rows["original"]["ASR"] > 50 and rows["retrain"]["ASR"] < 20
        assert rows["retrain"]["triggered_acc"] > rows["original"]["triggered_acc"]
    details = rows["pgu"]["details"]
    assert details["settings"]["poison_threshold"] == 0.95 and details["settings"]["poison_lr"] == [0.1, 0.05]
    assert details["stop_reason"] in ("poison_removed", "poison_plateau", "val_drop", "max_epochs", "budget",
                                      "already_forgotten")
    # PGU's row is the epoch its rule kept: the share it reports is that epoch's, the start's when it kept none
    kept = details["history"][details["kept_epoch"]]
    assert rows["pgu"]["FA"] == pytest.approx(kept["forget_acc"], abs=1e-6)
    if details["kept_epoch"] == 0:
        assert rows["pgu"]["FA"] == pytest.approx(rows["original"]["FA"], abs=1e-6)
    if details["stop_reason"] == "poison_removed":
        assert rows["pgu"]["FA"] <= 1.0
    report = (tmp_path / "bench" / "results.md").read_text()
    assert "TA gap recovered" in report and ("| ASR |" in report) == (scenario == "poison-backdoor")
    assert (tmp_path / "bench" / "poison.png").is_file()


def test_poison_bench_refuses_what_it_cannot_run(tmp_path, capsys):
    base = ["bench", "--tier", "digits", "--seeds", "0", "--quiet", "--out", str(tmp_path / "b")]
    assert main(base + ["--scenario", "poison-backdoor", "--poison-target", "12"]) == 1
    assert "poison_target must be a class" in capsys.readouterr().err
    assert main(base + ["--scenario", "poison-backdoor", "--trigger-size", "9"]) == 1
    assert "does not fit" in capsys.readouterr().err
    assert main(base + ["--scenario", "poison-flip", "--poison-count", "500"]) == 1
    assert "fewer than n_per_class" in capsys.readouterr().err
    assert main(base + ["--scenario", "poison-flip", "--challenge", "2"]) == 1
    assert "challenge" in capsys.readouterr().err
    assert main(base + ["--scenario", "poison-backdoor", "--poison-fraction", "1.5"]) == 1
    assert "poison_fraction" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    from pgu.bench.selection import run_selection

    with pytest.raises(ValueError, match="held-out proxy"):
        run_selection("digits", "poison-flip", 100, ("pgu",), tmp_path / "s")


def test_a_bench_recorded_before_the_poison_settings_still_resumes():
    config = BenchConfig(tier="digits", scenario="random", seeds=(0,))
    old = config.to_dict()
    for key in ("poison_count", "poison_pairs", "poison_fraction", "poison_target", "trigger_size"):
        del old[key]
    del old["pgu"]["poison_lr"], old["pgu"]["poison_threshold"]
    assert config.same_bench(old)
    changed = BenchConfig(tier="digits", scenario="random", seeds=(0,), poison_pairs=3)
    assert not changed.same_bench(old)


def test_poisoned_samples_under_true_labels_keep_the_trained_images():
    from pgu.data import ArrayDataset
    from pgu.data.poisoning import under_true_labels

    y = torch.arange(4).repeat_interleave(5)
    data = ArrayDataset(torch.rand(20, 1, 4, 4), y, torch.arange(20).flip(0) + 100)  # ids not in position order
    poisoned, record = add_backdoor(data, 0.4, 1, size=2, seed=3)
    view = under_true_labels(poisoned, record)
    assert torch.equal(view.ids, record.ids)
    positions = data.positions_of(record.ids)
    assert torch.equal(view.y, data.y[positions]) and not (view.y == 1).any()  # true labels, none the target
    assert torch.equal(view.x, poisoned.x[positions]) and not torch.equal(view.x, data.x[positions])  # stamped
