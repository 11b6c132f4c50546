"""The probe stage: for every entry, search the micro-batch that fits the budget and write a plan.

Main path: resolve entries (done by the caller, so bad names fail before any probing), then per
entry ask the meter whether BatchNorm trains, search the candidates, and record the result.
Entries of one architecture are probed one after another so the meter keeps its model, and an
entry with the same architecture and size as an earlier one starts from that entry's curve.
Where the meter's probes need no device (the estimate meter), architectures are probed side by side
in worker processes (``planner.probe.side_by_side``); an architecture whose first probe (the largest
micro-batch) the meter remembers from an earlier run stays in this process, as a worker would cost more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import torch

from planner.base.entries import EntrySpec, timm_input_size
from planner.base.errors import UserError, first_line
from planner.base.plan import (
    Alternative,
    BudgetPair,
    MemoryCurve,
    Plan,
    PlanEntry,
    ProbePoint,
    Size,
    TimeBasis,
    accum_for,
)
from planner.base.recipe import CheckpointingUnsupported
from planner.probe.configuration import Choice, Option, choose, normalisation_floor, plain_is_enough
from planner.probe.epochtime import entry_time, measured_step_times
from planner.probe.hosttime import host_bound
from planner.probe.margins import measured_margin
from planner.probe.meters.base import DoesNotFit, ProbeMeter
from planner.probe.options import DEFAULT_EFFECTIVE_BATCH_SIZE
from planner.probe.reporters import GroupReporter, Numbered, ProbeReporter, SilentReporter
from planner.probe.search import SearchResult, candidate_micro_batches, search_micro_batch
from planner.probe.side_by_side import probe_side_by_side, processes_for


def probe_plan(
    entries: Sequence[EntrySpec],
    meter: ProbeMeter,
    *,
    budget_bytes: int,
    effective_batch_size: int = DEFAULT_EFFECTIVE_BATCH_SIZE,
    margin: float | None = None,
    reporter: ProbeReporter | None = None,
    more_budgets: Sequence[int] = (),
    checkpointing: bool = True,
    timing: TimeBasis | None = None,
    timer: ProbeMeter | None = None,
    jobs: int | None = None,
    proposer: ProbeMeter | None = None,
) -> Plan:
    """Probe every entry with ``meter`` and return the plan (entries in the order given).

    Args:
        entries: what to probe, already resolved (see ``planner.base.entries``).
        meter: how to measure (see ``planner.probe.meters.get_meter``).
        budget_bytes: the card size (the CLI passes the smallest of several).
        effective_batch_size: samples per optimizer step; accum × micro_batch equals it.
        margin: the fraction of the budget kept free; None: the one covering ``meter``'s measured error
            (``planner.probe.margins``).
        reporter: receives progress.
        more_budgets: other card sizes; when given, every entry gets a ``per_budget`` pair for each
            budget, ``budget_bytes`` included. Each extra search starts from the entry's curve and
            reuses its probes that did not run out of memory (a peak that fitted a smaller cap is
            the same under a larger one); the meter keeps the model between them.
        checkpointing: weigh activation checkpointing when no micro-batch fits without it, or only
            one too small for the model's BatchNorm (``planner.probe.configuration``); False keeps every
            entry without it.
        timing: the data set's sizes and epochs; when given, every entry gets its predicted time
            (from probes timed by the meter, ``ProbePoint.predicted_times``) and, with the cuda
            meter, its measured time (from the timed probe steps).
        timer: a meter that times steps (the estimate meter given a card), asked once per entry at
            the chosen micro-batch when ``meter``'s probes carry no predicted times (the cuda meter).
        jobs: processes that probe side by side where the meter's probes need no device
            (``ProbeMeter.probes_apart``): this one and ``jobs - 1`` workers, at most one per
            architecture; None: one per core that other processes leave free (and per GiB of memory
            available); 1: this process alone. Other meters always probe in this process.
        proposer: a cheap meter in ``meter``'s units (the estimate meter's fake steps) whose memory
            curve opens each entry's search in place of the two opening probes: ``meter`` then probes
            the candidate the curve says fits (and the next larger one when it is near the limit),
            and the curve is moved through what ``meter`` measured. None: ``meter`` opens alone.

    Returns:
        The plan; entries that do not fit even at the smallest micro-batch have ``fits`` False.
    """
    started = time.perf_counter()
    measured_on = meter.measured_on()
    margin, margin_basis = measured_margin(measured_on) if margin is None else (margin, "given by --margin")
    progress = Numbered(reporter or SilentReporter(), len(entries))
    settings = _Settings(budget_bytes=budget_bytes, effective_batch_size=effective_batch_size, margin=margin,
                         more_budgets=tuple(more_budgets), checkpointing=checkpointing, timing=timing)
    groups = _architecture_groups(entries)
    fresh = [group for group in groups if not meter.remembers(group[0], effective_batch_size)]
    processes = processes_for(meter, len(fresh), jobs)
    shared = fresh if processes > 1 else []
    planned: list[PlanEntry] = []
    for group in (group for group in groups if group not in shared):
        planned += GroupProbe(meter, settings, timer, proposer)(group, progress)
    if shared:
        planned += probe_side_by_side(shared, GroupProbe(meter, settings, timer), progress, processes - 1)
    done = {entry.name: entry for entry in planned}
    return Plan(
        budget_bytes=budget_bytes, margin=margin, margin_basis=margin_basis, effective_batch_size=effective_batch_size,
        measured_on=measured_on, entries=[done[entry.name] for entry in entries],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 2), timing=timing,
    )


@dataclass(frozen=True)
class _Settings:
    """What every entry is probed for (plain data: it travels to worker processes)."""

    budget_bytes: int
    effective_batch_size: int
    margin: float
    more_budgets: tuple[int, ...]
    checkpointing: bool
    timing: TimeBasis | None


def _architecture_groups(entries: Sequence[EntrySpec]) -> list[list[EntrySpec]]:
    """The entries by architecture (sorted by name), each group in the order given."""
    groups: dict[str, list[EntrySpec]] = {}
    for entry in entries:
        groups.setdefault(entry.arch, []).append(entry)
    return [groups[arch] for arch in sorted(groups)]


@dataclass(frozen=True)
class GroupProbe:
    """Plans the entries of one architecture, one after another (the meter keeps the model, and an
    entry with the size of an earlier one starts from its curve). Plain data and meters: it travels to
    worker processes (``planner.probe.side_by_side``)."""

    meter: ProbeMeter
    settings: _Settings
    timer: ProbeMeter | None = None
    proposer: ProbeMeter | None = None

    def __call__(self, group: Sequence[EntrySpec], reporter: GroupReporter) -> list[PlanEntry]:
        meter, settings = self.meter, self.settings
        curves: dict[tuple[str, Size, bool], MemoryCurve] = {}
        planned_entries = []
        for entry in group:
            reporter.entry_started(entry)
            entry_started = time.perf_counter()
            probes = _Probes(meter, reporter, self.proposer)
            candidates = candidate_micro_batches(settings.effective_batch_size, meter.has_batchnorm(entry))
            planned, result = _plan_one(probes, entry, candidates, settings.budget_bytes,
                                        settings.effective_batch_size, settings.margin, settings.checkpointing, curves)
            if settings.timing is not None:
                planned = _with_times(planned, settings.timing, meter, self.timer, entry)
            if settings.more_budgets:
                first_search = len(probes.fresh)
                budgets = sorted({settings.budget_bytes, *settings.more_budgets})
                pairs = _pairs_per_budget(probes, entry, candidates, result, budgets, settings.budget_bytes,
                                          settings.effective_batch_size, settings.margin)
                planned = planned.model_copy(update={
                    "per_budget": pairs, "probes": [*planned.probes, *probes.fresh[first_search:]]})
            planned = planned.model_copy(update={"probe_seconds": round(time.perf_counter() - entry_started, 2)})
            reporter.entry_done(planned)
            planned_entries.append(planned)
        return planned_entries

    def close(self) -> None:
        """Close the meters (a worker process's copies; the caller closes its own)."""
        for meter in (self.meter, self.timer, self.proposer):
            if meter is not None:
                meter.close()


def _plan_one(probes: _Probes, entry: EntrySpec, candidates: Sequence[int], budget_bytes: int,
              effective_batch_size: int, margin: float, checkpointing: bool,
              curves: dict[tuple[str, Size, bool], MemoryCurve]) -> tuple[PlanEntry, SearchResult]:
    """One entry's plan: search without checkpointing, with it too when that is not enough, and choose
    by the rule (``planner.probe.configuration``); also returns the plain search (larger budgets start
    from its curve)."""
    limit = budget_bytes * (1 - margin)
    result = _search(probes, entry, candidates, budget_bytes, limit, curves)
    floor = normalisation_floor(probes.meter.body_has_batchnorm(entry), effective_batch_size)
    searched = {False: result}
    if checkpointing and not plain_is_enough(_option(result, False), floor):
        checkpointed = _search_checkpointed(probes, entry, candidates, budget_bytes, limit, curves)
        if checkpointed is not None:
            searched[True] = checkpointed
    choice = choose([_option(r, ckpt) for ckpt, r in searched.items()], floor)
    return _plan_entry(entry, searched, choice, budget_bytes, effective_batch_size, probes), result


def _pairs_per_budget(probes: _Probes, entry: EntrySpec, candidates: Sequence[int], result: SearchResult,
                      budgets: Sequence[int], budget_bytes: int, effective_batch_size: int,
                      margin: float) -> list[BudgetPair]:
    """A (micro-batch, accum) pair per card size; each search starts from the plan's curve and reuses
    the probes that fitted (a peak that fitted a smaller cap is the same under a larger one)."""
    pairs = []
    for budget in budgets:
        if budget != budget_bytes:
            result_here = search_micro_batch(probes.measurer(entry, budget), candidates, budget * (1 - margin),
                                             prior=result.curve,
                                             from_the_top=probes.from_the_top)
        else:
            result_here = result
        pairs.append(_budget_pair(budget, result_here, effective_batch_size))
    return pairs


class _Probes:
    """One entry's probes: each (checkpointing, micro-batch) measured once, reported, kept in order."""

    def __init__(self, meter: ProbeMeter, reporter: GroupReporter, proposer: ProbeMeter | None = None):
        self.meter = meter
        self.reporter = reporter
        self.proposer = proposer
        self.fitted: dict[tuple[bool, int], ProbePoint] = {}  # no OOM: reused by larger budgets
        self.fresh: list[ProbePoint] = []

    def proposed_curve(self, entry: EntrySpec, candidates: Sequence[int], cap_bytes: int,
                       limit: float) -> MemoryCurve | None:
        """The proposer's memory curve of ``entry`` (its own search, from the top), or None without one."""
        if self.proposer is None:
            return None
        proposer = self.proposer
        return search_micro_batch(lambda b: measure_point(proposer, entry, b, cap_bytes), candidates, limit,
                                  from_the_top=not proposer.cost_grows_with_batch).curve

    @property
    def from_the_top(self) -> bool:
        """Whether searches open with the largest candidates: probes cost the same at any micro-batch."""
        return not self.meter.cost_grows_with_batch

    def measurer(self, entry: EntrySpec, cap_bytes: int) -> Callable[[int], ProbePoint]:
        """The search's measure function for ``entry`` on a card of ``cap_bytes``; a micro-batch that
        does not fit comes back as ``ProbePoint(oom=True)``."""

        def measure(b: int) -> ProbePoint:
            key = (entry.grad_checkpointing, b)
            if key in self.fitted:
                return self.fitted[key]
            point = measure_point(self.meter, entry, b, cap_bytes)
            if entry.grad_checkpointing:
                point = point.model_copy(update={"grad_checkpointing": True})
            self.reporter.probe_done(entry, point)
            self.fresh.append(point)
            if not point.oom:
                self.fitted[key] = point
            return point

        return measure


def _search(probes: _Probes, entry: EntrySpec, candidates: Sequence[int], budget_bytes: int, limit: float,
            curves: dict[tuple[str, Size, bool], MemoryCurve]) -> SearchResult:
    """Search one configuration; a misfit is measured uncapped; the curve is kept for later entries."""
    key = (entry.arch, entry.size, entry.grad_checkpointing)
    prior = curves.get(key) or probes.proposed_curve(entry, candidates, budget_bytes, limit)
    result = search_micro_batch(probes.measurer(entry, budget_bytes), candidates, limit, prior=prior,
                                from_the_top=probes.from_the_top)
    if not result.fits and result.peak_bytes is None:
        result = _measure_uncapped(probes.meter, entry, result)
    if result.curve is not None:
        curves[key] = result.curve
    return result


def _search_checkpointed(probes: _Probes, entry: EntrySpec, candidates: Sequence[int], budget_bytes: int,
                         limit: float, curves: dict[tuple[str, Size, bool], MemoryCurve]) -> SearchResult | None:
    """The same search with activation checkpointing; None when the model cannot checkpoint."""
    try:
        return _search(probes, replace(entry, grad_checkpointing=True), candidates, budget_bytes, limit, curves)
    except CheckpointingUnsupported:
        return None


def _option(result: SearchResult, grad_checkpointing: bool) -> Option:
    chosen = _chosen_point(result)
    seconds = chosen.step_seconds / chosen.micro_batch if chosen and chosen.step_seconds else None
    return Option(micro_batch=result.micro_batch, grad_checkpointing=grad_checkpointing,
                  predicted_peak_bytes=result.peak_bytes, fits=result.fits, seconds_per_sample=seconds)


def _chosen_point(result: SearchResult) -> ProbePoint | None:
    if result.peak_bytes is None:
        return None
    return next(p for p in result.points if p.micro_batch == result.micro_batch and not p.oom)


def _with_times(planned: PlanEntry, timing: TimeBasis, meter: ProbeMeter, timer: ProbeMeter | None,
                entry: EntrySpec) -> PlanEntry:
    """The entry with its predicted and (cuda meter) measured time at the chosen micro-batch."""
    chosen = next((p for p in planned.probes if p.micro_batch == planned.micro_batch and not p.oom
                   and p.grad_checkpointing == planned.grad_checkpointing), None)
    if chosen is None:
        return planned
    update = {}
    timed = chosen
    if chosen.predicted_times is None and timer is not None:
        timed = timer.measure(replace(entry, grad_checkpointing=planned.grad_checkpointing), planned.micro_batch)
    if timed.predicted_times is not None:
        bounds = {"device": timed.predicted_times, **host_bound(timed.host_work, timing)}
        update["predicted_time"] = entry_time(bounds, planned.micro_batch, planned.accum, timing)
    on = meter.measured_on()
    if on.device == "cuda" and chosen.step_seconds is not None:
        measured = measured_step_times(chosen.step_seconds, on.gpu or "cuda")
        update["measured_time"] = entry_time({"measured": measured}, planned.micro_batch, planned.accum, timing,
                                             "measured")
    return planned.model_copy(update=update)


def measure_point(meter: ProbeMeter, entry: EntrySpec, micro_batch: int, cap_bytes: int | None) -> ProbePoint:
    """One probe as the search records it: a step that does not fit under ``cap_bytes`` is a point with
    ``oom=True``; a model that cannot train at this size at all is the user's to fix, in one line.

    Raises:
        UserError: the step failed for another reason than memory (e.g. an input size the model refuses).
    """
    try:
        return meter.measure(entry, micro_batch, cap_bytes)
    except DoesNotFit as miss:
        return ProbePoint(micro_batch=micro_batch, peak_bytes=None, oom=True, seconds=miss.seconds)
    except (RuntimeError, AssertionError, ValueError) as error:
        if isinstance(error, (torch.OutOfMemoryError, CheckpointingUnsupported)):
            raise
        rows, cols = entry.size
        raise UserError(f"{entry.name}: a training step at {rows}x{cols} (micro-batch {micro_batch}) failed: "
                        f"{first_line(error).rstrip('.')}{_size_advice(entry)}") from error


def _size_advice(entry: EntrySpec) -> str:
    """What to try when ``entry``'s model refuses its size: the size timm builds it for."""
    native = timm_input_size(entry.arch)
    if native is None or native[0] == entry.size:
        return ""
    (rows, cols), fixed = native
    shown = f"{rows}" if rows == cols else f"{rows}x{cols}"
    if fixed:
        return f"; timm builds {entry.arch} for {rows}x{cols} images (a fixed input size): use size {shown}"
    return f"; try timm's size for {entry.arch}, {shown}"


def _measure_uncapped(meter: ProbeMeter, entry: EntrySpec, result: SearchResult) -> SearchResult:
    """The smallest micro-batch ran out of memory under the budget: measure the peak it needs (None
    when it runs out of memory even uncapped, on a card smaller than it needs)."""
    point = measure_point(meter, entry, result.micro_batch, None)
    return SearchResult(micro_batch=result.micro_batch, fits=False, peak_bytes=point.peak_bytes,
                        curve=result.curve, points=(*result.points, point))


def _budget_pair(budget_bytes: int, result: SearchResult, effective_batch_size: int) -> BudgetPair:
    return BudgetPair(budget_bytes=budget_bytes, micro_batch=result.micro_batch,
                      accum=accum_for(effective_batch_size, result.micro_batch), predicted_peak_bytes=result.peak_bytes,
                      fits=result.fits)


def _plan_entry(entry: EntrySpec, searched: dict[bool, SearchResult], choice: Choice, budget_bytes: int,
                effective_batch_size: int, probes: _Probes) -> PlanEntry:
    """The plan's entry: the chosen configuration, or for a misfit the one needing the least memory
    (its ``probe_seconds`` are the caller's to fill in, once every probe of the entry is done)."""
    if choice.option is not None:
        checkpointed = choice.option.grad_checkpointing
    else:  # nothing fits: record the configuration that needs the smallest card
        needs = {ckpt: r.peak_bytes for ckpt, r in searched.items() if r.peak_bytes is not None}
        checkpointed = min(needs, key=needs.__getitem__) if needs else False
    result = searched[checkpointed]
    chosen = _chosen_point(result)
    peak = result.peak_bytes  # None only when even the uncapped smallest probe ran out of memory
    alternatives = [
        Alternative(micro_batch=o.micro_batch, accum=accum_for(effective_batch_size, o.micro_batch),
                    grad_checkpointing=o.grad_checkpointing, predicted_peak_bytes=o.predicted_peak_bytes,
                    fits=o.fits, seconds_per_sample=o.seconds_per_sample, relative_cost=round(o.relative_cost, 3))
        for o in (_option(r, ckpt) for ckpt, r in searched.items())
    ]
    return PlanEntry(
        name=entry.name, arch=entry.arch, reference_arch=entry.reference_arch, item=entry.item,
        size=entry.size, accum=accum_for(effective_batch_size, result.micro_batch), micro_batch=result.micro_batch,
        predicted_peak_bytes=peak, fits=result.fits,
        headroom_bytes=None if peak is None else budget_bytes - peak,
        curve=result.curve, probes=list(probes.fresh), ooms=sum(p.oom for p in probes.fresh),
        step_seconds=chosen.step_seconds if chosen else None, probe_seconds=0.0,
        grad_checkpointing=checkpointed, choice=choice.reason, alternatives=alternatives,
        peak_phase=chosen.peak_phase if chosen else None,
    )
