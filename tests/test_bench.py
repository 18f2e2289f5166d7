"""`pgu bench` on the digits tier: results, resumption, refusals; the report from hand-made results."""

import json

import pytest

from pgu.bench.config import BenchConfig
from pgu.bench.report import format_table, summarize
from pgu.bench.runner import run_bench
from pgu.cli import main

METRICS = ["FA", "RA", "VA", "TA", "UA", "MIA", "loss_MIA", "avg_gap", "activation_distance", "js_divergence",
           "seconds", "speedup"]


def test_bench_scores_every_method_and_resumes_finished_seeds(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    config = BenchConfig(tier="digits", scenario="class", seeds=(0,), forget_class=3)
    results = run_bench(config, out, progress=False)
    seed = results["seeds"][0]
    assert set(seed["methods"]) == {"original", "retrain", "pgu"}
    for name, row in seed["methods"].items():
        assert all(k in row for k in METRICS), name
        assert 0 <= row["UA"] <= 100 and row["UA"] == pytest.approx(100 - row["FA"])
    assert (seed["methods"]["retrain"]["avg_gap"] == 0
            and seed["methods"]["retrain"]["js_divergence"] == pytest.approx(0))
    assert seed["methods"]["original"]["speedup"] is None and seed["methods"]["pgu"]["speedup"] > 0
    assert seed["methods"]["pgu"]["needs_retain_data"] is False and seed["methods"]["retrain"]["needs_retain_data"]
    # class forgetting: the original still knows class 3, the retrained model never saw it
    assert seed["methods"]["original"]["UA"] < 10 and seed["methods"]["retrain"]["UA"] > 90
    assert "TA_kept" in seed["methods"]["pgu"] and seed["forget_mode"] == "class"
    assert seed["n_forget"] == len(seed["forget_ids"])
    assert seed["commit"] == results["environment"]["commit"]
    for name in ("results.json", "results.md", "entropy.png", "gap_speedup.png", "pgu_curve.png", "seeds/seed-0.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["config"]["scenario"] == "class"

    # a second run with one more seed trains only that seed's models
    import pgu.bench.seed

    calls = []
    real = pgu.bench.seed.train_model
    monkeypatch.setattr(pgu.bench.seed, "train_model", lambda *a, **k: calls.append(k.get("desc")) or real(*a, **k))
    more = run_bench(BenchConfig(tier="digits", scenario="class", seeds=(0, 1), forget_class=3), out, progress=False)
    assert [s["seed"] for s in more["seeds"]] == [0, 1]
    assert len(calls) == 2 and all("seed 1" in c for c in calls)
    assert more["seeds"][0] == seed

    with pytest.raises(ValueError, match="another config"):
        run_bench(BenchConfig(tier="digits", scenario="class", seeds=(0,), forget_class=4), out, progress=False)


@pytest.mark.parametrize("change, message", [
    (dict(tier="imagenet"), "unknown tier"),
    (dict(scenario="poison"), "unknown scenario"),
    (dict(seeds=(0, 0)), "distinct"),
    (dict(seeds=()), "distinct"),
    (dict(methods=("pgu", "magic")), "unknown methods"),
    (dict(fraction=1.5), "fraction"),
    (dict(budget_share=0), "budget_share"),
    (dict(count=0), "count"),
])
def test_bench_config_refuses_bad_settings(change, message, tmp_path):
    settings = dict(tier="digits", scenario="random") | change
    with pytest.raises(ValueError, match=message):
        run_bench(BenchConfig(**settings), tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()  # nothing written


def test_subclass_default_size():
    import torch

    y = torch.tensor([0] * 1200 + [1] * 30)
    assert BenchConfig(tier="digits", scenario="subclass").forget_spec(y) == "subclass:0:500"
    assert BenchConfig(tier="digits", scenario="subclass", forget_class=1).forget_spec(y) == "subclass:1:15"
    assert BenchConfig(tier="digits", scenario="subclass", count=7).forget_spec(y) == "subclass:0:7"
    assert BenchConfig(tier="digits", scenario="random", fraction=0.25).forget_spec(y) == "random:0.25"


def _row(gap, ua=50.0, seconds=1.0, speedup=None, hit=False):
    return {"UA": ua, "FA": 100.0 - ua, "RA": 99.0, "TA": 97.0, "MIA": 10.0, "loss_MIA": 50.0, "avg_gap": gap,
            "js_divergence": 0.1, "seconds": seconds, "speedup": speedup, "needs_retain_data": False,
            "details": {"hit_budget": hit}}


def _results(original_gaps, pgu_gaps):
    seeds = []
    for s, (og, pg) in enumerate(zip(original_gaps, pgu_gaps)):
        seeds.append({"seed": s, "forget_spec": "class:0", "n_forget": 10, "budget_samples": 100,
                      "original": {"train_seconds": 5.0, "stats_seconds": 1.0},
                      "methods": {"original": _row(og, ua=10.0), "retrain": _row(0.0, ua=50.0, seconds=4.0),
                                  "pgu": _row(pg, ua=30.0 + 10.0 * s, speedup=8.0, hit=s == 0)},
                      "entropy_histograms": {"original": [1, 0], "retrain": [0, 1], "pgu": [0, 1]}})
    return {"config": {"tier": "digits", "scenario": "class", "budget_share": 0.5}, "seeds": seeds,
            "dataset": {"name": "digits", "train": 100}, "recipe": {"name": "digits"}, "environment": {}}


def test_report_gap_closed_budget_hits_and_the_small_gap_caution():
    results = _results([40.0, 60.0], [4.0, 3.0])
    summary = summarize(results)
    # gap closed per seed: 1 - 4/40 = 0.9 and 1 - 3/60 = 0.95 -> mean 0.925
    assert summary["pgu"]["gap_closed"][0] == pytest.approx(0.925)
    assert summary["pgu"]["avg_gap"][0] == pytest.approx(3.5)
    assert summary["pgu"]["budget_hits"] == 1
    # forget accuracy 90 -> 70 and 60 of the way to the retrained 50: 0.5 and 0.75 -> mean 0.625
    assert summary["pgu"]["forget_progress"][0] == pytest.approx(0.625)
    assert summary["retrain"]["forget_progress"][0] == pytest.approx(1.0)
    assert summary["original"]["forget_progress"][0] == pytest.approx(0.0)
    table = format_table(results)
    assert "| pgu |" in table and "92.5%" in table and "1/2" in table and "62.5% ± 17.7" in table
    assert "Caution" not in table
    assert "Caution" in format_table(_results([0.5, 0.4], [0.3, 0.2]))


def test_cli_bench_reports_bad_input_and_exits_nonzero(tmp_path, capsys):
    assert main(["bench", "--tier", "nope", "--scenario", "random", "--out", str(tmp_path / "b"), "--quiet"]) == 1
    assert "unknown tier" in capsys.readouterr().err


def test_evaluate_scores_a_model_against_a_reference_run(tmp_path, capsys):
    from pgu.bench.scoring import evaluate_against_reference
    from pgu.zoo.recipes import load_recipe
    from pgu.zoo.workflow import train_run

    recipe = load_recipe("digits").with_overrides(epochs=3)
    train_run(recipe, tmp_path / "original", stats=False, progress=False)
    train_run(recipe, tmp_path / "retrain", exclude="class:1", stats=False, progress=False)
    same = evaluate_against_reference(tmp_path / "retrain", tmp_path / "retrain")
    assert same["model"]["avg_gap"] == 0 and same["model"]["js_divergence"] == pytest.approx(0)
    result = evaluate_against_reference(tmp_path / "original" / "model.safetensors", tmp_path / "retrain")
    assert result["forget_spec"] == "class:1" and "TA_kept" in result["model"]
    assert result["model"]["UA"] < result["reference"]["UA"]  # the original still knows class 1
    assert result["model"]["avg_gap"] > 0
    with pytest.raises(ValueError, match="excluded no samples"):
        evaluate_against_reference(tmp_path / "retrain", tmp_path / "original")
    assert main(["evaluate", "--model", str(tmp_path / "original"), "--reference", str(tmp_path / "retrain"),
                 "--out", str(tmp_path / "e.json")]) == 0
    assert "class:1" in capsys.readouterr().out and json.loads((tmp_path / "e.json").read_text())["n_forget"] > 0
    assert main(["evaluate", "--model", str(tmp_path / "nothing"), "--reference", str(tmp_path / "retrain")]) == 1


def test_sequential_bench_scores_every_request_against_a_cumulative_retrain(tmp_path):
    out = tmp_path / "seq"
    config = BenchConfig(tier="digits", scenario="sequential", seeds=(0,), steps=2, per_class=5)
    seed = run_bench(config, out, progress=False)["seeds"][0]
    assert [s["step"] for s in seed["steps"]] == [1, 2]
    assert [s["n_forget"] for s in seed["steps"]] == [50, 100]  # 10 classes x 5, cumulative
    first, second = (set(s["forget_ids"]) for s in seed["steps"])
    assert first < second
    for step in seed["steps"]:
        assert step["request_size"] == 50
        assert step["methods"]["retrain"]["avg_gap"] == 0 and step["methods"]["pgu"]["needs_retain_data"] is False
    assert seed["methods"] == seed["steps"][-1]["methods"] and seed["n_forget"] == 100
    assert (out / "sequential.png").is_file() and "After each request" in (out / "results.md").read_text()


def test_sequential_requests_are_disjoint_balanced_and_refuse_too_many():
    import torch

    from pgu.bench.runner import sequential_requests

    y = torch.tensor([0] * 12 + [1] * 9)
    ids = torch.arange(100, 121)
    reqs = sequential_requests(y, ids, steps=3, per_class=3, seed=1)
    assert [len(r) for r in reqs] == [6, 6, 6]
    assert len(set(torch.cat(reqs).tolist())) == 18
    for r in reqs:
        assert int((y[r - 100] == 0).sum()) == 3
    assert [r.tolist() for r in reqs] == [r.tolist() for r in sequential_requests(y, ids, 3, 3, seed=1)]
    assert sequential_requests(y, ids, 2, None, seed=0)[0].numel() == 2 * 1  # 2% of 9, at least 1 per class
    big = torch.arange(20000) % 2
    assert sequential_requests(big, torch.arange(20000), 4, None, seed=0)[0].numel() == 2 * 100  # capped at 100
    with pytest.raises(ValueError, match="fewer"):
        sequential_requests(y, ids, steps=4, per_class=3, seed=0)


def test_challenge_score_from_small_groups(tmp_path):
    config = BenchConfig(tier="digits", scenario="class", seeds=(0,), forget_class=2, challenge=3)
    seed = run_bench(config, tmp_path / "c", progress=False)["seeds"][0]
    c = seed["challenge"]
    assert c["models_per_group"] == 3 and 0 <= c["forgetting_quality"] <= 1 and c["score"] >= 0
    assert 0 <= c["original_forgetting_quality"] <= 1
    assert c["ta_retrained"] > 80 and c["ra_unlearned"] > 50
    assert "challenge score" in (tmp_path / "c" / "results.md").read_text()
    with pytest.raises(ValueError, match="challenge"):
        BenchConfig(tier="digits", scenario="sequential", challenge=4).validate()
    with pytest.raises(ValueError, match="2 to 256"):
        BenchConfig(tier="digits", scenario="class", challenge=1).validate()


def test_pgu_settings_come_from_the_tier_and_class_removal_may_have_its_own_rates():
    from pgu.settings import TIER_OVERRIDES, PGUSettings

    authors = PGUSettings()
    assert BenchConfig(tier="digits", scenario="class", settings="published").pgu == authors
    # pgu ships a class rate selected on val for digits (pgu/selected/digits-class.toml): the default applies it
    assert BenchConfig(tier="digits", scenario="class").pgu == PGUSettings.for_tier("digits", "class") != authors
    assert authors.lr_for("class") == authors.lr_for("sample") == (0.1, 0.01)
    mnist = BenchConfig(tier="mnist", scenario="class", settings="published").pgu  # no selected rate on top
    assert mnist == PGUSettings(**TIER_OVERRIDES["mnist"])
    assert mnist.lr_for("sample") == (0.1, 0.01) and mnist.lr_for("class") == tuple(mnist.class_lr) != (0.1, 0.01)
    given = PGUSettings(lr=(0.3, 0.03))
    assert BenchConfig(tier="mnist", scenario="class", pgu=given).pgu is given  # an explicit choice wins
    recorded = BenchConfig(tier="mnist", scenario="class", settings="published").to_dict()["pgu"]
    assert recorded["class_lr"] == list(mnist.class_lr) and recorded["lr"] == [0.1, 0.01]
    json.dumps(recorded)


def test_cli_bench_refuses_a_malformed_learning_rate(tmp_path, capsys):
    for bad in ("0.2", "0.2,x", "0,0.1", "0.1,inf"):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "--tier", "digits", "--scenario", "class", "--pgu-lr", bad, "--out", str(tmp_path / "b")])
        assert exit_info.value.code == 2
        assert "--pgu-lr" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_bench_passes_learning_rates_to_the_config(tmp_path, monkeypatch):
    import pgu.cli.bench

    seen = []

    def fake_run_bench(config, out, **kwargs):
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(pgu.cli.bench, "run_bench", fake_run_bench)
    base = ["bench", "--tier", "mnist", "--scenario", "class", "--out", str(tmp_path / "b"), "--quiet"]
    assert main(base) == 1
    assert main(base + ["--pgu-lr", "0.2,0.02"]) == 1
    assert main(base + ["--pgu-class-lr", "0.3,0.03"]) == 1
    tier, lr_only, class_only = (c.pgu for c in seen)
    assert lr_only.lr == (0.2, 0.02) and lr_only.class_lr == tier.class_lr  # the tier's class rates stay
    assert class_only.class_lr == (0.3, 0.03) and class_only.lr == tier.lr


def test_bench_runs_baselines_and_gives_retain_data_only_to_methods_that_need_it(tmp_path, monkeypatch):
    import pgu.bench.methods.base as base

    seen = {}
    real = dict(base._REGISTRY)

    def spy(name):
        info, run = real[name]

        def wrapped(model, forget_loader, retain_loader, settings, context):
            seen[name] = (retain_loader is not None, context.max_samples, context.forget_mode)
            return run(model, forget_loader, retain_loader, settings, context)

        return info, wrapped

    monkeypatch.setattr(base, "_REGISTRY", {name: spy(name) for name in real})
    config = BenchConfig(tier="digits", scenario="class", seeds=(0,), forget_class=3,
                         methods=("original", "retrain", "pgu", "finetune", "neggrad"))
    results = run_bench(config, tmp_path / "b", progress=False)
    rows = results["seeds"][0]["methods"]
    assert set(rows) == {"original", "retrain", "pgu", "finetune", "neggrad"}
    assert seen["finetune"][0] and not seen["neggrad"][0] and not seen["pgu"][0]
    budget = results["seeds"][0]["budget_samples"]
    assert all(s[1] == budget and s[2] == "class" for s in seen.values())
    assert rows["finetune"]["needs_retain_data"] and not rows["neggrad"]["needs_retain_data"]
    for name in ("finetune", "neggrad"):
        assert rows[name]["speedup"] > 0 and "samples_processed" in rows[name]["details"]
    assert "| finetune |" in (tmp_path / "b" / "results.md").read_text()


def test_the_sequential_bench_chains_every_method_on_what_no_request_removed(tmp_path, monkeypatch):
    import torch

    import pgu.bench.seed as seed_module

    calls, real = [], seed_module.get_method

    def spying(name):  # record what each request of each method starts from and reads
        info, run = real(name)

        def recorded(model, forget_loader, retain_loader, settings, context):
            result = run(model, forget_loader, retain_loader, settings, context)
            retained = None if retain_loader is None else torch.cat([b[1] for b in retain_loader]).numel()
            calls.append({"name": name, "start": model, "out": result.model, "retained": retained,
                          "forget": torch.cat([b[1] for b in forget_loader]).numel(), "stats": context.stats,
                          "reference": context.reference})
            return result
        return info, recorded

    monkeypatch.setattr(seed_module, "get_method", spying)
    config = BenchConfig(tier="digits", scenario="sequential", seeds=(0,), steps=2, per_class=5,
                         methods=("original", "retrain", "pgu", "pgu-heldout", "finetune"))
    results = run_bench(config, tmp_path / "b", progress=False)
    seed, n_train = results["seeds"][0], results["dataset"]["train"]
    assert all(set(step["methods"]) == {"original", "retrain", "pgu", "pgu-heldout", "finetune"}
               for step in seed["steps"])
    for name in ("pgu", "pgu-heldout", "finetune"):
        first, second = [c for c in calls if c["name"] == name]
        assert first["forget"] == second["forget"] == 50
        assert second["start"] is first["out"] and first["start"] is not first["out"]  # each starts where it left off
        assert first["reference"] is second["reference"] is first["start"]  # the model as trained, as a store's
        if name == "finetune":  # reads retain data: what neither request removed
            assert (first["retained"], second["retained"]) == (n_train - 50, n_train - 100)
        else:  # data-free, and the second request starts from the statistics the first one left
            assert first["retained"] is None and second["stats"] is not first["stats"]
            assert second["stats"].n_samples_ == first["stats"].n_samples_ - 50


def test_bench_refuses_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        run_bench(BenchConfig(tier="digits", scenario="class", methods=("original", "retrain", "fine-tune")),
                  tmp_path / "c", progress=False)


def _hold_training_lock(folder, log, barrier):
    """A bench process's part: under the lock, train (a marker file) unless another process did."""
    import time

    from pgu.bench.seed import training_lock

    barrier.wait()  # imports done: both processes reach the lock together
    with training_lock(folder):
        if not folder.exists():
            time.sleep(0.3)  # long enough for the other process to reach the lock
            folder.mkdir()
            with open(log, "a") as handle:
                handle.write("trained\n")


def test_benches_sharing_a_cache_train_each_model_once(tmp_path):
    """Two processes asking for the same cached model at once: one trains it, the other waits and finds it."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    folder, log = tmp_path / "cache" / "retrain-abc", tmp_path / "log.txt"
    barrier = context.Barrier(2)
    workers = [context.Process(target=_hold_training_lock, args=(folder, log, barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert log.read_text().splitlines() == ["trained"]
