"""The package's floors: every module imports only its own floor and those below it (imports inside functions too)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pgu"

FLOORS = {
    "gram": {"gram"},
    "data": {"data"},
    "core": {"core", "gram"},
    "zoo": {"zoo", "core", "gram", "data"},
    "store": {"store", "zoo", "core", "gram", "data"},
    "bench": {"bench", "zoo", "core", "gram", "data"},
    "top": {"top", "bench", "store", "zoo", "core", "gram", "data"},
}
"""Floor -> the floors its modules may import. ``pgu.store`` and ``pgu.bench`` never import each other."""

TOP = {"cli", "demo", "__main__"}


def floor_of(module: str) -> str:
    """``pgu.bench.seed`` -> ``bench``; the modules directly in ``pgu/`` are the core, but the command line and demo."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # the package's face, pgu/__init__.py
    head = parts[1]
    if head in TOP:
        return "top"
    if (PACKAGE / head).is_dir() and head in FLOORS:
        return head
    return "core"


def imported_modules(path: Path, module: str) -> set[str]:
    """Every ``pgu`` module a file imports, at any depth (a function-level import counts)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
    return {m for m in found if m == "pgu" or m.startswith("pgu.")}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path,module", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_module_imports_only_its_floor_and_those_below(path, module):
    floor = floor_of(module)
    wrong = sorted(m for m in imported_modules(path, module) if floor_of(m) not in FLOORS[floor])
    assert not wrong, f"{module} ({floor}) imports {wrong}; it may import only {sorted(FLOORS[floor])}"


def test_the_floors_are_what_the_package_holds(tmp_path):
    assert floor_of("pgu.stats") == floor_of("pgu.unlearn") == floor_of("pgu.settings") == "core"
    assert floor_of("pgu.gram.layers") == "gram" and floor_of("pgu.data.poisoning") == "data"
    assert floor_of("pgu.store.model_store") == "store" and floor_of("pgu.bench.seed") == "bench"
    assert floor_of("pgu.cli.bench") == floor_of("pgu.demo") == "top"
    # the check sees what it checks: the store's own modules, and a deferred import inside a function
    store_imports = imported_modules(PACKAGE / "store" / "model_store.py", "pgu.store.model_store")
    assert "pgu.store.ledger" in store_imports and not any(m.startswith("pgu.bench") for m in store_imports)
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from pgu.bench import runner\n")
    assert imported_modules(probe, "pgu.store.probe") == {"pgu.bench"}
