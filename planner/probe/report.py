"""What a person reads of a probe: its progress lines, the plan's table, the time summary, the cards compared.

The tables are rich ``Table`` objects and the summary a string, for the command to print; the
progress prints to the console the command passes in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from planner.base.budget import format_bytes
from planner.base.gpus import find_gpu
from planner.base.margin import format_margin

if TYPE_CHECKING:
    from planner.base.plan import Plan, PlanEntry
    from planner.probe.cards import CardComparison


class ProbeProgress:
    """Probe progress on ``console``: one line per probe and entry; a live bar only when ``live``
    (an interactive terminal)."""

    def __init__(self, console: Any, live: bool) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not live, transient=True,
        )
        self.task = self.progress.add_task("probing", total=None)

    def entry_started(self, entry, index: int, total: int) -> None:
        self.progress.update(self.task, total=total, description=f"probing {entry.name}")
        self.console.print(f"[bold]{index + 1}/{total} {entry.name}[/bold]")

    def probe_done(self, entry, point) -> None:
        result = "out of memory" if point.oom else f"peak {format_bytes(point.peak_bytes)}"
        checkpointed = " with checkpointing" if point.grad_checkpointing else ""
        took = "reused" if point.reused else f"{point.seconds:.1f} s"
        self.console.print(f"  micro-batch {point.micro_batch:>4}{checkpointed}: {result} ({took})")

    def entry_done(self, entry) -> None:
        self.progress.advance(self.task)


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h`` (``-`` for None)."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(plan: Plan) -> Table:
    """One row per entry: accumulation, micro-batch, checkpointing, predicted peak, headroom, probes,
    OOMs and seconds; the epoch and run times and what bounds them when the plan has them, and the
    loader's seconds per epoch when the probe timed a data folder's loading, and the pairs per budget
    when it has several. Entries that do not fit are red."""
    table = Table(title=f"plan for a {format_bytes(plan.budget_bytes)} card "
                        f"(effective batch {plan.effective_batch_size}, margin {format_margin(plan.margin)}, "
                        f"measured by {plan.measured_on.device})")
    columns = ("entry", "accum", "micro-batch", "checkpointing", "predicted peak", "headroom", "probes", "OOMs",
               "seconds")
    timed = plan.timing is not None and any(e.predicted_time or e.measured_time for e in plan.entries)
    if timed:
        columns = (*columns, "epoch", "run", "bound")
    loading = any(entry.loader_time for entry in plan.entries)
    if loading:
        columns = (*columns, "loading")
    per_budget = any(entry.per_budget for entry in plan.entries)
    if per_budget:
        columns = (*columns, "accum × mb per budget")
    for column in columns:
        table.add_column(column, justify="left" if column in ("entry", "accum × mb per budget") else "right")
    for entry in plan.entries:
        style = None if entry.fits else "red"
        times = [*entry_times(entry), bound_cell(entry)] if timed else []
        if loading:
            times.append(format_duration(entry.loader_time.epoch_seconds) if entry.loader_time else "-")
        pairs = [", ".join(f"{format_bytes(pair.budget_bytes)}: {pair.accum} × {pair.micro_batch}"
                           + ("" if pair.fits else " (no fit)") for pair in entry.per_budget)] if per_budget else []
        table.add_row(entry.name, str(entry.accum), str(entry.micro_batch), checkpointing_cell(entry),
                      format_bytes(entry.predicted_peak_bytes), format_bytes(entry.headroom_bytes),
                      str(len(entry.probes)), str(entry.ooms), f"{entry.probe_seconds:.1f}", *times, *pairs,
                      style=style)
    return table


def checkpointing_cell(entry: PlanEntry) -> str:
    """"yes"/"no", and the other configuration's peak when one was weighed (e.g. "yes (no: 9.1 GiB)")."""
    others = [a for a in entry.alternatives if a.grad_checkpointing != entry.grad_checkpointing]
    text = "yes" if entry.grad_checkpointing else "no"
    for other in others:
        peak = format_bytes(other.predicted_peak_bytes) if other.fits else "no fit"
        text += f" ({'yes' if other.grad_checkpointing else 'no'}: {other.micro_batch}, {peak})"
    return text


