"""The package's shape: no import cycle, dependencies point one way, modules stay small.

Read from the source with :mod:`ast` (lazy imports inside functions count too), so the
test fails on a cycle that only one code path would trigger.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("neuron3d", "imagetranslation")


def modules():
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph():
    """Module -> the package modules it imports (a package's imports of its own children
    are left out: ``__init__`` re-exporting a submodule is not a dependency back)."""
    found = modules()
    graph = {name: set() for name in found}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates
                            if c in found and c != name and not c.startswith(name + ".")}
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_packages():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the packages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_library_never_imports_the_trainer():
    wrong = [(a, b) for a, deps in import_graph().items() for b in deps
             if a.startswith("neuron3d") and b.startswith("imagetranslation")]
    assert wrong == []


def test_modules_stay_small_or_say_why():
    """No module over ~500 lines (550 allowed) unless its docstring says why its length is
    what it is."""
    long = []
    for name, path in modules().items():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > 550 and "length" not in doc.lower():
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []
