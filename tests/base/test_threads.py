"""CPU threads: the cores other processes leave free, measured from the kernel's counters."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from planner.base.threads import PROC_STAT, busy_jiffies, choose_threads, free_cores, usable_cores

STAT = """cpu  100 0 50 800 50 0 0 0 0 0
cpu0 60 0 30 400 10 0 0 0 0 0
cpu1 40 0 20 400 40 0 0 0 0 0
intr 12345
"""


def test_busy_ticks_leave_out_idle_and_iowait_and_other_cores() -> None:
    assert busy_jiffies(STAT, (0,)) == (90, 500)
    assert busy_jiffies(STAT, (0, 1)) == (150, 1000)
    assert busy_jiffies(STAT, (7,)) == (0, 0)


def test_an_explicit_omp_num_threads_wins(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    choice = choose_threads()
    assert (choice.threads, choice.source) == (3, "OMP_NUM_THREADS")


@pytest.fixture
def busy_neighbour() -> Iterator[None]:
    """Another process spinning on one core (for half a second before the test measures)."""
    if not PROC_STAT.exists() or len(usable_cores()) < 2:
        pytest.skip("needs /proc/stat and at least two cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_a_busy_neighbour_takes_its_core_away(busy_neighbour, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    choice = choose_threads()
    assert choice.source == "/proc/stat" and choice.busy_elsewhere >= 0.5
    assert 1 <= choice.threads <= len(usable_cores()) - 1


def test_free_cores_leave_out_a_busy_neighbour_whatever_omp_num_threads_says(busy_neighbour, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert 1 <= free_cores() <= len(usable_cores()) - 1
