"""The runtime import graph of ``nksim/`` has no cycle, and every module imports with all extras installed.

The graph is read from the source (``ast``): every ``import`` that runs, at module level or inside
a function, is an edge from the importing module to the imported one. Imports under
``if TYPE_CHECKING:`` never run and are left out. A package's ``__init__`` counts as its own module
(``nksim``), and a submodule's implicit import of its parent package is not an edge: the parent
is imported first either way, so only explicit imports can close a loop.
"""
from __future__ import annotations

import ast
import graphlib
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nksim"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that can run: all but those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: the nksim modules it imports at run time}`` for every module of ``nksim/``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from X import Y": Y is a submodule of X, or a name defined in X
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            for target in targets:
                while target and target not in modules and "." in target:  # "import nksim.engine.kernel as k"
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_runtime_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "nksim.cli" in graph and "nksim.engine.kernel" in graph
    cycle = _cycle(graph)
    assert cycle is None, "runtime import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_and_skips_type_checking_imports(tmp_path):
    """The checker itself: a function-level import back to the CLI is a cycle; a TYPE_CHECKING import is not."""
    graph = import_graph()
    assert "nksim.interrupts" in graph["nksim.sweep.cli"]  # a function-level import is an edge
    assert "nksim.sweep.cli" in graph["nksim.cli"]
    assert _cycle({**graph, "nksim.sweep.cli": graph["nksim.sweep.cli"] | {"nksim.cli"}}) is not None
    # nksim.quantities names nksim.parameters only for annotations, under TYPE_CHECKING
    source = (PACKAGE / "quantities.py").read_text()
    assert "TYPE_CHECKING" in source and "parameters" in source
    assert "nksim.parameters" not in graph["nksim.quantities"]
    assert "nksim.quantities" in graph["nksim.parameters"]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_imports_with_all_extras(module):
    """Every extra is complete: with ``.[dev]`` (all extras) installed, each module of nksim imports."""
    importlib.import_module(module)
