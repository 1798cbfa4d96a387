"""The package's parts import each other in one direction only: no circles, lazy imports included.

A part is a top-level module (`referdino_demo.results`) or subpackage (`referdino_demo.model`); an import inside a
function counts like one at the top, since it ties the two parts together just the same.
"""

import ast
from collections import defaultdict
from pathlib import Path

import referdino_demo

PACKAGE = Path(referdino_demo.__file__).parent


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> set[str]:
    """Absolute names of the `referdino_demo` modules that `path` imports anywhere in its code."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1])  # a module's folder; for `__init__` the package itself
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("referdino_demo.")}


def part_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "referdino_demo":  # the package's own front door may import any part
            continue
        for name in _imports(path):
            if _part(name) != _part(module):
                graph[_part(module)].add(_part(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of parts that import each other in a circle, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_parts_of_the_package_import_each_other_without_circles():
    graph = part_graph()
    assert "referdino_demo.model" in graph  # the scan saw the package
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_the_model_knows_nothing_of_files_front_ends_or_drawing():
    upward = {"referdino_demo.checkpoints", "referdino_demo.predictor", "referdino_demo.render",
              "referdino_demo.export", "referdino_demo.ui", "referdino_demo.cli", "referdino_demo.hub"}
    assert not part_graph()["referdino_demo.model"] & upward
