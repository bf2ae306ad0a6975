"""The package's structure, read from its source with ``ast`` (imports at module level and inside
functions): no import circles, no imports of another module's ``_private`` names, and no import
that runs up the layers the README's layout section describes:

    config  <  recipes, runs, runtime, data, models  <  training, evaluation, render  <  workflow  <  cli

A module may import its own package and the layers below it, never a sibling unit of its layer
(data and models know nothing of each other; training and evaluation neither).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cifarlab"

LAYERS = {"config_retired": -1, "config_values": -1, "config": 0, "files": 0, "version": 0, "config_help": 1, "recipes": 1, "runs": 1, "runtime": 1, "data": 1, "models": 1,
          "training": 2, "evaluation": 2, "render": 2, "workflow": 3, "cli": 4, "__main__": 5, "": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ("cifarlab",) + path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement of ``module``,
    inside functions too; only imports of cifarlab itself."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "cifarlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module).split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cifarlab":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in MODULES} <= set(LAYERS), "a new top-level module needs a place in LAYERS"


def test_no_import_runs_up_or_across_the_layers():
    bad = []
    for m in MODULES:
        for target, _, line in _imports(m):
            a, b = _unit(m), _unit(target)
            if a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{MODULES[m].relative_to(SRC)}:{line} ({a}, layer {LAYERS[a]}) imports {target} "
                           f"({b}, layer {LAYERS[b]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = [f"{MODULES[m].relative_to(SRC)}:{line} imports {name} from {target}"
           for m in MODULES for target, name, line in _imports(m)
           if name and name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    graph, cycles, state = _edges(), [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source, problem", [
    ("from ..workflow import train\n", "layers"),        # data importing the workflow: up the layers
    ("from ..models import create_model\n", "layers"),   # data importing models: across its layer
    ("from .cifar import _read_pickle\n", "private"),
    ("from . import open_source\n", "circle"),           # data/__init__ imports source.py: a circle
])
def test_the_checks_catch_what_they_name(monkeypatch, source, problem):
    """Each check fails on a planted violation in data/source.py (the file is read, not changed)."""
    path = MODULES["cifarlab.data.source"]
    text = path.read_text() + "\n\ndef _planted():\n    " + source.strip() + "\n"
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == path else real(self, *a, **k))
    check = {"layers": test_no_import_runs_up_or_across_the_layers,
             "private": test_no_module_imports_another_modules_private_names,
             "circle": test_no_import_circles}[problem]
    with pytest.raises(AssertionError):
        check()


def test_no_source_file_is_much_over_300_lines():
    """The bound is "about 300"; 320 leaves the command line's parser its few extra lines."""
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 320}
    assert not long, f"files to split: {long}"
