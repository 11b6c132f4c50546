"""Tasks spread over worker processes, results as each finishes: for probes that need no device.

Why: the estimate meter's probes are Python on one core each (fake tensors, dispatched op by op) and
a plan's architectures are independent of each other, so the free cores of a machine can probe them
side by side.

How: joblib's ``loky`` workers, fresh interpreters on every platform. They inherit no thread, CUDA
state, autograd engine or live display from this process (a forked worker cannot run a backward
pass once its parent has run one), and, unlike ``multiprocessing``'s spawned workers, they never run
the caller's script again, so a script that calls ``probe_plan`` needs no ``__main__`` guard. An
exception in a task is raised here at once and the other workers are stopped; where worker processes
cannot start at all, joblib runs the tasks here, one after another. Each task runs with one torch
thread and this process's warning filters, set before the task imports timm and fastai (a worker is
as quiet as the CLI that started it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")

WORKER_BYTES = 2**30
"""What one worker may hold: about 0.7 GiB resident measured (torch, timm, fastai and a large model's
fake step; benchmarks/RESULTS.md), rounded up."""
MEMINFO = Path("/proc/meminfo")


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
    warnings.filters[:] = filters
    import torch

    torch.set_num_threads(1)
    return function(task)


def results_as_done(function: Callable[[Task], Result], tasks: Iterable[Task], processes: int) -> Iterator[Result]:
    """``function(task)`` for every task, in ``processes`` worker processes, yielded as each finishes.

    ``function`` and the tasks must pickle (a module-level function, plain data). An exception in a
    task is raised here, and leaving the iteration early stops the workers.
    """
    from joblib import Parallel, delayed

    filters = _portable_filters()
    parallel = Parallel(n_jobs=processes, backend="loky", return_as="generator_unordered")
    yield from parallel(delayed(_in_worker)(function, filters, task) for task in tasks)
