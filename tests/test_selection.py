"""Val-only selection (pgu.bench.selection): the ladder, the held-out target, the choice, the file, and the bench
using it."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pgu.bench.config import BenchConfig
from pgu.bench.methods import method_names, method_scale, method_settings
from pgu.bench.seed import SeedRun, bench_settings
from pgu.bench.selection import (
    LADDER,
    choose_factor,
    heldout_target,
    load_selected,
    proxy_gap,
    run_selection,
    scaled_settings,
    selected_toml,
)
from pgu.settings import PGUSettings


def test_every_method_names_what_selection_varies():
    for name in method_names():
        scale = method_scale(name)
        settings, _ = method_settings(name)
        assert scale and "scale" not in settings, name
        assert set(scale) <= set(settings) | {"class_lr"}, name
    assert 1.0 in LADDER and len(set(LADDER)) == len(LADDER)


def test_scaled_settings_multiply_rates_and_divide_inverse_settings():
    out, changed = scaled_settings({"lr": 0.01, "momentum": 0.9}, {"lr": 1.0}, 10.0, "sample")
    assert out == {"lr": 0.1, "momentum": 0.9} and changed == {"lr": 0.1}
    out, changed = scaled_settings({"alpha": 10.0, "lambda": 1.0, "batch_size": 128},
                                   {"alpha": -1.0, "lambda": -1.0}, 10.0, "sample")
    assert changed == {"alpha": 1.0, "lambda": 0.1} and out["batch_size"] == 128
    _, changed = scaled_settings({"lr": 0.1}, {"lr": 1.0}, 0.1, "sample")
    assert changed == {"lr": 0.01}  # written as 0.01, not 0.010000000000000002
    with pytest.raises(ValueError, match="positive"):
        scaled_settings({"lr": 0.1}, {"lr": 1.0}, 0.0, "sample")


def test_scaled_settings_vary_only_the_schedule_the_mode_runs():
    pgu = {"lr": [0.1, 0.01], "class_lr": [0.5, 0.05], "threshold": 0.9}
    scale = {"lr": 1.0, "class_lr": 1.0}
    out, changed = scaled_settings(pgu, scale, 0.1, "sample")
    assert changed == {"lr": [0.01, 0.001]} and out["class_lr"] == [0.5, 0.05]
    out, changed = scaled_settings(pgu, scale, 0.1, "class")
    assert changed == {"class_lr": [0.05, 0.005]} and out["lr"] == [0.1, 0.01]
    _, changed = scaled_settings({**pgu, "class_lr": None}, scale, 0.1, "class")  # class removal runs lr then
    assert changed == {"lr": [0.01, 0.001]}


def test_heldout_target_weights_per_class_val_accuracy_by_the_forget_mix():
    val_y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    correct = np.array([1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)  # class 0: 75%, class 1: 50%, overall 75%
    assert heldout_target(correct, val_y, np.array([0, 0, 0, 1]), "sample") == pytest.approx(100 * (3 * .75 + .5) / 4)
    assert heldout_target(correct, val_y, np.array([1]), "sample") == pytest.approx(50.0)
    assert heldout_target(correct, val_y, np.array([7]), "sample") == pytest.approx(75.0)  # class not in val
    assert heldout_target(correct, val_y, np.array([0]), "class") == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        heldout_target(correct, val_y, np.array([], dtype=int), "sample")


def test_proxy_gap_is_the_mean_of_the_forget_and_val_terms():
    assert proxy_gap(99.0, 98.0, 97.0, 99.0) == pytest.approx((2.0 + 1.0) / 2)
    assert proxy_gap(97.0, 99.0, 97.0, 99.0) == 0.0


def _trials(gaps: dict) -> list[dict]:
    return [{"factor": f, "proxy_gap": g} for f, g in gaps.items()]


def test_choose_factor_takes_the_factor_nearest_the_published_one_within_the_margin_of_the_best():
    # 10 is best; 0.1 and 0.3 are within the margin of it: 0.3 is the closest to the published value
    assert choose_factor(_trials({0.1: 0.30, 0.3: 0.35, 1.0: 0.9, 10.0: 0.25}), margin=0.1) == 0.3
    assert choose_factor(_trials({0.1: 0.30, 0.3: 0.35, 1.0: 0.9, 10.0: 0.25}), margin=0.01) == 10.0
    assert choose_factor(_trials({0.1: 0.30, 0.3: 0.35, 1.0: 0.34, 10.0: 0.25}), margin=0.1) == 1.0


def test_choose_factor_refuses_forgetting_bought_with_val_accuracy():
    trials = [{"factor": 1.0, "proxy_gap": 49.9, "VA": 99.4}, {"factor": 10.0, "proxy_gap": 37.4, "VA": 24.8},
              {"factor": 100.0, "proxy_gap": 49.5, "VA": 99.1}]
    assert choose_factor(trials, margin=0.1) == 10.0  # the proxy alone prefers the collapsed model
    assert choose_factor(trials, margin=0.1, val_floor=94.4) == 100.0
    collapsed = [dict(t, VA=20.0) for t in trials]
    assert choose_factor(collapsed, margin=0.1, val_floor=94.4) == 10.0  # none admissible: all compete


def test_of_trials_that_measured_the_same_on_val_the_cheapest_is_kept():
    # digits class 0: 1, 3 and 10 times the published rate all reached the same forget and val accuracy
    trials = [{"factor": f, "proxy_gap": g, "FA": fa, "VA": 99.6, "samples_processed": n}
              for f, g, fa, n in ((0.3, 9.2, 18.5, 11900), (1.0, 0.42, 0.84, 6188), (3.0, 0.42, 0.84, 1309),
                                  (10.0, 0.42, 0.84, 357), (30.0, 50.0, 100.0, 119))]
    assert choose_factor(trials, margin=0.37) == 10.0
    trials[3]["VA"] = 99.5  # no longer the same measurement: the one nearest the published value among the rest
    assert choose_factor(trials, margin=0.37) == 3.0
    for t in trials:
        t.pop("samples_processed")  # trials that did not record their cost: the published value
    assert choose_factor(trials, margin=0.37) == 1.0


def test_choose_all_recomputes_every_choice_from_the_recorded_trials():
    from pgu.bench.selection import choose_all

    selection = {"original": {"VA": 99.4}, "margin": 0.1, "max_val_drop": 5.0, "methods": {
        "neggrad": {"trials": [{"factor": 1.0, "proxy_gap": 49.9, "VA": 99.4, "changed": {"lr": 1e-4}},
                               {"factor": 10.0, "proxy_gap": 37.4, "VA": 24.8, "changed": {"lr": 1e-3}}]}}}
    m = choose_all(selection)["methods"]["neggrad"]
    assert m["chosen_factor"] == 1.0 and m["chosen"] == {"lr": 1e-4}
    selection["max_val_drop"] = 80.0
    assert choose_all(selection)["methods"]["neggrad"]["chosen"] == {"lr": 1e-3}


def test_choose_factor_keeps_the_published_value_unless_beaten_by_more_than_the_margin():
    assert choose_factor(_trials({0.1: 0.9, 1.0: 1.0, 10.0: 0.95}), margin=0.2) == 1.0
    assert choose_factor(_trials({0.1: 0.9, 1.0: 1.5, 10.0: 0.7}), margin=0.2) == 10.0
    assert choose_factor(_trials({0.1: 0.5, 1.0: 1.5, 10.0: 0.5}), margin=0.2) == 0.1  # tie: the lower factor
    assert choose_factor(_trials({0.3: 0.5, 1.0: 1.5, 100.0: 0.5}), margin=0.2) == 0.3  # tie: closest to 1
    assert choose_factor(_trials({0.1: 0.5, 1.0: None, 10.0: 0.7}), margin=0.2) == 0.1  # published failed
    with pytest.raises(ValueError, match="every trial failed"):
        choose_factor(_trials({1.0: None, 10.0: float("nan")}), margin=0.2)


def _selection(methods: dict) -> dict:
    return {"tier": "digits", "scenario": "random", "seed": 100, "margin": 0.3, "environment": {"commit": "abc"},
            "methods": {name: {"chosen_factor": f, "chosen": changed,
                               "trials": [{"factor": 1.0, "proxy_gap": 1.0}, {"factor": f, "proxy_gap": 0.5}]}
                        for name, (f, changed) in methods.items()}}


def test_selected_file_round_trips_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "selected.toml"
    path.write_text(selected_toml(_selection({"neggrad": (10.0, {"lr": 1e-3}), "neggrad+": (0.3, {"lr": 0.003}),
                                              "pgu": (0.1, {"lr": [0.01, 0.001]})})))
    loaded = load_selected(path)
    assert loaded["neggrad"]["values"] == {"lr": 1e-3} and loaded["neggrad"]["factor"] == 10.0
    assert loaded["neggrad+"]["values"] == {"lr": 0.003} and loaded["pgu"]["values"] == {"lr": [0.01, 0.001]}
    assert "seed 100" in loaded["neggrad"]["source"]
    bad = {"[nope]\nsource = 'x'\nfactor = 1.0\nlr = 0.1\n": "not an unlearning method",
           "[neggrad]\nfactor = 1.0\nlr = 0.1\n": "source and factor",
           "[neggrad]\nsource = 'x'\nfactor = 1.0\nbogus = 3\n": "may set",
           "[neggrad]\nsource = 'x'\nfactor = 1.0\n": "nothing",
           "[neggrad\n": "not valid TOML"}
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_selected(path)
    with pytest.raises(ValueError, match="no selected-settings file"):
        load_selected(tmp_path / "missing.toml")


def test_bench_applies_selected_settings_and_records_them(tmp_path):
    path = tmp_path / "selected.toml"
    path.write_text(selected_toml(_selection({"neggrad": (10.0, {"lr": 1e-3}), "pgu": (0.1, {"lr": [0.01, 0.001]}),
                                              "pgu-energy": (3.0, {"lr": [0.3, 0.03]})})))
    chosen = BenchConfig(tier="digits", scenario="random", methods=("original", "retrain", "neggrad", "pgu"),
                         settings=str(path))
    chosen.validate()
    assert bench_settings("neggrad", chosen)["lr"] == 1e-3
    assert chosen.pgu.lr == (0.01, 0.001) and bench_settings("pgu", chosen)["lr"] == [0.01, 0.001]
    assert bench_settings("pgu-energy", chosen)["lr"] == [0.3, 0.03]
    assert bench_settings("finetune", chosen)["lr"] == method_settings("finetune")[0]["lr"]  # not selected: published
    assert chosen.to_dict()["selected"]["neggrad"] == {"factor": 10.0, "lr": 1e-3}
    published = BenchConfig(tier="digits", scenario="random", settings="published")
    assert bench_settings("neggrad", published)["lr"] == method_settings("neggrad")[0]["lr"]
    assert published.pgu == PGUSettings() and published.to_dict()["selected"] == {}
    assert not published.same_bench(chosen.to_dict() | {"methods": list(published.methods)})
    explicit = BenchConfig(tier="digits", scenario="random", settings=str(path), pgu=PGUSettings(lr=(0.2, 0.02)))
    assert explicit.pgu.lr == (0.2, 0.02)  # an explicit PGU setting wins over the selected rate
    # each mode has its own shipped file, and a tier pgu ships none for has none
    from pgu.settings import SELECTED_DIR

    assert BenchConfig(tier="digits", scenario="class").selected_path() == SELECTED_DIR / "digits-class.toml"
    assert BenchConfig(tier="digits", scenario="random").selected_path() == SELECTED_DIR / "digits-sample.toml"
    assert BenchConfig(tier="fashion", scenario="class").selected_path() is None
    for bad in (str(tmp_path / "none.toml"), "bogus"):
        with pytest.raises(ValueError, match="'published', 'selected' or a selected-settings file"):
            BenchConfig(tier="digits", scenario="random", settings=bad)


def test_shipped_selected_files_are_valid():
    from pgu.bench.selection import SELECTED_DIR

    shipped = sorted(SELECTED_DIR.glob("*.toml"))
    assert [p.name for p in shipped] == ["cifar10-memorize-sample.toml", "digits-class.toml", "digits-sample.toml",
                                         "mnist-class.toml", "mnist-sample.toml"]
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for path in shipped:
        tier, mode = path.stem.rsplit("-", 1)
        assert mode in ("sample", "class"), path
        chosen = load_selected(path)
        assert chosen, path
        scenario = "class" if mode == "class" else "random"
        assert BenchConfig(tier=tier, scenario=scenario).selected_path() == path
        # Each shipped file is backed by the selection it was written from: choosing again from its
        # recorded trials (the margin and val floor alone decide) gives the shipped factors and values.
        from pgu.bench.selection import choose_all

        record = choose_all(json.loads((results / f"selection-{tier}-{scenario}.json").read_text()))
        assert (record["tier"], record["scenario"]) == (tier, scenario)
        assert {name: m["chosen_factor"] for name, m in record["methods"].items()} == \
            {name: c["factor"] for name, c in chosen.items()}, path
        for name, c in chosen.items():
            assert record["methods"][name]["chosen"] == c["values"], (path, name)


class Untouchable:
    """A split that fails the test when anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"selection read the test split ({name})")


