"""The demo end to end, from Python on a reduced config and from the command line."""

import json
import subprocess
import sys

from pgu.demo import DemoConfig, format_table, run_demo
from pgu.zoo.training import TrainConfig


def test_run_demo_writes_results_with_every_method_and_request(tmp_path):
    config = DemoConfig(train=TrainConfig(epochs=10))
    results = run_demo(tmp_path, seed=1, progress=False, config=config)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seed"] == 1 and saved["environment"]["torch"]
    assert [r["mode"] for r in saved["requests"]] == ["sample", "class"]
    for req in saved["requests"]:
        assert set(req["methods"]) == {"original", "retrain", "pgu", "served"}
        assert req["n_forget"] == len(req["forget_ids"]) > 0
        assert req["speedup"] > 0 and req["pgu"]["stop_reason"]
        assert len(req["pgu"]["history"]) == req["pgu"]["epochs"] + 1
        served = req["served"]
        assert served["method"] == ("pgu-heldout" if req["mode"] == "sample" else "pgu")
        assert served["speedup"] > 0 and served["stop_reason"] and served["settings_source"]
    assert saved["requests"][0]["served"]["target_forget_acc"] is not None  # the held-out target it aimed at
    cls = saved["requests"][1]["methods"]
    assert cls["retrain"]["forget_acc"] < 5  # a model that never saw the class does not predict it
    assert cls["pgu"]["forget_acc"] < cls["original"]["forget_acc"] - 50
    table = format_table(results)
    assert "speed-up" in table and "class" in table and "pgu-heldout *" in table and "pgu (authors')" in table


def test_cli_demo(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "pgu", "demo", "--out", str(out), "--quiet", "--seed", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "retrain" in proc.stdout and (out / "results.json").is_file()


def test_cli_reports_errors_without_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "pgu", "demo", "--out", str(blocker / "sub"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "error" in proc.stderr and "Traceback" not in proc.stderr
    assert subprocess.run([sys.executable, "-m", "pgu"], capture_output=True).returncode == 2
