"""Tasks spread over worker processes, results as each finishes: for probes that need no device.

Why: the estimate meter's probes are Python on one core each (meta tensors, dispatched op by op) and
a plan's architectures are independent of each other, so the free cores of a machine can probe them
side by side.

How: ``loky``'s workers (the process pool of joblib), fresh interpreters on every platform. They
inherit no thread, CUDA state, autograd engine or live display from this process (a forked worker
cannot run a backward pass once its parent has run one), and, unlike ``multiprocessing``'s spawned
workers, they never run the caller's script again, so a script that calls ``probe_plan`` needs no
``__main__`` guard. An exception in a task is raised here at once and the other workers are
stopped. Each task runs with one torch thread and this process's warning filters (a worker is as
quiet as the CLI that started it). A worker starts in seconds, not at once, so :class:`Claims` lets
this process and its workers share one list of tasks, each taking the next task only when it is
ready for it.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from functools import cache
from pathlib import Path
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")

WORKER_BYTES = 2**30
"""What one worker may hold: about 0.7 GiB resident measured (torch, timm, fastai and a large model's
fake step; benchmarks/RESULTS.md), rounded up."""
MEMINFO = Path("/proc/meminfo")
PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that the process that started it still runs."""


def affordable_processes(wanted: int, meminfo: Path = MEMINFO) -> int:
    """``wanted``, at most one per ``WORKER_BYTES`` of the memory available now (Linux's
    ``MemAvailable``; elsewhere ``wanted``), at least one."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return wanted
    return max(1, min(wanted, available // WORKER_BYTES))


def _portable_filters() -> list[tuple]:
    """This process's warning filters for built-in categories (any worker can unpickle them)."""
    return [entry for entry in warnings.filters if getattr(entry[2], "__module__", None) == "builtins"]


def _in_worker(function: Callable[[Task], Result], filters: list[tuple], task: Task) -> Result:
    _end_with_parent()
    warnings.filters[:] = filters
    import torch

    torch.set_num_threads(1)
    return function(task)


@cache
def _end_with_parent() -> None:
    """Once per worker: a thread that ends this worker when the process that started it is gone. A probe
    killed with ``kill -9`` cannot stop its workers, which would go on probing for nobody (for minutes,
    on cores other work needs)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="planner-parent-watch", daemon=True).start()


class Claims:
    """Which shared tasks someone has taken: one file per task in ``folder`` (a local temporary
    folder), created exclusively, so that no two processes ever take the same task."""

    def __init__(self, folder: Path):
        self.folder = folder

    def take(self, index: int) -> bool:
        """Take task ``index``; False when another process has it."""
        try:
            os.close(os.open(self.folder / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


class Running(Iterator[Result]):
    """Tasks running in worker processes from the moment this is made; iterate for the results as each
    finishes, or :meth:`stop` the workers (tasks still running are killed)."""

    def __init__(self, function: Callable[[Task], Result], tasks: Iterable[Task], processes: int):
        from loky import ProcessPoolExecutor

        self._executor = ProcessPoolExecutor(max_workers=processes)
        filters = _portable_filters()
        futures = [self._executor.submit(_in_worker, function, filters, task) for task in tasks]
        self._done = as_completed(futures)

    def __next__(self) -> Result:
        return next(self._done).result()

    def stop(self) -> None:
        self._executor.shutdown(wait=False, kill_workers=True)