def test_selection_tries_every_method_at_every_factor_on_val_only(tmp_path, monkeypatch):
    import pgu.data

    real = pgu.data.load_dataset

    def without_test(*args, **kwargs):
        splits = real(*args, **kwargs)
        splits.test = Untouchable()
        return splits

    monkeypatch.setattr(pgu.data, "load_dataset", without_test)
    ladder = (0.1, 1.0, 10.0)
    selection = run_selection("digits", "random", 100, ("neggrad", "ssd"), tmp_path, ladder=ladder, progress=False)
    for name in ("neggrad", "ssd"):
        m = selection["methods"][name]
        assert [t["factor"] for t in m["trials"]] == list(ladder)  # the same trials for every method
        assert m["chosen_factor"] in ladder
        assert all(t["proxy_gap"] is None or t["proxy_gap"] >= 0 for t in m["trials"])
        published = next(t for t in m["trials"] if t["factor"] == 1.0)
        assert published["changed"] == {k: method_settings(name)[0][k] for k in method_scale(name)}
    assert selection["methods"]["ssd"]["trials"][2]["changed"] == {"alpha": 1.0, "lambda": 0.1}
    recorded = json.loads((tmp_path / "selection.json").read_text())
    assert recorded["ladder"] == list(ladder) and recorded["n_val"] > 0
    # one standard error of val accuracy (0 when the original gets every val image right)
    va = recorded["original"]["VA"]
    assert recorded["margin"] == pytest.approx(100 * math.sqrt(va / 100 * (1 - va / 100) / recorded["n_val"]))
    assert 0 <= recorded["margin"] < 5 and math.isfinite(recorded["target_FA"])
    loaded = load_selected(tmp_path / "selected.toml")
    assert set(loaded) == {"neggrad", "ssd"}
    assert (tmp_path / "selection.png").stat().st_size > 0


