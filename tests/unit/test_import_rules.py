"""The house's import rules (docs/architecture.md), checked on the source: the layers only reach down, the tools
beside the app stay beside it, and no module of the app imports itself back through another.

Imports are read with ``ast`` from every module of the app, function-level (lazy) imports included, since a lazy
import is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("core", "handlers", "blueprints")
TOOLS = ("simulator", "devhost", "bench", "tools", "tests", "scenarios")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> dict[str, Path]:
    found = {"function_app": ROOT / "function_app.py"}
    for package in APP_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports, absolute, at any depth of the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            yield stem
            yield from (f"{stem}.{alias.name}" for alias in node.names)


MODULES = app_modules()
GRAPH = {name: sorted(set(imports_of(name, path))) for name, path in MODULES.items()}


def _top(imported: str) -> str:
    return imported.split(".")[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_blueprints_and_the_function_app_import_the_functions_runtime(name: str) -> None:
    if name == "function_app" or name.startswith("blueprints"):
        return
    assert not [i for i in GRAPH[name] if i == "azure.functions" or i.startswith("azure.functions.")], name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_app_never_imports_the_tools_beside_it(name: str) -> None:
    assert not [i for i in GRAPH[name] if _top(i) in TOOLS], name


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(("core", "handlers"))))
def test_core_and_handlers_never_import_the_layers_above_them(name: str) -> None:
    above = ("blueprints", "function_app") + (("handlers",) if name.startswith("core") else ())
    assert not [i for i in GRAPH[name] if _top(i) in above], name


def test_function_app_only_registers_blueprints() -> None:
    tree = ast.parse((ROOT / "function_app.py").read_text())
    imported = {_top(i) for i in GRAPH["function_app"]}
    assert imported <= {"azure", "blueprints", "__future__"}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert {c.func.attr for c in calls} <= {"register_blueprint", "FunctionApp"} | {"AuthLevel"}


def _edges() -> dict[str, set[str]]:
    """Module -> the app's modules it imports (a name imported from a package counts as its module if it is one)."""
    edges: dict[str, set[str]] = {}
    for name, imported in GRAPH.items():
        targets = set()
        for i in imported:
            if i in MODULES and i != name:
                targets.add(i)
        edges[name] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the app, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle_in_the_app() -> None:
    # A package's __init__ importing its own modules is how a package is made, not a circle.
    edges = {n: {t for t in ts if not (n.startswith(t + ".") or t.startswith(n + "."))} for n, ts in _edges().items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
