"""Architectures side by side: where the meter's probes need no device (the estimate meter), this process
and worker processes, one per free core in all (``planner.probe.workers``), share a plan's architectures,
each taking the next one when it is ready; a worker's entries are reported when it finishes them.

Architectures are independent of each other, so the plan is the same as one process gives
(``tests/probe/test_probe_workers.py``); only the seconds differ.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from planner.base.entries import EntrySpec
from planner.base.plan import PlanEntry
from planner.base.threads import free_cores
from planner.probe.meters.base import ProbeMeter
from planner.probe.reporters import GroupReporter, Recorder
from planner.probe.workers import Claims, Running, affordable_processes


class GroupPlanner(Protocol):
    """Plans the entries of one architecture (``planner.probe.probe.GroupProbe``); picklable, as it travels
    to the worker processes, where ``close`` closes its copies of the meters."""

    def __call__(self, group: Sequence[EntrySpec], reporter: GroupReporter) -> list[PlanEntry]: ...

    def close(self) -> None: ...


def processes_for(meter: ProbeMeter, groups: int, jobs: int | None) -> int:
    """Processes (this one and its workers) for ``groups`` architectures: 1 (this process alone)
    unless the meter's probes need no device; otherwise ``jobs``, else the free cores and as many as
    the memory available affords, at most one per group."""
    if not meter.probes_apart or groups < 2 or jobs == 1:
        return 1
    return max(1, min(groups, jobs if jobs is not None else affordable_processes(free_cores())))


def probe_side_by_side(groups: list[list[EntrySpec]], plan_group: GroupPlanner, progress: GroupReporter,
                       helpers: int) -> list[PlanEntry]:
    """Plan ``groups`` in this process and ``helpers`` worker processes at once: each takes the next
    group when it is ready (this process from the end of the list, the workers from the start), and
    workers that have taken none when this process runs out are stopped (small models are done before
    a worker has imported fastai)."""
    planned: list[PlanEntry] = []
    with tempfile.TemporaryDirectory(prefix="planner-probe-") as folder:
        claims = Claims(Path(folder))
        running = Running(_plan_group_if_free, [(claims, index, group, plan_group)
                                                for index, group in enumerate(groups)], helpers)
        try:
            mine = 0
            for index in reversed(range(len(groups))):
                if claims.take(index):
                    planned += plan_group(groups[index], progress)
                    mine += 1
            for result in running if mine < len(groups) else ():
                if result is not None:
                    entries_done, recorder = result
                    recorder.replay(progress)
                    planned += entries_done
        finally:
            running.stop()
    return planned


def _plan_group_if_free(task: tuple[Claims, int, list[EntrySpec], GroupPlanner],
                        ) -> tuple[list[PlanEntry], Recorder] | None:
    """In a worker process, ready (timm and fastai imported): plan the group with the worker's copy of
    the meters if nobody has taken it yet; returns its progress too, or None."""
    import fastai.vision.all  # noqa: F401  (the import a first model build would make, before taking a group)

    claims, index, group, plan_group = task
    if not claims.take(index):
        return None
    recorder = Recorder()
    try:
        return plan_group(group, recorder), recorder
    finally:
        plan_group.close()
