"""What a run tells the person watching it: a reporter receives the run's events.

The core calls a :class:`Reporter`; it never prints. :class:`LineReporter` turns every event into one
plain line (for CI logs and ``RUN_DIR/run.log``); :class:`RichReporter` adds live progress bars
(entries, and epochs of the current entry) when its console is an interactive terminal
(:func:`live_bars`), and otherwise prints the same plain lines with no carriage-return redraws. The
CLI makes the console and passes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.base.atomic import naming
from planner.base.budget import format_bytes
from planner.base.runfile import EntryRecord, EpochRecord, OomMiss, RunFile, now, peaks_comparable


class Reporter:
    """Receives a run's events; every method does nothing here. Called in this order: ``run_started``
    once; per entry either ``entry_skipped`` or ``entry_started``, ``epoch_done`` after each epoch,
    ``entry_oom`` after each out-of-memory try (then ``entry_started`` again for the retry), and
    ``entry_done`` (finished or failed); ``notice`` at any time; ``run_finished`` once at the end, also
    after an interrupt."""

    def run_started(self, run_dir: Path, names: Sequence[str]) -> None:
        """The run checked its inputs and will go through ``names`` in order."""

    def entry_skipped(self, name: str, reason: str) -> None:
        """An entry was finished by an earlier run and is not trained again."""

    def entry_started(self, name: str, accum: int, micro_batch: int, total_epochs: int) -> None:
        """A try of an entry starts training (``total_epochs`` counts fine_tune's frozen epoch)."""

    def epoch_done(self, name: str, epoch: EpochRecord, total_epochs: int) -> None:
        """An epoch ended."""

    def entry_oom(self, name: str, miss: OomMiss, next_accum: int | None) -> None:
        """A try ran out of memory; ``next_accum`` is the retry's accumulation, None when none is left."""

    def entry_done(self, record: EntryRecord) -> None:
        """An entry finished (predictions saved) or failed (out of memory at every accumulation)."""

    def notice(self, text: str) -> None:
        """Something the person should know that is not an entry's event (e.g. the data changed)."""

    def run_finished(self) -> None:
        """The run ended, normally or not."""


class Reporters(Reporter):
    """Passes every event to several reporters, in order."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def run_started(self, run_dir: Path, names: Sequence[str]) -> None:
        for reporter in self.reporters:
            reporter.run_started(run_dir, names)

    def entry_skipped(self, name: str, reason: str) -> None:
        for reporter in self.reporters:
            reporter.entry_skipped(name, reason)

    def entry_started(self, name: str, accum: int, micro_batch: int, total_epochs: int) -> None:
        for reporter in self.reporters:
            reporter.entry_started(name, accum, micro_batch, total_epochs)

    def epoch_done(self, name: str, epoch: EpochRecord, total_epochs: int) -> None:
        for reporter in self.reporters:
            reporter.epoch_done(name, epoch, total_epochs)

    def entry_oom(self, name: str, miss: OomMiss, next_accum: int | None) -> None:
        for reporter in self.reporters:
            reporter.entry_oom(name, miss, next_accum)

    def entry_done(self, record: EntryRecord) -> None:
        for reporter in self.reporters:
            reporter.entry_done(record)

    def notice(self, text: str) -> None:
        for reporter in self.reporters:
            reporter.notice(text)

    def run_finished(self) -> None:
        for reporter in self.reporters:
            reporter.run_finished()


def describe_done(record: EntryRecord) -> str:
    """One line for a finished or failed entry."""
    if record.status != "finished" or record.metrics is None or record.memory is None:
        return f"failed {record.name}: {record.error}"
    metrics, memory = record.metrics, record.memory
    return (
        f"done {record.name}: held-out error {metrics.error_rate:.4f}, "
        f"log loss {metrics.log_loss:.4f} (TTA); "
        f"peak {format_bytes(memory.peak_bytes)} on {memory.meter}, predicted "
        f"{format_bytes(record.predicted_peak_bytes)} on {record.predicted_on}; "
        f"accum {record.accum} × micro-batch {record.micro_batch}; {record.seconds:.0f}s"
    )


def describe_epoch(name: str, epoch: EpochRecord, total_epochs: int) -> str:
    """One line for an epoch."""
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    return (
        f"{name} epoch {epoch.epoch + 1}/{total_epochs} ({epoch.phase}): train_loss {show(epoch.train_loss)} "
        f"valid_loss {show(epoch.valid_loss)} error_rate {show(epoch.error_rate)} {epoch.seconds:.1f}s"
    )


class LineReporter(Reporter):
    """One plain line per event, given to ``write``."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def run_started(self, run_dir: Path, names: Sequence[str]) -> None:
        self.write(f"run {run_dir}: {len(names)} entries")

    def entry_skipped(self, name: str, reason: str) -> None:
        self.write(f"skip {name}: {reason}")

    def entry_started(self, name: str, accum: int, micro_batch: int, total_epochs: int) -> None:
        self.write(f"train {name}: accum {accum} × micro-batch {micro_batch}, {total_epochs} epochs")

    def epoch_done(self, name: str, epoch: EpochRecord, total_epochs: int) -> None:
        self.write(describe_epoch(name, epoch, total_epochs))

    def entry_oom(self, name: str, miss: OomMiss, next_accum: int | None) -> None:
        then = f"retrying with accum {next_accum}" if next_accum else "no larger accumulation left"
        self.write(f"out of memory: {name} at accum {miss.accum} × micro-batch {miss.micro_batch}; {then}")

    def entry_done(self, record: EntryRecord) -> None:
        self.write(describe_done(record))

    def notice(self, text: str) -> None:
        self.write(text)


class LogFile(LineReporter):
    """Appends the plain lines, time-stamped, to a log file (``RUN_DIR/run.log``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(self._append)
        self.path = path

    def _append(self, line: str) -> None:
        with naming(self.path), self.path.open("a", encoding="utf-8") as log:
            log.write(f"{now()} {line}\n")


def live_bars(console: Any) -> bool:
    """Whether live progress bars may be drawn on ``console``: only when its output is a terminal.

    rich's own test, ``console.is_terminal``, is also true for a file or a pipe when FORCE_COLOR or
    TTY_COMPATIBLE=1 is set (many CI set-ups set FORCE_COLOR for coloured logs). A live display there
    writes every redraw as new lines: the bars of an entry's epochs fill the log and a finished entry's
    bar comes again after its "done" line. So the output must be a terminal itself, and an interactive
    one (rich's ``is_interactive``: not TERM=dumb, not TTY_INTERACTIVE=0).

    Args:
        console: a ``rich.console.Console``.
    """
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(console.is_interactive and isatty is not None and isatty())
    except ValueError:  # a closed file (e.g. at interpreter exit) is no terminal
        return False


class RichReporter(LineReporter):
    """Plain lines on a rich console, plus live bars (entries; epochs of the current entry) when the
    console is an interactive terminal (:func:`live_bars`). In a CI log only the lines appear.

    Args:
        console: a ``rich.console.Console``, made by the CLI.
    """

    def __init__(self, console: Any) -> None:
        super().__init__(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.console = console
        self.progress: Any = None
        self.entries_task: Any = None
        self.epochs_task: Any = None

    def run_started(self, run_dir: Path, names: Sequence[str]) -> None:
        super().run_started(run_dir, names)
        if live_bars(self.console):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
            self.entries_task = self.progress.add_task("entries", total=len(names))

    def entry_skipped(self, name: str, reason: str) -> None:
        super().entry_skipped(name, reason)
        if self.progress:
            self.progress.advance(self.entries_task)

    def entry_started(self, name: str, accum: int, micro_batch: int, total_epochs: int) -> None:
        super().entry_started(name, accum, micro_batch, total_epochs)
        if self.progress:
            if self.epochs_task is not None:
                self.progress.remove_task(self.epochs_task)
            self.epochs_task = self.progress.add_task(f"{name} epochs", total=total_epochs)

    def epoch_done(self, name: str, epoch: EpochRecord, total_epochs: int) -> None:
        super().epoch_done(name, epoch, total_epochs)
        if self.progress:
            self.progress.advance(self.epochs_task)

    def entry_done(self, record: EntryRecord) -> None:
        super().entry_done(record)
        if self.progress:
            self.progress.advance(self.entries_task)

    def run_finished(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None


SUMMARY_COLUMNS = ("entry", "accum × mb", "predicted", "measured", "ratio", "time predicted", "time measured",
                   "error", "log loss", "OOMs")
SUMMARY_NOTE = ("accum × mb: as planned → as trained. Peaks: predicted by the plan, measured in training "
                "(device in brackets); ratio = measured / predicted, where both count the same bytes (a GPU plan "
                "trained on a GPU, a cpu plan on the CPU). Time: seconds per unfrozen pass over the data, "
                "predicted by the plan on its card (with data loading when probed with a data folder) and measured "
                "here. Error, log loss: held-out, TTA. OOMs: out-of-memory retries.")


def epoch_cells(record: EntryRecord) -> tuple[str, str]:
    """Predicted and measured seconds per unfrozen epoch, each with its device in brackets (the word
    "epoch" is kept out of the summary: a rerun that trains nothing prints no such word)."""
    timing = record.time
    if timing is None:
        return "-", "-"
    predicted = (f"{timing.predicted_epoch_seconds:.1f} s ({timing.predicted_gpu})"
                 if timing.predicted_epoch_seconds is not None else "-")
    measured = (f"{timing.measured_epoch_seconds:.1f} s ({timing.measured_device})"
                if timing.measured_epoch_seconds is not None else "-")
    return predicted, measured


def summary_rows(run: RunFile, names: Sequence[str]) -> list[tuple[str, ...]]:
    """The final table: one row per entry of ``names``, predicted against measured memory.

    Args:
        run: the run record.
        names: the plan's entry names, in plan order.

    Returns:
        Rows of text matching :data:`SUMMARY_COLUMNS`; an entry that did not finish shows its status
        in the error column.
    """
    rows = []
    for name in names:
        record = run.entries.get(name)
        if record is None:
            rows.append((name, "-", "-", "-", "-", "-", "-", "not run", "-", "-"))
            continue
        planned = f"{record.planned_accum} × {record.planned_micro_batch}"
        trained = f"{record.accum} × {record.micro_batch}"
        memory, metrics = record.memory, record.metrics
        ratio = f"{memory.peak_bytes / record.predicted_peak_bytes:.2f}" if peaks_comparable(record) else "-"
        rows.append((
            name,
            trained if trained == planned else f"{planned} → {trained}",
            f"{format_bytes(record.predicted_peak_bytes)} ({record.predicted_on})",
            f"{format_bytes(memory.peak_bytes)} ({memory.meter})" if memory else "-",
            ratio,
            *epoch_cells(record),
            f"{metrics.error_rate:.4f}" if metrics else record.status,
            f"{metrics.log_loss:.4f}" if metrics else "-",
            str(len(record.oom_misses)),
        ))
    return rows
