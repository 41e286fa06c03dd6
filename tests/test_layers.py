"""The layer rule: promptblend <- predictors, index (neither imports the other) <- ensemble <- experiments.

Every import statement is walked with ``ast``, function-level ones included, so a lazy import from a
higher layer fails here too. The one arrow back is the no-argument demo fallback of ``ensemble.tune``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"promptblend": 0, "predictors": 1, "index": 1, "ensemble": 2, "experiments": 3}
ALLOWED = {("ensemble/tune/__main__.py", "experiments.demo")}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, relative ones resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, node.module] if node.module else base)))
            else:
                found.append((node.lineno, node.module))
    return found


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    own = rel.split("/")[0]
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top not in LAYER or top == own or (rel, module) in ALLOWED:
            continue
        if LAYER[top] >= LAYER[own]:
            bad.append(f"{rel}:{line} imports {module} ({own} is layer {LAYER[own]}, {top} layer {LAYER[top]})")
    return bad


def test_no_import_from_a_higher_or_sibling_layer():
    files = [p for pkg in LAYER for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "layer violations:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from predictors.knn import KnnPredictor\n", ["index"]),
        ("def f():\n    import ensemble.metric\n", ["index"]),
        ("from promptblend.bank import Bank\n", []),
        ("from . import faiss_index\n", []),
    ],
)
def test_the_walker_catches_lazy_and_sibling_imports(tmp_path, monkeypatch, source, expected):
    fake = ROOT / "index" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    found = _violations(fake)
    assert [v.split(" imports ")[0].split("/")[0] for v in found] == expected
