"""The installed shape: every package folder ships, and trainer/ installs as ``planner_trainer`` so that
installing this project never shadows the ``trainer`` import name of another library."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from test_layers import PACKAGES, REPO, SETUPTOOLS


def test_every_package_folder_is_listed_in_pyproject():
    folders = {
        ".".join((package, *init.parent.relative_to(REPO / folder).parts))
        for package, folder in PACKAGES.items() for init in (REPO / folder).rglob("__init__.py")
    }
    assert folders == set(SETUPTOOLS["packages"]), "pyproject.toml [tool.setuptools] packages must list every package"


def test_the_wheel_installs_planner_and_planner_trainer_only(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("fit_planner-")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert top_level == {"planner", "planner_trainer"}
    assert "planner_trainer/run.py" in zipfile.ZipFile(wheel).namelist()
