"""Where a run's tries train: the one interface between the run driver and its backends.

The driver (``planner_trainer.run``) checks the plan, opens the run folder, picks the entries to train and
records every try's result; a backend only runs tries. :class:`LocalBackend` runs them one after
another in this process; ``planner_trainer.ray_backend.RayBackend`` runs them as Ray tasks over a cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from planner.base.errors import UserError
from planner.base.plan import Plan, PlanEntry
from planner.base.recipe import prepare_device
from planner_trainer.one_try import TryResult, run_try
from planner_trainer.progress import Reporter
from planner_trainer.try_spec import RunInputs, TrySpec

# Called by a backend when a try starts in this process, so that run.json says "running" meanwhile.
TryStarted = Callable[[TrySpec], None]


class Backend(ABC):
    """Runs tries of plan entries. The driver calls ``device`` once (the run's inputs carry the device it
    returns), then inside ``opened`` alternates ``submit`` (every entry to train, then a retry after each
    out-of-memory) and ``next_result`` while ``pending``."""

    @abstractmethod
    def device(self, requested: str, cpu_memory_limit: int | None) -> str:
        """The device ("cuda" or "cpu") the tries will train on, for the records of entries not trained.

        Raises:
            UserError: the device cannot be had here, or the options contradict each other.
        """

    @abstractmethod
    def opened(self, plan: Plan, entries: Sequence[PlanEntry], inputs: RunInputs, run_dir: Path,
               reporter: Reporter, started: TryStarted) -> AbstractContextManager[None]:
        """Set up for these entries (connect, claim the device); on leaving, stop what still runs.

        Raises:
            UserError: the backend cannot run these entries (no cluster, no GPU a task asks for).
        """

    @abstractmethod
    def submit(self, entry: PlanEntry, accum: int | None) -> None:
        """Queue a try: the planned pair when ``accum`` is None, else this accumulation (a retry)."""

    @property
    @abstractmethod
    def pending(self) -> bool:
        """Whether a submitted try has not been returned by ``next_result`` yet."""

    @abstractmethod
    def next_result(self) -> TryResult:
        """The next finished try (blocks until one is)."""


class LocalBackend(Backend):
    """Tries one after another in this process; a retry runs before the next entry."""

    def __init__(self, cbs: Sequence[Any] = ()) -> None:
        self.cbs = cbs
        self.queue: deque[tuple[PlanEntry, int]] = deque()

    def device(self, requested: str, cpu_memory_limit: int | None) -> str:
        import torch

        return resolve_device(requested, torch.cuda.is_available(), cpu_memory_limit)

    @contextmanager
    def opened(self, plan: Plan, entries: Sequence[PlanEntry], inputs: RunInputs, run_dir: Path,
               reporter: Reporter, started: TryStarted) -> Iterator[None]:
        self.inputs = inputs
        self.run_dir, self.reporter, self.started = run_dir, reporter, started
        prepare_device(self.inputs.device)
        try:
            yield
        finally:
            self.queue.clear()

    def submit(self, entry: PlanEntry, accum: int | None) -> None:
        if accum is None:
            self.queue.append((entry, entry.accum))
        else:
            self.queue.appendleft((entry, accum))

    @property
    def pending(self) -> bool:
        return bool(self.queue)

    def next_result(self) -> TryResult:
        entry, accum = self.queue.popleft()
        spec = TrySpec(entry=entry, accum=accum, inputs=self.inputs)
        self.started(spec)
        return run_try(spec, self.run_dir, self.reporter, self.cbs)


def resolve_device(requested: str, cuda_available: bool, cpu_memory_limit: int | None = None,
                   where: str = "here") -> str:
    """The device a try trains on, as both backends decide it: ``auto`` means cuda when one is available
    (to this process, or to a Ray task that got a GPU), else cpu; a memory limit applies to the CPU only.

    Raises:
        UserError: ``cuda`` asked where none is available, or a CPU memory limit with a GPU.
    """
    if requested == "cuda" and not cuda_available:
        raise UserError(f"--device cuda: no CUDA device is available {where}; use --device cpu or auto")
    device = "cuda" if requested == "cuda" or (requested == "auto" and cuda_available) else "cpu"
    if cpu_memory_limit is not None and device != "cpu":
        raise UserError("a CPU memory limit applies to CPU training only (--device cpu)")
    return device
