"""The real CLI in a subprocess, as users run it, and where the repository is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_planner(*args: str | Path, cwd: Path | None = None, timeout: float = 900, env: dict[str, str] | None = None,
                pythonpath: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m planner``) in a subprocess and capture its output, with Python's
    default warning filters (as a user has them: a PYTHONWARNINGS set for the test run is dropped).

    One torch thread (two spinning OpenMP threads on a shared 2-core machine made a 4-second test
    take 100); ``pythonpath`` goes before this checkout (e.g. a folder with a fake ``ray``)."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONWARNINGS"}
    env = {**inherited, "PYTHONPATH": os.pathsep.join(map(str, (*pythonpath, REPO))), "COLUMNS": "160",
           "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def without_root_access() -> list[str]:
    """A command prefix under which permission bits hold: none for a user, root's override dropped for root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root overrides permission bits, and setpriv is missing to drop that")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
