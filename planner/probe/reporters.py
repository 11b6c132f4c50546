"""Who hears a probe's progress: the reporter the caller passes in, and the two the probe puts between
it and the entries (numbering entries as they start; keeping a worker process's events for the parent).

The probe calls a reporter; it never prints (the CLI's reporter is ``planner.probe.report.ProbeProgress``).
"""

from __future__ import annotations

from typing import Protocol

from planner.base.entries import EntrySpec
from planner.base.plan import PlanEntry, ProbePoint


class ProbeReporter(Protocol):
    """Receives progress; the CLI renders it. Every method is called in the thread that called
    ``planner.probe.probe.probe_plan``; entries probed in worker processes are reported as each
    architecture finishes."""

    def entry_started(self, entry: EntrySpec, index: int, total: int) -> None: ...

    def probe_done(self, entry: EntrySpec, point: ProbePoint) -> None: ...

    def entry_done(self, entry: PlanEntry) -> None: ...


class SilentReporter:
    """A reporter that shows nothing (library use and tests)."""

    def entry_started(self, entry: EntrySpec, index: int, total: int) -> None:
        pass

    def probe_done(self, entry: EntrySpec, point: ProbePoint) -> None:
        pass

    def entry_done(self, entry: PlanEntry) -> None:
        pass


class GroupReporter(Protocol):
    """Progress of one group of entries, before the entries are numbered."""

    def entry_started(self, entry: EntrySpec) -> None: ...

    def probe_done(self, entry: EntrySpec, point: ProbePoint) -> None: ...

    def entry_done(self, entry: PlanEntry) -> None: ...


class Numbered:
    """Numbers entries as they start (1/6, 2/6, ...), in whichever process they are probed."""

    def __init__(self, reporter: ProbeReporter, total: int):
        self.reporter = reporter
        self.total = total
        self.started = 0

    def entry_started(self, entry: EntrySpec) -> None:
        self.reporter.entry_started(entry, self.started, self.total)
        self.started += 1

    def probe_done(self, entry: EntrySpec, point: ProbePoint) -> None:
        self.reporter.probe_done(entry, point)

    def entry_done(self, entry: PlanEntry) -> None:
        self.reporter.entry_done(entry)


class Recorder:
    """A worker's progress, kept as ``(method, *arguments)`` for the parent to report."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def entry_started(self, entry: EntrySpec) -> None:
        self.events.append(("entry_started", entry))

    def probe_done(self, entry: EntrySpec, point: ProbePoint) -> None:
        self.events.append(("probe_done", entry, point))

    def entry_done(self, entry: PlanEntry) -> None:
        self.events.append(("entry_done", entry))

    def replay(self, reporter: GroupReporter) -> None:
        """Report the kept events to ``reporter``, in order."""
        for method, *arguments in self.events:
            getattr(reporter, method)(*arguments)
