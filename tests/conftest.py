"""Shared fixtures of every stage's tests: the real CLI in a subprocess, one torch thread, a small image
folder in the reference layout. Helpers live in modules beside this file (``run_data``,
``tune_weights_data``, ``planner_process``), imported by plain name (pytest's ``pythonpath``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import make_image_folder

# One CPU thread for the whole suite and the CLIs it starts, unless the caller chose: planner picks
# threads by load (planner/base/threads.py), and tests that compare a run's predictions bitwise across
# processes need the same count in each; one thread also keeps a shared 2-core machine usable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# matplotlib (which fastai imports) keeps its font cache under XDG_CACHE_HOME, which every test replaces
# (own_cache_folder below): pin it where it is and build it now, so that no process a test starts
# (a Ray worker, a CLI) builds it again and says so on stderr.
os.environ.setdefault("MPLCONFIGDIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                          / "matplotlib"))
import matplotlib.font_manager  # noqa: F401  (after MPLCONFIGDIR: builds the font cache there if absent)


@pytest.fixture(autouse=True)
def own_cache_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty cache folder per test (and the CLIs it starts): no test answers from another's stored
    estimates (planner/probe/meters/estimate_store.py) or finds another's studies."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


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
