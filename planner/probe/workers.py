"""Tasks spread over worker processes, results as each finishes: for probes that need no device.

Why: the estimate meter's probes are Python on one core each (fake tensors, dispatched op by op) and
a plan's architectures are independent of each other, so the free cores of a machine can probe them
side by side.

How: fresh interpreters (``spawn``: nothing is inherited from this process's threads, CUDA state or
live display, on every platform alike), each with one torch thread and this process's warning
filters (a worker is as quiet as the CLI that started it). Ctrl-C is left to this process, which
stops the workers, so an interrupted probe prints no traceback per worker.
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


def _start_worker(filters: list[tuple]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filters[:] = filters
    import torch

    torch.set_num_threads(1)


def _portable_filters() -> list[tuple]:
    """This process's warning filters for built-in categories: a worker can always unpickle them (a
    worker that fails to start is restarted by the pool, forever)."""
    return [entry for entry in warnings.filters if getattr(entry[2], "__module__", None) == "builtins"]


def results_as_done(function: Callable[[Task], Result], tasks: Iterable[Task], processes: int) -> Iterator[Result]:
    """``function(task)`` for every task, in ``processes`` worker processes, yielded as each finishes.

    ``function`` and the tasks must pickle (a module-level function, plain data). An exception in a
    worker is raised here; leaving the iteration early, by that exception or any other, stops the
    workers. Where worker processes cannot start (a platform without the semaphores multiprocessing
    needs, e.g. a container without ``/dev/shm``), the tasks run here, one after another.
    """
    context = multiprocessing.get_context("spawn")
    try:
        pool = context.Pool(processes, initializer=_start_worker, initargs=(_portable_filters(),))
    except (OSError, ImportError):
        yield from map(function, tasks)
        return
    with pool:
        yield from pool.imap_unordered(function, tasks)
