"""Architectures probed side by side, here and in worker processes: the same plan as one process,
every entry reported once, a worker's error raised here."""

from __future__ import annotations

from typing import Any

import pytest

from planner.base.errors import UserError
from planner.base.plan import ItemTransform
from planner.probe.meters import get_meter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate_store import NO_CACHE_VARIABLE
from planner.probe.probe import probe_plan

pytestmark = pytest.mark.slow  # workers import timm and fastai (seconds each), fake steps of three models

GIB = 2**30
TIMES = {"seconds", "probe_seconds", "created"}


def _without_times(value: Any) -> Any:
    """A plan's fields, recursively, without the wall times that differ from run to run."""
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items() if key not in TIMES}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    return value


class Events:
    """Every progress call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def entry_started(self, entry, index: int, total: int) -> None:
        self.calls.append(("started", entry.name, index, total))

    def probe_done(self, entry, point) -> None:
        self.calls.append(("probe", entry.name, point.micro_batch))

    def entry_done(self, entry) -> None:
        self.calls.append(("done", entry.name))


def _entries():
    from planner.base.entries import single_entry

    return [*single_entry("resnet18", 64), *single_entry("convnext_atto", 64),
            *single_entry("resnet18", 64, ItemTransform(resize=96, method="squish"))]


@pytest.fixture
def this_process_takes_only_the_first_architecture(monkeypatch):
    """This process probes the first architecture (by name) and leaves the others to the workers: it
    would take them all, small models being done before a worker has started. Only this process's
    choice is changed; the workers, fresh interpreters, take groups as planner does."""
    from planner.probe.workers import Claims

    take = Claims.take
    monkeypatch.setattr(Claims, "take", lambda self, index: index == 0 and take(self, index))


def test_this_process_and_a_worker_give_the_plan_one_process_gives_and_report_every_entry_once(
        this_process_takes_only_the_first_architecture, monkeypatch) -> None:
    monkeypatch.setenv(NO_CACHE_VARIABLE, "1")  # both plans probe: none answers from the other's store
    entries = _entries()
    options = dict(budget_bytes=2 * GIB, effective_batch_size=256, more_budgets=[3 * GIB], margin=0.05)
    device = DeviceModel()  # the published runs' constants (given by hand, so is the margin): they split the choices
    alone = probe_plan(entries, get_meter("estimate", device=device), jobs=1, **options)
    events = Events()
    apart = probe_plan(entries, get_meter("estimate", device=device), jobs=2, reporter=events, **options)

    assert _without_times(apart.model_dump()) == _without_times(alone.model_dump())
    assert [entry.name for entry in apart.entries] == [entry.name for entry in entries]
    assert not any(point.reused for entry in apart.entries[:2] for point in entry.probes)
    assert len({entry.micro_batch for entry in apart.entries}) > 1  # the budget splits the choices
    started = [call for call in events.calls if call[0] == "started"]
    assert [call[2:] for call in started] == [(0, 3), (1, 3), (2, 3)]
    assert sorted(call[1] for call in started) == sorted(entry.name for entry in entries)
    for entry in apart.entries:  # each entry's progress together: started, its probes, done
        own = [call for call in events.calls if call[1] == entry.name]
        assert own[0][0] == "started" and own[-1] == ("done", entry.name)
        assert [call[2] for call in own[1:-1]] == [probe.micro_batch for probe in entry.probes]
        begin = events.calls.index(own[0])
        assert events.calls[begin:begin + len(own)] == own


def test_an_entry_that_fails_in_a_worker_fails_the_probe_with_its_one_line_reason(
        this_process_takes_only_the_first_architecture) -> None:
    from planner.base.entries import single_entry

    entries = [*single_entry("resnet18", 64), *single_entry("vit_tiny_patch16_224", 96)]
    with pytest.raises(UserError, match=r"vit_tiny_patch16_224.*micro-batch .* failed: .*input size"):
        probe_plan(entries, get_meter("estimate"), budget_bytes=2 * GIB, effective_batch_size=16, jobs=2)


def test_workers_are_as_many_as_the_available_memory_affords(tmp_path) -> None:
    from planner.probe.workers import WORKER_BYTES, affordable_processes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:  99999999 kB\nMemAvailable:  {3 * WORKER_BYTES // 1024 + 5} kB\n")
    assert affordable_processes(8, meminfo) == 3 and affordable_processes(2, meminfo) == 2
    meminfo.write_text("MemAvailable:  1000 kB\n")
    assert affordable_processes(8, meminfo) == 1
    assert affordable_processes(8, tmp_path / "missing") == 8  # no /proc: the cores decide
