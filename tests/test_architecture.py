"""The shape of `sbjax/`, kept by tests: no import circle, arrows only down the layers, no
private name imported across modules, no hidden imports, modules and functions of readable size.

The import graph is read with `ast` (nothing is imported), counting imports inside functions
too, since a function-level import is how a circle usually hides.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sbjax"

# Lower layers never import higher ones (a package may import its own modules freely).
LAYERS = {
    "sbjax.validate": 0,
    "sbjax.io": 0,
    "sbjax.runtime": 1,
    "sbjax.data": 2,
    "sbjax.models": 3,
    "sbjax.eval": 4,
    "sbjax.train": 5,
    "sbjax.plots": 6,
}

# Imports inside functions that are allowed, each with its reason: (importer, imported).
LAZY_IMPORTS = {
    # `python -m sbjax.plots --help` and every `--help` start no matplotlib: the drawing modules
    # load on first use (the package's PEP 562 __getattr__, `registry.load_kinds`).
    ("sbjax.plots", "sbjax.plots.paper"),
    ("sbjax.plots", "sbjax.plots.registry"),
    ("sbjax.plots.registry", "sbjax.plots.paper"),
    ("sbjax.plots.__main__", "sbjax.plots.registry"),
}

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
# Stated exceptions (code lines, docstrings and comments excluded), and why.
SIZE_EXCEPTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _imports(path: Path):
    """(imported module, names, inside a function) for each `sbjax` import of a file."""
    tree = ast.parse(path.read_text())
    in_function = set()
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function.update(id(n) for n in ast.walk(f) if n is not f)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sbjax"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                target = sub if sub in MODULES else node.module
                yield target, alias.name, id(node) in in_function
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sbjax"):
                    yield alias.name, None, id(node) in in_function


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(p) if t != m} for m, p in MODULES.items()}


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v) :] + [v]))
            elif v in graph and not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    assert not cycles, cycles


def test_arrows_only_go_down_the_layers():
    upward = []
    for m, targets in _graph().items():
        src = LAYERS.get(_package(m))
        for t in targets:
            dst = LAYERS.get(_package(t))
            if src is not None and dst is not None and _package(m) != _package(t) and dst > src:
                upward.append(f"{m} -> {t}")
    assert not upward, upward


def test_no_private_names_across_modules():
    bad = [
        f"{m} imports {name} from {t}"
        for m, p in MODULES.items()
        for t, name, _ in _imports(p)
        if name and name.startswith("_") and not name.startswith("__") and t != m
    ]
    assert not bad, bad


def test_no_hidden_imports():
    hidden = sorted(
        {(m, t) for m, p in MODULES.items() for t, _, lazy in _imports(p) if lazy} - LAZY_IMPORTS
    )
    assert not hidden, f"imports inside functions (add to LAZY_IMPORTS with a reason): {hidden}"


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of `node` that are code: not blank, not comments, not docstrings."""
    skip = set()
    for n in ast.walk(node):
        body = getattr(n, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            v = body[0].value
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    start = getattr(node, "lineno", 1)
    end = getattr(node, "end_lineno", len(lines))
    return sum(
        1
        for i in range(start, end + 1)
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def _sizes():
    for m, p in MODULES.items():
        text = p.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        yield m, _code_lines(tree, lines), MAX_MODULE_LINES
        for f in ast.walk(tree):
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{m}.{f.name}", _code_lines(f, lines), MAX_FUNCTION_LINES


def test_modules_and_functions_have_readable_size():
    big = [f"{name}: {n} > {cap}" for name, n, cap in _sizes() if n > cap]
    big = [b for b in big if b.split(":")[0] not in SIZE_EXCEPTIONS]
    assert not big, big


def test_train_sweep_takes_a_spec_not_two_dozen_keywords():
    from sbjax.train import SweepSpec, train_sweep

    assert len(inspect.signature(train_sweep).parameters) <= 12
    with pytest.raises(TypeError, match="n_seed'.*SweepSpec fields"):
        SweepSpec.build(n_seed=3)
    spec = SweepSpec.build(n_seeds=3, grid={"lr": [0.1]})
    assert SweepSpec.build(spec, n_members=2).n_seeds == 3
