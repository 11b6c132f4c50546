"""Imports run one way: base <- stages <- CLI, no circles, no private names across modules.

The layer of a module is its folder (ARCHITECTURE.md): ``planner/base`` is the base;
``planner/probe``, ``trainer`` (imported as ``planner_trainer``) and ``planner/ensemble`` are the
stages, which import only the base and never each other; the modules directly in ``planner/`` (the
CLI, the demo) are the top. Every import counts, also those inside functions.
``python tests/test_layers.py`` prints the graph between layers and every breach.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
# top-level import package -> its folder (trainer/ installs as planner_trainer)
PACKAGES = {name: SETUPTOOLS["package-dir"].get(name, name) for name in SETUPTOOLS["packages"] if "." not in name}
STAGES = {"planner.probe": "probe", "planner_trainer": "train", "planner.ensemble": "ensemble"}


def module_files() -> dict[str, Path]:
    """Dotted name -> file, for every module of the project's packages."""
    files = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = (package, *path.relative_to(REPO / folder).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def layer_of(module: str) -> str:
    """``base``, a stage's name, or ``top``."""
    if module == "planner" or module.startswith("planner.base"):
        return "base"
    for prefix, stage in STAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return stage
    return "top"


RANK = {"base": 0, "probe": 1, "train": 1, "ensemble": 1, "top": 2}


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, list[str]]]:
    """(imported project module, names taken from it) for every import statement in the file, and
    for every ``alias._name`` read from a project module imported as ``alias``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:  # `from planner.base import atomic` imports a module
                sub = f"{base}.{alias.name}"
                if sub in known:
                    aliases[alias.asname or alias.name] = sub
                yield (sub, []) if sub in known else (base, [alias.name])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield aliases[node.value.id], [node.attr]


def graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported module: names taken from it}."""
    files = module_files()
    edges: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for module, path in files.items():
        for target, names in imports_of(module, path, set(files)):
            if target != module:
                edges[module].setdefault(target, []).extend(names)
    return edges


def upward_imports(edges) -> list[str]:
    """Imports from a higher layer, or from another stage."""
    breaches = []
    for module, targets in edges.items():
        for target in targets:
            mine, theirs = layer_of(module), layer_of(target)
            if RANK[theirs] > RANK[mine] or (RANK[mine] == RANK[theirs] == 1 and mine != theirs):
                breaches.append(f"{module} ({mine}) imports {target} ({theirs})")
    return breaches


def circles(edges) -> list[list[str]]:
    """Every import cycle's modules (strongly connected components with more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def private_names(edges) -> list[str]:
    """``from other_module import _name`` or ``other_module._name``: a private name used outside its module."""
    return [f"{module} takes {name} from {target}" for module, targets in edges.items()
            for target, names in targets.items() for name in names
            if name.startswith("_") and not name.startswith("__")]


def test_layers_import_one_way():
    assert upward_imports(graph()) == []


def test_no_import_circles():
    assert circles(graph()) == []


def test_no_private_names_across_modules():
    assert private_names(graph()) == []


@pytest.mark.parametrize("module, layer", [
    ("planner.base.plan", "base"), ("planner.probe.meters.estimate", "probe"), ("planner_trainer.run", "train"),
    ("planner.ensemble.tune", "ensemble"), ("planner.cli", "top"), ("planner", "base"),
])
def test_layer_is_read_from_the_folder(module, layer):
    assert layer_of(module) == layer


def test_the_checks_catch_a_breach():
    """The checks fail on a made-up graph with an upward import, a circle and a private name."""
    edges = {"planner.base.plan": {"planner_trainer.run": []}, "planner_trainer.run": {"planner.base.plan": ["_load"]}}
    assert upward_imports(edges) == ["planner.base.plan (base) imports planner_trainer.run (train)"]
    assert circles(edges) == [["planner.base.plan", "planner_trainer.run"]]
    assert private_names(edges) == ["planner_trainer.run takes _load from planner.base.plan"]


def test_imports_are_read_also_inside_functions_and_through_module_aliases(tmp_path: Path) -> None:
    source = tmp_path / "run.py"
    source.write_text("def f():\n    from planner.base import cuda_device as gpu\n    return gpu._hidden(0)\n")
    found = list(imports_of("planner_trainer.run", source, {"planner.base.cuda_device"}))
    assert ("planner.base.cuda_device", []) in found and ("planner.base.cuda_device", ["_hidden"]) in found


if __name__ == "__main__":
    edges = graph()
    between: dict[tuple[str, str], int] = defaultdict(int)
    for module, targets in edges.items():
        for target in targets:
            if layer_of(module) != layer_of(target):
                between[(layer_of(module), layer_of(target))] += 1
    for (source, target), count in sorted(between.items()):
        print(f"{source:>8} -> {target:<8} {count} imports")
    for line in upward_imports(edges) + [" <-> ".join(c) for c in circles(edges)] + private_names(edges):
        print("BREACH", line)
