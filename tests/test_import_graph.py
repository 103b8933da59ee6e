"""The package's import graph: acyclic, counting imports inside functions too
(a lazy import only defers a circle, it does not remove it)."""

import ast
from pathlib import Path

import pytest

import espnet_gmot

PACKAGE = Path(espnet_gmot.__file__).parent
ROOT = PACKAGE.parent


def module_name(source: Path) -> str:
    parts = list(source.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict:
    return {module_name(source): source for source in sorted(PACKAGE.rglob("*.py"))}


def imports_of(source: Path, modules: dict) -> set:
    """The package modules ``source`` imports, anywhere in the file."""
    name = module_name(source)
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a.b import c`` imports the module a.b.c when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def find_cycle(graph: dict):
    """One import circle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_package_imports_form_no_circle():
    modules = package_modules()
    graph = {name: imports_of(source, modules) for name, source in modules.items()}
    assert sum(len(edges) for edges in graph.values()) > 20  # the parser sees the imports
    assert "espnet_gmot.espnet.model" in graph["espnet_gmot.espnet.registry"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"b2", "c"}, "b2": set(), "c": {"b"}}, ["b", "c", "b"]),
])
def test_the_cycle_finder_itself(graph, cycle):
    assert find_cycle(graph) == cycle


def test_relative_and_submodule_imports_are_resolved(tmp_path):
    modules = package_modules()
    source = PACKAGE / "espnet" / "plm_cache.py"
    edges = imports_of(source, modules)
    # ``from espnet_gmot.transfer.plm import PLMTeacher`` and the lazy registry import.
    assert {"espnet_gmot.transfer.plm", "espnet_gmot.espnet.registry"} <= edges