def entry_times(entry: PlanEntry) -> tuple[str, str]:
    """Epoch and run time cells: the prediction, and the measurement beside it when there is one."""
    cells = []
    for field in ("epoch_seconds", "total_seconds"):
        shown = [format_duration(getattr(time, field)) + (" measured" if time.source == "measured" else "")
                 for time in (entry.predicted_time, entry.measured_time) if time is not None]
        cells.append(" / ".join(shown) or "-")
    return cells[0], cells[1]


def bound_cell(entry: PlanEntry) -> str:
    """What sets the predicted pace ("device": the card's work, "host": the host's, "loader": the
    DataLoader's workers; "device+loader"...: no workers, decoding between steps), "-" without one."""
    time = entry.predicted_time
    return time.time_bound if time is not None and time.time_bound else "-"


def margin_line(plan: Plan) -> str | None:
    """Where the plan's margin came from (None for older plans, which do not say)."""
    return f"margin {format_margin(plan.margin)}: {plan.margin_basis}" if plan.margin_basis else None


def timing_summary(plan: Plan) -> str | None:
    """One line: the run's predicted total and what it assumes; None when the plan has no times (or, when it
    was measured on a card the GPU table does not know, why it has none)."""
    timing = plan.timing
    if timing is None:
        card = plan.measured_on.gpu
        if card and find_gpu(card) is None:
            return (f"no predicted times: planner's GPU table has no {card} (its speeds are unknown); the plan is for "
                    f"its memory")
        return None
    trained = [e for e in plan.entries if e.fits]  # `planner run` skips the rest
    totals = [e.predicted_time.total_seconds for e in trained if e.predicted_time]
    measured = [e.measured_time.total_seconds for e in trained if e.measured_time]
    if not totals and not measured:
        return None
    parts = []
    if totals:
        parts.append(f"predicted total {format_duration(sum(totals))} on {timing.gpu}")
    if measured:
        parts.append(f"measured-rate total {format_duration(sum(measured))}")
    host = "" if timing.host is None else f"; host: {timing.host.cpu}" + (
        "" if timing.host.speed == 1 else f" × {timing.host.speed:g} (--host-speed)")
    count = len(plan.entries)
    which = "" if len(trained) == count else f" of the {len(trained)} of {count} entries that fit"
    return (", ".join(parts) + f"{which} for fine_tune({timing.epochs}) + TTA: {timing.n_train:,} training, "
            f"{timing.n_valid:,} held-out, {timing.n_test:,} test images ({timing.data}){host}; "
            f"{loading_summary(plan)}")


def loading_summary(plan: Plan) -> str:
    """How the times include data loading (the "loading" column: the loader's seconds per epoch)."""
    workers = {entry.loader_time.workers for entry in plan.entries if entry.loader_time}
    if not workers:
        return "data loading not included"
    if workers == {0}:
        return "data loading in the training process, added to each pass"
    count = max(workers)
    return f"data loading beside the card by {count} DataLoader worker{'s' if count > 1 else ''} (the loader bound)"


def cards_table(comparison: CardComparison) -> Table:
    """One row per entry, one column per card: accum × micro-batch; then each card's time and cost."""
    table = Table(title=f"cards compared (plan.json is for {comparison.chosen})")
    table.add_column("entry")
    for card in comparison.cards:
        table.add_column(f"{card.gpu} ({format_bytes(card.budget_bytes)})", justify="right")
    for index, entry in enumerate(comparison.cards[0].entries):
        cells = []
        for card in comparison.cards:
            mine = card.entries[index]
            cell = f"{mine.accum} × {mine.micro_batch}" + (" ckpt" if mine.grad_checkpointing else "")
            cells.append(cell if mine.fits else "no fit")
        table.add_row(entry.name, *cells)
    table.add_row("time (fine_tune + TTA)", *(format_duration(card.total_seconds) for card in comparison.cards))
    if any(card.usd_per_hour is not None for card in comparison.cards):
        table.add_row("cost", *("-" if card.cost_usd is None else f"${card.cost_usd:,.2f}"
                                for card in comparison.cards))
    return table
