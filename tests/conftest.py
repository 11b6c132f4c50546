"""Shared fixtures: the real CLI in a subprocess, and a small image folder in the reference layout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_data import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def run_planner(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m planner``) in a subprocess and capture its output, with Python's
    default warning filters (as a user has them: a PYTHONWARNINGS set for the test run is dropped)."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train on one thread: on a 2-core machine shared with other jobs, two OpenMP threads spinning at
    barriers turned a 4-second test into a 100-second one. (The CLI tests set OMP_NUM_THREADS=1.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def planner_cli():
    return run_planner


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 12 images of 40×40 px, 6 test images, sample_submission.csv; read-only by convention."""
    return make_image_folder(tmp_path_factory.mktemp("data"))
