"""`planner probe` in one call: its options in, the written plan out.

The CLI parses the command line into :class:`ProbeOptions`, calls :func:`make_plan` and renders the
plan; everything between (which entries, which data, which device and meter, which budget and card,
the time basis, writing the plan) happens here, top to bottom.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from planner.base.allocator import use_allocator
from planner.base.atomic import check_writable
from planner.base.budget import format_bytes
from planner.base.entries import EntrySpec, load_models_file, reference_entries, single_entry
from planner.base.errors import UserError
from planner.base.gpus import GIB, GpuSpec, find_gpu, get_gpu
from planner.base.locations import data_folder_here
from planner.base.margin import card_needed, format_margin
from planner.base.plan import MIN_MICRO_BATCH, Plan, TimeBasis, save_plan
from planner.base.threads import torch_threads_kept
from planner.base.trainsize import DEFAULT_VALID_PCT, check_steps, training_count
from planner.probe.cards import CardComparison, compare_cards
from planner.probe.epochtime import default_sizes, folder_sizes, time_basis
from planner.probe.meters.base import ProbeMeter
from planner.probe.options import ProbeOptions
from planner.probe.probe import probe_plan
from planner.probe.probe_data import ProbeData, probe_data_from_folder
from planner.probe.reporters import ProbeReporter


def make_plan(options: ProbeOptions, reporter: ProbeReporter | None = None,
              entries: list[EntrySpec] | None = None) -> Plan:
    """Probe the entries (``entries``, else the options') and write the plan to ``options.output``.

    Raises:
        UserError: contradictory options, entries that are not a non-empty list of ``EntrySpec`` records,
            an unreadable models file or data folder, no GPU where one is needed, or an output that cannot
            be written; all before any probing.
    """
    plan = _plan(options, reporter, entries)
    save_plan(plan, options.output)
    return plan


def compare_plans(options: ProbeOptions, reporter: ProbeReporter | None = None,
                  entries: list[EntrySpec] | None = None) -> tuple[Plan, CardComparison]:
    """Plan for each card of ``options.gpus``; write the chosen card's plan to ``options.output`` and
    the comparison beside it (``planner.probe.cards``).

    Raises:
        UserError: as :func:`make_plan`, or cards, ``--for`` and ``--price`` that do not agree.
    """
    return compare_cards(options, lambda one_card: _plan(one_card, reporter, entries))


def _plan(options: ProbeOptions, reporter: ProbeReporter | None, entries: list[EntrySpec] | None) -> Plan:
    """The plan of :func:`make_plan`, not yet written."""
    import torch

    check_writable(options.output, "-o", folder=False)
    entries = _given(entries) if entries is not None else _entries(options)
    data = options.data if options.data is not None else data_folder_here()
    probe_data = probe_data_from_folder(data)
    check_data_gives_steps(probe_data, options.effective_batch_size)
    device = _device(options.device, torch.cuda.is_available())
    if device == "cuda":
        use_allocator()  # before the card's name and memory below start CUDA in this process
    if len(options.gpus) > 1:
        raise UserError("several --gpu: compare them with compare_plans")
    card = get_gpu(options.gpus[0]) if options.gpus else None
    budgets = sorted(set(options.budgets)) or [_default_budget(card)]
    _check_budget_fits_card(budgets[0], card)
    if card is None and torch.cuda.is_available():
        from planner.base.cuda_device import gpu_name

        card = find_gpu(gpu_name())  # this machine's card, when the table knows it
    timing = _time_basis(card, data, probe_data, options.epochs, options.host_speed)
    with torch_threads_kept():  # the cpu meter sets torch's threads; a notebook gets its own back
        plan = _probe(entries, device, budgets, probe_data, options, card, timing, reporter)
    if data is not None:
        plan = _with_loading(plan, data, probe_data, options.loader_workers, device, options.host_speed)
        plan = plan.model_copy(update={"data": str(Path(data).resolve())})
    return plan


def _with_loading(plan: Plan, data: Path, probe_data: ProbeData, workers: int | None, device: str,
                  host_speed: float) -> Plan:
    """The plan with the data folder's loading time for ``workers`` (None: what `planner run` uses on
    the probe's device here) on a host ``host_speed`` times as fast per core as this one, joined to
    every entry's time, and the time basis saying so."""
    from planner.base.recipe import loader_workers
    from planner.probe.loadtime import with_loader_times

    workers = loader_workers("cpu" if device == "cpu" else "cuda") if workers is None else workers
    plan = with_loader_times(plan, probe_data.files, folder_sizes(len(probe_data.files), data / "test_images"),
                             workers, host_speed)
    if plan.timing is None or not plan.entries:
        return plan
    sampled = plan.entries[0].loader_time.images_timed
    loading = (f"DataLoader workers: {workers}; decoding and resizing timed here on {sampled} images; each pass "
               "takes the slowest of card, host and loader" if workers else
               f"in the training process, between steps ({sampled} images timed here); it adds to each pass")
    return plan.model_copy(update={"timing": plan.timing.model_copy(update={"data_loading": loading})})


def check_data_gives_steps(probe_data: ProbeData, effective_batch_size: int) -> None:
    """With a data folder, refuse before probing an effective batch its training split (after the run's
    default held-out split) cannot fill: no fit of `planner run` would take an optimizer step.

    Raises:
        UserError: the training split is smaller than the effective batch.
    """
    if probe_data.synthetic:
        return
    class_sizes = Counter(path.parent.name for path in probe_data.files).values()
    check_steps(training_count(class_sizes, DEFAULT_VALID_PCT), len(probe_data.files), effective_batch_size,
                DEFAULT_VALID_PCT, fix="Probe with --effective-bs {n} or smaller")


def _check_budget_fits_card(budget_bytes: int, card: GpuSpec | None) -> None:
    """Refuse a plan's budget (``--gpu-mem``, the smallest of several) larger than what the named card gives a
    process: its plan would fill memory the card does not have (a T4 sold as 16 GB gives 14.76 GiB).

    Raises:
        UserError: ``budget_bytes`` is more than ``card.budget_bytes``.
    """
    if card is not None and budget_bytes > card.budget_bytes:
        given, usable = format_bytes(budget_bytes), format_bytes(card.budget_bytes)
        if given == usable:  # e.g. 14.76G, as the plan shows a T4: more than the T4's 14.7557 GiB
            given, usable = f"{budget_bytes:,} bytes", f"{card.budget_bytes:,} bytes"
        raise UserError(f"--gpu-mem {given} is more than a {card.name} gives a process ({usable}): leave --gpu-mem "
                        f"out to plan for the whole {card.name}, or give at most {card.budget_bytes // 2**20}MiB to "
                        "keep part of it free (a card the GPU table lacks: --gpu-mem alone)")


def misfit_message(plan: Plan, checkpointing: bool) -> str | None:
    """One line for a plan with entries that do not fit (None when all fit): which, what the largest of
    them needs (the smallest card it fits with the plan's margin) and what would make it fit."""
    unfit = [entry for entry in plan.entries if not entry.fits]
    if not unfit:
        return None
    how = " with checkpointing" if checkpointing else ""
    text = (f"{len(unfit)} entr{'y does' if len(unfit) == 1 else 'ies do'} not fit even at the smallest "
            f"micro-batch{how}: {', '.join(entry.name for entry in unfit)} (`planner run` skips what does not fit)")
    fixes = ["a larger card", "a smaller image size or a lighter model"]
    measured = [entry for entry in unfit if entry.predicted_peak_bytes is not None]
    if measured:
        worst = max(measured, key=lambda entry: entry.predicted_peak_bytes or 0)
        card = card_needed(worst.predicted_peak_bytes or 0, plan.margin)
        text += (f"; {worst.name if len(unfit) > 1 else 'it'} needs {format_bytes(worst.predicted_peak_bytes)} at "
                 f"micro-batch {worst.micro_batch}{' with checkpointing' if worst.grad_checkpointing else ''}")
        fixes[0] = (f"a card of at least {format_bytes(card)} with the {format_margin(plan.margin)} margin "
                    f"(--gpu-mem {math.ceil(card / GIB * 10) / 10:g}G)")
    if not checkpointing:
        fixes.append("checkpointing (leave out --no-checkpointing)")
    smallest = min(entry.micro_batch for entry in unfit)
    if smallest > MIN_MICRO_BATCH:
        batch = plan.effective_batch_size
        fixes.append(f"an --effective-bs with a smaller divisor (micro-batches divide it; {batch}'s smallest is "
                     f"{smallest}), e.g. --effective-bs {batch + 1}")
    return f"{text}: try {', or '.join(fixes)}"


def _given(entries: object) -> list[EntrySpec]:
    """``make_plan``'s ``entries`` as a list, checked: what ``single_entry`` and ``load_models_file`` return.

    Raises:
        UserError: not a non-empty list (or one record) of ``EntrySpec`` records, e.g. architecture names.
    """
    given = [entries] if isinstance(entries, EntrySpec) else entries
    if isinstance(given, str) or not isinstance(given, list | tuple) or not all(
            isinstance(entry, EntrySpec) for entry in given):
        raise UserError(f"entries must be a list of EntrySpec records, e.g. [*single_entry('resnet50', 224), "
                        f"*single_entry('convnext_tiny', 224)]; got {entries!r:.80}")
    if not given:
        raise UserError("entries is empty: give at least one, e.g. single_entry('resnet50', 224), or leave it out "
                        "to probe ProbeOptions.models, .arch or the reference set")
    return list(given)


def _entries(options: ProbeOptions) -> list[EntrySpec]:
    if options.arch is not None:
        return single_entry(options.arch, options.size)
    return load_models_file(options.models) if options.models else reference_entries()


def _device(requested: str, cuda_available: bool) -> str:
    """``auto``: cuda when a GPU is present, else the device-free estimate."""
    if requested == "auto":
        return "cuda" if cuda_available else "estimate"
    if requested == "cuda" and not cuda_available:
        raise UserError("--device cuda needs a CUDA GPU; use --device estimate to plan without one")
    return requested


def _default_budget(card: GpuSpec | None) -> int:
    """--gpu's usable memory, else this machine's GPU's total memory; a user error without either."""
    import torch

    if card is not None:
        return card.budget_bytes
    if torch.cuda.is_available():
        from planner.base.cuda_device import gpu_total_bytes

        return gpu_total_bytes()
    raise UserError("no GPU here to plan for: name a card with --gpu (e.g. --gpu T4) or give its memory "
                    "with --gpu-mem (e.g. --gpu-mem 16G)")


def _time_basis(card: GpuSpec | None, data: Path | None, probe_data: ProbeData, epochs: int,
                host_speed: float) -> TimeBasis | None:
    """Sizes, epochs and host the entries' times are for (None without a card to time on); the host is
    this machine's benchmark at ``host_speed``."""
    if card is None:
        return None
    from planner.probe.hostbench import this_host

    sizes = folder_sizes(len(probe_data.files), data / "test_images") if data is not None else default_sizes()
    return time_basis(sizes, card.name, epochs, this_host(host_speed))


def _probe(entries: list[EntrySpec], device: str, budgets: list[int], probe_data: ProbeData,
           options: ProbeOptions, card: GpuSpec | None, timing: TimeBasis | None,
           reporter: ProbeReporter | None) -> Plan:
    """Open the meter (and, to time a cuda or cpu probe on ``card``, an estimate meter) and probe."""
    from planner.probe.meters import get_meter

    timed = card is not None and timing is not None
    meter = get_meter(device, data=probe_data, **({"gpu": card} if timed and device == "estimate" else {}))
    timer = get_meter("estimate", data=probe_data, gpu=card) if timed and device != "estimate" else None
    proposer = _proposer(device, probe_data, timer)
    try:
        plan = probe_plan(entries, meter, budget_bytes=budgets[0], effective_batch_size=options.effective_batch_size,
                          margin=options.margin, reporter=reporter, more_budgets=budgets[1:],
                          timing=timing, timer=timer, checkpointing=options.checkpointing,
                          jobs=options.jobs, proposer=proposer)
        if device == "cuda" and proposer is not None and plan.measured_on.allocator is not None:
            from planner.probe.meters.calibration import append_pairs
            from planner.probe.recalibrate import machine_stack, probe_pairs

            append_pairs(probe_pairs(plan, proposer, machine_stack(plan.measured_on.allocator.conf)))
        return plan
    finally:
        for opened in {meter, timer, proposer} - {None}:
            opened.close()


def _proposer(device: str, probe_data: ProbeData, timer: ProbeMeter | None) -> ProbeMeter | None:
    """The estimate meter in the units of a meter that runs real steps: its fake steps propose each
    entry's memory curve, so that the real meter confirms one or two micro-batches instead of opening
    with two probes (``planner.probe.probe.probe_plan``). The cuda meter's units are the estimate's card
    bytes; the cpu meter's are live fp32 bytes, the estimate's without a device model."""
    from planner.probe.meters import get_meter
    from planner.probe.meters.device_model import DeviceModel

    if device == "cuda":
        return timer or get_meter("estimate", data=probe_data)
    if device == "cpu":
        return get_meter("estimate", data=probe_data, precision="fp32", device=DeviceModel.raw())
    return None
