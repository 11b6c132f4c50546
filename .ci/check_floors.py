"""Print each direct dependency's floor beside the installed version; exit 1 if any is not at its floor.

Run by .ci/lowest after the lowest-direct install, so that a floor the resolver could not take (it
chose a newer release to satisfy another package) is reported instead of passing as tested.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.version import Version

pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
project = pyproject["project"]
requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
off = []
for text in requirements:
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    installed = importlib.metadata.version(requirement.name)
    at_floor = bool(floors) and Version(Version(installed).public) == Version(floors[0])
    print(f"{requirement.name:<16} floor {floors[0] if floors else '-':<12} installed {installed:<14}"
          f"{'' if at_floor else '  NOT AT FLOOR'}")
    if not at_floor:
        off.append(requirement.name)
if off:
    sys.exit(f"not installed at their floor: {', '.join(off)}")
