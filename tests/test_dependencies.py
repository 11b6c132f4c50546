"""What planner imports is what pyproject.toml declares, and the tested ranges agree everywhere."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from planner.base.compat import TESTED

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# the project's packages, tests/ and benchmarks/ (packages too), and the helpers of tests/ that tests import by name
LOCAL = {"planner", "planner_trainer", "tests", "benchmarks"} | {path.stem for path in (REPO / "tests").glob("*.py")}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*extras: str) -> dict[str, Requirement]:
    texts = [*PROJECT["dependencies"], *(text for extra in extras for text in PROJECT["optional-dependencies"][extra])]
    return {canonical(requirement.name): requirement for requirement in map(Requirement, texts)}


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """Top-level module -> files that import it, for absolute imports that are neither stdlib nor local."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distributions_of(module: str) -> list[str]:
    """The installed distributions that provide a top-level module; a module that is not installed
    counts as provided by a distribution of its own name (e.g. tomli on Python 3.11)."""
    return importlib.metadata.packages_distributions().get(module, [module])


# planner/ and trainer/ may use the core dependencies and the runtime extras (ray), never dev tools.
RUNTIME_EXTRAS = tuple(extra for extra in PROJECT["optional-dependencies"] if extra != "dev")


@pytest.mark.parametrize(
    ("folder", "extras"),
    [("planner", RUNTIME_EXTRAS), ("trainer", RUNTIME_EXTRAS), ("tests", ("dev",)), ("benchmarks", ("dev", "ray"))],
)
def test_every_directly_imported_package_is_declared(folder: str, extras: tuple[str, ...]) -> None:
    allowed = declared(*extras)
    imports = third_party_imports(REPO / folder)
    assert imports, f"no third-party import found under {folder}/: the scan is broken"
    missing = {
        module: sorted(files)
        for module, files in imports.items()
        if not any(canonical(dist) in allowed for dist in distributions_of(module))
    }
    assert not missing, f"imported under {folder}/ but not declared in pyproject.toml: {missing}"


def test_the_scan_sees_a_package_that_is_not_declared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "uses_yaml.py"
    module.write_text("import json\nfrom planner import cli\nimport yaml.loader\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    imports = third_party_imports(tmp_path)
    assert imports == {"yaml": {"uses_yaml.py"}}
    assert not any(canonical(dist) in declared(*RUNTIME_EXTRAS) for dist in distributions_of("yaml"))


def test_every_dependency_has_a_floor() -> None:
    for requirement in declared(*PROJECT["optional-dependencies"]).values():
        assert any(spec.operator == ">=" for spec in requirement.specifier), requirement


@pytest.mark.parametrize("package", sorted(TESTED))
def test_tested_range_is_the_floor_and_the_install_page_says_so(package: str) -> None:
    low, high = TESTED[package]
    floor = next(spec.version for spec in declared()[package].specifier if spec.operator == ">=")
    assert Version(floor) == Version(low), f"pyproject's {package} floor {floor} is not compat.TESTED's {low}"
    install = (REPO / "docs" / "install.md").read_text()
    assert f"| {package} | {low} | {high} |" in install, \
        f"docs/install.md's tested-range table lacks {package} {low}-{high}"
