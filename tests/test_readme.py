"""The README's Python examples run as written, and it stays a short page whose links resolve."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs/example/stats.safetensors").is_file()


def test_readme_is_short_and_its_local_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README is the five-minute page; detail belongs in docs/"
    assert "<!-- headline:start -->" in text and "<!-- headline:end -->" in text  # docs/build_pages.py fills it
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links to no page of the docs"
    missing = sorted({t for t in local if not (ROOT / t).exists()})
    assert not missing, f"README links to files that do not exist: {missing}"