def test_selection_refuses_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="ladder"):
        run_selection("digits", "random", 100, ("neggrad",), tmp_path, ladder=(0.1, 10.0), progress=False)
    for methods in (("pgu",), ("neggrad",)):
        with pytest.raises(ValueError, match="one request"):
            run_selection("digits", "sequential", 100, methods, tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown methods"):
        run_selection("digits", "random", 100, ("nope",), tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_cli_select_refuses_references(capsys):
    from pgu.cli import main

    assert main(["select", "--tier", "digits", "--scenario", "random", "--methods", "retrain", "--out", "x"]) != 0
    assert "no settings to select" in capsys.readouterr().err


def test_a_diverging_trial_is_recorded_as_failed_not_fatal(tmp_path, monkeypatch):
    real = SeedRun.run_method

    def diverge_at_ten(self, name, *args, settings, **kwargs):
        run = real(self, name, *args, settings=settings, **kwargs)
        if settings["lr"] > method_settings(name)[0]["lr"] * 5:  # the x10 trial's weights become NaN
            with torch.no_grad():
                next(run["model"].parameters()).fill_(float("nan"))
        return run

    monkeypatch.setattr(SeedRun, "run_method", diverge_at_ten)
    selection = run_selection("digits", "random", 100, ("neggrad",), tmp_path, ladder=(1.0, 10.0), progress=False)
    published, diverged = selection["methods"]["neggrad"]["trials"]
    assert diverged["proxy_gap"] is None and "non-finite" in diverged["error"]
    assert published["proxy_gap"] is not None and selection["methods"]["neggrad"]["chosen_factor"] == 1.0


def test_a_wider_ladder_reruns_only_the_new_factors(tmp_path, monkeypatch):
    first = run_selection("digits", "random", 100, ("neggrad",), tmp_path, ladder=(1.0, 10.0), progress=False)
    calls = []
    real = SeedRun.run_method

    def counted(self, name, *args, settings, **kwargs):
        calls.append(settings["lr"])
        return real(self, name, *args, settings=settings, **kwargs)

    monkeypatch.setattr(SeedRun, "run_method", counted)
    second = run_selection("digits", "random", 100, ("neggrad",), tmp_path, ladder=(0.1, 1.0, 10.0), progress=False)
    assert calls == [pytest.approx(1e-5)]  # only the new factor ran
    old, new = first["methods"]["neggrad"]["trials"], second["methods"]["neggrad"]["trials"]
    assert [t["factor"] for t in new] == [0.1, 1.0, 10.0] and new[1]["reused"] and new[2]["reused"]
    assert new[1]["proxy_gap"] == old[0]["proxy_gap"] and new[2]["FA"] == old[1]["FA"]
    calls.clear()  # another request (seed) shares nothing
    run_selection("digits", "random", 101, ("neggrad",), tmp_path, ladder=(1.0,), progress=False)
    assert len(calls) == 1
