"""CPU threads for training: as many as there are cores other processes leave free, at least one.

Why. torch's CPU kernels run on an OpenMP pool of one thread per core, and every parallel region
ends at a barrier where the fastest thread waits for the slowest. When another process keeps one
core busy, the thread that shares its core gets a slice of it now and then, and every region waits
for that slice: on the 2-core dev machine ``planner demo``'s resnet18 epochs went from 6 s to
86–172 s while another job ran (benchmarks/RESULTS.md, "What does a run cost beyond training?"). One
thread fewer than the cores in use by others avoids the barrier stalls; it costs at most the share of a
core the others leave.

How. The busy cores of other processes are measured over a short window from ``/proc/stat`` (the
cores this process may run on, ``os.sched_getaffinity``), minus this process's own CPU time; where
``/proc/stat`` is missing, the 1-minute load average stands in. ``threads = max(1, round(free))``:
a core counts as free when at least half of it is. An explicit ``OMP_NUM_THREADS`` always wins (set
it for bitwise-reproducible CPU results: reductions over another thread count differ in the last
bits, about 1e-6 after a few steps).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.1  # 10 clock ticks per core: a tenth of a core's resolution


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads to train with, and why (for run.json and the log)."""

    threads: int
    cores: int
    busy_elsewhere: float | None
    source: str


def usable_cores() -> tuple[int, ...]:
    """The CPU ids this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def busy_jiffies(stat_text: str, cores: tuple[int, ...]) -> tuple[int, int]:
    """Busy and total clock ticks of ``cores``, summed from the text of ``/proc/stat``.

    Busy is every column but idle and iowait (the 4th and 5th) and guest time (already in user).
    """
    busy = total = 0
    wanted = {f"cpu{core}" for core in cores}
    for line in stat_text.splitlines():
        fields = line.split()
        if not fields or fields[0] not in wanted:
            continue
        ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def busy_elsewhere(cores: tuple[int, ...], seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores kept busy by other processes over ``seconds`` (None without ``/proc/stat``)."""
    try:
        before = busy_jiffies(PROC_STAT.read_text(), cores)
        own_before = _own_cpu_seconds()
        time.sleep(seconds)
        after = busy_jiffies(PROC_STAT.read_text(), cores)
        own = _own_cpu_seconds() - own_before
    except OSError:
        return None
    ticks = after[1] - before[1]
    if ticks <= 0:
        return None
    busy_fraction = (after[0] - before[0]) / ticks  # of all the cores' time in the window
    window = ticks / len(cores) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy_fraction * len(cores) - own / max(window, 1e-9))


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def choose_threads(measure: bool = True) -> ThreadChoice:
    """The thread count for CPU training now (module docstring).

    Args:
        measure: sample other processes' load; False keeps every usable core.
    """
    cores = len(usable_cores())
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return ThreadChoice(threads=int(explicit), cores=cores, busy_elsewhere=None, source="OMP_NUM_THREADS")
    if not measure:
        return ThreadChoice(threads=cores, cores=cores, busy_elsewhere=None, source="all cores")
    busy, source = _busy_now()
    if busy is None:
        return ThreadChoice(threads=cores, cores=cores, busy_elsewhere=None, source="all cores")
    return ThreadChoice(threads=_free(cores, busy), cores=cores, busy_elsewhere=round(busy, 2), source=source)


def free_cores() -> int:
    """The usable cores other processes leave free now (at least one; the module docstring's rule),
    whatever ``OMP_NUM_THREADS`` says: for work spread over processes of one thread each."""
    cores = len(usable_cores())
    busy, _ = _busy_now()
    return cores if busy is None else _free(cores, busy)


def _busy_now() -> tuple[float | None, str]:
    """Cores busy elsewhere, and where that was read: ``/proc/stat``, else the load average."""
    busy = busy_elsewhere(usable_cores())
    if busy is not None:
        return busy, "/proc/stat"
    if hasattr(os, "getloadavg"):
        return max(0.0, os.getloadavg()[0] - 1.0), "load average"  # minus this process
    return None, "all cores"


def _free(cores: int, busy: float) -> int:
    """A core counts as free when at least half of it is."""
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def use_cpu_threads() -> ThreadChoice:
    """Choose the thread count and give it to torch; returns the choice."""
    import torch

    choice = choose_threads()
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Give torch back the thread count it had when the block ends: probing, training and predicting choose
    their own (:func:`use_cpu_threads`), and a notebook that calls them keeps its own setting afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
