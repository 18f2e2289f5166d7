"""The shipped examples run as written: examples/own_model.py, and the Python blocks of docs/guide/own-model.md."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pgu
from pgu.stopping import STOP_REASONS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model.py"
GUIDE = ROOT / "docs" / "guide" / "own-model.md"
README = ROOT / "README.md"


def test_own_model_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    reason, epochs, ranks = lines[0].split(" ", 2)
    assert reason in STOP_REASONS
    assert int(epochs) >= 0
    ranks = ast.literal_eval(ranks)  # {layer: "k/d"}, one entry per Conv2d/Linear of the example's model
    assert len(ranks) == 3 and all(0 <= int(k) <= int(d) for k, d in (r.split("/") for r in ranks.values()))
    assert lines[1].startswith("forget acc ")
    stats = pgu.GramStats.load(tmp_path / "runs/example/stats.safetensors")
    assert stats.n_samples_ == 1500  # the example's training split


def test_readme_example_is_the_example_file():
    """The README shows examples/own_model.py's code (its docstring aside), so the two cannot drift apart."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = EXAMPLE.read_text()
    body = code.split('"""', 2)[2].lstrip("\n")
    assert body in blocks
    assert 30 <= len(body.splitlines()) <= 45


def test_guide_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks, "the guide has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "guide"}
    for code in blocks:  # one script, block after block
        exec(compile(code, str(GUIDE), "exec"), namespace)
    assert namespace["result"].stop_reason in STOP_REASONS
    assert (tmp_path / "runs/guide/stats.safetensors").is_file()
    assert max(pgu.projection_residual(namespace["model"], namespace["work"], namespace["cgs"]).values()) < 1e-4


@pytest.mark.slow  # about a minute of separate `pgu` processes; tests/test_own_model_cli.py covers each command fast
def test_own_model_cli_walkthrough_runs(tmp_path):
    """examples/own_model_cli/walkthrough.sh: train, store, two requests, verify and a bench, on a model file."""
    import json
    import os
    import shutil

    folder = tmp_path / "own_model_cli"
    shutil.copytree(ROOT / "examples" / "own_model_cli", folder, ignore=shutil.ignore_patterns("runs"))
    env = {**os.environ, "PGU": f"{sys.executable} -m pgu", "OUT": "out", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "walkthrough.sh"], cwd=folder, capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "16 groups" in done.stdout  # the coverage table: the depthwise conv projected group by group
    assert "ok at version 2" in done.stdout
    results = json.loads((folder / "out" / "bench" / "results.json").read_text())
    assert results["config"]["model"] == f"{(folder / 'model.py').resolve()}:build"
    assert {"original", "retrain", "pgu", "neggrad"} <= set(results["seeds"][0]["methods"])
